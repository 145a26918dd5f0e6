"""Weight-sharing search end to end through the real CLI: `supernet train` (resumable after kill -9), a
oneshot search whose trials hold exactly the supernet's inherited, recalibrated weights, its resume, and
the export of its best trial (as saved, and fine-tuned)."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

from conftest import run_cli

TINY = str(Path(__file__).with_name("tiny_supernet.yaml"))
LIMIT = ("--limit", "200")


def _env() -> dict:
    """The CLI runs this checkout's autocnn (the console script may be another checkout's editable install)."""
    root = str(Path(__file__).resolve().parents[2])
    return {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A supernet trained 1 epoch on 200 digits, and a 20-trial oneshot study of it, in one storage."""
    tmp = tmp_path_factory.mktemp("oneshot")
    storage = f"sqlite:///{tmp / 's.db'}"
    made = run_cli("supernet", "train", "--space", TINY, "--name", "tiny", "--epochs", "1", *LIMIT,
                   "--storage", storage, cwd=tmp, env=_env())
    assert made.returncode == 0, made.stderr
    started = time.perf_counter()
    searched = run_cli("search", "--space", TINY, "--strategy", "oneshot", "--supernet", "tiny", "--trials", "20",
                       *LIMIT, "--study", "os", "--storage", storage, "--sampler", "random", cwd=tmp, env=_env())
    seconds = time.perf_counter() - started
    assert searched.returncode == 0, searched.stderr
    return {"tmp": tmp, "storage": storage, "train": made, "search": searched, "seconds": seconds}


def test_supernet_train_writes_weights_and_record(trained):
    folder = trained["tmp"] / "supernets" / "tiny"
    assert {p.name for p in folder.iterdir()} == {"supernet.json", "weights.safetensors", "checkpoint.pt"}
    record = json.loads((folder / "supernet.json").read_text())
    assert record["space_name"] == "tiny_supernet" and record["dataset"] == "digits" and record["limit"] == 200
    assert record["epochs_done"] == 1 and len(record["losses"]) == 1 and math.isfinite(record["losses"][0])
    assert record["fixed"]["act"] == "silu"  # searched by the space, fixed by the supernet
    assert set(record["choices"]) == {f"stages.{i}.{k}" for i in range(3)
                                      for k in ("kernel", "expansion", "repeats")} | {"width_mult"}
    assert record["sub_networks"] == 3456 and record["seconds"] > 0
    assert "epoch 1/1 loss" in trained["train"].stderr


def _study(trained):
    return optuna.load_study(study_name="os", storage=trained["storage"])


def test_every_trial_holds_the_supernets_recalibrated_weights(trained):
    from safetensors.torch import load_file

    from autocnn.builder import build_model
    from autocnn.data import load_dataset
    from autocnn.search import records
    from autocnn.search.oneshot import CALIBRATION_BATCH, calibration_inputs
    from autocnn.supernet import ElasticSpace, Supernet, extract, recalibrate_bn

    trials = [t for t in _study(trained).trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 20
    values = [t.values[0] for t in trials]
    print(f"20 oneshot trials in {trained['seconds']:.1f}s (with start-up); val accuracy {min(values):.3f}.."
          f"{max(values):.3f}; mean trial {sum(t.user_attrs['wall_time'] for t in trials) / 20 * 1000:.0f} ms")
    assert all(t.user_attrs[records.EVALUATION] == "oneshot" and t.user_attrs[records.SUPERNET] == "tiny"
               for t in trials)
    assert all(math.isfinite(v) and 0 <= v <= 1 for v in values)
    assert max(values) > 0.15  # chance is 0.1: one epoch of sandwich training on 200 images already shows (0.21)
    assert all(t.user_attrs[records.EPOCHS_RUN] == 0 and t.user_attrs[records.VAL_CURVE] == [t.values[0]]
               for t in trials)
    assert all(t.params and all(k.rsplit(".", 1)[-1] in ("kernel", "expansion", "repeats", "width_mult")
                                for k in t.params) for t in trials)  # the fixed `act` is pinned, never sampled
    assert {t.params["width_mult"] for t in trials} == {0.5, 1.0}  # narrower sub-networks are searched too

    es = ElasticSpace(TINY)
    net = Supernet(es.largest())
    net.load_state_dict(load_file(str(trained["tmp"] / "supernets" / "tiny" / "weights.safetensors")))
    data = load_dataset("digits", limit=200)
    calibration = calibration_inputs(data.train, 16, seed=0).split(CALIBRATION_BATCH)
    for t in trials[:4]:
        g = records.genotype_of(t)
        model = build_model(g)
        model.load_state_dict(extract(net, g))
        expected = recalibrate_bn(model, calibration).state_dict()
        saved = load_file(str(trained["tmp"] / t.user_attrs[records.WEIGHTS_PATH]))
        assert set(saved) == set(expected)
        for key, value in expected.items():
            if "running" in key:  # the same averages, up to the order of float sums
                torch.testing.assert_close(saved[key], value, rtol=1e-5, atol=1e-6)
            else:
                assert torch.equal(saved[key], value), key


def test_resume_keeps_the_oneshot_strategy(trained):
    resumed = run_cli("search", "--resume", "--study", "os", "--trials", "23", "--storage", trained["storage"],
                      cwd=trained["tmp"], env=_env())
    assert resumed.returncode == 0, resumed.stderr
    study = _study(trained)
    assert study.user_attrs["autocnn.config"]["strategy"] == "oneshot"
    assert study.user_attrs["autocnn.config"]["supernet"] == "tiny"
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 23 and all(t.user_attrs["evaluation"] == "oneshot" for t in complete)


def test_two_workers_share_a_oneshot_search_and_end_at_its_budget(trained):
    """Trials of a one-shot search run in parallel as several workers on one study (`--resume` in each):
    both evaluate sub-networks, and together they stop at exactly the budget."""
    common = ("--space", TINY, "--strategy", "oneshot", "--supernet", "tiny", *LIMIT, "--study", "par", "--storage",
              trained["storage"], "--sampler", "random")
    first = run_cli("search", *common, "--trials", "1", cwd=trained["tmp"], env=_env())
    assert first.returncode == 0, first.stderr
    exe = str(Path(sys.executable).with_name("autocnn"))
    env = {**os.environ, **_env(), "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([exe, "search", "--resume", "--study", "par", "--trials", "41", "--storage",
                                 trained["storage"]], cwd=trained["tmp"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=300)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [o[-2000:] for o in outputs]
    ran = [{int(n) for n in re.findall(r"trial +(\d+) COMPLETE", o)} for o in outputs]
    assert all(ran) and not ran[0] & ran[1], ran  # both evaluated trials, none twice
    complete = [t for t in optuna.load_study(study_name="par", storage=trained["storage"]).trials
                if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 41 and all(t.user_attrs["evaluation"] == "oneshot" for t in complete)


def _load_exported(folder: Path):
    spec = importlib.util.spec_from_file_location(f"exported_{folder.name}", folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build().eval()


def test_export_of_the_best_oneshot_trial_is_its_inherited_network(trained, tmp_path):
    from safetensors.torch import load_file

    from autocnn.builder import build_model
    from autocnn.export.trials import export_trial
    from autocnn.search import records
    from autocnn.search.control import best_trial

    folder = export_trial("os", trained["storage"], "best", tmp_path / "best", formats=())
    config = json.loads((folder / "config.json").read_text())
    study = _study(trained)
    best = best_trial([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE], study.directions)
    assert config["source"]["trial"] == best.number
    assert config["metrics"]["val_accuracy"] == pytest.approx(best.values[0])
    assert config["training"]["evaluation"] == "oneshot" and config["training"]["supernet"] == "tiny"
    model = build_model(records.genotype_of(best)).eval()
    model.load_state_dict(load_file(str(trained["tmp"] / best.user_attrs[records.WEIGHTS_PATH])))
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(_load_exported(folder)(x), model(x), rtol=1e-5, atol=1e-5)

    tuned = export_trial("os", trained["storage"], best.number, tmp_path / "tuned", formats=(), finetune_epochs=1)
    config = json.loads((tuned / "config.json").read_text())
    assert config["training"]["epochs"] == 1 and config["training"]["started_from"] == "the trial's saved weights"
    assert 0 <= config["metrics"]["test_accuracy"] <= 1
    with torch.no_grad():
        assert not torch.allclose(_load_exported(tuned)(x), model(x))  # trained on, not the inherited weights


def test_supernet_train_resumes_after_kill_9(tmp_path):
    """Killed (SIGKILL) once its first epoch's checkpoint exists, the same command finishes the rest."""
    args = ["supernet", "train", "--space", TINY, "--name", "k", "--epochs", "4", "--limit", "100",
            "--storage", f"sqlite:///{tmp_path / 's.db'}"]
    exe = str(Path(sys.executable).with_name("autocnn"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", **_env()}
    record_path = tmp_path / "supernets" / "k" / "supernet.json"
    proc = subprocess.Popen([exe, *args], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if record_path.exists() and json.loads(record_path.read_text()).get("epochs_done", 0) >= 1:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    killed_at = json.loads(record_path.read_text())["epochs_done"]
    assert 1 <= killed_at < 4
    again = run_cli(*args, cwd=tmp_path, env=_env())
    assert again.returncode == 0, again.stderr
    record = json.loads(record_path.read_text())
    assert record["epochs_done"] == 4 and len(record["losses"]) == 4
    assert [run["started_at_epoch"] for run in record["runs"]] == [0, killed_at]
    assert record["runs"][1]["epochs_done"] == 4
    assert f"resuming after epoch {killed_at}/4" in again.stderr


def test_batchnorm_calibration_draws_every_class_from_a_split_stored_class_by_class():
    from autocnn.data import load_dataset
    from autocnn.search.oneshot import CALIBRATION_IMAGES, calibration_inputs
    from autocnn.supernet.trainer import network_inputs

    train = load_dataset("digits").train
    by_class = train.subset(train.labels.argsort(stable=True))  # as an ImageFolder's split is stored
    everything = network_inputs(by_class, 16).flatten(1)
    drawn = calibration_inputs(by_class, 16, seed=0).flatten(1)
    assert len(drawn) == CALIBRATION_IMAGES
    rows = torch.cdist(drawn, everything).argmin(1)
    assert torch.equal(everything[rows], drawn)
    assert len(set(by_class.labels[rows].tolist())) == 10  # the first 256 rows hold only classes 0-2
    assert len(set(by_class.labels[:CALIBRATION_IMAGES].tolist())) <= 3
    assert torch.equal(calibration_inputs(by_class, 16, seed=0).flatten(1), drawn)  # the seed decides the draw
    assert not torch.equal(calibration_inputs(by_class, 16, seed=1).flatten(1), drawn)


def test_a_oneshot_trial_is_offered_only_what_the_supernet_holds():
    """`efficientnet_compound` offers four attention kinds a stage; its supernet holds two (none, SE): the
    sampler and the initial design see those two, and every sampled sub-network is one of the supernet's."""
    from autocnn.search.oneshot import PinnedSpace
    from autocnn.spaces import load_space
    from autocnn.supernet import ElasticSpace, Supernet

    space = load_space("efficientnet_compound")
    es = ElasticSpace(space, fixed={"width_mult": 0.25}, num_classes=10, in_chans=1)
    pinned = PinnedSpace(space, es)
    assert pinned.dimensions()["stages.0.attention"].choices == ("none", "se")
    assert pinned.dimensions()["stages.0.se.ratio"].choices == (4.0, 8.0, 16.0)  # the space's order
    net = Supernet(es.largest())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    kinds = set()
    for _ in range(20):
        genotype = pinned.sample(study.ask(), num_classes=10, in_chans=1)
        net.check(genotype)
        kinds |= {s.attention for s in genotype.stages if s.block == "mbconv"}
    assert kinds == {"none", "se"}


def test_an_elastic_resolution_is_searched_and_each_trial_validated_at_its_own(tmp_path):
    """A supernet trained at 12 and 16 px: the search chooses a resolution per trial, and a trial's score is its
    inherited network's accuracy on the validation images at that resolution."""
    from safetensors.torch import load_file

    from autocnn.builder import build_model
    from autocnn.data import load_dataset
    from autocnn.search import records
    from autocnn.supernet.trainer import network_inputs

    storage = f"sqlite:///{tmp_path / 's.db'}"
    made = run_cli("supernet", "train", "--space", TINY, "--name", "res", "--epochs", "1", *LIMIT, "--resolution",
                   "16,12", "--storage", storage, cwd=tmp_path, env=_env())
    assert made.returncode == 0, made.stderr
    record = json.loads((tmp_path / "supernets" / "res" / "supernet.json").read_text())
    assert record["resolution"] == 16 and record["choices"]["resolution"] == [12, 16]
    assert record["sub_networks"] == 2 * 3456
    searched = run_cli("search", "--space", TINY, "--strategy", "oneshot", "--supernet", "res", "--trials", "8",
                       *LIMIT, "--study", "r", "--storage", storage, "--sampler", "random", cwd=tmp_path, env=_env())
    assert searched.returncode == 0, searched.stderr
    trials = [t for t in optuna.load_study(study_name="r", storage=storage).trials
              if t.state == optuna.trial.TrialState.COMPLETE]
    by_resolution = {records.genotype_of(t).resolution: t for t in trials}
    assert set(by_resolution) == {12, 16} and all(t.params["resolution"] == r for r, t in by_resolution.items())
    val = load_dataset("digits", limit=200).val
    for resolution, t in by_resolution.items():
        model = build_model(records.genotype_of(t)).eval()
        model.load_state_dict(load_file(str(tmp_path / t.user_attrs[records.WEIGHTS_PATH])))
        with torch.no_grad():
            right = (model(network_inputs(val, resolution)).argmax(1) == val.labels).float().mean().item()
        assert right == pytest.approx(t.values[0], abs=1e-6), resolution
