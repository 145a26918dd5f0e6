#!/usr/bin/env bash
# Quick start: install into .venv, search the EfficientNet compound space on the embedded digits
# data (real training on CPU, about 7 minutes on 2 cores), then export the winner as a standalone
# PyTorch model folder (model.py + weights.safetensors + config.json + model.pt2 + model.onnx).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
study="quickstart-$(date +%Y%m%d-%H%M%S)"
# --timeout bounds the search: it ends within 6 minutes (running trials stop at an epoch boundary), and
# candidates predicted not to finish in the time left are recorded as rejected and cost nothing.
.venv/bin/autocnn search --space efficientnet_compound --timeout 6m --study "$study"
.venv/bin/autocnn export --study "$study" --out "studies/$study/best"
echo "exported to studies/$study/best (see its README.md); watch studies with: .venv/bin/autocnn dashboard"
