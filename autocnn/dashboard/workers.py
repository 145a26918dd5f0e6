"""Search workers started and stopped by the dashboard.

One worker per study: Resume takes the study's worker lease (`autocnn.worker`) with an atomic
compare-and-swap (`control.claim_lease`), under a lock held in this process, and only the winner
spawns `python -m autocnn search --resume --study NAME` (list arguments, no shell, the storage URL
in $AUTOCNN_STORAGE, its own session, log in the study's artifact folder). The worker's `engine.drive` rewrites the lease
with its own pid and clears it on exit. A lease counts as held while its process is alive, so a
second click, a second request thread or a second dashboard on the same storage gets 409.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Callable

import optuna

from autocnn.dashboard.state import DashboardError, StudyView, inspect
from autocnn.search import control

MAX_TRIALS = 1_000_000
STARTING_TIMEOUT_S = 900  # a worker that has not reached its first trial by then is not waited for


def worker_command(name: str, trials: int | None, backend: str = "local") -> list[str]:
    """The worker's argv (never a shell). The storage URL is not in it: it may hold a password, and
    every local user can read a process's arguments (`ps`); `worker_env` passes it. A Ray study resumes on Ray with the options stored in it,
    its cluster address included, so its trials are submitted to that cluster again."""
    cmd = [sys.executable, "-m", "autocnn", "search", "--resume", "--study", name]
    if backend == "ray":
        cmd += ["--backend", "ray"]
    if trials is not None:
        cmd += ["--trials", str(trials)]
    return cmd


def worker_env(storage_url: str) -> dict[str, str]:
    """The worker's environment: this process's, plus the storage as $AUTOCNN_STORAGE (readable by the
    same user only, unlike the arguments)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "AUTOCNN_STORAGE": storage_url}


class Workers:
    """The workers this dashboard process started, and the lease protocol around them."""

    def __init__(self, storage, storage_url: str, artifact_dir: Callable[[str], Path]) -> None:
        self.storage = storage
        self.storage_url = storage_url
        self.artifact_dir = artifact_dir
        self._lock = threading.Lock()
        self._procs: dict[str, subprocess.Popen] = {}

    def reap(self) -> None:
        """Collect exited children (a zombie would still answer kill(pid, 0))."""
        for name, proc in list(self._procs.items()):
            if proc.poll() is not None:
                del self._procs[name]

    def owned_alive(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    def _study_id(self, name: str) -> int:
        try:
            return self.storage.get_study_id_from_name(name)
        except KeyError:
            raise DashboardError(404, f"no study named {name!r} in this storage") from None

    def inspect(self, name: str) -> StudyView:
        self.reap()
        return inspect(self.storage, name, owned_alive=self.owned_alive(name))

    def resume(self, name: str, trials: int | None = None) -> dict:
        """Start one worker for `name` (409 when one is alive or there is nothing to do)."""
        if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int)
                                   or not 1 <= trials <= MAX_TRIALS):
            raise DashboardError(400, f"'trials' must be an integer from 1 to {MAX_TRIALS}, got {trials!r}")
        with self._lock:
            study_id = self._study_id(name)
            # read before judging liveness: the swap below then fails if anyone changed the lease since
            expected = control.read_lease(self.storage, study_id)
            view = self.inspect(name)
            if view.config is None:
                raise DashboardError(409, f"study {name!r} was not created by autocnn; it has no configuration to resume")
            if view.state == "running":
                lease = view.lease or {}
                wait = (f"; resumable in at most {math.ceil(view.resumable_in_s)} s if it is gone"
                        if view.resumable_in_s is not None else "")
                raise DashboardError(409, f"study {name!r} already has a running worker"
                                          f"{' (pid %s on %s)' % (lease.get('pid'), lease.get('host')) if lease else ''}"
                                          f"{wait}")
            budget = max(view.requested or 0, trials or 0)
            if view.finished >= budget:
                raise DashboardError(409, f"study {name!r} is finished ({view.finished}/{view.requested} trials); "
                                          "raise the budget to continue it")
            claim = control.new_lease("starting", claim=uuid.uuid4().hex, owner="dashboard")
            if not control.claim_lease(self.storage, view.study_id, expected, claim):
                raise DashboardError(409, f"another process is starting a worker for study {name!r}")
            control.reclaim_dead_worker(self.storage, view)  # a killed local worker's trials: failed, requeued
            try:
                raised = trials if trials is not None and trials > (view.requested or 0) else None
                proc = self._spawn(worker_command(name, raised, view.config.backend), name)
            except OSError as err:
                control.claim_lease(self.storage, view.study_id, claim, None)
                raise DashboardError(500, f"could not start a worker for {name!r}: {err.strerror or err}") from None
            lease = {**claim, "pid": proc.pid, "since": datetime.now().isoformat(timespec="seconds")}
            control.claim_lease(self.storage, view.study_id, claim, lease)  # loses only to the worker's own lease
            self._procs[name] = proc
            return {"started": True, "worker": lease, "requested": budget,
                    "log": str(self.artifact_dir(name) / "worker.log")}

    def _spawn(self, cmd: list[str], name: str) -> subprocess.Popen:
        folder = self.artifact_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "worker.log", "ab") as log:
            log.write(f"\n--- {datetime.now().isoformat(timespec='seconds')} resumed from the dashboard\n".encode())
            log.flush()
            return subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, env=worker_env(self.storage_url), start_new_session=True,
                                    close_fds=True)

    def stop(self, name: str) -> dict:
        """Ask the study's workers to stop after their running trial; returns at once.

        A worker still starting (lease phase "starting": it has not reached `engine.drive`, which
        clears old stop requests) gets the request again as soon as it takes the lease itself, so
        it stops after its first trial instead of missing the request.
        """
        with self._lock:  # ordered with resume: a worker it started is seen here as "starting"
            view = self.inspect(name)
            if view.config is None:
                raise DashboardError(409, f"study {name!r} was not created by autocnn; its workers cannot be asked to stop")
            control.request_stop(optuna.load_study(study_name=name, storage=self.storage))
            if (view.lease or {}).get("phase") == "starting":
                threading.Thread(target=self._stop_when_started, args=(name, view.study_id), daemon=True,
                                 name=f"autocnn-stop-{name}").start()
        return {"stop_requested": True, "was_running": view.state == "running"}

    def _stop_when_started(self, name: str, study_id: int) -> None:
        deadline = time.monotonic() + STARTING_TIMEOUT_S
        while time.monotonic() < deadline:
            raw = control.read_lease(self.storage, study_id)
            current = json.loads(raw) if raw else None
            if not isinstance(current, dict) or current.get("phase") != "starting":
                if current is not None:  # the worker has reset the stop flag and holds the lease: ask again
                    control.request_stop(optuna.load_study(study_name=name, storage=self.storage))
                return
            if current.get("host") == control.HOST and not control.pid_alive(current.get("pid"),
                                                                              current.get("since")):
                return
            time.sleep(0.2)
