"""`--enqueue` trains every named preset, a failed start leaves no study, and fine-tuning from reference
weights (`--weights`, `--freeze`) is reachable from `autocnn train` and `autocnn search`, on both backends
(issue 13: 1, 3, 9)."""
from pathlib import Path

import optuna
import pytest
import torch
from safetensors.torch import load_file

import autocnn
from autocnn.artifacts import resolve_weights
from autocnn.genotype import Genotype
from autocnn.presets import get_preset
from autocnn.search import records
from autocnn.search.config import SearchConfig
from autocnn.search.driver import run_search
from autocnn.search.local import LocalBackend
from test_backend_conformance import RAY_LOCAL

SPACE = str(Path(__file__).with_name("tiny_space.yaml"))
SMALL = ("--dataset", "digits", "--limit", "200", "--epochs", "1", "--batch-size", "32", "--resolution", "32")
FROZEN = 3  # stem conv, stem pool and the first BasicBlock of ResNet-18


def test_enqueue_trains_presets_inside_and_outside_the_space_in_order(cli):
    """On the default space LeNet-5 (outside it) used to be dropped without a word."""
    result = cli("search", *SMALL, "--trials", "2", "--enqueue", "lenet5,efficientnet_b0", "--study", "q")
    assert result.returncode == 0, result.stderr
    trials = optuna.load_study(study_name="q", storage=cli.storage).trials
    assert [t.user_attrs[records.ENQUEUED] for t in trials] == ["lenet5", "efficientnet_b0"]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    lenet, effnet = trials
    assert lenet.user_attrs[records.OUTSIDE_SPACE] is True and lenet.params == {}
    assert records.OUTSIDE_SPACE not in effnet.user_attrs and effnet.params  # the space's own parameters
    expected = get_preset("lenet5").replace(resolution=32, num_classes=10, in_chans=1)
    assert Genotype.from_dict(lenet.user_attrs[records.GENOTYPE]) == expected


class _StopsBeforeTheFirstTrial(LocalBackend):
    """The local backend interrupted (Ctrl-C) after the study exists, before any trial starts."""

    def open(self, study, ctx, budget, progress, *, resume):
        raise KeyboardInterrupt


def test_a_run_that_fails_before_its_first_trial_leaves_no_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    config = SearchConfig(space=SPACE, dataset="digits", limit=100, epochs=1, trials=1, study="gone",
                          storage=storage, enqueue=("lenet5",))
    with pytest.raises(KeyboardInterrupt):
        run_search(config, backend=_StopsBeforeTheFirstTrial())
    assert optuna.get_all_study_summaries(storage) == []


def _seeded_resnet18(path: Path) -> torch.nn.Module:
    torch.manual_seed(1234)
    model = autocnn.create_model("resnet18", num_classes=10, in_chans=1, resolution=32)
    torch.save(model.state_dict(), path)
    return model


def _assert_fine_tuned(trial, storage: str, weights: Path, reference: torch.nn.Module) -> None:
    """Frozen blocks (BatchNorm statistics included) still hold the file's tensors; the rest trained on."""
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.user_attrs[records.START_WEIGHTS] == str(weights)
    trained = autocnn.create_model("resnet18", num_classes=10, in_chans=1, resolution=32)
    trained.load_state_dict(load_file(resolve_weights(storage, trial.user_attrs[records.WEIGHTS_PATH])))
    for i, (block, ref) in enumerate(zip(trained.blocks, reference.blocks)):
        state, ref_state = block.state_dict(), ref.state_dict()
        same = all(torch.equal(state[k], ref_state[k]) for k in state)
        assert same == (i < FROZEN), f"block {i}: {'changed' if i < FROZEN else 'not trained'}"


def test_train_fine_tunes_from_a_weights_file_with_frozen_blocks(cli, tmp_path):
    weights = tmp_path / "r18.pth"
    reference = _seeded_resnet18(weights)
    result = cli("train", "--model", "resnet18", *SMALL, "--weights", str(weights), "--freeze", str(FROZEN),
                 "--study", "ft")
    assert result.returncode == 0, result.stderr
    (trial,) = optuna.load_study(study_name="ft", storage=cli.storage).trials
    _assert_fine_tuned(trial, cli.storage, weights, reference)


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_search_fine_tunes_an_enqueued_preset_only(backend, cli, tmp_path, request):
    """On Ray the worker loads the file and freezes the blocks, as the local backend does in-process."""
    weights = tmp_path / "r18.pth"
    reference = _seeded_resnet18(weights)
    on = ()
    if backend == "ray":
        on = ("--backend", "ray", "--address", request.getfixturevalue("ray_cluster"), *RAY_LOCAL)
    result = cli("search", "--space", SPACE, *SMALL, "--trials", "2", "--enqueue", "resnet18",
                 "--weights", f"resnet18={weights}", "--freeze", str(FROZEN), "--study", "fs", *on)
    assert result.returncode == 0, result.stderr
    enqueued, sampled = optuna.load_study(study_name="fs", storage=cli.storage).trials
    _assert_fine_tuned(enqueued, cli.storage, weights, reference)
    assert records.START_WEIGHTS not in sampled.user_attrs
