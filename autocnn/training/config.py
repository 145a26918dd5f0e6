"""The one training configuration dataclass; validated on construction so mistakes surface before a run."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .optim import DEFAULT_LR, OPTIMIZERS, SCHEDULES


@dataclass(frozen=True)
class TrainConfig:
    """How to train one candidate network.

    `lr=None` picks the optimizer's default (0.05 for SGD, 2e-3 for AdamW); `amp` and
    `channels_last` default to on for CUDA and off for CPU; `device="auto"` means CUDA when
    available. `label_smoothing` applies to single-label data only.

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
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def resolved_device(self) -> torch.device:
        return resolve_device(self.device)


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> CUDA when available, else CPU; anything else is passed to `torch.device`."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
