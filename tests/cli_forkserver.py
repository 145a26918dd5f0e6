"""`autocnn` command lines for tests without paying Python's and torch's start-up each time.

A server process imports `autocnn.cli` once, as the console script does, and forks a child for each
command line; the child takes the caller's working directory, environment, argv, stdin (/dev/null) and
output files and runs `sys.exit(main())` as the console script does, ended as the interpreter ends a
process (threads joined, exit handlers run, garbage finalised, an uncaught exception printed with status 1).
Each command thus runs in a process of its own, with a real exit status and real stdout/stderr; what it
skips is the same for every command: the start-up (3-5 s of imports, most of a refusal's run time) and
the teardown of the imported modules at exit (0.8 s in a forked child). Values a module reads from the
environment at import time are the server's: `run` keeps one server per set of extra variables it is
given, AUTOCNN_* ones aside (autocnn reads those when it uses them, never at import). Set
AUTOCNN_TESTS_EXEC=1 to start the console script afresh for every command instead.

Server: `python cli_forkserver.py SOCKET`; one JSON request per connection, answered with one JSON line:
the command's exit status (negative: killed by that signal) and whether it ran past its timeout.
"""
from __future__ import annotations

import atexit
import gc
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

EXEC_ENV = "AUTOCNN_TESTS_EXEC"


# -- the server (its own process) -------------------------------------------------------------------

def _become(request: dict) -> None:
    """In the forked command: the caller's process group of its own, cwd, environment, argv and files."""
    os.setpgid(0, 0)  # a timeout kills the command and whatever it started
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY),
                            (2, request["stderr"], os.O_WRONLY)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    sys.argv = [request["argv"][0].removesuffix(".exe"), *request["argv"][1:]]


def _handle(conn: socket.socket) -> dict | None:
    """In a forked handler: fork the command, wait for it (killing it past its timeout), report its exit
    status. Returns the request in the forked command, None in the handler once it has reported."""
    with conn, conn.makefile("rw") as stream:
        request = json.loads(stream.readline())
        pid = os.fork()
        if pid == 0:
            return request
        # past the timeout the whole group is killed while the command is still unreaped (its pid and
        # group cannot have been reused), as subprocess.run(timeout=...) kills its child
        exited = os.pidfd_open(pid)
        try:
            timed_out = not select.select([exited], [], [], request["timeout"])[0]
            if timed_out:
                os.killpg(pid, signal.SIGKILL)
        finally:
            os.close(exited)
        _, status = os.waitpid(pid, 0)
        stream.write(json.dumps({"status": os.waitstatus_to_exitcode(status), "timed_out": timed_out}) + "\n")
        stream.flush()
    return None


def _reap() -> None:
    """Wait for finished handlers (and so for their commands): their CPU time then counts in this
    server's, and the server's in the test process's, as a command's would when run directly."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def serve(path: str) -> dict:
    """Accept requests until the test process is gone; returns only in a forked command (its request)."""
    import importlib

    import autocnn.cli

    for module in set(autocnn.cli.COMMANDS.values()):  # every command's imports, done once (the CLI loads them lazily)
        importlib.import_module(module)
    # Lazily imported by commands that train: every torch optimizer's first construction imports torch._dynamo
    # (torch._compile._disable_dynamo; 2-3 s on a CI core), and a --backend ray driver imports Ray Tune.
    for module in ("torch._dynamo", "ray.tune"):
        try:
            importlib.import_module(module)
        except ImportError:  # Ray is an extra
            pass
    # What the imports built lives as long as any process would keep it: frozen, the commands' collections
    # (and the interpreter's final one at their exit) skip it instead of writing to every inherited page,
    # which made each command's exit cost 0.9 s of copy-on-write faults (0.35 s frozen).
    gc.collect()
    gc.freeze()

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    listener.settimeout(2.0)
    parent = os.getppid()
    print("ready", flush=True)
    while os.getppid() == parent:
        _reap()
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        if os.fork() == 0:
            listener.close()
            conn.settimeout(None)
            try:
                request = _handle(conn)
            except BaseException:  # noqa: BLE001 - a handler never returns into the server's loop
                traceback.print_exc()
                os._exit(1)
            if request is None:
                os._exit(0)
            return request
        conn.close()
    sys.exit(0)


# -- the client (in the test process) ---------------------------------------------------------------

class _Server:
    def __init__(self, env: dict) -> None:
        self.folder = tempfile.mkdtemp(prefix="autocnn-cli-")
        self.socket = os.path.join(self.folder, "s")
        self.proc = subprocess.Popen([sys.executable, __file__, self.socket], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the autocnn fork server did not start (exit {self.proc.wait()})")

    def run(self, argv: list[str], cwd: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
        out, err = self._output_file(), self._output_file()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.connect(self.socket)
                with conn.makefile("rw") as stream:
                    stream.write(json.dumps({"argv": argv, "cwd": cwd, "env": env, "stdout": str(out),
                                             "stderr": str(err), "timeout": timeout}) + "\n")
                    stream.flush()
                    answer = json.loads(stream.readline() or '{"status": null}')
            if answer["status"] is None:
                raise RuntimeError("the autocnn fork server dropped a command")
            if answer["timed_out"]:
                raise subprocess.TimeoutExpired(argv, timeout, out.read_text(errors="replace"),
                                                err.read_text(errors="replace"))
            return subprocess.CompletedProcess(argv, answer["status"], out.read_text(), err.read_text())
        finally:
            out.unlink(missing_ok=True)
            err.unlink(missing_ok=True)

    def _output_file(self) -> Path:
        fd, name = tempfile.mkstemp(dir=self.folder)
        os.close(fd)
        return Path(name)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for name in os.listdir(self.folder):
            os.unlink(os.path.join(self.folder, name))
        os.rmdir(self.folder)


_SERVERS: dict[tuple, _Server] = {}  # most recently used last
_USERS: dict[tuple, int] = {}  # commands running on each server now (tests may run several in threads)
_LOCK = threading.Lock()
MAX_SERVERS = 2  # each holds the imports in memory (~0.5 GB): the least recently used idle one goes


def _acquire(key: tuple, env: dict) -> _Server:
    with _LOCK:
        server = _SERVERS.pop(key, None)
        if server is None:
            if not _SERVERS and not _USERS:
                atexit.register(lambda: [s.close() for s in _SERVERS.values()])
            idle = [k for k in _SERVERS if not _USERS.get(k)]
            for old in idle[:max(0, len(_SERVERS) + 1 - MAX_SERVERS)]:
                _SERVERS.pop(old).close()
            server = _Server(env)
        _SERVERS[key] = server
        _USERS[key] = _USERS.get(key, 0) + 1
        return server


def run(exe: str, args: tuple[str, ...], cwd, env: dict, extra: dict, timeout: float) -> subprocess.CompletedProcess:
    """`exe ARGS` (the autocnn console script) to the end with output captured, as `subprocess.run`
    would run it; through a fork server unless AUTOCNN_TESTS_EXEC=1. `env` is the whole environment,
    `extra` the variables the caller added (a server per distinct set, see the module doc)."""
    if os.environ.get(EXEC_ENV) == "1":
        return subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    key = tuple(sorted((name, value) for name, value in extra.items() if not name.startswith("AUTOCNN_")))
    server = _acquire(key, env)
    try:
        return server.run([exe, *args], str(cwd or os.getcwd()), env, timeout)
    finally:
        with _LOCK:
            _USERS[key] -= 1


def _exit_status(code) -> int:
    """What the interpreter makes of `SystemExit(code)`: None is 0, an int itself, anything else is
    printed to stderr and is 1."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def _run_and_exit(main) -> None:
    """`sys.exit(main())` as the console script's last line, ended as the interpreter ends a process
    (an uncaught exception printed with status 1, non-daemon threads joined, exit handlers run, garbage
    finalised, output flushed), except for tearing down the modules the server imported: in a forked child
    that writes to every inherited page (0.8 s a command, most of a refusal's run time). The real
    console script's exit is what the tests that start `autocnn` with Popen run."""
    try:
        status = _exit_status(main())
    except SystemExit as exit_:
        status = _exit_status(exit_.code)
    except BaseException:  # noqa: BLE001 - printed as the interpreter prints an uncaught exception
        sys.excepthook(*sys.exc_info())
        status = 1
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    gc.collect()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


if __name__ == "__main__":
    sys.path[0] = os.path.dirname(sys.executable)  # the console script's folder, not tests/
    _become(serve(sys.argv[1]))
    from autocnn.cli import main

    _run_and_exit(main)
