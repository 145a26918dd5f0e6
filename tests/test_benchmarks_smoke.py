"""The benchmark scripts run end to end in their tiny mode and fill every section with numbers.

No timing is asserted: `--smoke` runs a few steps/trials per benchmark into a temporary file
(never the repository's BENCHMARKS.md) just to prove the scripts and the section plumbing work.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
SECTIONS = ("summary", "trainer", "overhead", "pruning", "memory", "gpu_packing", "data")


def section(text: str, name: str) -> str:
    match = re.search(rf"<!-- bench:{name} -->\n(.*?)\n<!-- /bench:{name} -->", text, re.S)
    assert match, f"section {name!r} missing"
    return match.group(1)


@pytest.mark.slow
def test_bench_all_smoke_writes_every_section(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    repo_file = ROOT / "BENCHMARKS.md"
    before = repo_file.read_text() if repo_file.exists() else None
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AUTOCNN_BENCH_FILE": str(tmp_path / "not-this-one.md"),
           "TMPDIR": str(tmp_path)}  # bench_all keeps its logs folder for the reader: not in the machine's /tmp
    result = subprocess.run([sys.executable, str(SCRIPTS / "bench_all.py"), "--smoke", "--threads", "1",
                             "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = out.read_text()
    for name in SECTIONS:
        body = section(text, name)
        assert body.lstrip().startswith("## "), name
        assert "machine:" in body and "command:" in body, name
        assert re.search(r"\d", body.split("\n", 1)[1]), f"section {name!r} has no numbers"
    for name in ("trainer", "overhead", "pruning", "memory", "data"):
        assert re.search(r"\|\s*\**\d[\d.,]*×?\**\s*\|", section(text, name)), f"no figures in {name!r}"
    assert "crashed" not in section(text, "summary")
    assert not (tmp_path / "not-this-one.md").exists()  # --out wins over the environment
    assert (repo_file.read_text() if repo_file.exists() else None) == before  # the repository's file is untouched


def test_write_section_replaces_only_its_own_block(tmp_path):
    sys.path.insert(0, str(SCRIPTS))
    try:
        import benchlib
    finally:
        sys.path.remove(str(SCRIPTS))
    path = tmp_path / "B.md"
    benchlib.write_section("a", "## A\n\nfirst", path)
    benchlib.write_section("b", "## B\n\nsecond", path)
    text = path.read_text().replace("second", "second\n\nhand-written note") + "\nfree text after\n"
    path.write_text(text)
    benchlib.write_section("a", "## A\n\nreplaced", path)
    new = path.read_text()
    assert benchlib.read_section("a", path) == "## A\n\nreplaced"
    assert "hand-written note" in new and "free text after" in new and "first" not in new
    assert new.index("<!-- bench:a -->") < new.index("<!-- bench:b -->")  # sections keep their place
    with pytest.raises(ValueError):
        benchlib.write_section("bad name", "x", path)
