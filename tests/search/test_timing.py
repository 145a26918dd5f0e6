"""The training-time model (autocnn.search.timing) on synthetic records: no torch, no training.

Trials are stand-ins with the user attributes a real trial records (`records.*`), so `observations`
reads them exactly as it reads a study's.
"""
from __future__ import annotations

import random
import statistics
import sys
from dataclasses import dataclass, field

import numpy as np
import pytest

from autocnn.search import records, timing
from autocnn.search.timing import EpochShape, TimeModel

SHAPE = EpochShape(train=1000, val=300, batch_size=32)
TRUE = (0.15, 4e-11, 3e-8, 1.2e-4, 2e-9)  # seconds per unit of each feature: not the prior's


@dataclass
class Recorded:
    """A trial as `timing` reads it: user attributes only."""

    user_attrs: dict = field(default_factory=dict)


def candidate(rng: random.Random) -> tuple[float, float, float, float]:
    """(FLOPs, params, layers, activations) spread over orders of magnitude, as a space's samples are."""
    return 10 ** rng.uniform(5, 9), 10 ** rng.uniform(3, 7), rng.randint(10, 400), 10 ** rng.uniform(4, 7)


def true_seconds(flops: float, params: float, layers: float, activations: float = 0.0, coef=TRUE) -> float:
    return float(timing.features(flops, params, layers, SHAPE, activations) @ np.array(coef))


def trained(flops, params, layers, seconds: list[float], predicted: float | None = None,
            model_epochs: int = 0, activations: float | None = None) -> Recorded:
    attrs = {records.FLOPS: flops, records.PARAMS: params, records.LAYERS: layers, records.EPOCH_SECONDS: seconds}
    if activations is not None:
        attrs[records.ACTIVATIONS] = activations
    if predicted is not None:
        attrs.update({records.PREDICTED_EPOCH_S: predicted, records.TIME_MODEL_EPOCHS: model_epochs})
    return Recorded(attrs)


def test_fits_a_known_linear_relation():
    rng = random.Random(0)
    trials = []
    for _ in range(40):
        flops, params, layers, acts = candidate(rng)
        trials.append(trained(flops, params, layers, [true_seconds(flops, params, layers, acts)] * 2,
                              activations=acts))
    model = timing.study_model(trials, SHAPE)
    assert model.epochs == 80
    assert model.coef == pytest.approx(TRUE, rel=0.02)
    for _ in range(20):  # and predicts new candidates of the same relation
        flops, params, layers, acts = candidate(rng)
        assert model.epoch_seconds(flops, params, layers, SHAPE, acts) == pytest.approx(
            true_seconds(flops, params, layers, acts), rel=0.02)


def test_noisy_epochs_and_outliers_keep_the_median_error_small():
    """10 % noise on every epoch and one epoch in ten slowed threefold (a busy machine)."""
    rng = random.Random(1)
    trials = []
    for _ in range(30):
        flops, params, layers, acts = candidate(rng)
        truth = true_seconds(flops, params, layers, acts)
        trials.append(trained(flops, params, layers, [truth * rng.gauss(1, 0.1) * (3 if rng.random() < 0.1 else 1)
                                                       for _ in range(3)], activations=acts))
    model = timing.study_model(trials, SHAPE)
    errors = []
    for _ in range(50):
        flops, params, layers, acts = candidate(rng)
        truth = true_seconds(flops, params, layers, acts)
        errors.append(abs(model.epoch_seconds(flops, params, layers, SHAPE, acts) - truth) / truth)
    assert statistics.median(errors) < 0.05, statistics.median(errors)


def test_before_any_epoch_the_prior_predicts_and_one_candidate_calibrates_the_scale():
    prior = timing.study_model([], SHAPE, "cpu")
    assert prior == TimeModel.prior("cpu") and prior.epochs == 0
    slow = tuple(3 * c for c in timing.PRIORS["cpu"])  # a machine three times slower than the prior
    flops, params, layers, acts = 2e7, 2e5, 60, 3e5
    seen = [trained(flops, params, layers, [true_seconds(flops, params, layers, acts, slow)], activations=acts)]
    model = timing.study_model(seen, SHAPE, "cpu")
    # one epoch: that candidate is predicted exactly, and so is the scale of the others
    assert model.epoch_seconds(flops, params, layers, SHAPE, acts) == pytest.approx(
        true_seconds(flops, params, layers, acts, slow), rel=1e-6)
    other = (4e8, 3e6, 200, 4e6)
    assert model.epoch_seconds(*other[:3], SHAPE, other[3]) == pytest.approx(true_seconds(*other, coef=slow), rel=0.05)


def test_coefficients_stay_non_negative_and_records_without_costs_are_skipped():
    rng = random.Random(2)
    trials = [Recorded({records.EPOCH_SECONDS: [1.0]}),  # an older trial: no layers recorded
              Recorded({records.FLOPS: 1e6, records.PARAMS: 1e4, records.LAYERS: 10})]  # never trained
    for _ in range(10):  # time that falls with FLOPs: no non-negative fit can follow it
        flops, params, layers, _ = candidate(rng)
        trials.append(trained(flops, params, layers, [max(0.01, 2.0 - flops / 1e9)]))
    model = timing.study_model(trials, SHAPE)
    assert model.epochs == 10 and all(c >= 0 for c in model.coef)


def test_the_model_travels_as_a_dict():
    model = timing.study_model([trained(1e7, 1e5, 30, [0.5, 0.6])], SHAPE)
    assert TimeModel.from_dict(model.to_dict()) == model


def test_median_error_is_over_trained_trials_with_a_prediction():
    trials = [trained(1e6, 1e4, 10, [1.0, 1.0], predicted=1.2, model_epochs=0),   # 20 %
              trained(1e6, 1e4, 10, [2.0, 2.0], predicted=1.0, model_epochs=6),   # 50 %
              trained(1e6, 1e4, 10, [1.0, 3.0], predicted=2.2, model_epochs=9),   # 10 % of the mean
              trained(1e6, 1e4, 10, [], predicted=1.0, model_epochs=9),           # rejected: never trained
              trained(1e6, 1e4, 10, [1.0])]                                       # no prediction recorded
    assert timing.median_error(trials) == (pytest.approx(0.2), 3)
    assert timing.median_error(trials, min_epochs=5) == (pytest.approx(0.3), 2)
    assert timing.median_error(trials[3:]) == (None, 0)


def test_epoch_shape_counts_what_the_trainer_runs():
    assert (SHAPE.steps, SHAPE.val_batches) == (31, 5)  # a last partial batch is dropped; evaluation batches are 64
    assert EpochShape(train=20, val=10, batch_size=32).steps == 1  # fewer images than a batch: one step


def test_the_module_needs_no_torch():
    """Imported alone (the autocnn.search package itself loads the driver, and torch with it)."""
    import subprocess

    code = ("import sys, types, autocnn\n"
            "package = types.ModuleType('autocnn.search'); package.__path__ = [autocnn.__path__[0] + '/search']\n"
            "sys.modules['autocnn.search'] = package\n"
            "import autocnn.search.timing\n"
            "assert 'torch' not in sys.modules, 'timing imported torch'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
