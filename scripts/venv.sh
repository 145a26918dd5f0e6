#!/usr/bin/env bash
# Create or reuse .venv with autocnn installed (editable) plus the given extras; sourced by the
# quick-start and test scripts. Re-installs only when pyproject.toml or the extras change.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
if [ ! -x "$root/.venv/bin/python" ]; then
    "$python" -m venv "$root/.venv"
    "$root/.venv/bin/python" -m pip install -q --upgrade pip
fi
stamp="$root/.venv/.autocnn-installed"
want="$(sha1sum "$root/pyproject.toml" | cut -c1-40) [$extras]"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    spec="$root"
    [ -n "$extras" ] && spec="$root[$extras]"
    "$root/.venv/bin/python" -m pip install -q -e "$spec"
    echo "$want" > "$stamp"
fi
