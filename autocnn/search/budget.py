"""How much of a study's budget is used, read from the study alone (so every backend and reader agrees),
and the run's time budget.

What counts is `control.counts_toward_budget`: complete and pruner-stopped trials; candidates rejected
by the constraints or for time (pruned untrained, with `records.REJECTED`) cost nothing, and neither do
failed ones (they are retried or replaced).

Time (`--timeout`): a run ends at a wall-clock deadline (`Budget.ends_at`, `time.time()`, so workers on
other machines share it through their trial's configuration). No trial starts after it, and a running
trial does not start an epoch it would not finish before it (`check_deadline`, called at every epoch
boundary by both backends): it stops with `OutOfTime`, and is recorded as pruned with its last score
and its weights. `--stop-starting-after` only stops starting trials.
"""
from __future__ import annotations

import os
import statistics
import time

import optuna
from optuna.trial import TrialState

from autocnn.search import records
from autocnn.search.control import best_trial, counts_toward_budget, stop_requested
from autocnn.storage import fail_stale_trials, trial_id

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_REJECTIONS = 100  # rejected candidates in a row after which the constraints are taken as impossible
# Candidates in a row that would not finish in the time left after which the time is taken as spent: the
# search ends then, rather than sampling until the deadline.
TIME_REJECTIONS_TO_END = 20
BUDGET_ATTR = "autocnn.budget"  # study user attr: {timeout_s, started, ends_at} of the run in progress (time.time())


class OutOfTime(Exception):
    """A trial stopped at an epoch boundary because its next epoch would end past the run's deadline."""

    def __init__(self, epoch: int, why: str = "the time budget ran out") -> None:
        super().__init__(f"{why}: stopped after epoch {epoch}")
        self.epoch = epoch


class LookOverran(OutOfTime):
    """A first look whose epochs measure slower than it was priced at: at their pace the look would take more of
    the budget than `engine.price_time` admits for one (`engine.look_guard`)."""

    def __init__(self, epoch: int, projected: float, cap: float) -> None:
        super().__init__(epoch, f"its first look would take {projected:.1f}s at the pace measured, more than the "
                                f"{cap:.1f}s a look may take")


def remaining_s(deadline: float | None) -> float | None:
    """Seconds left until `deadline` (`time.time()`; None: no time budget)."""
    return None if deadline is None else deadline - time.time()


def check_deadline(deadline: float | None, epoch: int, epochs: int, epoch_seconds: float) -> None:
    """At the end of epoch `epoch` of `epochs`: raise OutOfTime when another epoch as long as this one
    would end past `deadline`. A trial that just finished its last epoch is never stopped."""
    if deadline is not None and epoch < epochs and time.time() + epoch_seconds > deadline:
        raise OutOfTime(epoch)


def finished_trials(study: optuna.Study) -> int:
    return sum(counts_toward_budget(t) for t in study.get_trials(deepcopy=False, states=FINISHED))


def longest_training(study: optuna.Study) -> int:
    """The most epochs a complete trial of `study` trained (0: none yet): under a time budget no new candidate
    is fitted to fewer (`engine.price_time`)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max((int(t.user_attrs.get(records.EPOCHS_RUN) or 0) for t in complete), default=0)


def best_training_s(study: optuna.Study, epochs: int) -> float | None:
    """Seconds the best complete trial's network takes for `epochs` epochs at the pace it measured (None: no
    complete trial timed yet, or several objectives): what a first look is weighed against (`LOOK_VS_BEST`)."""
    if len(study.directions) != 1:
        return None
    timed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
             if t.user_attrs.get(records.EPOCH_SECONDS)]
    best = best_trial(timed, study.directions)
    return None if best is None else epochs * statistics.median(best.user_attrs[records.EPOCH_SECONDS])


def budget_use(study: optuna.Study, below: int | None = None) -> tuple[int, int]:
    """(trials that count toward the budget, RUNNING trials [created before trial id `below`])."""
    trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    running = sum(t.state == TrialState.RUNNING and (below is None or trial_id(t) < below) for t in trials)
    return sum(counts_toward_budget(t) for t in trials), running


def rejections_in_a_row(study: optuna.Study) -> tuple[int, int, int]:
    """(Rejected trials at the end of the study, how many of them would not have finished in the time left,
    how many were too large for a first look at this budget).

    Rejections cost no budget, so a round can be all of them.
    """
    count = for_time = for_a_look = 0
    for trial in reversed(study.get_trials(deepcopy=False, states=FINISHED)):
        if records.REJECTED not in trial.user_attrs:
            break
        count += 1
        look = records.rejected_for_a_look(trial)
        for_a_look += look
        for_time += records.rejected_for_time(trial) and not look
    return count, for_time, for_a_look


def rejection_verdict(study: optuna.Study) -> str | None:
    """Why sampling more candidates is pointless: "time" (the last ones would not finish in the time left:
    the budget is spent), "constraints" (`MAX_REJECTIONS` in a row: they look impossible), else None.

    Candidates too large for a first look do not spend the budget (smaller ones may still come), but a long
    run of rejections that includes them ends the search as spent time, not as impossible constraints."""
    count, for_time, for_a_look = rejections_in_a_row(study)
    if for_time >= TIME_REJECTIONS_TO_END or (count >= MAX_REJECTIONS and for_time + for_a_look):
        return "time"
    return "constraints" if count >= MAX_REJECTIONS else None


def process_started() -> float:
    """When this process started, on the `time.time()` scale (Linux, from /proc: to 10 ms; elsewhere: now).

    The CLI's time budget runs from here: `autocnn search --timeout 60` ends 60 s after the command started,
    its imports included (5-10 s on a loaded 2-core machine, where runs ended 6 s late on average: +10 %)."""
    now = time.time()
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            started_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
            up = float(uptime.read().split()[0])
        return min(now, now - (up - started_ticks / os.sysconf("SC_CLK_TCK")))
    except (OSError, ValueError, IndexError):
        return now


class Budget:
    """The run's budget as the backends see it: how many trials count, until when, whether one may start.

    `timeout` (seconds from `started`, a `time.time()`) ends the run: `ends_at` is its deadline;
    `stop_starting_after` only stops new trials. Both are measured from the start of the run.
    """

    def __init__(self, study: optuna.Study, trials: int, *, timeout: float | None = None,
                 stop_starting_after: float | None = None, started: float | None = None) -> None:
        self.study = study
        self.trials = trials
        self.started = time.time() if started is None else started
        self.timeout = timeout
        self.ends_at = None if timeout is None else self.started + timeout
        limits = [s for s in (timeout, stop_starting_after) if s is not None]
        self._last_start = self.started + min(limits) if limits else None  # no trial starts after it

    @property
    def expired(self) -> bool:
        """No trial may start any more (the timeout or --stop-starting-after has passed)."""
        return self._last_start is not None and time.time() >= self._last_start

    def remaining_time(self) -> float | None:
        """Seconds until no trial may start (None: no limit)."""
        return None if self._last_start is None else self._last_start - time.time()

    def remaining_s(self) -> float | None:
        """Seconds left of the run's time budget (None: no --timeout)."""
        return remaining_s(self.ends_at)

    def record(self) -> None:
        """Store the run's time budget on the study, for readers of its progress (None: no --timeout)."""
        self.study.set_user_attr(BUDGET_ATTR, None if self.ends_at is None else
                                 {"timeout_s": self.timeout, "started": self.started, "ends_at": self.ends_at})

    def stopped(self) -> bool:
        return stop_requested(self.study)

    def wait_for_slot(self, *, below: int | None = None, poll: float = 1.0) -> bool:
        """Whether another trial may start: waits while the trials other workers run would already meet the
        budget (so concurrent workers end at exactly `trials`); False once it is met, stopped or past the deadline.

        A running trial of a dead worker frees its slot when its heartbeat goes stale (then it is retried).
        """
        while True:
            finished, running = budget_use(self.study, below)
            if finished >= self.trials or self.stopped() or self.expired:
                return False
            if finished + running < self.trials:
                return True
            time.sleep(poll)
            fail_stale_trials(self.study)
