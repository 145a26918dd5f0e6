"""`autocnn search --backend ray` on a real Ray cluster: the session's head node on 127.0.0.1 with 4 CPUs and
2 logical GPUs (`ray_cluster` in tests/conftest.py). What both backends must do alike is
tests/search/test_backend_conformance.py; this file holds what only Ray has."""
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from click.testing import CliRunner

from autocnn.cli import cli
from autocnn.search import records
from autocnn.search.ray.keys import CHECKPOINT_DIR, EPOCH, EXPERIMENT_ATTR, FINAL, SPEC, trial_dirname
from conftest import assert_user_error, run_cli

SPACE = """\
name: tiny_ray
description: a two-stage conv stack over 12-pixel digits, with a searched width and attention
base_resolution: 12
params:
  width: {int: [4, 16], step: 4}
  attention: {choices: [none, se]}
genotype:
  preset: lenet5
  stem: []
  stages:
    - {block: conv, out_chs: "${width}", kernel: 3, attention: "${attention}", ratio: 4.0}
    - {block: maxpool, kernel: 2, stride: 2}
    - {block: conv, out_chs: "${width * 2}", kernel: 3, attention: "${attention}", ratio: 4.0}
  head: {pool: avg, hidden: []}
  act: relu
  norm: batch
"""
RAY_ONLY_ATTRS = {"gpu_ids"}


@pytest.fixture
def cluster(ray_cluster):
    """The session's Ray head (tests/conftest.py)."""
    return ray_cluster


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "tiny_ray.yaml"
    path.write_text(SPACE)
    return str(path)


def _search(tmp_path, space, *args, env=None):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    return run_cli("search", "--space", space, "--dataset", "digits", "--limit", "300", "--storage", storage,
                   *args, cwd=tmp_path, env=env, timeout=300)


def _study(tmp_path, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'studies.db'}")


def _ok(result):
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    return result


def test_ray_study_packs_four_trials_on_two_gpus(cluster, space, tmp_path):
    """(That Ray records every trial as the local backend does is tests/search/test_backend_conformance.py.)"""
    ray_run = _ok(_search(tmp_path, space, "--trials", "4", "--epochs", "2", "--study", "ray", "--backend", "ray",
                          "--address", cluster, "--gpus-per-trial", "0.5", "--max-concurrent", "4", "--json"))
    assert json.loads(ray_run.stdout)["study"] == "ray"  # Ray's own output stays off stdout

    ray = _study(tmp_path, "ray")
    trials = ray.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    for t in trials:
        assert RAY_ONLY_ATTRS <= set(t.user_attrs), t.number
        assert set(t.params) == {"width", "attention"}  # sampled through OptunaSearch on the study
        assert list(t.intermediate_values.values()) == t.user_attrs[records.VAL_CURVE]
        assert t.values[0] == max(t.user_attrs[records.VAL_CURVE])
    # 0.5 GPU per trial on 2 GPUs: two trials on each, so all four ran at the same time
    assert collections.Counter(tuple(t.user_attrs["gpu_ids"]) for t in trials) == {(0,): 2, (1,): 2}
    assert max(t.datetime_start for t in trials) < min(t.datetime_complete for t in trials)

    config = ray.user_attrs["autocnn.config"]
    assert config["backend"] == "ray"
    assert config["extra"]["ray"]["gpus_per_trial"] == 0.5 and config["extra"]["ray"]["address"] == cluster
    overview = {row["name"]: row for row in json.loads(_ok(run_cli(
        "studies", "--storage", f"sqlite:///{tmp_path / 'studies.db'}", "--format", "json")).stdout)}
    assert (overview["ray"]["finished"], overview["ray"]["requested"], overview["ray"]["state"]) == (4, 4, "finished")


def test_worker_killed_mid_trial_is_retried_from_its_checkpoint(cluster, space, tmp_path):
    marker = tmp_path / "worker-died"
    _ok(_search(tmp_path, space, "--trials", "1", "--epochs", "3", "--study", "fault", "--backend", "ray",
                "--address", cluster, env={"AUTOCNN_RAY_FAULT": f"0:1:{marker}"}))
    assert marker.exists(), "the worker of trial 0 should have died after epoch 1"
    (trial,) = _study(tmp_path, "fault").trials  # retried in place from its checkpoint, not replaced
    assert trial.state == TrialState.COMPLETE
    assert len(trial.user_attrs[records.VAL_CURVE]) == 3 and trial.user_attrs[records.EPOCHS_RUN] == 3
    assert sorted(trial.intermediate_values) == [1, 2, 3]
    assert trial.user_attrs[records.WEIGHTS_PATH]


# Scheduler-stopped trials are PRUNED and the local backend continues the study: the conformance suite.


def _snapshotted_checkpoint(experiment: str, optuna_number: int) -> tuple[str, int] | None:
    """(Tune trial id, epoch) of the latest checkpoint of that Optuna trial in Tune's latest experiment
    snapshot in `experiment`, or None."""
    snapshots = sorted(Path(experiment).glob("experiment_state-*.json"))
    try:
        trials = json.loads(snapshots[-1].read_text())["trial_data"] if snapshots else []
    except (OSError, ValueError):
        return None  # being copied in
    for state, metadata in trials:
        state, last = json.loads(state), json.loads(metadata)["last_result"]
        if state["config"][SPEC]["number"] == optuna_number and last.get(CHECKPOINT_DIR) and FINAL not in last:
            return state["trial_id"], last[EPOCH]
    return None


def test_resume_restores_the_interrupted_ray_experiment(cluster, space, tmp_path):
    storage, epochs = f"sqlite:///{tmp_path / 'studies.db'}", 20
    driver = subprocess.Popen(
        [str(Path(sys.executable).with_name("autocnn")), "search", "--space", space, "--limit", "1000", "--storage",
         storage, "--trials", "2", "--epochs", str(epochs), "--study", "cut", "--backend", "ray", "--address",
         cluster, "--max-concurrent", "1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline, running, snapshotted = time.monotonic() + 180, None, None
    try:
        # Cut when one trial has finished and Tune's experiment snapshot on disk holds a checkpoint of the
        # running one from its first half: Tune writes a snapshot after a trial's num_to_keep (2) checkpoints
        # and copies it into the experiment folder in the background, so the study alone cannot say when.
        while snapshotted is None or snapshotted[1] >= epochs // 2:
            assert driver.poll() is None and time.monotonic() < deadline, "the search ended before it was cut"
            time.sleep(0.1)
            try:
                study = _study(tmp_path, "cut")
            except KeyError:
                continue
            trials, experiment = study.trials, study.user_attrs.get(EXPERIMENT_ATTR)
            if running is None and experiment and any(t.state == TrialState.COMPLETE for t in trials):
                running = next((t for t in trials if t.state == TrialState.RUNNING), None)
            snapshotted = running and _snapshotted_checkpoint(experiment, running.number)
        time.sleep(0.3)  # the searcher's state is copied beside the snapshot
    finally:
        if driver.poll() is None:  # (one that ended on its own has no group left: the assertion above says so)
            os.killpg(driver.pid, signal.SIGKILL)  # the driver dies; Ray reaps its trial actors
        driver.wait()
    # Tune deletes a trial's oldest checkpoint before the snapshot that stops naming it lands: a driver
    # killed in between leaves the snapshot's checkpoint gone and newer ones beside it. Make that so here.
    folder = Path(experiment) / trial_dirname(snapshotted[0])
    checkpoints = sorted(folder.glob("checkpoint_*"))
    checkpoints[-1].rename(folder / "checkpoint_999999")  # a name no snapshot holds
    for gone in checkpoints[:-1]:
        shutil.rmtree(gone)
    done = {t.number: t.datetime_complete for t in _study(tmp_path, "cut").trials if t.state == TrialState.COMPLETE}

    # Tuner.restore finishes the cut experiment; a new Tuner on the same study adds the third trial
    resumed = _ok(_search(tmp_path, space, "--resume", "--study", "cut", "--backend", "ray", "--trials", "3"))
    assert "does not exist on storage" not in resumed.stderr  # restored from the newest checkpoint at once
    study = _study(tmp_path, "cut")
    states = collections.Counter(t.state for t in study.trials)
    assert states[TrialState.COMPLETE] == 3 and states[TrialState.RUNNING] == 0, states
    finished = {t.number: t for t in study.trials if t.state == TrialState.COMPLETE}
    assert {n: finished[n].datetime_complete for n in done} == done  # no completed trial ran again
    cut = finished[running.number]  # the interrupted trial finished as the same Optuna trial
    assert cut.datetime_start == running.datetime_start and len(cut.user_attrs[records.VAL_CURVE]) == epochs
    assert study.user_attrs["autocnn.ray_experiment"] is None


def test_ray_options_are_checked_before_anything_starts(space, tmp_path):
    assert_user_error(_search(tmp_path, space, "--backend", "ray", "--scheduler", "nope"),
                      "unknown scheduler 'nope'", "asha")
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    for args, message in ((["--address", "127.0.0.1:1"], "--address needs --backend ray"),
                          (["--backend", "ray", "--gpus-per-trial", "1.5"], "--gpus-per-trial must be a fraction"),
                          (["--backend", "ray", "--max-concurrent", "0"], "--max-concurrent must be >= 1"),
                          (["--backend", "ray", "--objectives", "accuracy,params", "--scheduler", "asha"],
                           "needs --scheduler fifo"),
                          (["--backend", "ray", "--pruner", "sha", "--scheduler", "median"],
                           "--pruner sha runs --scheduler asha on Ray, not --scheduler median"),
                          (["--backend", "ray", "--pruner", "nope"], "unknown pruner 'nope' for --pruner"),
                          (["--backend", "ray", "--objectives", "accuracy,params", "--pruner", "median"],
                           "--pruner median judges one objective")):
        result = CliRunner().invoke(cli, ["search", "--space", space, "--storage", storage, *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not (tmp_path / "studies.db").exists()  # nothing was created


def test_every_scheduler_builds_for_the_search_config():
    from autocnn.search.config import SearchConfig
    from autocnn.search.ray import SCHEDULERS

    assert {"fifo", "asha", "hyperband", "median", "pbt", "pbt_sync"} <= set(SCHEDULERS.names())
    for name in SCHEDULERS:
        assert SCHEDULERS.get(name)(SearchConfig(epochs=4)) is not None


def test_every_pruner_runs_a_registered_scheduler_on_ray():
    """`--pruner` works on both backends: each local pruner names the Tune scheduler of its rule, and a
    study keeps the pruner of its scheduler (so the local backend continues it alike)."""
    from autocnn.search.engine import PRUNERS
    from autocnn.search.ray import PRUNER_SCHEDULERS, SCHEDULERS
    from autocnn.search.ray.schedulers import pruner_of

    assert set(PRUNER_SCHEDULERS) == set(PRUNERS.names())
    for pruner in PRUNERS:
        assert PRUNER_SCHEDULERS[pruner] in SCHEDULERS
        assert pruner_of(PRUNER_SCHEDULERS[pruner]) == pruner
    assert pruner_of("pbt") == "none"
