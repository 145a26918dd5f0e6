"""What the dashboard shows about a study, read from the storage alone.

A study's state is one of running / stopped / finished / failed. "running" means a live worker: the
process named by the study's worker lease (`autocnn.worker`, written by `engine.drive`) is alive on
this host, or, for a worker elsewhere, trials are RUNNING with fresh heartbeats. Because everything
is read from the storage, a restarted dashboard sees exactly what the old one saw.
"""
from __future__ import annotations

import math
import os
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autocnn.errors import AutocnnError
from autocnn.search import records
from autocnn.search.config import CONFIG_ATTR, SearchConfig
from autocnn.search.control import STOP_ATTR, WORKER_ATTR, counts_toward_budget

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
HOST = socket.gethostname()
# A lease written on another host cannot be checked by pid: it counts as alive while it is this young
# or while the study has RUNNING trials with fresh heartbeats.
REMOTE_LEASE_GRACE_S = 120
PID_START_SLACK_S = 2  # lease times have whole seconds; boot time and clock ticks round too
STATES = ("running", "stopped", "finished", "failed")
GIVE_UP_FAILURES = 3  # engine.drive stops after three rounds in which every trial failed


class DashboardError(AutocnnError):
    """A request the dashboard refuses; `status` is the HTTP status it maps to."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_name(name: str) -> str:
    """A study name the dashboard may act on: letters, digits, `_ . -`, not starting with `.` or `-`."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise DashboardError(400, f"malformed study name {name!r}: use 1-128 letters, digits, '_', '.' or '-', "
                                  "starting with a letter or digit")
    return name


def pid_alive(pid: Any, since: Any = None) -> bool:
    """A live, non-zombie process with this pid on this host that already existed at `since` (the
    lease's ISO time): a process started later got a recycled pid, and the lease's own is gone."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True  # no /proc (not Linux): trust kill(pid, 0)
    if fields[0] in ("Z", "X"):
        return False
    try:
        lease_time = datetime.fromisoformat(since).timestamp()
    except (TypeError, ValueError):
        return True
    return _process_start(int(fields[19])) <= lease_time + PID_START_SLACK_S


def _process_start(ticks: int) -> float:
    """Epoch seconds of a process start given /proc/<pid>/stat's starttime (clock ticks since boot)."""
    boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime "))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _age_s(stamp: Any) -> float:
    try:
        return (datetime.now() - datetime.fromisoformat(stamp)).total_seconds()
    except (TypeError, ValueError):
        return math.inf


@dataclass
class StudyView:
    """One study as the dashboard sees it: trials by state, the worker lease and the derived state."""

    name: str
    study_id: int
    config: SearchConfig | None
    directions: list[str]
    trials: list[FrozenTrial]
    user_attrs: dict[str, Any]
    fresh_running: int = 0
    unknown_running: int = 0
    stale_running: int = 0
    lease_alive: bool = False
    state: str = "stopped"
    counts: dict[str, int] = field(default_factory=dict)
    finished: int = 0  # trials that used the budget (constraint-rejected candidates cost nothing)

    @property
    def lease(self) -> dict | None:
        lease = self.user_attrs.get(WORKER_ATTR)
        return lease if isinstance(lease, dict) else None

    @property
    def requested(self) -> int | None:
        return self.config.trials if self.config else None


def lease_alive(lease: dict | None, *, fresh_running: int, unknown_running: int) -> bool:
    if not lease:
        return False
    if lease.get("host") == HOST:
        return pid_alive(lease.get("pid"), lease.get("since"))
    return fresh_running > 0 or unknown_running > 0 or _age_s(lease.get("since")) < REMOTE_LEASE_GRACE_S


def inspect(storage, name: str, *, owned_alive: bool = False) -> StudyView:
    """Load `name` and work out its state; `owned_alive`: this dashboard's own worker for it is alive."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        raise DashboardError(404, f"no study named {name!r} in this storage") from None
    user_attrs = storage.get_study_user_attrs(study_id)
    raw = user_attrs.get(CONFIG_ATTR)
    try:
        config = SearchConfig.from_dict(raw) if isinstance(raw, dict) else None
    except (AutocnnError, TypeError):
        config = None
    trials = storage.get_all_trials(study_id, deepcopy=False)
    view = StudyView(name=name, study_id=study_id, config=config, trials=trials, user_attrs=user_attrs,
                     directions=[d.name.lower() for d in storage.get_study_directions(study_id)])
    view.counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    view.counts["rejected"] = sum(t.state == TrialState.PRUNED and records.REJECTED in t.user_attrs for t in trials)
    view.finished = sum(counts_toward_budget(t) for t in trials)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    if running:
        stale = set(storage._get_stale_trial_ids(study_id)) if storage.get_heartbeat_interval() else set()
        with_heartbeat = _trials_with_heartbeat(storage, [t._trial_id for t in running])
        view.stale_running = sum(t._trial_id in stale for t in running)
        view.unknown_running = sum(t._trial_id not in with_heartbeat for t in running)
        view.fresh_running = len(running) - view.stale_running - view.unknown_running
    view.lease_alive = owned_alive or lease_alive(view.lease, fresh_running=view.fresh_running,
                                                  unknown_running=view.unknown_running)
    view.state = _derive_state(view)
    return view


def _trials_with_heartbeat(storage, trial_ids: list[int]) -> set[int]:
    from optuna.storages._rdb import models

    with storage.engine.connect() as con:
        table = models.TrialHeartbeatModel.__table__
        rows = con.execute(table.select().with_only_columns(table.c.trial_id).where(table.c.trial_id.in_(trial_ids)))
        return {row[0] for row in rows}


def _derive_state(view: StudyView) -> str:
    # RUNNING trials without a heartbeat row (Ray's ask/tell) prove a worker only if no lease says
    # otherwise: a study that never had a lease (older autocnn, plain Optuna) is trusted.
    never_leased = WORKER_ATTR not in view.user_attrs
    if view.lease_alive or view.fresh_running or (view.unknown_running and never_leased):
        return "running"
    if view.requested is not None and view.finished >= view.requested:
        return "finished"
    if view.stale_running or view.unknown_running or (view.lease is not None):
        return "failed"  # the worker died (killed, out of memory) without clearing its lease or its trials
    last = sorted(view.trials, key=lambda t: t.number)[-GIVE_UP_FAILURES:]
    if len(last) == GIVE_UP_FAILURES and all(t.state == TrialState.FAIL for t in last):
        return "failed"  # the engine gives up after repeated failures
    return "stopped"  # stop request, Ctrl-C, timeout, or never started


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _best(view: StudyView) -> tuple[float | None, int | None, list[FrozenTrial]]:
    """(best first-objective value, Pareto size or None, best trials best-first)."""
    complete = [t for t in view.trials if t.state == TrialState.COMPLETE and t.values]
    if not complete:
        return None, (0 if len(view.directions) > 1 else None), []
    if len(view.directions) > 1:
        signs = [-1 if d == "maximize" else 1 for d in view.directions]
        losses = {t.number: [s * v for s, v in zip(signs, t.values)] for t in complete}

        def dominated(a: list[float]) -> bool:
            return any(all(x <= y for x, y in zip(b, a)) and b != a for b in losses.values())

        front = [t for t in complete if not dominated(losses[t.number])]
        sign = signs[0]
        front = sorted(front, key=lambda t: sign * t.values[0])
        return front[0].values[0], len(front), front
    sign = -1 if view.directions[0] == "maximize" else 1
    ranked = sorted(complete, key=lambda t: sign * t.values[0])
    return ranked[0].values[0], None, ranked


def row(view: StudyView) -> dict[str, Any]:
    """The studies-page row (and `GET /api/autocnn/studies` item) for one study."""
    config = view.config
    best, pareto, _ = _best(view)
    stamps = [t.datetime_complete or t.datetime_start for t in view.trials if t.datetime_start]
    lease = view.lease
    ray = (config.extra or {}).get("ray", {}) if config else {}
    return {
        "name": view.name, "study_id": view.study_id, "autocnn": config is not None,
        "controllable": config is not None and bool(NAME_PATTERN.match(view.name)),
        "state": view.state, "space": config.space.split(":")[0] if config else None,
        "dataset": config.dataset if config else None, "backend": config.backend if config else None,
        "ray_address": ray.get("address") if isinstance(ray, dict) else None,
        "objectives": list(config.objectives) if config else None, "directions": view.directions,
        "complete": view.counts.get("complete", 0), "pruned": view.counts.get("pruned", 0),
        "rejected": view.counts["rejected"], "failed": view.counts.get("fail", 0),
        "running": view.counts.get("running", 0),
        "finished": view.finished, "requested": view.requested,
        "best": _finite(best), "pareto_size": pareto,
        "last_activity": max(stamps).isoformat(timespec="seconds") if stamps else None,
        "stop_requested": bool(view.user_attrs.get(STOP_ATTR)),
        "worker": ({**lease, "alive": view.lease_alive} if lease else None),
    }


def list_studies(storage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def _stage_rows(genotype_dict: dict) -> list[dict[str, Any]]:
    from autocnn.genotype import Genotype

    g = Genotype.from_dict(genotype_dict)
    out = []
    for section, specs in (("stem", g.stem), ("body", g.stages)):
        for i, s in enumerate(specs):
            out.append({"section": section, "index": i, "block": s.block, "attention": s.attention,
                        "ratio": s.ratio if s.attention != "none" else None, "conv": s.conv,
                        "out_chs": s.out_chs, "repeats": s.repeats, "stride": s.stride, "kernel": s.kernel,
                        "expansion": s.expansion})
    head = g.head
    return out + [{"section": "head", "index": 0, "block": f"head ({head.pool} pool)", "attention": head.attention,
                   "ratio": head.ratio if head.attention != "none" else None, "conv": None,
                   "out_chs": g.num_classes, "repeats": 1 + len(head.hidden), "stride": None, "kernel": None,
                   "expansion": None}]


def detail(view: StudyView, *, top: int = 10) -> dict[str, Any]:
    """The study page: best trials with genotype strings, the best architecture stage by stage,
    cost-vs-accuracy points and links into optuna-dashboard."""
    _, _, ranked = _best(view)
    best_numbers = {t.number for t in ranked[:top]} if len(view.directions) == 1 else {t.number for t in ranked}
    base = f"/dashboard/studies/{view.study_id}"
    best = []
    for t in ranked[:top] if len(view.directions) == 1 else ranked:
        summary = records.summary(t)
        summary["values"] = [_finite(v) for v in summary["values"] or []]
        summary["link"] = f"{base}/trials?numbers={t.number}"
        best.append(summary)
    stages, stage_error = [], None
    if ranked and records.GENOTYPE in ranked[0].user_attrs:
        try:
            stages = _stage_rows(ranked[0].user_attrs[records.GENOTYPE])
        except (AutocnnError, ValueError, TypeError) as err:
            stage_error = str(err)
    points = [{"number": t.number, "value": _finite(t.values[0]), "params": t.user_attrs.get(records.PARAMS),
               "flops": t.user_attrs.get(records.FLOPS), "latency_ms": t.user_attrs.get(records.LATENCY),
               "best": t.number in best_numbers}
              for t in view.trials if t.state == TrialState.COMPLETE and t.values]
    return {
        "study": row(view), "config": view.config.to_dict() if view.config else None,
        "best": best, "best_stages": stages, "best_stages_error": stage_error, "points": points,
        "links": {"history": base, "analytics": f"{base}/analytics", "trials": f"{base}/trials",
                  "trial_table": f"{base}/trialTable", "note": f"{base}/note"},
    }
