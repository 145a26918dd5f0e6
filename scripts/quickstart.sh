#!/usr/bin/env bash
# Quick start: install into .venv, then show what autocnn builds. (The search issue replaces the
# body with a real search on the embedded digits data plus an export of the winner.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
.venv/bin/autocnn models
.venv/bin/autocnn show efficientnet_b0
