"""What a wheel of autocnn carries: the built-in spaces and the dashboard's static files."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_carries_every_builtin_space_and_the_dashboard_files(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                             "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = tmp_path.glob("autocnn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    spaces = sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml"))
    assert len(spaces) >= 8
    for name in [*spaces, "README.md"]:
        assert f"autocnn/spaces/builtin/{name}" in names, name
    assert any(n.startswith("autocnn/dashboard/static/") and n.endswith(".js") for n in names)
