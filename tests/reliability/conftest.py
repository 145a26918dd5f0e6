"""Reliability tests: shared helpers and a real PostgreSQL server.

Every test here drives the real `autocnn` console script in subprocesses, on real sqlite files or the
PostgreSQL server below; nothing is mocked. Trials are tiny (tests/search/tiny_space.yaml, 200
digits at 12 px, 2 epochs) so the directory runs in a few minutes on two cores.
"""
from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import optuna
import pytest

TESTS = Path(__file__).resolve().parents[1]
TINY_SPACE = str(TESTS / "search" / "tiny_space.yaml")
FAST = ("--space", TINY_SPACE, "--dataset", "digits", "--limit", "200", "--epochs", "2", "--resolution", "12",
        "--batch-size", "32", "--pruner", "none")


def _root_helpers() -> dict:
    """The root conftest's plain helpers (run_cli, assert_user_error, ...), re-exported here.

    pytest imports every conftest.py that is not in a package as the module `conftest`, so after this
    file is collected, `from conftest import run_cli` in any test module may resolve to this one.
    """
    spec = importlib.util.spec_from_file_location("_autocnn_root_conftest", TESTS / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name: value for name, value in vars(module).items()
            if not name.startswith("_") and not isinstance(value, types.ModuleType)
            and not hasattr(value, "_fixture_function_marker")}


globals().update(_root_helpers())


# -- processes -------------------------------------------------------------------------------------

def autocnn_exe() -> str:
    return str(Path(sys.executable).with_name("autocnn"))


def cli_env(**extra: str) -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra}


def start_cli(*args: str, cwd, env: dict | None = None, **popen) -> subprocess.Popen:
    """`autocnn ARGS` in the background, stdout and stderr captured as text."""
    return subprocess.Popen([autocnn_exe(), *args], cwd=cwd, env=env or cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def kill9(proc: subprocess.Popen) -> str:
    """SIGKILL (no cleanup of any kind runs), then the stderr it wrote."""
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, err[-2000:])
    return err


def wait_for(predicate, timeout: float = 180.0, interval: float = 0.25, what: str = "a condition",
             proc: subprocess.Popen | None = None):
    """Poll until `predicate()` is truthy (returned); fails if `proc` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the process ended (rc {proc.returncode}) before {what}:\n{err[-3000:]}")
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# -- studies ---------------------------------------------------------------------------------------

def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def load_trials(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials, or [] while it does not exist yet (read without a heartbeat or any write)."""
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    except KeyError:
        return []


def snapshot(*roots: Path) -> dict:
    """Every file and folder under `roots`: path -> (size, mtime_ns, sha1) for files, "dir" for folders."""
    state = {}
    for root in roots:
        root = Path(root)
        if not root.exists():
            continue
        for path in sorted([root, *root.rglob("*")]):
            if path.is_dir():
                state[str(path)] = "dir"
            else:
                stat = path.stat()
                state[str(path)] = (stat.st_size, stat.st_mtime_ns, hashlib.sha1(path.read_bytes()).hexdigest())
    return state


# -- PostgreSQL ------------------------------------------------------------------------------------

def _pg_bin() -> Path | None:
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if Path(folder, "initdb").exists() and Path(folder, "pg_ctl").exists():
            return Path(folder)
    initdb = shutil.which("initdb")
    return Path(os.path.realpath(initdb)).parent if initdb and shutil.which("pg_ctl") else None


def _install_postgresql() -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail("PostgreSQL (initdb, pg_ctl) is not installed and cannot be installed here: "
                    "install the Debian package 'postgresql' (apt-get install postgresql)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            pytest.fail(f"'{' '.join(cmd)}' failed; install PostgreSQL by hand:\n{done.stderr[-2000:]}")


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL cluster on 127.0.0.1 (free port, socket in a temp dir), one database.

    Installs the Debian package `postgresql` with apt-get when initdb is missing. PostgreSQL refuses
    to run as root, so as root the cluster belongs to the package's `postgres` user.
    """
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.fail("the PostgreSQL tests need psycopg2: pip install psycopg2-binary (part of the dev extra)")
    bindir = _pg_bin()
    if bindir is None:
        _install_postgresql()
        bindir = _pg_bin()
        if bindir is None:
            pytest.fail("apt-get installed postgresql but no initdb/pg_ctl was found under /usr/lib/postgresql")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="autocnn-pg-"))  # short: the unix socket path lives under it
    if os.geteuid() == 0:
        try:
            import pwd

            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root needs the 'postgres' system user (created by the postgresql package)")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()  # noqa: F821 - from the root conftest (above)

    def pg(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120, cwd=root)
        if check and done.returncode != 0:
            log = (root / "server.log").read_text(errors="replace")[-2000:] if (root / "server.log").exists() else ""
            pytest.fail(f"{' '.join(cmd)} failed:\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}\n{log}")
        return done

    pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=60"
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-o", options, "-w", "-t", "60", "start")
    try:
        pg(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "autocnn")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/autocnn"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)
