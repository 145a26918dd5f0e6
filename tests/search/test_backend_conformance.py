"""The backend conformance suite: the same CLI runs and the same assertions on `--backend local` and on
`--backend ray` (the session's real Ray head on 127.0.0.1, `ray_cluster` in tests/conftest.py).

Whatever launches the trials, a study must read the same: rejected candidates cost no budget and are
never trained, pruned trials are PRUNED with their last value, every trial records the same attributes
(Ray adds only `gpu_ids` to a trial a worker ran), a killed search resumes to exactly its budget, a stop
request ends it, and a candidate that fails fails alone. Trials are tiny (tiny_space.yaml, 200 digits at
12 px, 1-4 epochs).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autocnn.search import records
from conftest import QUICK_HEARTBEAT, run_cli

SPACE = str(Path(__file__).with_name("tiny_space.yaml"))
FAST = ("--space", SPACE, "--dataset", "digits", "--limit", "200", "--resolution", "12", "--batch-size", "32")
# One trial at a time: each Ray worker process spends about 6 s of CPU importing torch and Tune before its
# first trial, which the runs' sub-second trials never win back on the 2 cores CI has. Concurrent trials
# are exercised by tests/ray/test_ray_backend.py (4 packed), test_pbt_exploit.py and test_busy_storage.py.
RAY_LOCAL = ("--max-concurrent", "1")

# What every backend records, by how the trial ended. Ray adds the GPUs it assigned.
SAMPLED = {records.GENOTYPE, records.ARCH, records.ARCH_ID}
COMPLETE_KEYS = SAMPLED | {records.PARAMS, records.FLOPS, records.LATENCY, records.METRIC, records.VAL_CURVE,
                           records.EPOCHS_RUN, records.WALL_TIME, records.TEST_METRIC, records.WEIGHTS_PATH,
                           records.LAYERS, records.ACTIVATIONS, records.EPOCH_SECONDS, records.PREDICTED_EPOCH_S, records.TIME_MODEL_EPOCHS,
                           records.BEST_EPOCH, records.TRAIN_LOSS,
                           "val_loss", "test_loss"}
REJECTED_KEYS = SAMPLED | {records.PARAMS, records.FLOPS, records.LATENCY, records.LAYERS, records.ACTIVATIONS,
                           records.REJECTED}
FAILED_KEYS = SAMPLED | {records.FAIL_REASON}
BACKEND_KEYS = {"local": set(), "ray": {"gpu_ids"}}


class Search:
    """`autocnn search` on one backend, with a study storage in tmp_path."""

    def __init__(self, name: str, args: tuple[str, ...], path: Path) -> None:
        self.name, self.backend_args, self.path = name, args, path
        self.storage = f"sqlite:///{path / 'studies.db'}"
        self.extra = BACKEND_KEYS[name]

    def args(self, *args: str, local: bool = False) -> list[str]:
        return ["search", *args, "--storage", self.storage, *(() if local else self.backend_args)]

    def __call__(self, *args: str, local: bool = False) -> subprocess.CompletedProcess:
        """Run to the end (`local`: on the local backend, whatever this one is); must succeed."""
        result = run_cli(*self.args(*args, local=local), cwd=self.path, env=QUICK_HEARTBEAT, timeout=400)
        assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
        return result

    def start(self, *args: str) -> subprocess.Popen:
        """The search in the background, in its own process group (a kill takes what it started)."""
        exe = Path(sys.executable).with_name("autocnn")
        return subprocess.Popen([str(exe), *self.args(*args)], cwd=self.path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1", **QUICK_HEARTBEAT})

    def study(self, name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=self.storage)

    def trials(self, name: str, *states: TrialState) -> list[optuna.trial.FrozenTrial]:
        try:
            return self.study(name).get_trials(states=states or None)
        except KeyError:  # not created yet
            return []

    def wait_for(self, proc: subprocess.Popen, name: str, complete: int, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while len(self.trials(name, TrialState.COMPLETE)) < complete:
            if proc.poll() is not None:
                raise AssertionError(f"the search ended (rc {proc.returncode}) early:\n{proc.stderr.read()[-3000:]}")
            assert time.monotonic() < deadline, f"timed out waiting for {complete} complete trials"
            time.sleep(0.3)


@pytest.fixture(params=["local", "ray"])
def search(request, tmp_path) -> Search:
    args: tuple[str, ...] = ()
    if request.param == "ray":
        args = ("--backend", "ray", "--address", request.getfixturevalue("ray_cluster"), *RAY_LOCAL)
    return Search(request.param, args, tmp_path)


def test_rejected_candidates_cost_no_budget_and_are_never_trained(search):
    # no initial design: it keeps within the limits, and the random samples after it are what gets rejected
    search(*FAST, "--trials", "3", "--epochs", "1", "--max-params", "6000", "--pruner", "none", "--initial-design", "0",
           "--study", "c")
    trials = search.trials("c")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    rejected = [t for t in trials if records.REJECTED in t.user_attrs]
    assert len(complete) == 3 and len(trials) == 3 + len(rejected), [(t.number, t.state.name) for t in trials]
    assert rejected, "the space has candidates above 6,000 parameters; some must have been sampled"
    for t in complete:
        assert t.user_attrs[records.PARAMS] <= 6000
        assert set(t.user_attrs) == COMPLETE_KEYS | search.extra, t.number
        assert len(t.user_attrs[records.VAL_CURVE]) == 1 and t.values[0] == t.user_attrs[records.VAL_CURVE][0]
        assert (search.path / t.user_attrs[records.WEIGHTS_PATH]).is_file()  # beside the sqlite file
    for t in rejected:
        assert t.state == TrialState.PRUNED and "max_params" in t.user_attrs[records.REJECTED]
        assert set(t.user_attrs) == REJECTED_KEYS, t.number  # no curve, no weights, no worker: never launched
        assert t.user_attrs[records.PARAMS] > 6000 and not t.intermediate_values


def test_pruned_trials_are_pruned_with_their_last_value(search):
    search(*FAST, "--trials", "6", "--epochs", "4", "--pruner", "sha", "--sampler", "random", "--initial-design", "0",
           "--study", "p")
    study = search.study("p")
    assert study.user_attrs["autocnn.config"]["pruner"] == "sha"
    trials = study.get_trials()
    assert len(trials) == 6 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, "successive halving stops some of 6 random candidates before epoch 4"
    for t in trials:
        curve = t.user_attrs[records.VAL_CURVE]
        assert list(t.intermediate_values.values()) == curve and sorted(t.intermediate_values)[-1] == len(curve)
        if t.state == TrialState.PRUNED:  # stopped early, valued by its last epoch (Optuna's rule for pruned)
            assert len(curve) < 4 and t.values == [curve[-1]] and records.REJECTED not in t.user_attrs
        else:
            assert len(curve) == 4 and t.values == [max(curve)]
    if search.name == "ray":  # --pruner sha runs Tune's asynchronous successive halving
        assert study.user_attrs["autocnn.config"]["extra"]["ray"]["scheduler"] == "asha"

    # the local backend continues the study (the same rule: the study stores its pruner); none runs twice
    before = {t.number: (t.state, t.datetime_complete) for t in trials}
    search("--resume", "--study", "p", "--trials", "7", local=True)
    trials = search.trials("p")
    assert len(trials) == 7 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert {t.number: (t.state, t.datetime_complete) for t in trials[:6]} == before


def test_killed_search_resumes_to_exactly_the_budget(search):
    proc = search.start(*FAST, "--epochs", "3", "--trials", "5", "--pruner", "none", "--study", "k")
    try:
        search.wait_for(proc, "k", complete=2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    done_before = {t.number: (t.values, t.datetime_complete) for t in search.trials("k", TrialState.COMPLETE)}
    assert 2 <= len(done_before) < 5
    time.sleep(int(QUICK_HEARTBEAT["AUTOCNN_HEARTBEAT_GRACE"]) + 1)  # the killed run's trials go stale
    search("--resume", "--study", "k")
    complete = search.trials("k", TrialState.COMPLETE)
    assert len(complete) == 5
    assert {t.number: (t.values, t.datetime_complete) for t in complete if t.number in done_before} == done_before
    assert not search.trials("k", TrialState.RUNNING, TrialState.WAITING)


def test_a_stop_request_ends_the_search(search):
    from autocnn.search.control import request_stop

    proc = search.start(*FAST, "--epochs", "2", "--trials", "40", "--pruner", "none", "--study", "s")
    try:
        search.wait_for(proc, "s", complete=1)
        request_stop(search.study("s"))
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    trials = search.trials("s")
    assert 1 <= sum(t.state == TrialState.COMPLETE for t in trials) < 40
    assert all(t.state.is_finished() for t in trials), [(t.number, t.state.name) for t in trials]


def test_failing_candidates_fail_alone(search, tmp_path):
    """Unpadded 5x5 convolutions leave 4x4 pixels before the second one: its forward raises."""
    space = tmp_path / "too_small.yaml"
    space.write_text(Path(SPACE).read_text().replace("kernel: 3", 'kernel: "${kernel}", padding: 0')
                     .replace("[conv, basic]", "[conv]").replace("params:\n", "params:\n  kernel: {choices: [3, 5]}\n"))
    result = search("--space", str(space), *FAST[2:], "--trials", "3", "--epochs", "1", "--sampler", "random",
                    "--pruner", "none", "--initial-design", "0", "--study", "f")  # the design skips failing ones
    trials = search.trials("f")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(complete) == 3 and len(trials) == 3 + len(failed)  # the budget, regardless
    assert failed, "this space and seed sample candidates that fail; none did"
    assert all(t.params["kernel"] == 3 for t in complete)
    for t in failed:
        # its build raises when it is priced, before any worker: the same record on both backends
        assert t.params["kernel"] == 5 and set(t.user_attrs) == FAILED_KEYS, t.user_attrs
        assert t.user_attrs[records.FAIL_REASON].startswith("RuntimeError: ")
        assert "Kernel size can't be greater than actual input size" in t.user_attrs[records.FAIL_REASON]
        assert f"trial {t.number:>3} FAIL" in result.stderr  # the progress line shows the failure too


def test_a_recipe_trains_alike_on_both_backends(tmp_path, ray_cluster):
    """Label smoothing and EMA (from a recipe file) reach the Ray worker's trainer as they reach the local one:
    the same architecture and seed give the same first-epoch training loss and validation score."""
    (tmp_path / "recipe.yaml").write_text("label_smoothing: 0.2\nema_decay: 0.9\n")
    one = (*FAST, "--epochs", "1", "--trials", "1", "--initial-design", "0", "--sampler", "random", "--pruner", "none")
    local = Search("local", (), tmp_path)
    ray = Search("ray", ("--backend", "ray", "--address", ray_cluster, *RAY_LOCAL), tmp_path)
    local(*one, "--recipe", "recipe.yaml", "--study", "local")
    ray(*one, "--recipe", "recipe.yaml", "--study", "ray")
    local(*one, "--study", "plain")
    (a,), (b,), (plain,) = (Search.trials(local, name) for name in ("local", "ray", "plain"))
    assert a.user_attrs[records.ARCH] == b.user_attrs[records.ARCH] == plain.user_attrs[records.ARCH]
    assert b.user_attrs[records.TRAIN_LOSS] == pytest.approx(a.user_attrs[records.TRAIN_LOSS], rel=1e-5)
    assert b.user_attrs[records.VAL_CURVE] == pytest.approx(a.user_attrs[records.VAL_CURVE], abs=1e-9)
    for key in (records.TRAIN_LOSS, "val_loss"):  # the recipe changed both (a first epoch is near chance either way)
        assert plain.user_attrs[key] != a.user_attrs[key]


def test_prescreen_trains_the_best_scored_candidate_and_resume_keeps_it(search):
    """`--prescreen synflow:4`: the design's trials are scored alone, every other trains the best of 4 drawn
    candidates; the resumed run screens as the first did (the study stores the option)."""
    search(*FAST, "--trials", "4", "--epochs", "1", "--initial-design", "2", "--pruner", "none",
           "--prescreen", "synflow:4", "--study", "p")
    search("--resume", "--study", "p", "--trials", "5")
    trials = search.trials("p")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    assert [records.DESIGN in t.user_attrs for t in trials] == [True, True, False, False, False]
    for t in trials:
        attrs = t.user_attrs
        scores, candidates = attrs[records.PROXY_SCORES], attrs[records.PROXY_CANDIDATES]
        assert attrs[records.PROXY] == "synflow"
        assert attrs[records.PROXY_SCREENED] == len(scores) == len(candidates) == (1 if records.DESIGN in attrs else 4)
        assert attrs[records.PROXY_SCORE] == max(s for s in scores if s is not None)
        assert attrs[records.ARCH_ID] == candidates[scores.index(attrs[records.PROXY_SCORE])], attrs
