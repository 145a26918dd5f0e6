#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs test dependencies into .venv, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh dev
workers=$(nproc 2>/dev/null || echo 2)
[ "$workers" -gt 2 ] && workers=2
# loadfile: a module's tests share one worker, so module-scoped servers (Ray, PostgreSQL) start once;
# --durations: every run ends with its 30 slowest steps, where the suite's time goes (issue 12)
exec .venv/bin/python -m pytest -n "$workers" --dist loadfile --durations=30 "$@"
