"""A Ray worker's checkpoint folder does not outlive its process: removed at a normal exit, and a killed
worker's removed by the next worker on the host (`autocnn.search.ray.worker.scratch_folder`)."""
import os
import signal
import socket
import subprocess
import sys
import tempfile

import pytest

pytest.importorskip("ray")

from autocnn.search.ray import worker  # noqa: E402

# One checkpoint written from the worker's folder, as `_report` writes it; then wait or exit as told on stdin.
CHILD = """
import sys, torch
from autocnn.search.ray.worker import scratch_folder
folder = scratch_folder()
torch.save({"epoch": 1}, folder / "state.pt")
print(folder, flush=True)
sys.stdin.readline()
"""


def test_a_killed_workers_folder_is_removed_by_the_next_and_a_normal_exit_removes_its_own(tmp_path, monkeypatch):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    killed, exiting = (subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True) for _ in range(2))
    killed_folder = tmp_path / killed.stdout.readline().strip().rsplit("/", 1)[-1]
    exiting_folder = tmp_path / exiting.stdout.readline().strip().rsplit("/", 1)[-1]
    assert (killed_folder / "state.pt").is_file() and (exiting_folder / "state.pt").is_file()

    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    exiting.communicate("\n", timeout=30)
    assert exiting.returncode == 0
    assert not exiting_folder.exists()  # atexit: its own folder goes with it
    assert killed_folder.exists()  # nothing ran in the killed one

    # another host's folder with a dead pid, and a live process's, are not this worker's to remove
    host = socket.gethostname()
    foreign = tmp_path / f"{worker.SCRATCH_PREFIX}{host}x-{killed.pid}"
    live = tmp_path / f"{worker.SCRATCH_PREFIX}{host}-{os.getppid()}"
    foreign.mkdir()
    live.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(worker, "_scratch_of", {})
    own = worker.scratch_folder()
    assert own == tmp_path / f"{worker.SCRATCH_PREFIX}{host}-{os.getpid()}" and own.is_dir()
    assert worker.scratch_folder() == own  # one per process, rewritten by every report
    assert not killed_folder.exists()
    assert foreign.exists() and live.exists()
