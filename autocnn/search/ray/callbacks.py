"""Tune callbacks of the driver: heartbeats for the study's trials, skipping finished ones, quiet logs."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import optuna
from ray.tune import Callback, Stopper
from ray.tune.experiment import Trial

from autocnn.search.ray.keys import OPTUNA_ID, SPEC
from autocnn.search.ray.searcher import LIVE
from autocnn.storage import fail_stale_trials, heartbeat_interval, open_storage


class _StorageUser:
    """A Tune callback/stopper part that opens the study storage lazily (Tune pickles these objects)."""

    def __init__(self, storage_url: str | None) -> None:
        self.storage_url = storage_url
        self._storage = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_storage": None}

    def storage(self):
        if self._storage is None:
            self._storage = open_storage(self.storage_url, create=False)
        return self._storage


class Heartbeat(_StorageUser, Callback):
    """Records Optuna heartbeats for the live trials of this experiment (ask/tell runs no heartbeat),
    and tells the driver how many trials were unfinished at the last step (Ctrl-C detection).

    Right after its first beats it fails the study's stale trials (the storage re-queues them): in a
    restored experiment, the trials it continues were just beaten, so what is still stale is a trial the
    killed driver had asked but never snapshotted. Failed now, its retry is what the searcher asks next,
    rather than a WAITING trial left behind once the restored experiment meets the budget.
    """

    def __init__(self, storage_url: str | None, study_name: str) -> None:
        super().__init__(storage_url)
        self.study_name = study_name
        self._last = 0.0
        self._swept = False

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_last": 0.0, "_swept": False}  # a restored copy beats and sweeps first

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        live = LIVE.get(self.study_name)
        if live is not None:
            live.unfinished = sum(t.status in (Trial.PENDING, Trial.RUNNING, Trial.PAUSED) for t in trials)

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        if time.monotonic() - self._last < heartbeat_interval():
            return
        self._last = time.monotonic()
        for trial in trials:
            trial_id = (trial.config.get(SPEC) or {}).get("trial_id")
            if trial_id is not None and trial.status in (Trial.PENDING, Trial.RUNNING, Trial.PAUSED):
                self.storage().record_heartbeat(trial_id)
        if not self._swept:  # before this step's searcher asks for new trials (Tune calls callbacks first)
            self._swept = True
            fail_stale_trials(optuna.load_study(study_name=self.study_name, storage=self.storage()))


class MissingCheckpoints(Callback):
    """Lets a restored trial continue when the checkpoint its experiment snapshot names was deleted.

    Tune deletes a trial's oldest checkpoint (``num_to_keep``) a step before the snapshot that stops naming
    it reaches the experiment folder; a driver killed in between leaves a snapshot whose latest checkpoint is
    gone, and Tune then fails the trial ``MAX_FAILURES`` times ("does not exist on storage anymore"). Its
    newer checkpoints are still in the trial's folder: the newest is moved to the named path before Tune
    restores from it (a worker's checkpoint carries its own epoch and curve, so the trial simply continues
    from a later epoch). Local storage only; a remote one keeps Tune's behaviour.
    """

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        for trial in trials:
            checkpoint = trial.checkpoint if trial.status == Trial.PENDING else None
            if checkpoint is None or checkpoint.filesystem.type_name != "local" or os.path.exists(checkpoint.path):
                continue
            newest = max(Path(checkpoint.path).parent.glob("checkpoint_*"), default=None)
            if newest is not None:
                os.rename(newest, checkpoint.path)


class SkipFinished(_StorageUser, Stopper):
    """Stops a (restored) Tune trial whose Optuna trial is already finished in the study."""

    def __call__(self, trial_id: str, result: dict) -> bool:
        optuna_id = result.get(OPTUNA_ID)
        return optuna_id is not None and self.storage().get_trial(int(optuna_id)).state.is_finished()

    def stop_all(self) -> bool:
        return False


class StaleCheckpointFilter(logging.Filter):
    """Drops Tune's traceback for deleting a checkpoint that is already gone.

    A driver killed between Tune deleting a trial's oldest checkpoint (``num_to_keep``) and writing the
    next experiment snapshot leaves that checkpoint listed; after ``Tuner.restore`` Tune tries to delete
    it again, logs a FileNotFoundError and carries on correctly, so the traceback only alarms users.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        stale = (record.exc_info is not None and isinstance(record.exc_info[1], FileNotFoundError)
                 and str(record.msg).startswith("Trial %s: Error handling checkpoint"))
        return not stale


STALE_CHECKPOINTS = StaleCheckpointFilter()
