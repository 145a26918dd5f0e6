"""The training recipe's own parts: weight averaging (EMA), batch mixing (MixUp/CutMix), the augmentation
registry's torchvision policies, and the checks a recipe file, flag or space section goes through."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from autocnn.data import AUGMENTATIONS, DeviceBatches, StreamBatches, load_dataset
from autocnn.training import TrainConfig, evaluate, train
from autocnn.training.config import RECIPE_FIELDS, RecipeError, check_recipe, default_recipe
from test_trainer import FAST, one_thread, tiny_cnn  # noqa: F401 - one_thread: the module's autouse fixture


@pytest.fixture(scope="module")
def digits():
    return dataclasses.replace(load_dataset("digits"), augment="none")


def _val_accuracy(model, data) -> float:
    return evaluate(model, data.val, batch_size=64, device="cpu")["accuracy"]


def test_ema_weights_are_what_is_scored_kept_and_left_in_the_model(digits):
    plain_model, ema_model = tiny_cnn(), tiny_cnn()
    plain = train(plain_model, digits, TrainConfig(epochs=3, **FAST), evaluate_test=False)
    ema = train(ema_model, digits, TrainConfig(epochs=3, ema_decay=0.9, **FAST), evaluate_test=False)
    assert ema.train_loss == plain.train_loss  # the raw weights train alike: only what is scored differs
    assert ema.val_curve != plain.val_curve
    assert _val_accuracy(ema_model, digits) == ema.best_val  # the model holds the averaged weights it was scored on


def test_a_resumed_ema_run_carries_its_average_on(digits):
    """The checkpoint holds the average: resuming from it is not resuming from the raw weights alone."""
    config = TrainConfig(epochs=3, ema_decay=0.99, **FAST)
    states = {}
    train(tiny_cnn(), digits, config, evaluate_test=False, on_epoch=lambda r: states.__setitem__(r.epoch, r.state()))
    at_two = states[2]
    assert at_two.ema is not None and at_two.best_model is not None
    assert dataclasses.replace(at_two).to_dict()["ema"] is at_two.ema
    model, fresh_model = tiny_cnn(), tiny_cnn()
    carried = train(model, digits, config, evaluate_test=False, resume=at_two)
    restarted = train(fresh_model, digits, config, evaluate_test=False, resume=dataclasses.replace(at_two, ema=None))
    assert carried.val_curve[:2] == list(at_two.curve)
    weights, fresh = model.state_dict(), fresh_model.state_dict()
    assert any(not torch.equal(weights[k], fresh[k]) for k in weights if k.endswith("weight"))
    assert _val_accuracy(model, digits) == carried.best_val


def test_mixing_is_reproducible_changes_the_loss_and_refuses_multilabel_data(digits, tmp_path):
    mixed = TrainConfig(epochs=1, mixup=0.4, cutmix=1.0, **FAST)
    a = train(tiny_cnn(), digits, mixed, evaluate_test=False)
    b = train(tiny_cnn(), digits, mixed, evaluate_test=False)
    plain = train(tiny_cnn(), digits, TrainConfig(epochs=1, **FAST), evaluate_test=False)
    assert (a.train_loss, a.val_curve) == (b.train_loss, b.val_curve)
    assert a.train_loss != plain.train_loss
    multilabel = dataclasses.replace(digits, multilabel=True)
    with pytest.raises(ValueError, match="single-label"):
        train(tiny_cnn(), multilabel, mixed)


def test_label_smoothing_raises_the_loss_floor(digits):
    smooth = train(tiny_cnn(), digits, TrainConfig(epochs=1, label_smoothing=0.3, **FAST), evaluate_test=False)
    plain = train(tiny_cnn(), digits, TrainConfig(epochs=1, **FAST), evaluate_test=False)
    assert smooth.train_loss > plain.train_loss


def _first_batch(batches) -> torch.Tensor:
    return next(iter(batches))[0]


@pytest.mark.parametrize("name", [n for n in AUGMENTATIONS.names() if n != "none"])
def test_every_augmentation_changes_pixels_reproducibly_in_both_data_paths(digits, name):
    def first(kind, augment, seed=0):
        return _first_batch(kind(digits.train, 64, shuffle=True, generator=torch.Generator().manual_seed(seed),
                                 augment=augment))

    x = first(DeviceBatches, name)
    assert x.shape == first(DeviceBatches, "none").shape and x.dtype == torch.float32
    assert not torch.equal(x, first(DeviceBatches, "none"))
    assert torch.equal(x, first(DeviceBatches, name))  # same generator seed, same pixels
    assert torch.equal(x, first(StreamBatches, name))  # resident and streamed batches agree
    assert not torch.equal(x, first(DeviceBatches, name, seed=1))


@pytest.mark.parametrize("policy", ["trivial_augment", "rand_augment"])
def test_policy_augmentation_trains_above_chance(digits, policy):
    result = train(tiny_cnn(), digits, TrainConfig(epochs=2, augment=policy, **FAST), evaluate_test=False)
    assert result.best_val > 0.3  # 10 classes: chance is 0.1


def test_recipe_checks_name_the_field_and_what_it_takes():
    assert set(default_recipe()) == set(RECIPE_FIELDS)
    assert check_recipe({"lr": 1, "amp": True, "ema_decay": "none", "mixup": "0.2"}, "f") == \
        {"lr": 1.0, "amp": True, "ema_decay": None, "mixup": 0.2}
    cases = [({"bogus": 1}, "bogus", "unknown recipe field 'bogus'"),
             ({"epochs": 2.5}, "epochs", "whole number"),
             ({"amp": "yes"}, "amp", "true or false"),
             ({"label_smoothing": 1.0}, "label_smoothing", "[0, 1)"),
             ({"ema_decay": 1.0}, "ema_decay", "(0, 1)"),
             ({"augment": "cutout"}, "augment", "trivial_augment"),
             ({"epochs": None}, "epochs", "needs a value"),
             ({"optimizer": "lion"}, "optimizer", "adamw")]
    for mapping, field, text in cases:
        with pytest.raises(RecipeError, match=None) as err:
            check_recipe(mapping, "--recipe r.yaml")
        assert err.value.field == field and text in str(err.value) and "--recipe r.yaml" in str(err.value)
    with pytest.raises(RecipeError, match="mapping"):
        check_recipe(["epochs", 3], "--recipe r.yaml")
