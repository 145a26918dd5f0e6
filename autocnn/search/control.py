"""Study control: one answer to "what state is this study in, which trial is best, who drives it".

The CLI (`studies`, `best`, `report`), the dashboard and `export` all read a study through here, so
they agree on every study:

- **State** (`inspect`, `StudyView.state`), one of `STATES`:

  - ``running``: a worker is alive. The process named by the worker lease (`WORKER_ATTR`) is alive
    on this host; a lease from another host counts while the study has RUNNING trials with fresh
    heartbeats or the lease is under `REMOTE_LEASE_GRACE_S` old; RUNNING trials with a fresh
    heartbeat prove a worker too (a second worker on the study holds no lease).
  - ``finished``: the trials that use the budget (`counts_toward_budget`) reached the requested budget.
  - ``failed``: the last worker died without exiting (SIGKILL, out of memory): a RUNNING trial whose
    heartbeat went stale, or a lease whose process is gone; or the last three trials all failed
    (the search gives up then).
  - ``stopped``: anything else: a stop request, Ctrl-C, `--timeout`, or a study not started yet.

  A worker killed mid-trial leaves its trial RUNNING with a heartbeat that stays fresh for the
  storage's grace period (`autocnn.storage.grace_period()`); until then the study is ``running``
  everywhere, then ``failed`` everywhere. Reading the state never changes the study.

- **Best trial** (`best_trial`): of a single-objective study, the complete trial with the best
  value; of a multi-objective study, the member of the Pareto front (`pareto_front`) best on the
  first objective (autocnn's objectives start with the quality metric), ties broken by the next
  objectives in order, then by the lower trial number. `ranked_trials` lists the same order.

- **Worker lease**: `take_worker_lease` (a search worker claims the study), `claim_lease` (an atomic
  compare-and-swap, for a dashboard starting a worker; also how a held lease is renewed),
  `release_worker_lease` and `lease_alive`.

- **Stop requests**: `request_stop` / `stop_requested` (`STOP_ATTR`), honoured by every backend.

- **Anytime curve** (`anytime_curve`, `StudyView.anytime`): the best value of the first objective so
  far against wall time since the search started (`STARTED_ATTR`), derived from the complete trials'
  completion times and values; its last value is the best trial's.
"""
from __future__ import annotations

import json
import math
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from autocnn.errors import AutocnnError
from autocnn.search import records
from autocnn.search.config import CONFIG_ATTR, SearchConfig
from autocnn.storage import grace_period, read_study_attr_json, running_trial_heartbeats, swap_study_attr

STOP_ATTR = "autocnn.stop_requested"
STARTED_ATTR = "autocnn.started"  # time.time() when the study's first run began: where anytime curves start
WORKER_ATTR = "autocnn.worker"  # {pid, host, since, phase} of the process driving the study; None when it exits
STATES = ("running", "stopped", "finished", "failed")
HOST = socket.gethostname()
# A lease written on another host cannot be checked by pid: it counts as alive while it is this young
# or while the study has RUNNING trials with fresh heartbeats.
REMOTE_LEASE_GRACE_S = 120
PID_START_SLACK_S = 2  # lease times have whole seconds; boot time and clock ticks round too
GIVE_UP_FAILURES = 3  # the search driver stops after three rounds in which every trial failed


class UnknownStudyError(AutocnnError):
    """No study of that name in the storage."""


def counts_toward_budget(trial) -> bool:
    """Complete and pruner-stopped trials use the budget; constraint-rejected ones cost nothing."""
    return trial.state == TrialState.COMPLETE or (
        trial.state == TrialState.PRUNED and records.REJECTED not in trial.user_attrs)


# -- best trials ------------------------------------------------------------------------------------

def _signs(directions: Sequence) -> list[int]:
    """-1 for maximised objectives, so that smaller `sign * value` is better for every objective."""
    return [-1 if getattr(d, "name", d).lower() == "maximize" else 1 for d in directions]


def _complete(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.COMPLETE and t.values]


def pareto_front(trials: Iterable[FrozenTrial], directions: Sequence) -> list[FrozenTrial]:
    """The complete trials no other complete trial dominates, in trial-number order (equal points all stay)."""
    signs = _signs(directions)
    ranked = sorted(_complete(trials), key=lambda t: [s * v for s, v in zip(signs, t.values)])
    front: list[tuple[list[float], FrozenTrial]] = []
    for t in ranked:  # a dominating point sorts before the points it dominates
        loss = [s * v for s, v in zip(signs, t.values)]
        if not any(all(x <= y for x, y in zip(other, loss)) and other != loss for other, _ in front):
            front.append((loss, t))
    return sorted((t for _, t in front), key=lambda t: t.number)


def ranked_trials(trials: Iterable[FrozenTrial], directions: Sequence) -> list[FrozenTrial]:
    """Best first: every complete trial of a single-objective study; the Pareto front of a multi-objective one.

    Ordered by the first objective, then the next ones, then the trial number (see the module docstring).
    """
    signs = _signs(directions)
    pool = pareto_front(trials, directions) if len(signs) > 1 else _complete(trials)
    return sorted(pool, key=lambda t: ([s * v for s, v in zip(signs, t.values)], t.number))


def best_trial(trials: Iterable[FrozenTrial], directions: Sequence) -> FrozenTrial | None:
    """The study's best trial under the one rule of the module docstring; None before any trial completes."""
    ranked = ranked_trials(trials, directions)
    return ranked[0] if ranked else None


@dataclass(frozen=True)
class AnytimePoint:
    """The best value so far became `value` (trial `trial`) `seconds` after the search started."""

    seconds: float
    value: float
    trial: int


def search_started(trials: Iterable[FrozenTrial], started: float | None = None) -> datetime | None:
    """When the search started: `started` (`STARTED_ATTR`), else its first trial's start (None: no trial)."""
    if started is not None:
        return datetime.fromtimestamp(started)
    return min((t.datetime_start for t in trials if t.datetime_start), default=None)


def anytime_curve(trials: Iterable[FrozenTrial], directions: Sequence,
                  started: float | None = None) -> list[AnytimePoint]:
    """Best-so-far of the first objective against wall time: one point per complete trial that improved
    it, at its completion, in seconds since `started` (a `time.time()`; default: the first trial's start).

    Derived from the trials alone, so every reader (report, dashboard, benchmarks) draws the same curve.
    """
    trials = list(trials)
    done = sorted((t for t in _complete(trials) if t.datetime_complete), key=lambda t: (t.datetime_complete, t.number))
    if not done:
        return []
    origin = search_started(trials, started)
    sign = _signs(directions)[0]
    curve: list[AnytimePoint] = []
    for t in done:
        if not curve or sign * t.values[0] < sign * curve[-1].value:
            curve.append(AnytimePoint((t.datetime_complete - origin).total_seconds(), t.values[0], t.number))
    return curve


# -- worker lease -----------------------------------------------------------------------------------

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


def lease_alive(lease: dict | None, *, fresh_running: int, unknown_running: int) -> bool:
    """Whether the lease's worker lives: by pid on this host; elsewhere by running trials or the lease's age."""
    if not lease:
        return False
    if lease.get("host") == HOST:
        return pid_alive(lease.get("pid"), lease.get("since"))
    return fresh_running > 0 or unknown_running > 0 or _age_s(lease.get("since")) < REMOTE_LEASE_GRACE_S


def dead_local_lease(view: "StudyView") -> bool:
    """The study's lease names a process on this host that is gone: its RUNNING trials are orphans."""
    lease = view.lease
    return bool(lease) and lease.get("host") == HOST and not view.lease_alive


def _remote_wait_s(storage, view: "StudyView") -> float:
    """At most how long until a remote lease stops counting: the rest of its grace, or a whole
    heartbeat grace period while its trials beat (the last beat may come any moment)."""
    wait = max(0.0, REMOTE_LEASE_GRACE_S - _age_s((view.lease or {}).get("since")))
    if view.fresh_running or view.unknown_running:
        backend = getattr(storage, "_backend", storage)
        wait = max(wait, float(getattr(backend, "grace_period", None) or grace_period()))
    return round(wait, 1)


def reclaim_dead_worker(storage, view: "StudyView") -> list[int]:
    """Fail the RUNNING trials a dead worker of this host left behind and hand each to the storage's
    retry callback (requeued with the same parameters), so a resume right after a crash loses nothing.
    Numbers of the trials failed; nothing when the lease is not a dead local one."""
    if not dead_local_lease(view):
        return []
    study = optuna.load_study(study_name=view.name, storage=storage)
    retry = getattr(storage, "get_heartbeat_stale_trial_callback", lambda: None)()
    failed = []
    for trial in view.trials:
        if trial.state != TrialState.RUNNING:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(view.study_id, trial.number)
        try:
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # finished meanwhile
            continue
        failed.append(trial.number)
        if retry is not None:
            retry(study, storage.get_trial(trial_id))
    return failed


def new_lease(phase: str = "running", **extra) -> dict:
    """A lease naming this process: {pid, host, since, phase, ...}."""
    return {"pid": os.getpid(), "host": HOST, "since": datetime.now().isoformat(timespec="seconds"),
            "phase": phase, **extra}


def take_worker_lease(study: optuna.Study) -> dict:
    """Record this process as the study's worker, so every reader tells running from stopped."""
    lease = new_lease()
    study.set_user_attr(WORKER_ATTR, lease)
    return lease


def release_worker_lease(study: optuna.Study, lease: dict) -> None:
    """Clear the lease if it is still this process's (another worker may have taken it since)."""
    current = study.user_attrs.get(WORKER_ATTR) or {}
    if (current.get("pid"), current.get("host")) == (lease["pid"], lease["host"]):
        study.set_user_attr(WORKER_ATTR, None)


def read_lease(storage, study_id: int) -> str | None:
    """The lease exactly as stored (JSON text, None when never set): the `expected` of `claim_lease`."""
    return read_study_attr_json(storage, study_id, WORKER_ATTR)


def claim_lease(storage, study_id: int, expected: str | dict | None, lease: dict | None) -> bool:
    """Atomically replace the lease if it still is `expected` (text from `read_lease`, or the dict this
    process wrote); True when this call won. Renewing a held lease is a claim from the held one."""
    if isinstance(expected, dict):
        expected = json.dumps(expected)
    return swap_study_attr(storage, study_id, WORKER_ATTR, expected, lease)


# -- stop requests ----------------------------------------------------------------------------------

def request_stop(study: optuna.Study) -> None:
    """Ask every worker of `study` to stop after its running trial (graceful; nothing is lost)."""
    study.set_user_attr(STOP_ATTR, True)


def stop_requested(study: optuna.Study) -> bool:
    return bool(study.user_attrs.get(STOP_ATTR))


# -- state ------------------------------------------------------------------------------------------

@dataclass
class StudyView:
    """One study as read from the storage: trials by state, the worker lease and the derived state."""

    name: str
    study_id: int
    config: SearchConfig | None
    directions: list[str]
    trials: list[FrozenTrial]
    user_attrs: dict[str, Any]
    fresh_running: int = 0
    unknown_running: int = 0  # RUNNING without any heartbeat row (Ray's ask/tell, or before the first beat)
    stale_running: int = 0  # stale heartbeat, or left behind by a lease on this host whose pid is dead
    lease_alive: bool = False
    resumable_in_s: float | None = None  # running only by a remote lease's grace: seconds until it ends, at most
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

    @property
    def stop_requested(self) -> bool:
        return bool(self.user_attrs.get(STOP_ATTR))

    def ranked(self) -> list[FrozenTrial]:
        return ranked_trials(self.trials, self.directions)

    @property
    def best(self) -> FrozenTrial | None:
        return best_trial(self.trials, self.directions)

    @property
    def pareto(self) -> list[FrozenTrial]:
        return pareto_front(self.trials, self.directions)

    @property
    def anytime(self) -> list[AnytimePoint]:
        return anytime_curve(self.trials, self.directions, self.user_attrs.get(STARTED_ATTR))

    @property
    def started(self) -> datetime | None:
        return search_started(self.trials, self.user_attrs.get(STARTED_ATTR))


def inspect(storage, name: str, *, owned_alive: bool = False) -> StudyView:
    """Read study `name` and work out its state; `owned_alive`: the caller's own worker for it is alive.

    Only Optuna's public storage API, plus a read-only heartbeat query (`autocnn.storage`).
    """
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))
        raise UnknownStudyError(f"no study named {name!r} in the storage; existing studies: {names or 'none'}") \
            from None
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
    view.counts["would_not_finish"] = sum(t.state == TrialState.PRUNED and records.rejected_for_time(t) for t in trials)
    view.finished = sum(counts_toward_budget(t) for t in trials)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    if running:
        stale, never_beat = running_trial_heartbeats(storage, study_id)
        view.stale_running = sum(t.number in stale for t in running)
        view.unknown_running = sum(t.number in never_beat for t in running)
        view.fresh_running = len(running) - view.stale_running - view.unknown_running
    view.lease_alive = owned_alive or lease_alive(view.lease, fresh_running=view.fresh_running,
                                                  unknown_running=view.unknown_running)
    if dead_local_lease(view):  # its heartbeats outlive the killed worker by the grace period: ignore them
        view.stale_running += view.fresh_running + view.unknown_running
        view.fresh_running = view.unknown_running = 0
    elif view.lease_alive and not owned_alive and (view.lease or {}).get("host") != HOST:
        view.resumable_in_s = _remote_wait_s(storage, view)
    view.state = study_state(view)
    return view


def study_state(view: StudyView) -> str:
    """The state of the module docstring, from what `inspect` read."""
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
        return "failed"  # the driver gives up after repeated failures
    return "stopped"  # stop request, Ctrl-C, timeout, or never started


def latest_study(storage) -> str:
    """The name of the most recently started autocnn study (the default of `--resume` and `best`)."""
    summaries = [s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
                 if CONFIG_ATTR in s.user_attrs]
    if not summaries:
        raise UnknownStudyError("there is no autocnn study in this storage; start one with 'autocnn search'")
    summaries.sort(key=lambda s: s.datetime_start or datetime.min)
    return summaries[-1].study_name


def last_activity(view: StudyView) -> str | None:
    stamps = [t.datetime_complete or t.datetime_start for t in view.trials if t.datetime_start]
    return max(stamps).isoformat(timespec="seconds") if stamps else None


def study_overview(storage) -> list[dict]:
    """One row per study for `autocnn studies`: state, budget use, best value and best trial."""
    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        view = inspect(storage, summary.study_name)
        config, best = view.config, view.best
        if len(view.directions) > 1:
            value = f"{len(view.pareto)} on the Pareto front" if best else None
        else:
            value = best.values[0] if best else None
        rows.append({
            "name": view.name, "state": view.state, "finished": view.finished, "requested": view.requested,
            "best": value, "best_trial": best.number if best else None,
            "space": config.space.split(":")[0] if config else None,
            "dataset": config.dataset if config else None, "last_activity": last_activity(view),
            "rejected": rejection_counts(view),
        })
    return rows


def rejection_counts(view: StudyView) -> dict[str, int]:
    """Candidates rejected untrained: by the constraints (or not needed), and for time ("would not finish")."""
    for_time = view.counts.get("would_not_finish", 0)
    return {"constraints": view.counts.get("rejected", 0) - for_time, "would not finish": for_time}


# -- the stage table --------------------------------------------------------------------------------

def stage_rows(genotype) -> list[dict[str, Any]]:
    """The architecture stage by stage (stem, body, then the head), as the report and the dashboard show it."""
    rows = []
    for section, specs in (("stem", genotype.stem), ("body", genotype.stages)):
        for i, s in enumerate(specs):
            rows.append({"section": section, "index": i, "block": s.block, "attention": s.attention,
                         "ratio": s.ratio if s.attention != "none" else None, "conv": s.conv,
                         "out_chs": s.out_chs, "repeats": s.repeats, "stride": s.stride, "kernel": s.kernel,
                         "expansion": s.expansion})
    head = genotype.head
    return rows + [{"section": "head", "index": 0, "block": f"head ({head.pool} pool)", "attention": head.attention,
                    "ratio": head.ratio if head.attention != "none" else None, "conv": None,
                    "out_chs": genotype.num_classes, "repeats": 1 + len(head.hidden), "stride": None,
                    "kernel": None, "expansion": None}]
