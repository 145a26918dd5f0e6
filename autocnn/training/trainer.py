"""Train one candidate network on in-memory data and report a validation curve.

The step loop avoids host syncs: the loss is summed on the device and read (and checked for
NaN/inf) once per epoch. `on_epoch` is where a search prunes or stops a run; whatever it raises
leaves `train` unchanged, so this package never needs to know about Optuna or Ray.

Checkpoint and resume are the trainer's: every `EpochReport` can snapshot the run (`report.state()`,
a `TrainState`), and `train(..., resume=state)` continues it where it stood, with the optimizer's
moments and the learning-rate schedule carried on (a backend that checkpoints trials, e.g. Ray Tune,
only stores and hands back the snapshot).
"""
from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.deterministic
from torch import nn

from ..data import Batches, DataSplits, DeviceBatches, TensorSplit, batches_for, choose_mode
from .config import TrainConfig, resolve_device
from .metrics import macro_f1, mean_average_precision, micro_f1, subset_accuracy
from .optim import OPTIMIZERS, SCHEDULES, param_groups


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite; a search records the trial as failed."""


@dataclass(frozen=True)
class TrainState:
    """Where a run stands after `epoch` epochs: with the planned `TrainConfig`, enough to continue it.

    `model` and `optimizer` are state dicts (on the CPU); `curve` is the validation curve so far.
    `best_model` holds the best epoch's weights when that epoch is not `epoch` (None: `model` is the best so
    far) and `best_metrics` its validation figures, so a resumed run still ends with the best weights.
    `ema` is the weight average's state (`TrainConfig.ema_decay`; None without one).
    """

    epoch: int
    model: dict
    optimizer: dict
    curve: tuple[float, ...]
    best_model: dict | None = None
    best_metrics: dict | None = None
    ema: dict | None = None

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "model": self.model, "optimizer": self.optimizer, "curve": list(self.curve),
                "best_model": self.best_model, "best_metrics": self.best_metrics, "ema": self.ema}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainState":
        return cls(epoch=int(data["epoch"]), model=data["model"], optimizer=data["optimizer"],
                   curve=tuple(data["curve"]), best_model=data.get("best_model"),
                   best_metrics=data.get("best_metrics"), ema=data.get("ema"))


@dataclass
class EpochReport:
    epoch: int
    val_metric: float
    train_loss: float
    seconds: float
    state: Callable[[], TrainState] | None = field(default=None, repr=False, compare=False)
    """Snapshot of the run after this epoch (a checkpoint), taken only when called."""


@dataclass
class TrainResult:
    """What a run measured. The model `train` leaves behind holds the best epoch's weights (`best_epoch`, 1-based,
    the first epoch with the highest validation metric): `best_val`, the `val_*` extras and the test figures are
    those weights' own, so what a study records is what it saves and exports."""

    val_curve: list[float]
    best_val: float
    test_metric: float | None
    epochs_run: int
    wall_time: float
    train_loss: float
    metric_name: str
    extra: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0


class _Best:
    """The best epoch so far (the first with the highest validation metric): its number, validation figures
    and a CPU copy of its weights, taken when it became the best (the model trains on past them)."""

    def __init__(self, resume: TrainState | None, name: str) -> None:
        self.name, self.epoch, self.metrics, self.weights = name, 0, {}, None
        if resume is not None:
            if resume.best_metrics:
                self.metrics = dict(resume.best_metrics)
                self.epoch = resume.curve.index(self.metrics[name]) + 1
            else:  # a checkpoint from before best weights were kept: its own epoch is the best it has weights of
                self.epoch, self.metrics = resume.epoch, {name: resume.curve[-1]}
            self.weights = resume.best_model if resume.best_model is not None else resume.model

    def update(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> None:
        if self.epoch == 0 or metrics[self.name] > self.metrics[self.name]:
            self.epoch, self.metrics, self.weights = epoch, dict(metrics), _cpu(model.state_dict())

    def restore(self, model: nn.Module, last_epoch: int, evaluated: nn.Module) -> None:
        """Load the best weights into `model` unless they are its current ones (`evaluated`: the module whose
        weights were scored, `model` itself or its weight average)."""
        if self.epoch != last_epoch:
            model.load_state_dict(self.weights)
        elif evaluated is not model:
            model.load_state_dict(evaluated.state_dict())


def _load_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a checkpointed optimizer state (moments, step counts) but keep this run's hyperparameters:
    learning rate and weight decay come from the config (PBT may have changed them); the schedule's
    base rate (`initial_lr`) is set again from them by the scheduler."""
    keep = [{k: g[k] for k in ("lr", "weight_decay")} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, values in zip(optimizer.param_groups, keep):
        group.update(values)
        group.pop("initial_lr", None)


def _cpu(value):
    """A copy of a state dict with every tensor on the CPU: a checkpoint must load without the run's
    device, and must not change as the run goes on (a state dict's tensors are the live ones)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cpu(v) for v in value]
    return value


METRICS = ("accuracy", "mAP", "f1")
"""What a run can track: accuracy (subset accuracy on multi-label data), mAP (multi-label only) and F1
(macro-F1 of single-label data, micro-F1 of multi-label data, as the existing multi-label `f1`)."""


def metric_name(multilabel: bool, metric: str | None = None) -> str:
    """The metric a run tracks: `metric`, or the data's own (mAP for multi-label, else accuracy)."""
    if metric is None:
        return "mAP" if multilabel else "accuracy"
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    if metric == "mAP" and not multilabel:
        raise ValueError("mAP needs multi-label data; single-label data has accuracy or f1 (macro-F1)")
    return metric


def _use_deterministic_algorithms(mode: bool, warn_only: bool, compiled: bool) -> None:
    """`torch.use_deterministic_algorithms`, minus its import of torch._inductor (3 s of every search process's
    first trial) when nothing compiles: the import only sets inductor's own `deterministic` flag, which eager
    kernels never read. torch has no public switch for the kernels alone (hence `torch._C`)."""
    if compiled or "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        torch._C._set_deterministic_algorithms(mode, warn_only=warn_only)


@contextlib.contextmanager
def _seeded(seed: int, deterministic: bool, compiled: bool = False) -> Iterator[None]:
    """Seed every RNG a model may use; switch on deterministic kernels for the run only."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    fill = torch.utils.deterministic.fill_uninitialized_memory
    if deterministic:
        _use_deterministic_algorithms(True, True, compiled)
        # Determinism comes from the kernels; NaN-filling every torch.empty (a debugging aid that
        # deterministic mode switches on) only costs time: a few % of a small CPU model's step.
        torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        _use_deterministic_algorithms(previous[0], previous[1], compiled)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def _weight_average(model: nn.Module, decay: float | None, state: dict | None):
    """An exponential moving average of `model`'s weights and BN buffers (None without `decay`): what EMA runs
    evaluate, keep and save. Its first update copies the weights, so epoch 1 is not dragged toward the init."""
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    if state is not None:
        ema.load_state_dict(state)
    return ema


def _batch_mixer(config: TrainConfig, num_classes: int, multilabel: bool):
    """MixUp and/or CutMix over a batch and its labels (soft targets), or None when the recipe has neither."""
    if not (config.mixup or config.cutmix):
        return None
    if multilabel:
        raise ValueError("mixup and cutmix need single-label data")
    from torchvision.transforms import v2

    mixers = [v2.MixUp(alpha=config.mixup, num_classes=num_classes)] if config.mixup else []
    mixers += [v2.CutMix(alpha=config.cutmix, num_classes=num_classes)] if config.cutmix else []
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


def _amp_dtype(enabled: bool, device: torch.device) -> torch.dtype | None:
    """bf16 where the hardware has it (no loss scaling needed), else fp16 with a GradScaler."""
    if not enabled:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


@torch.inference_mode()
def _logits(model: nn.Module, batches: Batches, amp_dtype: torch.dtype | None) -> torch.Tensor:
    """The model's float logits for every row of an unshuffled `batches`, in eval mode (restored after)."""
    was_training = model.training
    model.eval()
    try:
        outputs = []
        for x, _ in batches:
            with torch.autocast(batches.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs.append(model(x).float())
        return torch.cat(outputs)
    finally:
        model.train(was_training)


@torch.inference_mode()
def _evaluate(model: nn.Module, batches: Batches, multilabel: bool,
              amp_dtype: torch.dtype | None, metric: str | None = None) -> dict[str, float]:
    """The data's own metrics ({"accuracy"} or {"mAP", "f1"}) and "loss", plus `metric` when it is another."""
    scores, labels = _logits(model, batches, amp_dtype), batches.labels
    n = len(labels)
    if multilabel:
        loss = F.binary_cross_entropy_with_logits(scores, labels, reduction="sum") / labels.shape[1]
    else:
        loss = F.cross_entropy(scores, labels, reduction="sum")
    metrics = {"loss": loss.item() / n}
    if multilabel:
        metrics["mAP"] = mean_average_precision(scores, labels)
        metrics["f1"] = micro_f1(scores, labels)
        if metric == "accuracy":
            metrics["accuracy"] = subset_accuracy(scores, labels)
    else:
        predicted = scores.argmax(1)
        metrics["accuracy"] = (predicted == labels).sum().item() / n
        if metric == "f1":
            metrics["f1"] = macro_f1(predicted, labels, scores.shape[1])
    return metrics


def _eval_batches(split: TensorSplit, batch_size: int, device, resolution, channels_last) -> DeviceBatches:
    return DeviceBatches(split, batch_size, device=resolve_device(device), resolution=resolution,
                         channels_last=channels_last)


def evaluate(
    model: nn.Module,
    split: TensorSplit,
    *,
    batch_size: int,
    device: torch.device | str,
    resolution: int | None = None,
    multilabel: bool = False,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """Metrics of `model` on `split`: {"accuracy", "loss"} or, multi-label, {"mAP", "f1", "loss"}."""
    batches = _eval_batches(split, batch_size, device, resolution, channels_last)
    return _evaluate(model.to(batches.device), batches, multilabel, amp_dtype)


def predict(model: nn.Module, split: TensorSplit, *, batch_size: int, device: torch.device | str,
            resolution: int | None = None, channels_last: bool = False) -> torch.Tensor:
    """The logits (on the CPU) `model` gives every image of `split` through the trainer's own evaluation path."""
    batches = _eval_batches(split, batch_size, device, resolution, channels_last)
    return _logits(model.to(batches.device), batches, None).cpu()


def train(
    model: nn.Module,
    data: DataSplits,
    config: TrainConfig,
    *,
    resolution: int | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    evaluate_test: bool = True,
    resume: TrainState | None = None,
    keep_best: bool = True,
) -> TrainResult:
    """Train `model` in place on `data.train`, validating after every epoch.

    `resolution` resizes batches on the fly (None keeps the native size). Raises `DivergedError`
    when the epoch's mean loss is not finite; exceptions from `on_epoch` propagate unchanged.

    `resume` continues a run planned with `config` from a `TrainState` (`EpochReport.state()`):
    the weights and optimizer state are loaded, epochs `resume.epoch + 1 ... config.epochs` run on the
    same learning-rate schedule, and the result's curve includes the epochs before. The optimizer's
    hyperparameters (learning rate, weight decay) are `config`'s, so a run may resume with new ones
    (PBT). The shuffling seed moves on with the epoch, so a resumed run does not replay epoch 1's order.

    With `keep_best` (the default) the model ends with its best epoch's weights and every figure of the
    result is theirs (`TrainResult`); without it (training on train+val, where validation means nothing)
    it ends with the last epoch's. With `config.ema_decay` those weights are the weight average's: it is
    what is validated, kept and left in the model.
    """
    started = time.perf_counter()
    device = config.resolved_device()
    cuda = device.type == "cuda"
    amp_dtype = _amp_dtype(config.amp if config.amp is not None else cuda, device)
    channels_last = config.channels_last if config.channels_last is not None else cuda
    name = metric_name(data.multilabel, config.metric)
    done = resume.epoch if resume is not None else 0
    if not 0 <= done < config.epochs:
        raise ValueError(f"cannot resume after epoch {done} a run of {config.epochs} epochs")
    seed = config.seed + 7919 * done

    with _seeded(seed, deterministic=not cuda, compiled=config.compile):
        if resume is not None:
            model.load_state_dict(resume.model)
        model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        mode, _ = choose_mode(data.nbytes, device, config.data_mode, config.data_memory)
        eval_kwargs = dict(device=device, resolution=resolution, channels_last=channels_last, mode=mode,
                           workers=config.data_workers, cache=data.cache)
        train_batches = batches_for(
            data.train, config.batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed),
            augment=config.augment or data.augment, drop_last=len(data.train) > config.batch_size, **eval_kwargs,
        )
        val_batches = batches_for(data.val, 2 * config.batch_size, **eval_kwargs)
        steps = len(train_batches)

        optimizer = OPTIMIZERS.get(config.optimizer)(
            param_groups(model, config.weight_decay), config.resolved_lr, device)
        if resume is not None:
            _load_optimizer(optimizer, resume.optimizer)
        factor = SCHEDULES.get(config.schedule)(config.epochs * steps, round(config.warmup_epochs * steps))
        skipped = done * steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factor(step + skipped))
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        criterion: nn.Module = (nn.BCEWithLogitsLoss() if data.multilabel
                                else nn.CrossEntropyLoss(label_smoothing=config.label_smoothing))
        params = [p for g in optimizer.param_groups for p in g["params"]]
        mixer = _batch_mixer(config, data.num_classes, data.multilabel)
        ema = _weight_average(model, config.ema_decay, resume.ema if resume is not None else None)
        evaluated = ema.module if ema is not None else model
        forward = torch.compile(model) if config.compile else model

        curve: list[float] = list(resume.curve) if resume is not None else []
        train_loss = float("nan")
        best = _Best(resume, name)

        def snapshot(epoch: int, curve: tuple[float, ...]) -> Callable[[], TrainState]:
            best_model = best.weights if best.epoch != epoch or ema is not None else None
            best_metrics = dict(best.metrics)
            return lambda: TrainState(epoch=epoch, model=_cpu(model.state_dict()),
                                      optimizer=_cpu(optimizer.state_dict()), curve=curve,
                                      best_model=best_model, best_metrics=best_metrics,
                                      ema=_cpu(ema.state_dict()) if ema is not None else None)

        for epoch in range(done + 1, config.epochs + 1):
            epoch_start = time.perf_counter()
            model.train()
            loss_sum = torch.zeros((), device=device)
            for x, y in train_batches:
                if mixer is not None:
                    x, y = mixer(x, y)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = criterion(forward(x), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if config.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(params, config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
                loss_sum += loss.detach().float()
            train_loss = loss_sum.item() / steps
            if not math.isfinite(train_loss):
                raise DivergedError(f"training loss became {train_loss} in epoch {epoch}; "
                                    f"lower the learning rate or enable grad_clip")
            val = _evaluate(evaluated, val_batches, data.multilabel, amp_dtype, name)
            curve.append(val[name])
            if keep_best:
                best.update(epoch, val, evaluated)
            else:
                best.epoch, best.metrics = epoch, val
            if on_epoch is not None:
                on_epoch(EpochReport(epoch, val[name], train_loss, time.perf_counter() - epoch_start,
                                     state=snapshot(epoch, tuple(curve))))

        best.restore(model, config.epochs, evaluated)
        extra = {f"val_{k}": v for k, v in best.metrics.items() if k != name}
        test_metric = None
        if evaluate_test:
            test = _evaluate(model, batches_for(data.test, 2 * config.batch_size, **eval_kwargs),
                             data.multilabel, amp_dtype, name)
            test_metric = test[name]
            extra.update({f"test_{k}": v for k, v in test.items() if k != name})
        if data.multilabel and "val_f1" in extra:
            extra["f1"] = extra.pop("val_f1")

    return TrainResult(
        val_curve=curve,
        best_val=curve[best.epoch - 1],
        test_metric=test_metric,
        epochs_run=len(curve),
        wall_time=time.perf_counter() - started,
        train_loss=train_loss,
        metric_name=name,
        extra=extra,
        best_epoch=best.epoch,
    )
