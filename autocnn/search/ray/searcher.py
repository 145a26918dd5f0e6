"""The driver side of a Ray trial: Ray's `OptunaSearch` on the study, sampling and recording as the local backend.

`OptunaSearch.suggest` asks the study for a trial and `DefineByRun` samples the genotype on it with
`engine.sample_architecture` and prices it as the local backend does (parameters, FLOPs and predicted time
against the constraints and the time left), returning it (with the Optuna trial id and the training-time
model fitted on the study so far) as constants of the Tune trial's config. A candidate rejected there is
told PRUNED at once, one whose build raises FAIL, and `AutocnnSearch.suggest` samples the next: neither
becomes a Tune trial, so neither costs a worker or a round. Latency, a property of the worker's device, is
measured and checked in the worker.

`AutocnnSearch.on_trial_result` / `on_trial_complete` write what the worker reported and tell the trial's
final state: Optuna's `OptunaSearch` tells a trial a scheduler stopped as COMPLETE with its last value;
here the worker's last report carries `FINAL` ("complete", "failed", "pruned" for a candidate rejected in
the worker or "stopped" for one the run's deadline stopped, with its weights), and a trial that ends
without it was stopped by the scheduler; stopped trials are told PRUNED, so Optuna gives them their last
intermediate value, as for a trial the local pruner stopped.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune import Checkpoint
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from autocnn.artifacts import save_trial_weights
from autocnn.search import records
from autocnn.search.budget import Budget, best_training_s, longest_training, rejection_verdict
from autocnn.search.control import GIVE_UP_FAILURES
from autocnn.search.engine import (TRIAL_ERRORS, TrialContext, price_candidate, price_time, record_failure,
                                   sample_architecture)
from autocnn.search.ray.internals import asked_trials, searched_study, searched_study_name, told_trials
from autocnn.search.ray.keys import (ATTRS, BEST_S, CHECKPOINT_DIR, COSTS, EPOCH, FINAL, MAX_FAILURES, OBJECTIVES,
                                     RIVAL_EPOCHS, SPEC, TIME_MODEL, VAL, trial_dirname)
from autocnn.search.ray.worker import load_state
from autocnn.storage import study_storage, trial_id as trial_id_of
from autocnn.training import EpochReport


@dataclass
class Live:
    """What the driver's searcher and callbacks need and Tune must not pickle (the searcher is checkpointed)."""

    ctx: TrialContext
    budget: Budget  # the driver's: deadline and stop requests
    progress: Any = None
    experiment: str | None = None  # path of the Tune experiment running now (checkpoints live under it)
    unfinished: int = 0  # Tune trials not finished at the last controller step (> 0 after fit: interrupted)


LIVE: dict[str, Live] = {}  # study name -> the run in this process (Tuner.restore rebuilds the searcher)


def live_context(study_name: str) -> TrialContext:
    """The TrialContext of the run of `study_name` in this process (what a pickled sampler looks up)."""
    return LIVE[study_name].ctx


class DefineByRun:
    """OptunaSearch's define-by-run space: samples and records the genotype on the Optuna trial."""

    def __init__(self, study_name: str, tunable: dict[str, float], device: str = "cpu") -> None:
        self.study_name = study_name
        self.tunable = tunable  # PBT's starting hyperparameters (empty otherwise)
        self.device = device  # where the workers train: the time model's prior

    def __call__(self, trial) -> dict:
        ctx = LIVE[self.study_name].ctx
        model = ctx.time_model(trial.study, self.device)
        spec: dict[str, Any] = {"trial_id": trial_id_of(trial), "number": trial.number, TIME_MODEL: model.to_dict()}
        try:
            genotype = sample_architecture(trial, ctx)
            spec["genotype"] = genotype.to_dict()
            spec[RIVAL_EPOCHS] = longest_training(trial.study)
            spec[BEST_S] = best_training_s(trial.study, ctx.config.epochs) if ctx.deadline is not None else None
            admit = partial(price_time, trial, config=ctx.config, shape=ctx.epoch_shape, model=model,
                            deadline=ctx.deadline, rival_epochs=spec[RIVAL_EPOCHS], best_s=spec[BEST_S])
            _, costs = price_candidate(trial, genotype, ctx.constraints, latency=False, cache=ctx.costs, admit=admit)
            spec[COSTS] = costs  # the worker prices from these instead of counting again (it adds latency)
        except optuna.TrialPruned as err:  # rejected, or a `require` of the space failed: pruned untrained
            spec["pruned"] = str(err)
        except TRIAL_ERRORS as err:  # its forward raises (a shape error): failed here, as the local backend fails it
            record_failure(trial, err)
            spec["failed"] = True
        start = trial.user_attrs.get(records.START_WEIGHTS)  # fine-tuning: the worker loads the file
        if start:
            spec[records.START_WEIGHTS] = start
        for key in records.PRICED_WITH:  # the worker prices it as the driver did
            if key in trial.user_attrs:
                spec[key] = trial.user_attrs[key]
        return {SPEC: spec, **self.tunable}


class AutocnnSearch(OptunaSearch):
    """OptunaSearch that records what workers report and tells the right final state (see module doc)."""

    def __init__(self, *args, **kwargs) -> None:
        self._finals: dict[str, dict] = {}  # Tune trial id -> its last report, once it has made it
        self._failed_in_a_row = 0  # candidates whose build raised in `suggest`, since the last one launched
        super().__init__(*args, **kwargs)

    def suggest(self, trial_id: str):
        """The next admitted candidate; rejected ones are told PRUNED here, never launched."""
        live = LIVE.get(searched_study_name(self))
        study = searched_study(self)
        while True:
            if (live is not None and (live.budget.expired or live.budget.stopped())) or rejection_verdict(study) \
                    or self._failed_in_a_row >= GIVE_UP_FAILURES:
                # out of time, a stop request, no candidate fits, or the last candidates all failed (the round
                # ends: the driver says which and whether to go on): start no new trial, let running ones finish
                return Searcher.FINISHED
            config = super().suggest(trial_id)
            ot_trial = asked_trials(self)[trial_id]
            failed = config[SPEC].get("failed", False)
            self._failed_in_a_row = self._failed_in_a_row + 1 if failed else 0
            if not failed and records.REJECTED not in ot_trial.user_attrs:  # (a failed `require` uses budget)
                study_storage(study).record_heartbeat(trial_id_of(ot_trial))
                return config
            del asked_trials(self)[trial_id]  # the Tune trial asks again for its candidate
            study.tell(ot_trial, state=TrialState.FAIL if failed else TrialState.PRUNED)
            if live is not None and live.progress is not None:
                live.progress.on_trial_end(study, study_storage(study).get_trial(trial_id_of(ot_trial)))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._record(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in told_trials(self) or trial_id not in asked_trials(self):
            return
        told_trials(self).add(trial_id)
        ot_trial = asked_trials(self)[trial_id]
        storage = study_storage(searched_study(self))
        if storage.get_trial(trial_id_of(ot_trial)).state.is_finished():
            return  # a restored experiment re-ran a trial the study already holds (stopped by SkipFinished)
        if result:
            self._record(trial_id, result)
        if not (result or {}).get(FINAL):  # HyperBand stops a trial it paused after its last report
            result = self._finals.get(trial_id, result)
        final = (result or {}).get(FINAL)
        try:
            if error or final == "failed":
                if error:
                    ot_trial.set_user_attr(records.FAIL_REASON, f"the Ray worker failed {MAX_FAILURES + 1} times; "
                                                                "see the trial's error.txt in the Ray experiment")
                searched_study(self).tell(ot_trial, state=TrialState.FAIL)
            elif final in ("complete", "stopped"):  # trained, to its end or to the run's deadline
                weights = self._save_weights(trial_id, ot_trial.number, result.get(CHECKPOINT_DIR))
                if weights:
                    ot_trial.set_user_attr(records.WEIGHTS_PATH, weights)
                if final == "complete":
                    searched_study(self).tell(ot_trial, [float(v) for v in json.loads(result[OBJECTIVES])])
                else:
                    searched_study(self).tell(ot_trial, state=TrialState.PRUNED)
            else:  # stopped by the scheduler, or rejected untrained ("pruned")
                searched_study(self).tell(ot_trial, state=TrialState.PRUNED)
        except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError) as err:
            optuna.logging.get_logger("autocnn").warning(f"could not tell trial {ot_trial.number}: {err}")
        live = LIVE.get(searched_study_name(self))
        if live is not None and live.progress is not None:
            live.progress.on_trial_end(searched_study(self), storage.get_trial(trial_id_of(ot_trial)))

    def _save_weights(self, trial_id: str, number: int, checkpoint_dir: str | None) -> str | None:
        """Copy the trained weights from the trial's final Tune checkpoint to the study's artifacts
        (`autocnn.artifacts`, where the local backend puts them), in this process like every record."""
        live = LIVE.get(searched_study_name(self))
        if live is None or live.experiment is None or not checkpoint_dir:
            return None
        checkpoint = Checkpoint(f"{live.experiment}/{trial_dirname(trial_id)}/{checkpoint_dir}")
        state = load_state(checkpoint)
        return save_trial_weights(_StateDict(state["model"]), live.ctx.config.storage, searched_study_name(self), number,
                                  live.ctx.config.artifacts)

    def _record(self, trial_id: str, result: dict) -> None:
        """Write the attributes a worker reported and, single-objective, the epoch's intermediate value."""
        ot_trial = asked_trials(self).get(trial_id)
        if ot_trial is None or ATTRS not in result:
            return
        storage = study_storage(searched_study(self))
        frozen = storage.get_trial(trial_id_of(ot_trial))
        if frozen.state.is_finished():
            return
        for key, value in json.loads(result[ATTRS]).items():
            ot_trial.set_user_attr(key, value)
        if result.get(FINAL):
            self._finals[trial_id] = {k: result[k] for k in (FINAL, OBJECTIVES, CHECKPOINT_DIR) if k in result}
        epoch, value, final = int(result.get(EPOCH, 0)), float(result.get(VAL, math.nan)), result.get(FINAL)
        if (len(searched_study(self).directions) == 1 and epoch >= 1 and final in (None, "complete", "stopped")
                and math.isfinite(value) and epoch not in frozen.intermediate_values):
            ot_trial.report(value, epoch)
        live = LIVE.get(searched_study_name(self))
        if live is not None and live.progress is not None and epoch >= 1 and final is None:
            live.progress.on_epoch(ot_trial.number, EpochReport(epoch, value, float(result.get("train_loss", 0.0)),
                                                                 0.0))


class _StateDict:
    """Trained weights where `save_trial_weights` expects a module (it only calls `state_dict()`)."""

    def __init__(self, state: dict) -> None:
        self._state = state

    def state_dict(self) -> dict:
        return self._state
