"""autocnn.training: learning, determinism, callbacks, divergence, multi-label metrics."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from autocnn.data import load_dataset
from conftest import write_multilabel
from autocnn.training import (
    DivergedError,
    TrainConfig,
    average_precision,
    evaluate,
    macro_f1,
    mean_average_precision,
    micro_f1,
    subset_accuracy,
    train,
)

FAST = dict(batch_size=32, device="cpu")


def tiny_cnn(in_chans: int = 1, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(in_chans, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
    )


class NaNModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) * float("nan")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny CNNs run fastest on one thread; with more, OpenMP barriers stall 100× on a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_tiny_cnn_learns_digits(digits):
    result = train(tiny_cnn(), digits, TrainConfig(epochs=5, **FAST))
    assert result.metric_name == "accuracy" and result.epochs_run == 5 and len(result.val_curve) == 5
    assert result.best_val > 0.5
    assert result.best_val == max(result.val_curve)
    assert 0.4 < result.test_metric <= 1.0
    assert result.train_loss < 2.3 and result.wall_time > 0
    assert {"val_loss", "test_loss"} <= set(result.extra)


def test_training_is_deterministic(digits):
    config = TrainConfig(epochs=2, optimizer="adamw", label_smoothing=0.1, **FAST)
    a = train(tiny_cnn(), digits, config, evaluate_test=False)
    b = train(tiny_cnn(), digits, config, evaluate_test=False)
    assert a.val_curve == b.val_curve and a.train_loss == b.train_loss
    assert a.test_metric is None
    assert not torch.are_deterministic_algorithms_enabled()  # the global flag is restored


def test_on_epoch_called_every_epoch_in_order(digits):
    reports = []
    result = train(tiny_cnn(), digits, TrainConfig(epochs=3, schedule="onecycle", **FAST),
                   on_epoch=reports.append, evaluate_test=False)
    assert [r.epoch for r in reports] == [1, 2, 3]
    assert [r.val_metric for r in reports] == result.val_curve
    assert all(r.seconds > 0 and np.isfinite(r.train_loss) for r in reports)


def test_exception_from_on_epoch_propagates(digits):
    class Pruned(Exception):
        pass

    seen = []

    def stop_at_two(report):
        seen.append(report.epoch)
        if report.epoch == 2:
            raise Pruned(report.val_metric)

    with pytest.raises(Pruned):
        train(tiny_cnn(), digits, TrainConfig(epochs=5, **FAST), on_epoch=stop_at_two)
    assert seen == [1, 2]


def test_nan_loss_raises_diverged(digits):
    with pytest.raises(DivergedError, match="epoch 1"):
        train(NaNModel(), digits, TrainConfig(epochs=2, **FAST))


def test_resolution_resizes_batches(digits):
    seen = []
    model = tiny_cnn()
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[-1]))
    result = train(model, digits, TrainConfig(epochs=1, schedule="constant", warmup_epochs=0.5, **FAST),
                   resolution=16)
    assert set(seen) == {16} and 0 <= result.test_metric <= 1


def test_evaluate_standalone(digits):
    model = tiny_cnn()
    metrics = evaluate(model, digits.val, batch_size=100, device="cpu")
    assert set(metrics) == {"accuracy", "loss"} and 0 <= metrics["accuracy"] <= 1
    assert model.training  # mode restored


def test_multilabel_training_reports_map_and_f1(tmp_path):
    write_multilabel(tmp_path)
    data = load_dataset("multilabel", tmp_path)
    result = train(tiny_cnn(3, data.num_classes), data,
                   TrainConfig(epochs=3, batch_size=8, optimizer="adamw", device="cpu"))
    assert result.metric_name == "mAP"
    assert all(0 <= v <= 1 for v in result.val_curve) and 0 <= result.test_metric <= 1
    assert 0 <= result.extra["f1"] <= 1 and 0 <= result.extra["test_f1"] <= 1


def test_map_and_f1_match_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    targets = (torch.rand(50, 4, generator=g) < 0.3).float()
    targets[:, 3] = 0  # a class without positives is left out of the mean
    logits = torch.randn(50, 4, generator=g) + 2 * targets
    ap = average_precision(logits, targets)
    expected = [metrics.average_precision_score(targets[:, k], logits[:, k]) for k in range(3)]
    assert torch.isnan(ap[3]) and np.allclose(ap[:3].numpy(), expected, atol=1e-6)
    assert mean_average_precision(logits, targets) == pytest.approx(np.mean(expected), abs=1e-6)
    f1 = metrics.f1_score(targets.numpy(), (logits > 0).numpy(), average="micro")
    assert micro_f1(logits, targets) == pytest.approx(f1, abs=1e-6)


@pytest.mark.parametrize("field,value", [("epochs", 0), ("optimizer", "rmsprop"), ("schedule", "step"),
                                         ("lr", -1.0), ("label_smoothing", 1.0), ("grad_clip", 0.0)])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
        TrainConfig(**{field: value})


def test_config_default_lr_per_optimizer():
    assert TrainConfig().resolved_lr == 0.05
    assert TrainConfig(optimizer="adamw").resolved_lr == 2e-3
    assert TrainConfig(optimizer="adamw", lr=0.1).resolved_lr == 0.1


def test_resumed_run_continues_the_optimizer_and_the_schedule(digits):
    """A run snapshotted after epoch 2 and resumed in a new model ends where an uninterrupted run's
    optimizer and schedule stand: same step counts, same learning rate, the curve carried over."""
    config = TrainConfig(epochs=4, optimizer="adamw", warmup_epochs=1.0, **FAST)
    snapshots = {}

    def keep(report):
        snapshots[report.epoch] = report.state()

    straight = train(tiny_cnn(), digits, config, on_epoch=keep, evaluate_test=False)
    at_two = snapshots[2]
    assert at_two.epoch == 2 and list(at_two.curve) == straight.val_curve[:2]

    resumed_reports = []
    model = tiny_cnn()
    resumed = train(model, digits, config, resume=at_two, evaluate_test=False,
                    on_epoch=lambda r: resumed_reports.append((r.epoch, r.state())))
    assert [epoch for epoch, _ in resumed_reports] == [3, 4]
    assert resumed.val_curve[:2] == straight.val_curve[:2] and len(resumed.val_curve) == 4
    assert resumed.epochs_run == 4 and resumed.best_val == max(resumed.val_curve)
    end, straight_end = resumed_reports[-1][1].optimizer, snapshots[4].optimizer
    steps = [s["step"] for s in straight_end["state"].values()]
    assert [s["step"] for s in end["state"].values()] == steps and steps[0] == 4 * (len(digits.train) // 32)
    for group, expected in zip(end["param_groups"], straight_end["param_groups"]):
        assert group["lr"] == pytest.approx(expected["lr"], rel=1e-9)
        assert group["initial_lr"] == expected["initial_lr"] == config.resolved_lr
    # it kept learning from the loaded weights (a fresh model reaches 0.15 after one epoch), as far as the
    # uninterrupted run (only the shuffling order of epochs 3-4 differs)
    assert resumed.val_curve[2] > resumed.val_curve[1] and resumed.val_curve[-1] == pytest.approx(
        straight.val_curve[-1], abs=0.05)


def test_resumed_run_takes_new_hyperparameters(digits):
    """PBT resumes a trial with a new learning rate and weight decay: those win over the checkpoint's."""
    config = TrainConfig(epochs=2, optimizer="sgd", **FAST)
    states = []
    train(tiny_cnn(), digits, config, on_epoch=lambda r: states.append(r.state()), evaluate_test=False)
    changed = TrainConfig(epochs=2, optimizer="sgd", lr=0.01, weight_decay=1e-3, schedule="constant", **FAST)
    after = []
    train(tiny_cnn(), digits, changed, resume=states[0], evaluate_test=False, on_epoch=lambda r: after.append(r.state()))
    groups = after[-1].optimizer["param_groups"]
    assert [g["lr"] for g in groups] == [0.01, 0.01] and groups[0]["weight_decay"] == 1e-3
    assert groups[1]["weight_decay"] == 0.0  # norm scales and biases stay undecayed
    momentum = next(iter(after[-1].optimizer["state"].values()))["momentum_buffer"]
    assert momentum.abs().sum() > 0  # the momentum buffers were loaded, then updated


UNSTEADY = TrainConfig(epochs=4, optimizer="sgd", lr=1.0, schedule="constant", augment="translate", **FAST)
"""A recipe whose validation curve peaks before its last epoch on 300 digits (checked where it is used)."""


def test_model_ends_with_the_best_epochs_weights_and_figures():
    """What a run reports is what it leaves behind: the best epoch's weights, validation and test figures."""
    data = load_dataset("digits", limit=300)
    states = {}
    model = tiny_cnn()
    result = train(model, data, UNSTEADY, on_epoch=lambda r: states.update({r.epoch: r.state()}))
    best = result.val_curve.index(max(result.val_curve)) + 1
    assert result.best_epoch == best < result.epochs_run == 4, result.val_curve  # the case being tested
    assert result.best_val == max(result.val_curve)
    for key, value in model.state_dict().items():
        assert torch.equal(value, states[best].model[key]), key
    val = evaluate(model, data.val, batch_size=64, device="cpu")
    test = evaluate(model, data.test, batch_size=64, device="cpu")
    assert val["accuracy"] == result.best_val and val["loss"] == pytest.approx(result.extra["val_loss"], rel=1e-6)
    assert test["accuracy"] == result.test_metric and test["loss"] == pytest.approx(result.extra["test_loss"], rel=1e-6)
    last = states[4]
    assert last.best_model is not None and last.best_metrics["accuracy"] == result.best_val
    assert states[best].best_model is None  # the best epoch's own snapshot holds its weights once

    # a run resumed from a later snapshot (one more epoch, at a learning rate that wrecks it) still ends
    # on the best epoch's weights, which it only had in the checkpoint
    resumed_model = tiny_cnn()
    longer = dataclasses.replace(UNSTEADY, epochs=5, lr=100.0)
    resumed = train(resumed_model, data, longer, resume=last, evaluate_test=False)
    assert resumed.val_curve[:4] == result.val_curve and resumed.val_curve[4] < result.best_val
    assert resumed.best_epoch == best and resumed.best_val == result.best_val
    for key, value in resumed_model.state_dict().items():
        assert torch.equal(value, states[best].model[key]), key


def test_without_keep_best_the_model_ends_with_the_last_epoch():
    data = load_dataset("digits", limit=300)
    states = {}
    model = tiny_cnn()
    result = train(model, data, UNSTEADY, keep_best=False, evaluate_test=False,
                   on_epoch=lambda r: states.update({r.epoch: r.state()}))
    assert result.best_epoch == 4 and result.best_val == result.val_curve[-1]
    assert all(torch.equal(v, states[4].model[k]) for k, v in model.state_dict().items())


def test_resume_after_the_last_epoch_is_refused(digits):
    config = TrainConfig(epochs=1, **FAST)
    states = []
    train(tiny_cnn(), digits, config, on_epoch=lambda r: states.append(r.state()), evaluate_test=False)
    with pytest.raises(ValueError, match="cannot resume after epoch 1 a run of 1 epochs"):
        train(tiny_cnn(), digits, config, resume=states[0])


def test_macro_f1_and_subset_accuracy_match_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 5, (80,), generator=g)
    labels[labels == 4] = 3  # class 4 never occurs in the labels ...
    predicted = torch.where(torch.rand(80, generator=g) < 0.6, labels, torch.randint(0, 5, (80,), generator=g))
    expected = metrics.f1_score(labels.numpy(), predicted.numpy(), average="macro")
    assert macro_f1(predicted, labels, 6) == pytest.approx(expected, abs=1e-6)  # ... class 5 nowhere: left out
    targets = (torch.rand(40, 3, generator=g) < 0.5).float()
    logits = torch.randn(40, 3, generator=g) + 3 * (targets - 0.5)
    subset = metrics.accuracy_score(targets.numpy(), (logits > 0).numpy())
    assert subset_accuracy(logits, targets) == pytest.approx(subset, abs=1e-6) and 0 < subset < 1


def test_f1_metric_is_macro_f1_on_single_label_data(digits):
    """`metric="f1"` tracks macro-F1 (val curve and test), which is not accuracy: both recorded, both checked."""
    metrics = pytest.importorskip("sklearn.metrics")
    model = tiny_cnn()
    result = train(model, digits, TrainConfig(epochs=1, metric="f1", **FAST))
    assert result.metric_name == "f1" and len(result.val_curve) == 1
    model.eval()
    for split, value in (("val", result.val_curve[0]), ("test", result.test_metric)):
        data = getattr(digits, split)
        with torch.inference_mode():
            logits = torch.cat([model(x) for x, _ in _batches(data)])
        predicted = logits.argmax(1)
        assert value == pytest.approx(metrics.f1_score(data.labels.numpy(), predicted.numpy(), average="macro"),
                                      abs=1e-6)
        accuracy = float((predicted == data.labels).float().mean())
        assert result.extra[f"{split}_accuracy"] == pytest.approx(accuracy, abs=1e-6)
        assert abs(value - accuracy) > 1e-3, (split, value, accuracy)  # macro-F1 is its own number


def _batches(split):
    from autocnn.data import DeviceBatches

    return DeviceBatches(split, 64, device=torch.device("cpu"))


def test_multilabel_metrics_by_name(tmp_path):
    """On multi-label data accuracy is subset accuracy, f1 micro-F1 and mAP the default; mAP needs multi-label data."""
    write_multilabel(tmp_path)
    data = load_dataset("multilabel", tmp_path)
    by_metric = {m: train(tiny_cnn(3, data.num_classes), data,
                          TrainConfig(epochs=2, batch_size=8, optimizer="adamw", device="cpu", metric=m))
                 for m in ("accuracy", "f1", "mAP")}
    model = tiny_cnn(3, data.num_classes)
    train(model, data, TrainConfig(epochs=2, batch_size=8, optimizer="adamw", device="cpu"))
    with torch.inference_mode():
        model.eval()
        logits = torch.cat([model(x) for x, _ in _batches(data.val)])
    assert by_metric["accuracy"].metric_name == "accuracy"
    assert by_metric["accuracy"].val_curve[-1] == pytest.approx(subset_accuracy(logits, data.val.labels), abs=1e-6)
    assert by_metric["f1"].val_curve[-1] == pytest.approx(micro_f1(logits, data.val.labels), abs=1e-6)
    assert by_metric["mAP"].val_curve[-1] == pytest.approx(mean_average_precision(logits, data.val.labels), abs=1e-6)
    with pytest.raises(ValueError, match="mAP needs multi-label data"):
        train(tiny_cnn(), load_dataset("digits"), TrainConfig(epochs=1, metric="mAP", **FAST))
