#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs test dependencies into .venv, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh dev
workers=$(nproc 2>/dev/null || echo 2)
[ "$workers" -gt 2 ] && workers=2
exec .venv/bin/python -m pytest -n "$workers" "$@"
