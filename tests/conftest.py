"""Shared fixtures. Tests run on CPU with a fixed thread count so timings and results are stable."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

import cli_forkserver

# Decoded image caches (autocnn.data.cache) of this test session, in and under it, never in the user's ~/.cache;
# CLI subprocesses inherit the variable.
if "AUTOCNN_CACHE_DIR" not in os.environ:
    os.environ["AUTOCNN_CACHE_DIR"] = tempfile.mkdtemp(prefix="autocnn-test-cache-")
    import atexit

    atexit.register(shutil.rmtree, os.environ["AUTOCNN_CACHE_DIR"], True)

# One intra-op thread per test worker: two workers share two cores, and oversubscribed OpenMP
# threads stall each other (a tiny training step went from under 1 ms to 250 ms).
torch.set_num_threads(1)

# A killed worker's trial goes stale after 3 s instead of 15 (autocnn.storage reads these).
QUICK_HEARTBEAT = {"AUTOCNN_HEARTBEAT_INTERVAL": "1", "AUTOCNN_HEARTBEAT_GRACE": "3"}


def write_multilabel(root: Path, n: int = 60) -> None:
    """images/ + labels.csv; each image's colour channels spell its labels, so it is learnable."""
    import csv

    import numpy as np
    from PIL import Image

    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "labels"])
        for i in range(n):
            on = rng.random(3) < 0.5
            Image.new("RGB", (8, 8), tuple(int(255 * v) for v in on)).save(root / "images" / f"{i}.png")
            w.writerow([f"{i}.png", " ".join(c for c, v in zip(("red", "green", "blue"), on) if v)])


@pytest.fixture
def seeded():
    torch.manual_seed(0)
    return torch.Generator().manual_seed(0)


def run_cli(*args: str, cwd=None, env=None, timeout: float = 600):
    """Run the real `autocnn` console script to the end in a process of its own (as users do), forked
    from a process that has done its imports (tests/cli_forkserver.py); output captured as text."""
    exe = str(Path(sys.executable).with_name("autocnn"))
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return cli_forkserver.run(exe, args, cwd, full_env, env or {}, timeout)


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for servers a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster():
    """A real Ray head on 127.0.0.1 with 4 CPUs and 2 logical GPUs (Ray hands out GPU ids on a CPU-only
    machine), started once per test session by `ray start --head --block` in its own process group,
    every port picked free so parallel sessions never clash; yields its address for `--address`.

    A driver a test kills (`autocnn search --backend ray --address ...`) leaves the cluster running and
    Ray reaps its trial actors, as on a real cluster whose head outlives a crashed driver.
    """
    pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as env:
        # Ray 2.5x turns token authentication on for `ray start` once ~/.ray/auth_token exists (a local
        # ray.init() writes one) but not for `ray status`: a test cluster on 127.0.0.1 runs without it,
        # for the head and for every client started from this process.
        env.setenv("RAY_AUTH_MODE", "disabled")
        yield from _ray_head()


def _ray_head():
    ray = str(Path(sys.executable).with_name("ray"))
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths live under it
    port = free_port()
    ports = [x for flag in ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                            "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port")
             for x in (flag, str(free_port()))]
    log = open(Path(temp) / "head.log", "w")
    # no idle workers started ahead of a driver's first task: Ray starts two when the first driver connects and
    # keeps them all session (each ~1 s of imports, then ~1% of a core), though every job starts its own
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_prestart_worker_first_driver": "0", "RAY_enable_worker_prestart": "0"}
    head = subprocess.Popen([ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
                             "--num-cpus", "4", "--num-gpus", "2", "--include-dashboard=false",
                             "--include-log-monitor=false", "--disable-usage-stats", "--temp-dir", temp, *ports],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            preexec_fn=_stop_when_parent_dies)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while (status := subprocess.run([ray, "status", "--address", address], capture_output=True, text=True)).returncode:
        if head.poll() is not None or time.monotonic() > deadline:
            _stop_ray_head(head)
            pytest.fail(f"the Ray head did not start:\n{(Path(temp) / 'head.log').read_text()[-2000:]}\n"
                        f"ray status: {status.stderr[-1500:]}")
        time.sleep(0.5)
    try:
        yield address
    finally:
        _stop_ray_head(head)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _stop_when_parent_dies() -> None:
    """In the forked `ray start` (Linux): SIGTERM when the test process dies, even by SIGKILL, so a killed
    pytest run does not leave its head behind (`ray start --block` stops what it started on SIGTERM)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop_ray_head(head: subprocess.Popen) -> None:
    head.terminate()  # `ray start --block` stops the processes it started
    try:
        head.wait(5)  # after a busy session it has taken over 30 s; what is left is killed below
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(head.pid, signal.SIGKILL)  # anything left in the head's own session
    except ProcessLookupError:
        pass
