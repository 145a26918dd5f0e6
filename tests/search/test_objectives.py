"""Each quality objective is its own metric: what the trial records, under its name, is that metric."""
import json

import optuna
import pytest
import torch

from autocnn.search import records
from conftest import write_multilabel

TINY = ("--space", "tiny_space.yaml", "--trials", "1", "--epochs", "2", "--resolution", "12", "--pruner", "none")


@pytest.fixture
def tiny(cli):
    from pathlib import Path

    (cli.path / "tiny_space.yaml").write_text((Path(__file__).parent / "tiny_space.yaml").read_text())
    return cli


def _only_trial(cli, study: str):
    (trial,) = optuna.load_study(study_name=study, storage=cli.storage).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    return trial


def test_f1_objective_on_single_label_data_is_macro_f1_not_accuracy(tiny):
    result = tiny("search", *TINY, "--dataset", "digits", "--limit", "200", "--objectives", "f1", "--study", "f",
                  "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    trial = _only_trial(tiny, "f")
    attrs = trial.user_attrs
    assert attrs[records.METRIC] == "f1" and trial.values[0] == max(attrs[records.VAL_CURVE])
    # accuracy is recorded beside it, and is another number: f1 no longer optimises accuracy
    assert abs(attrs[records.VAL_CURVE][-1] - attrs["val_accuracy"]) > 1e-4
    assert attrs[records.TEST_METRIC] != pytest.approx(attrs["test_accuracy"], abs=1e-4)
    (best,) = json.loads(result.stdout)["best"]
    assert best["metric"] == "f1" and best["values"] == trial.values
    table = tiny("best", "--study", "f").stdout
    assert "val f1" in table and "test f1" in table


@pytest.mark.parametrize("objective,metric", [("map", "mAP"), ("f1", "f1"), ("accuracy", "accuracy")])
def test_objectives_on_multilabel_data_record_their_own_metric(tiny, objective, metric):
    write_multilabel(tiny.path / "ml")
    result = tiny("search", *TINY, "--dataset", "multilabel", "--data-root", "ml", "--objectives", objective,
                  "--study", objective)
    assert result.returncode == 0, result.stderr[-3000:]
    attrs = _only_trial(tiny, objective).user_attrs
    assert attrs[records.METRIC] == metric
    # the saved weights, evaluated again on the validation split, give the recorded number by that metric
    from safetensors.torch import load_file

    from autocnn.builder import build_model
    from autocnn.data import DeviceBatches, load_dataset
    from autocnn.training import mean_average_precision, micro_f1, subset_accuracy

    genotype = records.genotype_of(_only_trial(tiny, objective))
    model = build_model(genotype).eval()
    model.load_state_dict(load_file(tiny.path / objective / "trial-0" / "weights.safetensors"))
    val = load_dataset("multilabel", tiny.path / "ml").val
    with torch.inference_mode():
        logits = torch.cat([model(x) for x, _ in DeviceBatches(val, 64, device=torch.device("cpu"),
                                                                 resolution=genotype.resolution)])
    by_name = {"mAP": mean_average_precision, "f1": micro_f1, "accuracy": subset_accuracy}
    assert attrs[records.VAL_CURVE][-1] == pytest.approx(by_name[metric](logits, val.labels), abs=1e-5)
    assert len({round(f(logits, val.labels), 6) for f in by_name.values()}) > 1  # the three are not one number
