"""How much of a study's budget is used, read from the study alone (so every backend and reader agrees).

What counts is `control.counts_toward_budget`: complete and pruner-stopped trials; candidates rejected
by the constraints (pruned untrained, with `records.REJECTED`) cost nothing, and neither do failed
ones (they are retried or replaced).
"""
from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from autocnn.search import records
from autocnn.search.control import counts_toward_budget, stop_requested
from autocnn.storage import fail_stale_trials, trial_id

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_REJECTIONS = 100  # rejected candidates in a row after which the constraints are taken as impossible


def finished_trials(study: optuna.Study) -> int:
    return sum(counts_toward_budget(t) for t in study.get_trials(deepcopy=False, states=FINISHED))


def budget_use(study: optuna.Study, below: int | None = None) -> tuple[int, int]:
    """(trials that count toward the budget, RUNNING trials [created before trial id `below`])."""
    trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    running = sum(t.state == TrialState.RUNNING and (below is None or trial_id(t) < below) for t in trials)
    return sum(counts_toward_budget(t) for t in trials), running


def rejections_in_a_row(study: optuna.Study) -> int:
    """Constraint-rejected trials at the end of the study (they cost no budget, so a round can be all of them)."""
    count = 0
    for trial in reversed(study.get_trials(deepcopy=False, states=FINISHED)):
        if records.REJECTED not in trial.user_attrs:
            break
        count += 1
    return count


class Budget:
    """The run's budget as the backends see it: how many trials count, until when, whether one may start."""

    def __init__(self, study: optuna.Study, trials: int, deadline: float | None) -> None:
        self.study = study
        self.trials = trials
        self.deadline = deadline  # time.monotonic() after which no trial starts

    @property
    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def remaining_time(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def stopped(self) -> bool:
        return stop_requested(self.study)

    def wait_for_slot(self, *, below: int | None = None, poll: float = 1.0) -> bool:
        """Whether another trial may start: waits while the trials other workers run would already meet the
        budget (so concurrent workers end at exactly `trials`); False once it is met, stopped or past the deadline.

        A running trial of a dead worker frees its slot when its heartbeat goes stale (then it is retried).
        """
        while True:
            finished, running = budget_use(self.study, below)
            if finished >= self.trials or self.stopped():
                return False
            if finished + running < self.trials:
                return True
            if self.expired:
                return False
            time.sleep(poll)
            fail_stale_trials(self.study)
