"""The training-time model: a candidate's seconds per epoch on this device, predicted before it trains.

    seconds/epoch ~ a + b * FLOPs * images + c * params * steps + d * layers * batches

`images` counts a training image three times (forward and backward) and a validation image once;
`steps` are the optimizer steps of an epoch; `batches` the forward passes, a training batch counted
three times. FLOPs are per image at the candidate's resolution (`autocnn.costs`), so the resolution
is in them. The intercept `a` is the epoch's fixed cost (shuffling, evaluation set-up); `d` the cost of
running one layer on one batch whatever its size, which dominates small networks on a CPU.

The model is derived, not stored: every trained trial records its costs and the seconds of each
finished epoch (`records.EPOCH_SECONDS`), so any process fits the same model from the study, and a
resumed study keeps its calibration. The fit minimises the relative error of every finished epoch
(robustly: epochs slowed by a busy machine weigh less), pulled towards a prior for the device that
stands alone before the first epoch and fades as epochs accumulate; coefficients stay >= 0.
This module needs no torch: callers pass costs and data sizes.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from autocnn.search import records

# Seconds per unit of each feature before any epoch of the study finished, by device type. Measured on
# one shared CPU core (digits, small conv nets and EfficientNet samples) and rounded down, so that a
# first guess errs towards "fits": the study's own epochs correct it after the first one.
PRIORS: dict[str, tuple[float, float, float, float]] = {
    "cpu": (0.02, 2.5e-11, 2e-9, 5e-5),
    "cuda": (0.02, 1e-13, 2e-11, 2e-5),
}
PRIOR_WEIGHT = 1e-4  # tiny: the prior only decides what the epochs leave open (the min-norm correction)
ROBUST_SCALE = 0.25  # relative residuals beyond this are down-weighted (Huber) in the fit


@dataclass(frozen=True)
class EpochShape:
    """What one epoch runs over, the same for every trial of a study: its images and batch size."""

    train: int
    val: int
    batch_size: int

    @property
    def steps(self) -> int:
        """Optimizer steps per epoch (the trainer drops a last partial batch)."""
        return self.train // self.batch_size if self.train > self.batch_size else 1

    @property
    def val_batches(self) -> int:
        return math.ceil(self.val / (2 * self.batch_size))  # evaluation batches are twice as large


def features(flops: float, params: float, layers: float, shape: EpochShape) -> np.ndarray:
    """The model's inputs for one epoch of a candidate (see the module docstring)."""
    images = 3 * shape.train + shape.val
    batches = 3 * shape.steps + shape.val_batches
    return np.array([1.0, flops * images, params * shape.steps, layers * batches], dtype=float)


@dataclass(frozen=True)
class TimeModel:
    """Seconds per epoch as a linear function of `features`; `epochs`: finished epochs it was fitted on."""

    coef: tuple[float, ...]
    epochs: int = 0

    @classmethod
    def prior(cls, device: str = "cpu") -> "TimeModel":
        return cls(PRIORS.get(device, PRIORS["cpu"]), 0)

    def epoch_seconds(self, flops: float, params: float, layers: float, shape: EpochShape) -> float:
        return float(features(flops, params, layers, shape) @ np.asarray(self.coef))

    def to_dict(self) -> dict:
        return {"coef": list(self.coef), "epochs": self.epochs}

    @classmethod
    def from_dict(cls, data: dict) -> "TimeModel":
        return cls(tuple(float(c) for c in data["coef"]), int(data["epochs"]))


def fit(points: Sequence[tuple[np.ndarray, float]], prior: TimeModel) -> TimeModel:
    """The model of `points` (features, seconds of one epoch), pulled towards `prior`.

    The prior is first scaled by the median ratio of measured to predicted seconds (the device's speed),
    then the fit minimises sum(w_i * ((x_i . c - y_i) / y_i)^2) + PRIOR_WEIGHT * sum(((c_j - p_j) / p_j)^2)
    over c >= 0, with Huber weights w_i from the previous pass: relative error is what a budget check
    needs, and the prior term corrects each coefficient in proportion to its share of the measured time,
    so one candidate's epochs calibrate the model without deciding the coefficients it says nothing about.
    """
    theta0 = np.asarray(prior.coef, dtype=float)
    if not points:
        return prior
    x = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    keep = y > 0
    x, y = x[keep], y[keep]
    if not len(y):
        return prior
    # the device's speed first (a busy or faster machine scales every cost alike), robustly: the
    # median ratio of measured to prior seconds; then the shape, around the scaled prior
    theta0 = theta0 * float(np.exp(np.median(np.log(y / (x @ theta0)))))
    # in units of the prior's coefficients, so every column and the prior term are on one scale
    rows = x * theta0 / y[:, None]
    weights = np.ones(len(y))
    for _ in range(4):
        u = _nonnegative_ridge(rows, np.ones(len(y)), weights)
        residual = np.abs(rows @ u - 1.0)
        weights = np.minimum(1.0, ROBUST_SCALE / np.maximum(residual, 1e-12))
    return TimeModel(tuple(float(v) for v in u * theta0), int(len(y)))


def _nonnegative_ridge(rows: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """argmin_u sum(w * (rows . u - target)^2) + PRIOR_WEIGHT * |u - 1|^2 over u >= 0 (active set)."""
    free = np.ones(rows.shape[1], dtype=bool)
    u = np.zeros(rows.shape[1])
    for _ in range(rows.shape[1]):
        a = rows[:, free]
        lhs = a.T @ (a * weights[:, None]) + PRIOR_WEIGHT * np.eye(int(free.sum()))
        rhs = a.T @ (weights * target) + PRIOR_WEIGHT * np.ones(int(free.sum()))
        u = np.zeros(rows.shape[1])
        u[free] = np.linalg.solve(lhs, rhs)
        if (u >= 0).all():
            return u
        free &= u > 0
        if not free.any():
            return np.zeros(rows.shape[1])
    return np.maximum(u, 0.0)


def observations(trials: Iterable, shape: EpochShape) -> list[tuple[np.ndarray, float]]:
    """(features, seconds) of every finished epoch the trials recorded with their costs."""
    points = []
    for trial in trials:
        attrs = trial.user_attrs
        seconds = attrs.get(records.EPOCH_SECONDS)
        if not seconds or attrs.get(records.LAYERS) is None or attrs.get(records.FLOPS) is None:
            continue
        x = features(attrs[records.FLOPS], attrs[records.PARAMS], attrs[records.LAYERS], shape)
        points.extend((x, float(s)) for s in seconds)
    return points


def study_model(trials: Iterable, shape: EpochShape, device: str = "cpu") -> TimeModel:
    """The model calibrated on every finished epoch of `trials` (a study's), from the device's prior."""
    return fit(observations(trials, shape), TimeModel.prior(device))


def relative_errors(trials: Iterable, *, min_epochs: int = 0) -> list[float]:
    """|predicted - measured| / measured seconds per epoch of every trained trial whose prediction was fitted
    on at least `min_epochs` finished epochs (measured: the mean of its recorded epochs)."""
    errors = []
    for trial in trials:
        attrs = trial.user_attrs
        predicted, seconds = attrs.get(records.PREDICTED_EPOCH_S), attrs.get(records.EPOCH_SECONDS)
        if predicted is None or not seconds or int(attrs.get(records.TIME_MODEL_EPOCHS) or 0) < min_epochs:
            continue
        measured = statistics.fmean(seconds)
        if measured > 0:
            errors.append(abs(predicted - measured) / measured)
    return errors


def median_error(trials: Iterable, *, min_epochs: int = 0) -> tuple[float | None, int]:
    """(The median of `relative_errors`, how many trials it is over); None without any."""
    errors = relative_errors(trials, min_epochs=min_epochs)
    return (statistics.median(errors) if errors else None), len(errors)
