"""Shared fixtures. Tests run on CPU with a fixed thread count so timings and results are stable."""

import os

import pytest
import torch

# One intra-op thread per test worker: two workers share two cores, and oversubscribed OpenMP
# threads stall each other (a tiny training step went from under 1 ms to 250 ms).
torch.set_num_threads(1)


@pytest.fixture
def seeded():
    torch.manual_seed(0)
    return torch.Generator().manual_seed(0)


def run_cli(*args: str, cwd=None, env=None, timeout: float = 600):
    """Run the real `autocnn` console script in a subprocess (as users do)."""
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("autocnn")
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([str(exe), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli(tmp_path):
    """`cli(*args)` runs autocnn in tmp_path with a study storage of its own."""
    storage = f"sqlite:///{tmp_path / 'studies.db'}"

    def invoke(*args: str, storage_arg: bool = True, **kwargs):
        extra = ("--storage", storage) if storage_arg else ()
        return run_cli(*args, *extra, cwd=kwargs.pop("cwd", tmp_path), **kwargs)

    invoke.storage = storage
    invoke.path = tmp_path
    return invoke


def assert_user_error(result, *fragments: str) -> None:
    """Exit 2, one line on stderr naming the problem, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
