"""scripts/soak.py end to end in its small mode: random kill -9 and resume, nothing lost or duplicated."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_soak_script_kills_resumes_and_reports_nothing_lost(tmp_path):
    out = tmp_path / "B.md"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "soak.py"), "--smoke", "--out", str(out)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = out.read_text()
    assert "Complete 8 of 8, lost 0, duplicated 0: **pass**" in text
    kills = int(re.search(r"\| kills \(SIGKILL, random moment\) \| (\d+) \|", text).group(1))
    runs = int(re.search(r"\| runs \(the last finished by itself\) \| (\d+) \|", text).group(1))
    assert kills >= 1 and runs == kills + 1
