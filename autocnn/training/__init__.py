"""Training and evaluation of one candidate network; search adapters call `train` per trial.

>>> from torch import nn
>>> from autocnn.data import load_dataset
>>> data = load_dataset("digits", limit=200)
>>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
>>> result = train(model, data, TrainConfig(epochs=1, device="cpu"))
>>> result.metric_name, result.epochs_run
('accuracy', 1)
"""
from .config import TrainConfig, resolve_device
from .metrics import average_precision, macro_f1, mean_average_precision, micro_f1, subset_accuracy
from .optim import DEFAULT_LR, OPTIMIZERS, SCHEDULES
from .trainer import DivergedError, EpochReport, TrainResult, TrainState, evaluate, predict, train

__all__ = [
    "macro_f1",
    "subset_accuracy",
    "DEFAULT_LR",
    "OPTIMIZERS",
    "SCHEDULES",
    "DivergedError",
    "EpochReport",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "average_precision",
    "evaluate",
    "mean_average_precision",
    "micro_f1",
    "predict",
    "resolve_device",
    "train",
]
