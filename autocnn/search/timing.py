"""The training-time model: a candidate's seconds per epoch on this device, predicted before it trains.

    seconds/epoch ~ a + b * FLOPs * images + c * params * steps + d * layers * batches + e * activations * images

`images` counts a training image three times (forward and backward) and a validation image once;
`steps` are the optimizer steps of an epoch; `batches` the forward passes, a training batch counted
three times. FLOPs and activations (the elements one image's forward pass writes, `autocnn.costs`) are
per image at the candidate's resolution, so the resolution is in them. The intercept `a` is the epoch's
fixed cost (shuffling, evaluation set-up); `d` the cost of running one layer on one batch whatever its
size, which dominates small networks on a CPU; `e` the memory traffic that FLOPs miss (BatchNorm,
activations, depthwise convs and attention gates on large feature maps): without it, networks at 32 px
took twice the seconds a model calibrated on 8-px ones predicted (leave-one-out median error 25 % -> 11 %
on 18 trials of plain CNNs, ResNets and EfficientNets at 8 and 32 px).

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
# first guess errs towards "fits": the study's own epochs correct it after the first one. The per-parameter
# and per-layer costs were re-measured on 36 trials of three random searches (a free fit gave 3.7e-8 and
# 1.3e-4): at 3e-9 and 5e-5 the prior held them far too low, so the 10-20 M-parameter candidates a study
# meets after its small first ones came out 30-60 % slow (median errors 20 % and 10 % -> 9 % and 11 %,
# held-out search 10 % -> 9 %).
# (The CUDA activation cost is a guess from memory bandwidth, ~100x a CPU core's: no GPU epoch has been timed.)
PRIORS: dict[str, tuple[float, float, float, float, float]] = {
    "cpu": (0.005, 1e-11, 1e-8, 1e-4, 1.5e-9),
    "cuda": (0.01, 2e-13, 3e-10, 2e-5, 1.5e-11),
}
PRIOR_WEIGHT = 4.0  # epochs' worth of evidence the prior on each coefficient's log counts as (see `fit`)
MIN_NOISE = 1e-3  # the least relative spread of epoch times the fit assumes
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


def features(flops: float, params: float, layers: float, shape: EpochShape, activations: float = 0.0) -> np.ndarray:
    """The model's inputs for one epoch of a candidate (see the module docstring)."""
    images = 3 * shape.train + shape.val
    batches = 3 * shape.steps + shape.val_batches
    return np.array([1.0, flops * images, params * shape.steps, layers * batches, activations * images], dtype=float)


@dataclass(frozen=True)
class TimeModel:
    """Seconds per epoch as a linear function of `features`; `epochs`: finished epochs it was fitted on."""

    coef: tuple[float, ...]
    epochs: int = 0

    @classmethod
    def prior(cls, device: str = "cpu") -> "TimeModel":
        return cls(PRIORS.get(device, PRIORS["cpu"]), 0)

    def epoch_seconds(self, flops: float, params: float, layers: float, shape: EpochShape,
                      activations: float = 0.0) -> float:
        return float(features(flops, params, layers, shape, activations) @ np.asarray(self.coef))

    def to_dict(self) -> dict:
        return {"coef": list(self.coef), "epochs": self.epochs}

    @classmethod
    def from_dict(cls, data: dict) -> "TimeModel":
        return cls(tuple(float(c) for c in data["coef"]), int(data["epochs"]))


def fit(points: Sequence[tuple[np.ndarray, float]], prior: TimeModel) -> TimeModel:
    """The model of `points` (features, seconds of one epoch), pulled towards `prior`.

    The prior is first scaled by the median ratio of measured to predicted seconds (the device's speed:
    a busy or faster machine scales every cost alike); the coefficients are then c_j = p_j * exp(v_j)
    for the v minimising sum(w_i * ((x_i . c - y_i) / y_i)^2) + PRIOR_WEIGHT * s^2 * |v|^2, with Huber
    weights w_i and s the robust spread of the relative errors, both from the previous pass. Relative
    error is what a budget check needs. The prior on the log of each coefficient keeps it positive and
    where the prior put it unless the epochs say otherwise, as firmly as they are noisy: exact epochs
    are fitted exactly, while the noisy epochs of small candidates alone do not decide how long a large
    one takes.
    """
    theta0 = np.asarray(prior.coef, dtype=float)
    x = np.array([p[0] for p in points], dtype=float).reshape(-1, len(theta0))
    y = np.array([p[1] for p in points], dtype=float)
    keep = y > 0
    x, y = x[keep], y[keep]
    if not len(y):
        return prior
    theta0 = theta0 * float(np.exp(np.median(np.log(y / (x @ theta0)))))
    rows = x * theta0 / y[:, None]  # each epoch's seconds by feature, relative to its measured seconds
    v = np.zeros(len(theta0))
    weights = np.ones(len(y))
    for _ in range(4):
        residual = np.abs(rows @ np.exp(v) - 1.0)
        noise = max(1.4826 * float(np.median(residual)), MIN_NOISE)  # robust spread of the relative errors
        weights = np.minimum(1.0, ROBUST_SCALE / np.maximum(residual, 1e-12))
        v = _log_ridge(rows, weights, v, PRIOR_WEIGHT * noise ** 2)
    return TimeModel(tuple(float(c) for c in theta0 * np.exp(v)), int(len(y)))


def _log_ridge(rows: np.ndarray, weights: np.ndarray, v: np.ndarray, strength: float, steps: int = 50) -> np.ndarray:
    """argmin_v sum(w * (rows . exp(v) - 1)^2) + strength * |v|^2, by damped Gauss-Newton from `v`."""
    def loss(v: np.ndarray) -> float:
        return float(weights @ (rows @ np.exp(v) - 1.0) ** 2 + strength * v @ v)

    damping, current = 1e-3, loss(v)
    for _ in range(steps):
        jacobian = rows * np.exp(v)
        residual = jacobian.sum(axis=1) - 1.0
        gradient = jacobian.T @ (weights * residual) + strength * v
        hessian = jacobian.T @ (jacobian * weights[:, None]) + strength * np.eye(len(v))
        while damping < 1e8:
            step = np.linalg.solve(hessian + damping * np.eye(len(v)), -gradient)
            trial = np.clip(v + step, -30.0, 30.0)
            if loss(trial) <= current:
                v, current, damping = trial, loss(trial), damping / 3
                break
            damping *= 10
        else:
            break
        if np.abs(step).max() < 1e-6:
            break
    return v


def observations(trials: Iterable, shape: EpochShape) -> list[tuple[np.ndarray, float]]:
    """(features, seconds) of every finished epoch the trials recorded with their costs."""
    points = []
    for trial in trials:
        attrs = trial.user_attrs
        seconds = attrs.get(records.EPOCH_SECONDS)
        if not seconds or attrs.get(records.LAYERS) is None or attrs.get(records.FLOPS) is None:
            continue
        x = features(attrs[records.FLOPS], attrs[records.PARAMS], attrs[records.LAYERS], shape,
                     attrs.get(records.ACTIVATIONS) or 0)
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


def error_line(trials: Iterable) -> str | None:
    """How well the study's time model predicted its trained trials, in one line (None: no trial yet)."""
    error, count = median_error(trials)
    if error is None:
        return None
    return (f"training-time model: median error {error:.0%} over {count} trained trial{'s' * (count != 1)} "
            "(predicted vs measured seconds per epoch)")
