"""The worker side of a Ray trial: price, train (resuming from Tune's checkpoint), report every epoch.

Record calls land on a `Recorder`, whose attributes travel to the driver with every `tune.report`
(JSON, so Tune does not flatten them); only the driver writes to the study. Checkpoints are the
trainer's own snapshots (`autocnn.training.TrainState`) plus what the trial adds (costs, wall time,
PBT's hyperparameter history, the trial's number), so a retried or paused trial continues where it stood
and a trial PBT exploits continues from its donor's checkpoint.
"""
from __future__ import annotations

import atexit
import dataclasses
import json
import os
import shutil
import socket
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import optuna
import ray
import torch
from ray import tune
from ray.tune import Checkpoint

from autocnn.search import records
from autocnn.search.budget import OutOfTime, check_deadline
from autocnn.search.config import SearchConfig
from autocnn.search.control import pid_alive
from autocnn.search.engine import (TRIAL_ERRORS, TrialContext, epoch_recorder, fit_candidate, fitted, look_guard,
                                   needs_latency, price_candidate, price_time, record_failure, train_config_for,
                                   weights_for)
from autocnn.search.ray.keys import (ATTRS, BEST_S, COSTS, EPOCH, FAULT_ENV, FINAL, GPU_IDS, HPARAMS, OBJECTIVES,
                                     OPTUNA_ID, RIVAL_EPOCHS, SPEC, TIME_MODEL, TUNABLE, VAL)
from autocnn.search.timing import EpochShape, TimeModel
from autocnn.training import EpochReport, TrainState, train
from autocnn.weights import freeze_blocks


class Recorder:
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


def load_state(checkpoint: Checkpoint | None) -> dict | None:
    """What a trial's checkpoint holds (see `trainable`), or None without one."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / "state.pt", map_location="cpu", weights_only=False)


SCRATCH_PREFIX = "autocnn-ckpt-"
_scratch_of: dict[int, Path] = {}


def scratch_folder() -> Path:
    """This worker process's checkpoint folder: each report rewrites it and `tune.report` copies it to the
    experiment's storage.

    `tune.report` copies the checkpoint and then blocks until the driver asks for more, so a worker killed there
    (its driver killed, or an actor Tune ends without waiting) never removes what it reported from. A folder
    per report left one trial's weights in the temp folder each time; now each process has one, removed at its
    exit, and the first report of a process removes those of this host's dead workers.
    """
    pid = os.getpid()
    if pid not in _scratch_of:
        temp, prefix = Path(tempfile.gettempdir()), f"{SCRATCH_PREFIX}{socket.gethostname()}-"
        for stale in temp.glob(prefix + "*"):
            owner = stale.name.removeprefix(prefix)
            if owner.isdigit() and not pid_alive(int(owner)):
                shutil.rmtree(stale, ignore_errors=True)
        folder = temp / f"{prefix}{pid}"
        folder.mkdir(exist_ok=True)
        atexit.register(shutil.rmtree, folder, True)
        _scratch_of[pid] = folder
    return _scratch_of[pid]


def _report(rec: Recorder, metrics: dict, state: dict) -> None:
    """One report with a checkpoint of `state`."""
    folder = scratch_folder()
    torch.save(state, folder / "state.pt")
    rec.report(metrics, checkpoint=Checkpoint.from_directory(str(folder)))


def _report_final(rec: Recorder, metrics: dict, weights: dict) -> None:
    """The last report of a trained trial, or of one the deadline stopped, with a checkpoint of its weights
    (the driver saves them)."""
    _report(rec, metrics, {"final": metrics, "attrs": dict(rec.user_attrs), "model": weights})


def _report_failed(rec: Recorder, err: BaseException) -> None:
    """The last report of a trial that failed (diverged, a forward that raised, out of memory)."""
    record_failure(rec, err)
    curve = rec.user_attrs.get(records.VAL_CURVE) or [0.0]
    rec.report({VAL: curve[-1], EPOCH: len(curve), FINAL: "failed"})


def _maybe_die(number: int, epoch: int) -> None:
    """Test hook (`AUTOCNN_RAY_FAULT=TRIAL:EPOCH:MARKER`): the worker process dies once, mid-trial."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    trial, at_epoch, marker = spec.split(":", 2)
    if int(trial) == number and int(at_epoch) == epoch and not os.path.exists(marker):
        Path(marker).write_text(f"{os.getpid()}\n")
        os._exit(17)


def time_model_of(spec: dict) -> TimeModel:
    """The time model the driver sent with the trial (a trial of an older experiment has none: the prior)."""
    return TimeModel.from_dict(spec[TIME_MODEL]) if TIME_MODEL in spec else TimeModel.prior()


def trainable_for(ctx: TrialContext, opts: dict):
    """The Tune trainable of a run: `trainable` with the data and the run's constants, and its resources."""
    run = {"config": ctx.config.to_dict(), "constraints": ctx.constraints,
           "threads": max(1, int(opts["cpus_per_trial"])), "deadline": ctx.deadline,
           "shape": dataclasses.asdict(ctx.epoch_shape)}
    resources = {"cpu": opts["cpus_per_trial"], "gpu": opts["gpus_per_trial"]}
    return tune.with_resources(tune.with_parameters(trainable, data=ctx.data, run=run), resources)


def trainable(tune_config: dict, *, data, run: dict) -> None:
    """One trial in a Ray worker: price, train (resuming from Tune's checkpoint), report every epoch."""
    from autocnn.builder import build_model
    from autocnn.genotype import Genotype

    spec = tune_config[SPEC]
    config = SearchConfig.from_dict(run["config"])
    rec = Recorder(spec["number"], spec["trial_id"])
    rec.set_user_attr(GPU_IDS, [int(i) if str(i).isdigit() else str(i) for i in ray.get_gpu_ids()])
    torch.set_num_threads(max(1, int(run["threads"])))
    if "pruned" in spec:  # a `require` of the space failed in the driver: it uses budget, so it runs as a trial
        rec.report({VAL: 0.0, EPOCH: 0, FINAL: "pruned"})
        return
    genotype = Genotype.from_dict(spec["genotype"])
    train_config = train_config_for(config, spec["number"])
    torch.manual_seed(train_config.seed)  # the same initial weights whichever worker (or reused actor) runs it
    state = load_state(tune.get_checkpoint())
    if state is not None and "final" in state:  # restored after its last report: say it again
        for key, value in state["attrs"].items():
            rec.set_user_attr(key, value)
        _report_final(rec, state["final"], state["model"])
        return
    try:
        if state is None:
            for key in records.PRICED_WITH:  # recorded by the driver: known here, not written
                if key in spec:
                    rec.user_attrs[key] = spec[key]
            admit = partial(price_time, rec, config=config, shape=EpochShape(**run["shape"]),
                            model=time_model_of(spec), deadline=run["deadline"],
                            rival_epochs=spec.get(RIVAL_EPOCHS, 0), best_s=spec.get(BEST_S))
            priced = {genotype.arch_id: spec[COSTS]} if COSTS in spec else None  # by the driver (not latency)
            model, costs = price_candidate(rec, genotype, run["constraints"], admit=admit, cache=priced,
                                           latency=needs_latency(config.objectives, run["constraints"]))
            model, resume = weights_for(model, spec.get(records.START_WEIGHTS), config.freeze), None
            config = fitted(config, rec.user_attrs)
            guard_look = look_guard(config, rec.user_attrs, spec.get(BEST_S))
        else:  # the checkpoint holds the weights; the frozen blocks stay frozen
            model, costs, resume = build_model(genotype), state["costs"], TrainState.from_dict(state)
            guard_look = None  # (restored: its look was held before the checkpoint)
            if spec.get(records.START_WEIGHTS):
                freeze_blocks(model, config.freeze)
            if state.get(records.SETTLING):  # recorded already: carried to the next checkpoint, not written again
                rec.user_attrs[records.SETTLING] = True
            config = fitted(config, {records.PLANNED_EPOCHS: state.get("planned_epochs", config.epochs),
                                     records.SETTLING: state.get(records.SETTLING)})
        train_config = dataclasses.replace(train_config, epochs=config.epochs, lr=config.lr,
                                           warmup_epochs=min(config.warmup_epochs, config.epochs))
    except optuna.TrialPruned:
        rec.report({VAL: 0.0, EPOCH: 0, FINAL: "pruned"})
        return
    except TRIAL_ERRORS as err:  # the candidate fails alone, recorded as the local backend records it
        _report_failed(rec, err)
        return
    tuned = {k: float(tune_config[k]) for k in TUNABLE if k in tune_config}
    if tuned:
        train_config = dataclasses.replace(train_config, **tuned)
        entry = {"from_epoch": (state or {}).get("epoch", 0) + 1, **tuned}
        if state is not None and state.get("number", spec["number"]) != spec["number"]:
            entry["from_trial"] = state["number"]  # PBT's exploit: the donor's checkpoint, continued here
        history = (state or {}).get("hparams", []) + [entry]
        rec.set_user_attr(HPARAMS, history)
    elapsed = state["elapsed"] if state else 0.0
    started = time.perf_counter()
    record_epoch = epoch_recorder(rec, list(resume.curve) if resume else [], (state or {}).get("epoch_seconds"))

    def on_epoch(report: EpochReport) -> None:
        record_epoch(report)
        rec.set_user_attr(records.WALL_TIME, elapsed + time.perf_counter() - started)
        if report.epoch >= config.epochs:
            return  # the final report, after the test evaluation, carries the last epoch
        if guard_look is not None:
            guard_look(report)
        check_deadline(run["deadline"], report.epoch, config.epochs, report.seconds)  # before its report: the last
        _report(rec, {VAL: report.val_metric, EPOCH: report.epoch, "train_loss": report.train_loss},
                 {**report.state().to_dict(), "costs": costs, "elapsed": elapsed + time.perf_counter() - started,
                  "hparams": rec.user_attrs.get(HPARAMS, []), "number": spec["number"], "planned_epochs": config.epochs,
                  records.SETTLING: rec.user_attrs.get(records.SETTLING),
                  "epoch_seconds": rec.user_attrs.get(records.EPOCH_SECONDS, [])})
        _maybe_die(spec["number"], report.epoch)

    try:
        values = fit_candidate(rec, config, data, genotype, model, costs, train_config=train_config,
                               on_epoch=on_epoch, run=partial(train, resume=resume), elapsed=elapsed)
    except TRIAL_ERRORS as err:
        _report_failed(rec, err)
        return
    except OutOfTime as stop:  # pruned with its last score, its weights saved by the driver
        rec.set_user_attr(records.OUT_OF_TIME, str(stop))
        curve = rec.user_attrs[records.VAL_CURVE]
        _report_final(rec, {VAL: curve[-1], EPOCH: len(curve), FINAL: "stopped"},
                      {k: v.cpu() for k, v in model.state_dict().items()})
        return
    curve = rec.user_attrs[records.VAL_CURVE]
    _report_final(rec, {VAL: curve[-1], EPOCH: len(curve), FINAL: "complete", OBJECTIVES: json.dumps(values)},
                  {k: v.cpu() for k, v in model.state_dict().items()})
