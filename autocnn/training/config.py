"""The one training configuration dataclass (the recipe plus where and how a run executes); validated on
construction so mistakes surface before a run."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ..data import AUGMENTATIONS
from .optim import DEFAULT_LR, OPTIMIZERS, SCHEDULES

RECIPE_FIELDS = ("epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule", "warmup_epochs",
                 "label_smoothing", "grad_clip", "amp", "channels_last", "compile", "ema_decay", "augment",
                 "mixup", "cutmix")
"""The fields of `TrainConfig` that are the training recipe: what `--recipe FILE.yaml`, the common flags and a
space's `training:` section set, what a study stores and what `search`, `train` and export's retraining use."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train one candidate network.

    `lr=None` picks the optimizer's default (0.05 for SGD, 2e-3 for AdamW); `amp` and
    `channels_last` default to on for CUDA and off for CPU; `device="auto"` means CUDA when
    available. `label_smoothing`, `mixup` and `cutmix` apply to single-label data only.
    The fields named in `RECIPE_FIELDS` are the recipe a study stores and every backend trains with;
    the others say where a run executes and how its data is fed.

    >>> TrainConfig(optimizer="adamw").resolved_lr
    0.002
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float | None = None
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None
    channels_last: bool | None = None
    grad_clip: float | None = 5.0
    compile: bool = False
    """Train through `torch.compile(model)` (opt-in: compiling costs seconds to minutes per candidate)."""
    ema_decay: float | None = None
    """Evaluate, keep and save an exponential moving average of the weights (and BN buffers) with this decay
    per step, e.g. 0.999; None: the raw weights."""
    augment: str | None = None
    """Train-time augmentation (`autocnn.data.AUGMENTATIONS`); None: the dataset's own."""
    mixup: float = 0.0
    """Beta(α, α) of MixUp (Zhang et al. 2018) per batch; 0: off. With `cutmix` too, each batch takes one of the two."""
    cutmix: float = 0.0
    """Beta(α, α) of CutMix (Yun et al. 2019) per batch; 0: off."""
    metric: str | None = None
    """What the validation curve tracks: "accuracy", "mAP" or "f1" (`trainer.METRICS`); None: the data's own."""
    data_mode: str = "auto"
    """How batches reach the device: "resident", "stream" or "auto" (`autocnn.data.batches.choose_mode`)."""
    data_memory: int | None = None
    """Bytes the data may take resident (auto mode); None: half the device's free memory."""
    data_workers: int | None = None
    """DataLoader processes of the streaming mode; None: up to 4."""

    def __post_init__(self) -> None:
        checks = [
            ("epochs", self.epochs >= 1, "must be >= 1"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"must be one of {OPTIMIZERS.names()}"),
            ("lr", self.lr is None or self.lr > 0, "must be > 0"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("schedule", self.schedule in SCHEDULES, f"must be one of {SCHEDULES.names()}"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "must be in [0, 1)"),
            ("warmup_epochs", 0 <= self.warmup_epochs <= self.epochs, "must be in [0, epochs]"),
            ("grad_clip", self.grad_clip is None or self.grad_clip > 0, "must be > 0 or None"),
            ("ema_decay", self.ema_decay is None or 0 < self.ema_decay < 1, "must be in (0, 1) or None"),
            ("augment", self.augment is None or self.augment in AUGMENTATIONS,
             f"must be one of {AUGMENTATIONS.names()} or None"),
            ("mixup", self.mixup >= 0, "must be >= 0"),
            ("cutmix", self.cutmix >= 0, "must be >= 0"),
            ("data_mode", self.data_mode in ("auto", "resident", "stream"), "must be auto, resident or stream"),
            ("data_memory", self.data_memory is None or self.data_memory >= 0, "must be >= 0 or None"),
            ("data_workers", self.data_workers is None or self.data_workers >= 0, "must be >= 0 or None"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"TrainConfig.{name} {rule}, got {getattr(self, name)!r}")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError:
                raise ValueError(f"TrainConfig.device must be 'auto' or a torch device, got {self.device!r}") from None

    @property
    def recipe(self) -> dict[str, Any]:
        """The recipe fields and their values (`RECIPE_FIELDS`)."""
        return {name: getattr(self, name) for name in RECIPE_FIELDS}

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def resolved_device(self) -> torch.device:
        return resolve_device(self.device)


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> CUDA when available, else CPU; anything else is passed to `torch.device`."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class RecipeError(ValueError):
    """A recipe value that cannot work; `field` names it (None: the recipe as a whole)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


_TYPES = {"epochs": int, "batch_size": int, "optimizer": str, "lr": float, "weight_decay": float, "schedule": str,
          "warmup_epochs": float, "label_smoothing": float, "grad_clip": float, "amp": bool, "channels_last": bool,
          "compile": bool, "ema_decay": float, "augment": str, "mixup": float, "cutmix": float}
_OPTIONAL = {"lr", "grad_clip", "amp", "channels_last", "ema_decay", "augment"}


def check_recipe(mapping: Any, source: str) -> dict[str, Any]:
    """`mapping` (from a recipe file, a space's `training:` or flags) as recipe values of the right types;
    `RecipeError` naming `source`, the field and what it takes otherwise. Values are checked as `TrainConfig` does."""
    if not isinstance(mapping, dict):
        raise RecipeError(f"{source} must be a mapping of recipe fields, e.g. `label_smoothing: 0.1`; "
                         f"got {type(mapping).__name__}")
    recipe = {}
    for key, value in mapping.items():
        if key not in _TYPES:
            raise RecipeError(f"{source}: unknown recipe field {key!r}; choose from {', '.join(RECIPE_FIELDS)}", key)
        kind = _TYPES[key]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and kind is not str):
            if key not in _OPTIONAL:
                raise RecipeError(f"{source}: recipe field {key} needs a value ({kind.__name__})", key)
            recipe[key] = None
            continue
        if kind is bool:
            if not isinstance(value, bool):
                raise RecipeError(f"{source}: recipe field {key} takes true or false, got {value!r}", key)
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise RecipeError(f"{source}: recipe field {key} takes a whole number, got {value!r}", key)
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    raise RecipeError(f"{source}: recipe field {key} takes a number, got {value!r}", key) from None
            value = float(value)
        elif not isinstance(value, str):
            raise RecipeError(f"{source}: recipe field {key} takes a name, got {value!r}", key)
        recipe[key] = value
    try:
        TrainConfig(**{"epochs": 10**6, **recipe})  # warm-up is checked against the epochs a run is given
    except ValueError as err:
        field = str(err).removeprefix("TrainConfig.").split(" ")[0]
        raise RecipeError(f"{source}: {str(err).removeprefix('TrainConfig.')}", field) from None
    return recipe


def default_recipe() -> dict[str, Any]:
    """Every recipe field at `TrainConfig`'s default."""
    return {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name in RECIPE_FIELDS}
