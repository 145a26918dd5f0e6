"""The training recipe through the real CLI: every field settable from flags and from a recipe file, the
precedence space `training:` < --recipe < flags, stored with the study, honoured by `search`, `train` and
export's retraining. (Both backends train alike with a recipe: tests/search/test_backend_conformance.py.)"""
from __future__ import annotations

import json
from pathlib import Path

import optuna
import yaml

from autocnn.search import records
from autocnn.search.config import CONFIG_ATTR

SPACE = Path(__file__).with_name("tiny_space.yaml")
QUICK = ("--dataset", "digits", "--limit", "150", "--resolution", "12", "--trials", "1", "--initial-design", "0")

EVERY_FIELD = {"epochs": 2, "batch_size": 16, "optimizer": "sgd", "lr": 0.03, "weight_decay": 1e-4,
               "schedule": "onecycle", "warmup_epochs": 0.5, "label_smoothing": 0.1, "grad_clip": 2.0, "amp": False,
               "channels_last": True, "compile": False, "ema_decay": 0.9, "augment": "rand_augment", "mixup": 0.2,
               "cutmix": 0.5}
FLAGS = ("--epochs", "2", "--batch-size", "16", "--optimizer", "sgd", "--lr", "0.03", "--weight-decay", "1e-4",
         "--schedule", "onecycle", "--warmup-epochs", "0.5", "--label-smoothing", "0.1", "--grad-clip", "2",
         "--no-amp", "--channels-last", "--no-compile", "--ema", "0.9", "--augment", "rand_augment", "--mixup", "0.2",
         "--cutmix", "0.5")


def stored_recipe(cli, study: str) -> dict:
    config = optuna.load_study(study_name=study, storage=cli.storage).user_attrs[CONFIG_ATTR]
    return {**config["recipe"], **{k: config[k] for k in ("epochs", "batch_size", "optimizer", "lr", "warmup_epochs")}}


def only_trial(cli, study: str) -> optuna.trial.FrozenTrial:
    (trial,) = optuna.load_study(study_name=study, storage=cli.storage).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    return trial


def test_every_recipe_field_is_set_by_a_recipe_file_and_by_flags(cli):
    (cli.path / "every.yaml").write_text(yaml.safe_dump(EVERY_FIELD))
    from_file = cli("search", "--space", str(SPACE), *QUICK, "--recipe", "every.yaml", "--study", "file")
    from_flags = cli("search", "--space", str(SPACE), *QUICK, *FLAGS, "--study", "flags")
    assert from_file.returncode == 0 and from_flags.returncode == 0, (from_file.stderr[-2000:], from_flags.stderr[-2000:])
    assert stored_recipe(cli, "file") == EVERY_FIELD == stored_recipe(cli, "flags")
    a, b = only_trial(cli, "file"), only_trial(cli, "flags")
    assert a.user_attrs[records.EPOCHS_RUN] == 2 and a.user_attrs[records.TRAIN_LOSS] == b.user_attrs[records.TRAIN_LOSS]


def test_flags_override_the_recipe_file_which_overrides_the_space(cli):
    space = SPACE.read_text() + "training: {label_smoothing: 0.05, ema_decay: 0.5, epochs: 1, augment: none}\n"
    (cli.path / "space.yaml").write_text(space)
    (cli.path / "recipe.yaml").write_text("label_smoothing: 0.1\nmixup: 0.2\naugment: crop_flip\n")
    result = cli("search", "--space", "space.yaml", *QUICK, "--recipe", "recipe.yaml", "--augment", "translate",
                 "--study", "layers")
    assert result.returncode == 0, result.stderr[-2000:]
    recipe = stored_recipe(cli, "layers")
    assert (recipe["label_smoothing"], recipe["mixup"], recipe["ema_decay"], recipe["epochs"], recipe["augment"]) == \
        (0.1, 0.2, 0.5, 1, "translate")
    assert recipe["weight_decay"] == 5e-4 and recipe["cutmix"] == 0.0  # untouched fields keep their defaults
    assert only_trial(cli, "layers").user_attrs[records.EPOCHS_RUN] == 1


def test_train_and_export_retraining_use_the_stored_recipe(cli):
    trained = cli("train", "--model", "lenet5", "--dataset", "digits", "--limit", "150", "--resolution", "28",
                  "--epochs", "1", "--label-smoothing", "0.2", "--ema", "0.95", "--study", "lenet")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert stored_recipe(cli, "lenet")["label_smoothing"] == 0.2
    exported = cli("export", "--study", "lenet", "--retrain-epochs", "1", "--out", "best", "--json",
                   "--formats", "none")
    assert exported.returncode == 0, exported.stderr[-2000:]
    training = json.loads((cli.path / "best" / "config.json").read_text())["training"]
    assert (training["label_smoothing"], training["ema_decay"], training["data"]) == (0.2, 0.95, "train+val")
    assert "label_smoothing 0.2" in (cli.path / "best" / "README.md").read_text()
