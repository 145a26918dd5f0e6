"""The Ray Tune backend: many candidates in parallel on every GPU of a machine or a cluster, same studies.

The driver (this process) runs a Tune experiment whose searcher is Ray's `OptunaSearch` bound to the
study's own storage and name, so the study is the one `autocnn studies`, `best`, `export` and the
dashboard read, and either backend can continue it. How one trial flows:

1. driver, `OptunaSearch.suggest`: `study.ask()`, then the define-by-run `_DefineByRun` samples the
   genotype with `engine.sample_architecture` (recorded on the Optuna trial, as the local backend does)
   and returns it, with the Optuna trial id, as constants of the Tune trial's config;
2. worker, `_trainable`: prices and trains with `engine.price_candidate` / `fit_candidate` on the GPU
   Ray assigned (CPU without CUDA). Record calls land on a `_Recorder`, whose attributes travel to
   the driver with every `tune.report` (JSON, so Tune does not flatten them); each epoch reports the
   validation metric and a checkpoint (model + optimizer state) so a worker that dies is retried from
   its last epoch (`FailureConfig`) and HyperBand/PBT can pause and resume trials;
3. driver, `_AutocnnSearch.on_trial_result` / `on_trial_complete`: writes the attributes and the
   intermediate values on the Optuna trial, then tells its final state. Only the driver writes to the
   storage: workers need neither database drivers nor credentials, and SQLite never sees parallel writers.

Both backends therefore write identical records (genotype, params, FLOPs, latency, curve, test metric,
trained weights: the worker's last report checkpoints them and the driver copies them to the study's
artifacts); the Ray backend adds `gpu_ids` (the GPUs Ray assigned) and, with PBT, `hparams`.

Pruning. Optuna's `OptunaSearch` tells a trial that a scheduler stopped early as COMPLETE with its last
value; `_AutocnnSearch` tells the state itself. The worker's last report carries `autocnn_final`:
"complete" (objective values attached), "failed" (diverged) or "pruned" (outside the constraints, or a
failed `require` of the space). A trial that ends without it ended because Tune stopped it (ASHA,
HyperBand, median stopping) and is told PRUNED, so Optuna gives it its last intermediate value, exactly
as for a trial the local backend's pruner stopped. A trial whose worker kept failing after its retries
is told FAIL.

Stale trials. Optuna's heartbeat only runs inside `study.optimize`, and `OptunaSearch` uses ask/tell,
so the driver heartbeats its trials itself (`_Heartbeat`, every `HEARTBEAT_INTERVAL` seconds, and
once when a trial is asked). A killed driver's trials go stale like a killed local worker's and are
failed (and re-queued by the storage's retry callback) by `fail_stale_trials` on resume, by either backend.

Resume. The Tune experiment in flight is recorded on the study (`EXPERIMENT_ATTR`). `--resume` restores
it with `Tuner.restore` when its directory is there (running trials continue from their checkpoints;
the searcher's asked trials are kept), then, because `Tuner.restore` cannot add trials, runs new Tuners
whose `OptunaSearch` points at the same study until the (possibly raised) budget is met. No finished
trial runs twice: `_SkipFinished` stops a restored trial that the study already holds as finished.
Ctrl-C: Tune saves the experiment and returns; the driver raises KeyboardInterrupt and keeps the
experiment recorded for --resume.

PBT mutates training hyperparameters (learning rate, weight decay), never the architecture: its exploit
step gives a weak trial the perturbed hyperparameters of a strong one and continues the weak trial's
own architecture and weights from its own checkpoint (`ArchitecturePBT`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import socket
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
import torch
from optuna.trial import TrialState
from torch.optim.optimizer import register_optimizer_step_pre_hook

from autocnn.artifacts import artifact_root, save_trial_weights
from autocnn.registry import Registry
from autocnn.search import records
from autocnn.search.config import CONFIG_ATTR, ConfigError, SearchConfig
from autocnn.search.engine import (SAMPLERS, BudgetCallback, StudyError, TrialContext, create_study, enqueue_presets,
                                   epoch_recorder, finished_trials, fit_candidate, prepare_context, price_candidate,
                                   release_worker_lease, reopen_study, sample_architecture, stop_requested,
                                   take_worker_lease, train_config_for, STOP_ATTR)
from autocnn.storage import HEARTBEAT_INTERVAL, fail_orphaned_trials, fail_stale_trials, open_storage
from autocnn.training import DivergedError, EpochReport, train
from autocnn.training.optim import SCHEDULES

try:
    import ray
    from ray import tune
    from ray.tune import Callback, Checkpoint, Stopper
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import (ASHAScheduler, FIFOScheduler, HyperBandScheduler, MedianStoppingRule,
                                     PopulationBasedTraining, TrialScheduler)
    from ray.tune.schedulers.pbt import _fill_config, _PBTTrialState
    from ray.tune.search import Searcher
    from ray.tune.search.optuna import OptunaSearch
except ImportError as err:  # pragma: no cover - exercised only without the extra installed
    raise ConfigError(f"--backend ray needs Ray Tune ({err.name} is missing); "
                      "install it with: pip install 'autocnn[ray]'") from None

GPU_IDS = "gpu_ids"              # trial user attr: the GPU ids Ray assigned to the trial's worker
HPARAMS = "hparams"              # trial user attr (PBT only): [{from_epoch, lr, weight_decay}, ...] as trained
EXPERIMENT_ATTR = "autocnn.ray_experiment"  # study user attr: path of the Tune experiment in flight
RUNS_ATTR = "autocnn.ray_runs"   # study user attr: Tune experiments started so far
FAULT_ENV = "AUTOCNN_RAY_FAULT"  # test hook "TRIAL:EPOCH:MARKER": that trial's worker dies once after that epoch

SPEC = "autocnn"                 # key of the per-trial constants in a Tune trial's config
VAL, EPOCH, FINAL = "val_metric", "epoch", "autocnn_final"
ATTRS, OBJECTIVES, OPTUNA_ID = "autocnn_attrs", "autocnn_objectives", "autocnn_trial_id"
CHECKPOINT_DIR = "checkpoint_dir_name"  # Tune's result key naming the checkpoint reported with it
TUNABLE = ("lr", "weight_decay")  # what PBT may mutate
DEFAULT_WEIGHT_DECAY = 5e-4
MAX_FAILURES = 3                 # retries of a trial whose worker died, each from its last checkpoint
DEFAULTS = {"address": None, "scheduler": "fifo", "gpus_per_trial": 0.0, "cpus_per_trial": 1.0,
            "max_concurrent": None, "storage_path": None}


# -- schedulers ------------------------------------------------------------------------------------

SCHEDULERS: Registry[Callable[[SearchConfig], "TrialScheduler"]] = Registry("scheduler")


class ArchitecturePBT(PopulationBasedTraining):
    """PBT that perturbs training hyperparameters only.

    Ray's PBT clones a strong trial's checkpoint and config into a weak one, which in a NAS would swap
    the weak trial's architecture for the strong one's behind the Optuna trial's back. Here the weak
    trial takes the strong trial's hyperparameters (perturbed) and resumes from its own checkpoint.
    """

    def on_trial_add(self, tune_controller, trial) -> None:
        # Ray's PBT refuses search algorithms because its exploit step rewrites the config a searcher
        # suggested; this one keeps the suggested architecture, so OptunaSearch stays in charge of it.
        if not self._metric or not self._metric_op:
            raise ValueError(f"{type(self).__name__} needs a metric and a mode")
        self._trial_state[trial] = _PBTTrialState(trial)
        for attr, domain in self._hyperparam_mutations.items():
            if attr not in trial.config:
                _fill_config(trial.config, attr, domain)
                trial.evaluated_params[attr] = trial.config[attr]

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(FINAL):  # the trial's last report: nothing left to perturb
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def _checkpoint_or_exploit(self, trial, tune_controller, upper_quantile, lower_quantile) -> None:
        # A strong trial needs no checkpoint here (only its hyperparameters are copied); a weak one
        # resumes from the checkpoint it reported with this very result.
        if trial in lower_quantile and upper_quantile:
            self._exploit(tune_controller, trial, random.choice(upper_quantile))

    def _exploit(self, tune_controller, trial, trial_to_clone) -> None:
        explored, _ = self._get_new_config(trial, trial_to_clone)
        new_config = {**trial.config, **{k: explored[k] for k in self._hyperparam_mutations}}
        if trial.status != Trial.PAUSED:
            tune_controller.pause_trial(trial, should_checkpoint=False)  # resumes from its own last checkpoint
        trial.set_config(new_config)
        self._num_perturbations += 1


def _pbt(config: SearchConfig) -> ArchitecturePBT:
    from autocnn.training.optim import DEFAULT_LR

    lr = config.lr or DEFAULT_LR[config.optimizer]
    return ArchitecturePBT(time_attr=EPOCH, metric=VAL, mode="max",
                           perturbation_interval=max(1, config.epochs // 4), burn_in_period=1,
                           hyperparam_mutations={"lr": tune.loguniform(lr / 10, lr * 10),
                                                 "weight_decay": tune.loguniform(1e-5, 1e-2)})


SCHEDULERS.register("fifo", lambda config: FIFOScheduler())
SCHEDULERS.register("asha", lambda config: ASHAScheduler(time_attr=EPOCH, metric=VAL, mode="max",
                                                         max_t=config.epochs, grace_period=1, reduction_factor=3))
SCHEDULERS.register("hyperband", lambda config: HyperBandScheduler(time_attr=EPOCH, metric=VAL, mode="max",
                                                                   max_t=config.epochs, reduction_factor=3))
SCHEDULERS.register("median", lambda config: MedianStoppingRule(time_attr=EPOCH, metric=VAL, mode="max",
                                                                grace_period=1, min_samples_required=3))
SCHEDULERS.register("pbt", _pbt)


# -- driver side: sampling and recording -----------------------------------------------------------

@dataclass
class _Live:
    """What the driver's searcher needs and Tune must not pickle (the searcher is checkpointed)."""

    ctx: TrialContext
    progress: Any = None
    deadline: float | None = None
    experiment: str | None = None  # path of the Tune experiment running now (checkpoints live under it)
    unfinished: int = 0  # Tune trials not finished at the last controller step (> 0 after fit: interrupted)


_LIVE: dict[str, _Live] = {}  # study name -> the run in this process (Tuner.restore rebuilds the searcher)


class _DefineByRun:
    """OptunaSearch's define-by-run space: samples and records the genotype on the Optuna trial."""

    def __init__(self, study_name: str, tunable: dict[str, float]) -> None:
        self.study_name = study_name
        self.tunable = tunable  # PBT's starting hyperparameters (empty otherwise)

    def __call__(self, trial) -> dict:
        ctx = _LIVE[self.study_name].ctx
        spec: dict[str, Any] = {"trial_id": trial._trial_id, "number": trial.number}
        try:
            spec["genotype"] = sample_architecture(trial, ctx).to_dict()
        except optuna.TrialPruned as err:  # a `require` of the space failed: the trial is pruned untrained
            spec["pruned"] = str(err)
        return {SPEC: spec, **self.tunable}


class _AutocnnSearch(OptunaSearch):
    """OptunaSearch that records what workers report and tells the right final state (see module doc)."""

    def __init__(self, *args, **kwargs) -> None:
        self._finals: dict[str, dict] = {}  # Tune trial id -> its last report, once it has made it
        super().__init__(*args, **kwargs)

    def suggest(self, trial_id: str):
        live = _LIVE.get(self._study_name)
        if live is not None and live.deadline is not None and time.time() >= live.deadline:
            return Searcher.FINISHED  # --timeout: start no new trial, let running ones finish
        if stop_requested(self._ot_study):
            return Searcher.FINISHED
        config = super().suggest(trial_id)
        self._ot_study._storage.record_heartbeat(self._ot_trials[trial_id]._trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._record(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        self._completed_trials.add(trial_id)
        ot_trial = self._ot_trials[trial_id]
        storage = self._ot_study._storage
        if storage.get_trial(ot_trial._trial_id).state.is_finished():
            return  # a restored experiment re-ran a trial the study already holds (stopped by _SkipFinished)
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
                self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            elif final == "complete":
                weights = self._save_weights(trial_id, ot_trial.number, result.get(CHECKPOINT_DIR))
                if weights:
                    ot_trial.set_user_attr(records.WEIGHTS_PATH, weights)
                self._ot_study.tell(ot_trial, [float(v) for v in json.loads(result[OBJECTIVES])])
            else:  # stopped by the scheduler, or rejected untrained ("pruned")
                self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError) as err:
            optuna.logging.get_logger("autocnn").warning(f"could not tell trial {ot_trial.number}: {err}")
        live = _LIVE.get(self._study_name)
        if live is not None and live.progress is not None:
            live.progress.on_trial_end(self._ot_study, storage.get_trial(ot_trial._trial_id))

    def _save_weights(self, trial_id: str, number: int, checkpoint_dir: str | None) -> str | None:
        """Copy the trained weights from the trial's final Tune checkpoint to the study's artifacts
        (`autocnn.artifacts`, where the local backend puts them), in this process like every record."""
        live = _LIVE.get(self._study_name)
        if live is None or live.experiment is None or not checkpoint_dir:
            return None
        checkpoint = Checkpoint(f"{live.experiment}/{_trial_dirname_for(trial_id)}/{checkpoint_dir}")
        state = _load_state(checkpoint)
        return save_trial_weights(_StateDict(state["model"]), live.ctx.config.storage, self._study_name, number)

    def _record(self, trial_id: str, result: dict) -> None:
        """Write the attributes a worker reported and, single-objective, the epoch's intermediate value."""
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None or ATTRS not in result:
            return
        storage = self._ot_study._storage
        frozen = storage.get_trial(ot_trial._trial_id)
        if frozen.state.is_finished():
            return
        for key, value in json.loads(result[ATTRS]).items():
            ot_trial.set_user_attr(key, value)
        if result.get(FINAL):
            self._finals[trial_id] = {k: result[k] for k in (FINAL, OBJECTIVES, CHECKPOINT_DIR) if k in result}
        epoch, value, final = int(result.get(EPOCH, 0)), float(result.get(VAL, math.nan)), result.get(FINAL)
        if (len(self._ot_study.directions) == 1 and epoch >= 1 and final in (None, "complete")
                and math.isfinite(value) and epoch not in frozen.intermediate_values):
            ot_trial.report(value, epoch)
        live = _LIVE.get(self._study_name)
        if live is not None and live.progress is not None and epoch >= 1 and final is None:
            live.progress.on_epoch(ot_trial.number, EpochReport(epoch, value, float(result.get("train_loss", 0.0)),
                                                                 0.0))


class _StateDict:
    """Trained weights where `save_trial_weights` expects a module (it only calls `state_dict()`)."""

    def __init__(self, state: dict) -> None:
        self._state = state

    def state_dict(self) -> dict:
        return self._state


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


class _Heartbeat(_StorageUser, Callback):
    """Records Optuna heartbeats for the live trials of this experiment (ask/tell runs no heartbeat),
    and tells the driver how many trials were unfinished at the last step (Ctrl-C detection)."""

    def __init__(self, storage_url: str | None, study_name: str) -> None:
        super().__init__(storage_url)
        self.study_name = study_name
        self._last = 0.0

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        live = _LIVE.get(self.study_name)
        if live is not None:
            live.unfinished = sum(t.status in (Trial.PENDING, Trial.RUNNING, Trial.PAUSED) for t in trials)

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        if time.monotonic() - self._last < HEARTBEAT_INTERVAL:
            return
        self._last = time.monotonic()
        for trial in trials:
            trial_id = (trial.config.get(SPEC) or {}).get("trial_id")
            if trial_id is not None and trial.status in (Trial.PENDING, Trial.RUNNING, Trial.PAUSED):
                self.storage().record_heartbeat(trial_id)


class _SkipFinished(_StorageUser, Stopper):
    """Stops a (restored) Tune trial whose Optuna trial is already finished in the study."""

    def __call__(self, trial_id: str, result: dict) -> bool:
        optuna_id = result.get(OPTUNA_ID)
        return optuna_id is not None and self.storage().get_trial(int(optuna_id)).state.is_finished()

    def stop_all(self) -> bool:
        return False


# -- worker side -----------------------------------------------------------------------------------

class _Recorder:
    """Trial-like sink for `records.*` calls in a worker: attributes go to the driver with the next report."""

    def __init__(self, number: int, trial_id: int) -> None:
        self.number = number
        self.trial_id = trial_id
        self.user_attrs: dict[str, Any] = {}
        self._pending: dict[str, Any] = {}

    def set_user_attr(self, key: str, value: Any) -> None:
        self.user_attrs[key] = value
        self._pending[key] = value

    def report(self, metrics: dict, checkpoint: Checkpoint | None = None) -> None:
        pending, self._pending = self._pending, {}
        tune.report({**metrics, ATTRS: json.dumps(pending), OPTUNA_ID: self.trial_id}, checkpoint=checkpoint)


class _OptimizerTap:
    """Gets hold of the optimizer `train` creates (torch's global step pre-hook) to checkpoint it, and on
    a resumed run loads the checkpointed state into it before its first step, keeping the new run's
    hyperparameters (learning rate and schedule base, weight decay: PBT may have changed them)."""

    KEEP = ("lr", "initial_lr", "weight_decay")

    def __init__(self, state: dict | None) -> None:
        self.optimizer: torch.optim.Optimizer | None = None
        self._state = state
        self._handle = None
        self._thread = threading.get_ident()

    def __enter__(self) -> "_OptimizerTap":
        self._thread = threading.get_ident()  # the hook is process-wide: only this trial's thread counts
        self._handle = register_optimizer_step_pre_hook(self._pre_step)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def _pre_step(self, optimizer, args, kwargs) -> None:
        if self.optimizer is not None or threading.get_ident() != self._thread:
            return
        self.optimizer = optimizer
        if self._state is not None:
            keep = [{k: g[k] for k in self.KEEP if k in g} for g in optimizer.param_groups]
            optimizer.load_state_dict(self._state)
            for group, values in zip(optimizer.param_groups, keep):
                group.update(values)


def _continued_schedule(name: str, done: int, epochs: int, warmup_epochs: float) -> str:
    """A schedule that continues `name` (planned over `epochs`) from epoch `done` on; registered per process."""
    key = f"{name}@{done}/{epochs}/{warmup_epochs:g}"
    if key not in SCHEDULES:
        base = SCHEDULES.get(name)

        def factory(total: int, warmup: int) -> Callable[[int], float]:
            steps = total // (epochs - done)
            inner = base(epochs * steps, round(warmup_epochs * steps))
            return lambda step: inner(step + done * steps)

        SCHEDULES.register(key, factory)
    return key


def _train_resumed(model, data, config, *, resolution, on_epoch, state: dict | None):
    """`train`, or its continuation after `state["epoch"]` epochs: the weights are already loaded, the
    optimizer state is loaded by `_OptimizerTap`, the schedule continues where it was."""
    if state is None:
        return train(model, data, config, resolution=resolution, on_epoch=on_epoch)
    done = state["epoch"]
    rest = dataclasses.replace(config, epochs=config.epochs - done, warmup_epochs=0.0, seed=config.seed + 7919 * done,
                               schedule=_continued_schedule(config.schedule, done, config.epochs, config.warmup_epochs))
    result = train(model, data, rest, resolution=resolution,
                   on_epoch=lambda r: on_epoch(dataclasses.replace(r, epoch=r.epoch + done)))
    curve = list(state["curve"]) + result.val_curve
    return dataclasses.replace(result, val_curve=curve, best_val=max(curve), epochs_run=len(curve))


def _maybe_die(number: int, epoch: int) -> None:
    """Test hook (`AUTOCNN_RAY_FAULT=TRIAL:EPOCH:MARKER`): the worker process dies once, mid-trial."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    trial, at_epoch, marker = spec.split(":", 2)
    if int(trial) == number and int(at_epoch) == epoch and not os.path.exists(marker):
        Path(marker).write_text(f"{os.getpid()}\n")
        os._exit(17)


def _load_state(checkpoint: Checkpoint | None) -> dict | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / "state.pt", map_location="cpu", weights_only=False)


def _trainable(tune_config: dict, *, data, run: dict) -> None:
    """One trial in a Ray worker: price, train (resuming from Tune's checkpoint), report every epoch."""
    from autocnn.builder import build_model
    from autocnn.genotype import Genotype

    spec = tune_config[SPEC]
    config = SearchConfig.from_dict(run["config"])
    rec = _Recorder(spec["number"], spec["trial_id"])
    rec.set_user_attr(GPU_IDS, [int(i) if str(i).isdigit() else str(i) for i in ray.get_gpu_ids()])
    torch.set_num_threads(max(1, int(run["threads"])))
    if "pruned" in spec:
        rec.report({VAL: 0.0, EPOCH: 0, FINAL: "pruned"})
        return
    genotype = Genotype.from_dict(spec["genotype"])
    train_config = train_config_for(config, spec["number"])
    torch.manual_seed(train_config.seed)  # the same initial weights whichever worker (or reused actor) runs it
    state = _load_state(tune.get_checkpoint())
    if state is not None and "final" in state:  # restored after its last report: say it again
        for key, value in state["attrs"].items():
            rec.set_user_attr(key, value)
        _report_final(rec, state["final"], state["model"])
        return
    if state is None:
        try:
            model, costs = price_candidate(rec, genotype, run["constraints"])
        except optuna.TrialPruned:
            rec.report({VAL: 0.0, EPOCH: 0, FINAL: "pruned"})
            return
    else:
        model, costs = build_model(genotype), state["costs"]
        model.load_state_dict(state["model"])
    tuned = {k: float(tune_config[k]) for k in TUNABLE if k in tune_config}
    if tuned:
        train_config = dataclasses.replace(train_config, **tuned)
        history = (state or {}).get("hparams", []) + [{"from_epoch": (state or {}).get("epoch", 0) + 1, **tuned}]
        rec.set_user_attr(HPARAMS, history)
    tap = _OptimizerTap(state["optimizer"] if state else None)
    elapsed = state["elapsed"] if state else 0.0
    started = time.perf_counter()
    record_epoch = epoch_recorder(rec, state["curve"] if state else [])

    def on_epoch(report: EpochReport) -> None:
        record_epoch(report)
        rec.set_user_attr(records.WALL_TIME, elapsed + time.perf_counter() - started)
        if report.epoch >= config.epochs:
            return  # the final report, after the test evaluation, carries the last epoch
        with tempfile.TemporaryDirectory() as folder:
            torch.save({"epoch": report.epoch, "model": {k: v.cpu() for k, v in model.state_dict().items()},
                        "optimizer": tap.optimizer.state_dict(), "curve": rec.user_attrs[records.VAL_CURVE],
                        "costs": costs, "elapsed": elapsed + time.perf_counter() - started,
                        "hparams": rec.user_attrs.get(HPARAMS, [])}, Path(folder) / "state.pt")
            rec.report({VAL: report.val_metric, EPOCH: report.epoch, "train_loss": report.train_loss},
                       checkpoint=Checkpoint.from_directory(folder))
        _maybe_die(spec["number"], report.epoch)

    try:
        with tap:
            values = fit_candidate(rec, config, data, genotype, model, costs, train_config=train_config,
                                   on_epoch=on_epoch, run=lambda *a, **kw: _train_resumed(*a, **kw, state=state),
                                   elapsed=elapsed)
    except DivergedError:
        curve = rec.user_attrs.get(records.VAL_CURVE) or [0.0]
        rec.report({VAL: curve[-1], EPOCH: len(curve), FINAL: "failed"})
        return
    curve = rec.user_attrs[records.VAL_CURVE]
    _report_final(rec, {VAL: curve[-1], EPOCH: len(curve), FINAL: "complete", OBJECTIVES: json.dumps(values)},
                  {k: v.cpu() for k, v in model.state_dict().items()})


def _report_final(rec: _Recorder, metrics: dict, weights: dict) -> None:
    """The last report of a trained trial, with a checkpoint of its weights (the driver saves them)."""
    with tempfile.TemporaryDirectory() as folder:
        torch.save({"final": metrics, "attrs": dict(rec.user_attrs), "model": weights}, Path(folder) / "state.pt")
        rec.report(metrics, checkpoint=Checkpoint.from_directory(folder))


# -- running a search ------------------------------------------------------------------------------

def _resolve_options(config: SearchConfig, stored: dict, overrides: dict) -> dict:
    """Ray options: explicit ones, else those stored with the study, else the defaults; validated."""
    opts = {**DEFAULTS, **{k: v for k, v in stored.items() if k in DEFAULTS},
            **{k: v for k, v in overrides.items() if v is not None}}
    if opts["scheduler"] not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {opts['scheduler']!r} for --scheduler; "
                          f"choose from {', '.join(SCHEDULERS.names())}")
    if config.multi_objective and opts["scheduler"] != "fifo":
        raise ConfigError(f"--scheduler {opts['scheduler']} stops trials on one metric; a multi-objective "
                          "search (--objectives with costs) needs --scheduler fifo")
    gpus, cpus = float(opts["gpus_per_trial"]), float(opts["cpus_per_trial"])
    if gpus < 0 or (gpus > 1 and not gpus.is_integer()):
        raise ConfigError(f"--gpus-per-trial must be a fraction in [0, 1] or a whole number, got {gpus:g}")
    if cpus <= 0:
        raise ConfigError(f"--cpus-per-trial must be > 0, got {cpus:g}")
    if opts["max_concurrent"] is not None and int(opts["max_concurrent"]) < 1:
        raise ConfigError(f"--max-concurrent must be >= 1, got {opts['max_concurrent']}")
    opts.update(gpus_per_trial=gpus, cpus_per_trial=cpus)
    _check_reachable(opts["address"])
    if opts["storage_path"] is None:
        opts["storage_path"] = _default_storage_path(config.storage)
    elif "://" not in str(opts["storage_path"]):
        opts["storage_path"] = str(Path(opts["storage_path"]).expanduser().resolve())
    return opts


def _check_reachable(address: str | None) -> None:
    """Fail at once when --address HOST:PORT has nothing listening (ray.init retries for minutes)."""
    if not address or address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return  # another form of address: ray.init judges it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as err:
        raise ConfigError(f"cannot reach the Ray cluster at {address} ({err.strerror or err}); start it with "
                          "'ray start --head' or fix --address") from None


def _default_storage_path(storage_url: str | None) -> str:
    """`ray/` beside the study's other files (`autocnn.artifacts`): the SQLite file's folder, else ./studies."""
    return str(artifact_root(storage_url) / "ray")


def run_ray_search(config: SearchConfig, *, address: str | None = None, scheduler: str | None = None,
                   gpus_per_trial: float | None = None, cpus_per_trial: float | None = None,
                   max_concurrent: int | None = None, storage_path: str | None = None, resume: bool = False,
                   progress=None) -> optuna.Study:
    """Create a study for `config` and run it to its budget on Ray Tune (`resume`: continue `config.study`).

    `address` is an existing cluster (HOST:PORT); without it (or "local") a Ray is started for the run. The Ray
    options are stored with the study (`config.extra["ray"]`), so a resume needs none of them again.
    """
    overrides = dict(address=address, scheduler=scheduler, gpus_per_trial=gpus_per_trial,
                     cpus_per_trial=cpus_per_trial, max_concurrent=max_concurrent, storage_path=storage_path)
    if resume:
        return resume_ray_search(config.study, config.storage, trials=config.trials, timeout=config.timeout,
                                 progress=progress, **overrides)
    opts = _resolve_options(config, {}, overrides)
    config = config.replace(backend="ray", extra={**config.extra, "ray": opts})
    ctx = prepare_context(config)  # a bad space, dataset or constraint creates no storage and no study
    study, ctx.config = create_study(config)
    enqueue_presets(study, ctx)
    return _drive(study, ctx, opts, progress, restore=False)


def resume_ray_search(name: str | None, storage_url: str | None, *, trials: int | None = None,
                      timeout: float | None = None, progress=None, **overrides) -> optuna.Study:
    """Continue a study on Ray: restore its interrupted Tune experiment if there is one, then run to budget.

    Works for studies started by either backend; options not given are taken from the study.
    """
    study, config = reopen_study(name, storage_url, trials=trials, timeout=timeout)
    opts = _resolve_options(config, config.extra.get("ray", {}), overrides)
    config = config.replace(backend="ray", extra={**config.extra, "ray": opts})
    study.set_user_attr(CONFIG_ATTR, config.to_dict())
    return _drive(study, TrialContext.create(config), opts, progress, restore=True)


def _connect(address: str | None) -> bool:
    """Connect to `address` or start a local Ray; True when this call started/connected Ray."""
    if ray.is_initialized():
        return False
    env = {k: v for k, v in os.environ.items() if k.startswith("AUTOCNN_")}
    kwargs: dict[str, Any] = dict(log_to_driver=False, logging_level="WARNING",
                                  runtime_env={"env_vars": env} if env else None)
    try:
        if address and address != "local":
            ray.init(address=address, **kwargs)
        else:
            ray.init(address="local", include_dashboard=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ConfigError(f"cannot start or reach {where} ({reason}); check --address and 'ray status'") from None
    return True


def _trainable_for(ctx: TrialContext, opts: dict):
    run = {"config": ctx.config.to_dict(), "constraints": ctx.constraints,
           "threads": max(1, int(opts["cpus_per_trial"]))}
    resources = {"cpu": opts["cpus_per_trial"], "gpu": opts["gpus_per_trial"]}
    return tune.with_resources(tune.with_parameters(_trainable, data=ctx.data, run=run), resources)


class _StaleCheckpointFilter(logging.Filter):
    """Drops Tune's traceback for deleting a checkpoint that is already gone.

    A driver killed between Tune deleting a trial's oldest checkpoint (``num_to_keep``) and writing the
    next experiment snapshot leaves that checkpoint listed; after ``Tuner.restore`` Tune tries to delete
    it again, logs a FileNotFoundError and carries on correctly, so the traceback only alarms users.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        stale = (record.exc_info is not None and isinstance(record.exc_info[1], FileNotFoundError)
                 and str(record.msg).startswith("Trial %s: Error handling checkpoint"))
        return not stale


_STALE_CHECKPOINTS = _StaleCheckpointFilter()


def _fail_stale(study: optuna.Study) -> None:
    """Fail (and let the storage's retry callback re-queue) trials whose driver stopped heartbeating."""
    fail_stale_trials(study)


def _drive(study: optuna.Study, ctx: TrialContext, opts: dict, progress, *, restore: bool) -> optuna.Study:
    config = ctx.config
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # checkpoints every epoch with num_to_keep force experiment snapshots; they are small, keep them quiet
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    warnings.filterwarnings("ignore", message="Consider boosting PBT performance")
    logging.getLogger("ray.tune.execution.tune_controller").addFilter(_STALE_CHECKPOINTS)  # idempotent
    started = _connect(opts["address"])
    live = _LIVE[study.study_name] = _Live(ctx=ctx, progress=progress,
                                           deadline=time.time() + config.timeout if config.timeout else None)
    study.set_user_attr(STOP_ATTR, False)
    lease = take_worker_lease(study)
    if progress is not None:
        progress.start(study, config)
    failures = 0
    try:
        if restore:
            fail_orphaned_trials(study)  # killed before Tune knew them: nothing to continue, retry them now
            _restore_experiment(study, ctx, opts)
        _fail_stale(study)
        while finished_trials(study) < config.trials and not stop_requested(study):
            if live.deadline is not None and time.time() >= live.deadline:
                break
            before = finished_trials(study)
            _fit(study, ctx, opts, config.trials - before)
            _fail_stale(study)
            rejected = _rejections_in_a_row(study)
            if rejected >= BudgetCallback(config.trials).max_rejections:
                raise StudyError(f"the constraints {ctx.constraints} rejected {rejected} sampled candidates in a "
                                 "row; relax --max-params/--max-flops/--max-latency-ms or the space's")
            if finished_trials(study) > before:
                failures = 0
            elif not rejected:  # the round ended in failed trials, not rejections
                failures += 1
            if failures >= 3:
                raise StudyError(f"every recent trial of study {study.study_name!r} failed; see 'autocnn best "
                                 f"--study {study.study_name}' for the reasons and check the space and data")
    finally:
        _LIVE.pop(study.study_name, None)
        release_worker_lease(study, lease)
        if progress is not None:
            progress.stop(study)
        if started:
            ray.shutdown()
    return study


def _rejections_in_a_row(study: optuna.Study) -> int:
    """Constraint-rejected trials at the end of the study (they cost no budget, so a round can be all of them)."""
    count = 0
    for trial in reversed(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))):
        if records.REJECTED not in trial.user_attrs:
            break
        count += 1
    return count


def _searcher(study: optuna.Study, config: SearchConfig, opts: dict) -> _AutocnnSearch:
    tunable: dict[str, float] = {}
    if opts["scheduler"] == "pbt":
        from autocnn.training.optim import DEFAULT_LR

        tunable = {"lr": config.lr or DEFAULT_LR[config.optimizer], "weight_decay": DEFAULT_WEIGHT_DECAY}
    sampler = SAMPLERS.get(config.sampler)(config.seed + len(study.trials), config.multi_objective)
    # metric/mode only satisfy Tune: the study exists, so Optuna loads its own directions (and objectives,
    # which the workers' last report carries for every objective)
    return _AutocnnSearch(space=_DefineByRun(study.study_name, tunable), metric=VAL, mode="max", sampler=sampler,
                          study_name=study.study_name, storage=open_storage(config.storage, create=False))


def _run_config(study: optuna.Study, config: SearchConfig, opts: dict, name: str) -> tune.RunConfig:
    return tune.RunConfig(name=name, storage_path=f"{opts['storage_path'].rstrip('/')}/{study.study_name}",
                          verbose=0, stop=_SkipFinished(config.storage),
                          callbacks=[_Heartbeat(config.storage, study.study_name)],
                          failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=2))


def _trial_dirname(trial) -> str:
    return _trial_dirname_for(trial.trial_id)


def _trial_dirname_for(trial_id: str) -> str:
    return f"trial-{trial_id}"


def _fit(study: optuna.Study, ctx: TrialContext, opts: dict, n_trials: int) -> None:
    """One Tune experiment of `n_trials` trials on the study."""
    config = ctx.config
    runs = int(study.user_attrs.get(RUNS_ATTR) or 0) + 1
    run_config = _run_config(study, config, opts, f"run-{runs}")
    tuner = tune.Tuner(
        _trainable_for(ctx, opts),
        tune_config=tune.TuneConfig(search_alg=_searcher(study, config, opts),
                                    scheduler=SCHEDULERS.get(opts["scheduler"])(config), num_samples=n_trials,
                                    max_concurrent_trials=opts["max_concurrent"], reuse_actors=True,
                                    trial_dirname_creator=_trial_dirname),
        run_config=run_config,
    )
    study.set_user_attr(RUNS_ATTR, runs)
    live = _LIVE[study.study_name]
    live.experiment, live.unfinished = f"{run_config.storage_path}/{run_config.name}", 0
    study.set_user_attr(EXPERIMENT_ATTR, live.experiment)
    tuner.fit()
    _finish(study)


def _restore_experiment(study: optuna.Study, ctx: TrialContext, opts: dict) -> bool:
    """Finish the Tune experiment a crashed driver left behind, if its directory is still there."""
    path = study.user_attrs.get(EXPERIMENT_ATTR)
    if not path or not tune.Tuner.can_restore(path):
        return False
    live = _LIVE[study.study_name]
    live.experiment, live.unfinished = path, 0
    try:
        tuner = tune.Tuner.restore(path, trainable=_trainable_for(ctx, opts), resume_unfinished=True)
    except Exception as err:  # an unreadable experiment must not block the study: its trials go stale instead
        warnings.warn(f"cannot restore the Ray experiment {path} ({type(err).__name__}: {err}); continuing the "
                      "study with new trials (its interrupted trials are failed and retried)", RuntimeWarning)
        study.set_user_attr(EXPERIMENT_ATTR, None)
        return False
    tuner.fit()
    _finish(study)
    return True


def _finish(study: optuna.Study) -> None:
    """After `Tuner.fit`: forget the finished experiment, or stop if Ctrl-C cut it short.

    On Ctrl-C Tune ends its loop, saves the experiment and returns normally (its trials then read as
    terminated); trials still unfinished at its last step tell the two apart. The experiment stays
    recorded on the study, so --resume restores it.
    """
    if _LIVE[study.study_name].unfinished:
        raise KeyboardInterrupt
    study.set_user_attr(EXPERIMENT_ATTR, None)
