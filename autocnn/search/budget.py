"""What counts toward a study's budget, read from the study alone (so every backend and reader agrees).

Complete and pruner-stopped trials use the budget; candidates rejected by the constraints (pruned
untrained, with `records.REJECTED`) cost nothing, and neither do failed ones (they are retried or
replaced).
"""
from __future__ import annotations

import optuna
from optuna.trial import TrialState

from autocnn.search import records

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_REJECTIONS = 100  # rejected candidates in a row after which the constraints are taken as impossible


def counts_toward_budget(trial) -> bool:
    """Complete and pruner-stopped trials use the budget; constraint-rejected ones cost nothing."""
    return trial.state == TrialState.COMPLETE or (
        trial.state == TrialState.PRUNED and records.REJECTED not in trial.user_attrs)


def finished_trials(study: optuna.Study) -> int:
    return sum(counts_toward_budget(t) for t in study.get_trials(deepcopy=False, states=FINISHED))


def budget_use(study: optuna.Study, below: int | None = None) -> tuple[int, int]:
    """(trials that count toward the budget, RUNNING trials [created before trial id `below`])."""
    trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    running = sum(t.state == TrialState.RUNNING and (below is None or t._trial_id < below) for t in trials)
    return sum(counts_toward_budget(t) for t in trials), running


def rejections_in_a_row(study: optuna.Study) -> int:
    """Constraint-rejected trials at the end of the study (they cost no budget, so a round can be all of them)."""
    count = 0
    for trial in reversed(study.get_trials(deepcopy=False, states=FINISHED)):
        if records.REJECTED not in trial.user_attrs:
            break
        count += 1
    return count
