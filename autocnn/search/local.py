"""The local backend: trials run one after another in this process, through Optuna's `study.optimize`.

Several local workers may drive one study at once (each its own `autocnn search --resume`): a trial
starts only while the budget has a free slot (`Budget.wait_for_slot`), so together they end at exactly
the budget.
"""
from __future__ import annotations

import gc
from functools import partial

import optuna

from autocnn.search import engine, records
from autocnn.search.budget import Budget, rejection_verdict
from autocnn.search.config import SearchConfig
from autocnn.storage import trial_id


class LocalBackend:
    """Optuna's `study.optimize` in this process, with the study's own sampler and pruner."""

    name = "local"

    def __init__(self) -> None:
        self._budget: Budget | None = None
        self._ctx: engine.TrialContext | None = None
        self._progress = None

    def configure(self, config: SearchConfig, *, resume: bool) -> SearchConfig:
        return config

    def open(self, study: optuna.Study, ctx: engine.TrialContext, budget: Budget, progress, *,
             resume: bool) -> None:
        self._budget, self._ctx, self._progress = budget, ctx, progress
        study.sampler = engine.prescreened(study.sampler, ctx)  # --prescreen: the sampler screens each trial
        # A full collection after every trial (Optuna's gc_after_trial) scans every live object: torch,
        # the data and Optuna's cache of finished trials, so it grew to ~100 ms per trial by trial 1,000.
        # Freezing the survivors of each collection keeps it to the objects of the trial just run.
        gc.collect()
        gc.freeze()

    def run(self, study: optuna.Study, n_trials: int) -> None:
        budget, progress = self._budget, self._progress
        callbacks = [_collect_garbage, self._after_trial]
        if progress is not None:
            callbacks.append(progress.on_trial_end)
        study.optimize(self._objective, n_trials=n_trials, timeout=budget.remaining_time(), callbacks=callbacks,
                       catch=engine.TRIAL_ERRORS, gc_after_trial=False)  # see _collect_garbage

    def close(self, study: optuna.Study) -> None:
        gc.unfreeze()

    def _objective(self, trial) -> list[float]:
        self._claim_slot(trial)
        on_epoch = partial(self._progress.on_epoch, trial.number) if self._progress is not None else None
        return engine.evaluate_trial(trial, self._ctx, on_epoch=on_epoch)  # looked up late: benchmarks time it

    def _after_trial(self, study: optuna.Study, trial) -> None:
        """Ends the round at the budget, on a stop request, when the constraints reject every candidate or
        none fits in the time left; with other workers on the study, waits until a trial may start without
        overshooting the budget."""
        hopeless = records.REJECTED in trial.user_attrs and rejection_verdict(study) is not None
        if hopeless or not self._budget.wait_for_slot():
            study.stop()

    def _claim_slot(self, trial) -> None:
        """Go on when `trial` is within the budget; trials created before it by other workers come first.

        Two workers that both saw a free slot may create a trial each: the later one waits for the earlier
        ones and is pruned untrained (recorded as rejected, costing no budget) if they meet the budget.
        """
        if self._budget.wait_for_slot(below=trial_id(trial)):
            return
        trial.set_user_attr(records.REJECTED, f"not needed: the budget of {self._budget.trials} trials was met by "
                                              "other workers (or the search was stopped or out of time)")
        raise optuna.TrialPruned("not needed")


def _collect_garbage(study: optuna.Study, trial) -> None:
    """gc_after_trial at a cost that does not grow with the study: collect what the trial left in
    reference cycles (a pruned trial's traceback holds its model), then freeze the survivors."""
    gc.collect()
    gc.freeze()
