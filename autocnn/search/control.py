"""Study control: what state a study is in, its best trials, its worker lease and its stop requests.

One place answers these questions for the CLI (`studies`, `best`, `report`), the dashboard and
`export`, so they agree on every study.
"""
from __future__ import annotations

import os
import socket
from datetime import datetime

import optuna
from optuna.trial import TrialState

from autocnn.search import records
from autocnn.search.config import CONFIG_ATTR, SearchConfig

STOP_ATTR = "autocnn.stop_requested"
WORKER_ATTR = "autocnn.worker"  # {pid, host, since} of the process driving the study; None when it exits


def counts_toward_budget(trial) -> bool:
    """Complete and pruner-stopped trials use the budget; constraint-rejected ones cost nothing."""
    return trial.state == TrialState.COMPLETE or (
        trial.state == TrialState.PRUNED and records.REJECTED not in trial.user_attrs)


def take_worker_lease(study: optuna.Study) -> dict:
    """Record this process as the study's worker, so the dashboard tells running from stopped."""
    lease = {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now().isoformat(timespec="seconds"),
             "phase": "running"}
    study.set_user_attr(WORKER_ATTR, lease)
    return lease


def release_worker_lease(study: optuna.Study, lease: dict) -> None:
    """Clear the lease if it is still this process's (another worker may have taken it since)."""
    current = study._storage.get_study_user_attrs(study._study_id).get(WORKER_ATTR) or {}
    if (current.get("pid"), current.get("host")) == (lease["pid"], lease["host"]):
        study.set_user_attr(WORKER_ATTR, None)


def request_stop(study: optuna.Study) -> None:
    """Ask every worker of `study` to stop after its running trial (graceful; nothing is lost)."""
    study.set_user_attr(STOP_ATTR, True)


def stop_requested(study: optuna.Study) -> bool:
    return bool(study._storage.get_study_user_attrs(study._study_id).get(STOP_ATTR))


def study_state(study: optuna.Study, config: SearchConfig | None) -> str:
    """running (a trial is in flight), finished (budget reached), or stopped."""
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.RUNNING for t in trials):
        return "running"
    finished = sum(counts_toward_budget(t) for t in trials)
    if config is not None and finished >= config.trials:
        return "finished"
    return "stopped"


def study_overview(storage) -> list[dict]:
    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        raw = summary.user_attrs.get(CONFIG_ATTR)
        config = SearchConfig.from_dict(raw) if raw else None
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if len(study.directions) > 1:
            best = f"{len(study.best_trials)} on the Pareto front" if complete else None
        else:
            best = study.best_value if complete else None
        stamps = [t.datetime_complete or t.datetime_start for t in trials if t.datetime_start]
        rows.append({
            "name": summary.study_name, "state": study_state(study, config),
            "finished": sum(counts_toward_budget(t) for t in trials), "requested": config.trials if config else None,
            "best": best, "space": config.space.split(":")[0] if config else None,
            "dataset": config.dataset if config else None,
            "last_activity": max(stamps).isoformat(timespec="seconds") if stamps else None,
        })
    return rows
