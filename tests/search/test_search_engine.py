"""The local search engine end to end: the real CLI, real training on digits, real sqlite studies."""
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from PIL import Image

from autocnn.search import records
from conftest import run_cli

SPACE = str(Path(__file__).with_name("tiny_space.yaml"))
FAST = ("--space", SPACE, "--dataset", "digits", "--limit", "300", "--epochs", "2", "--batch-size", "32")
RECORD_KEYS = {records.GENOTYPE, records.ARCH, records.ARCH_ID, records.PARAMS, records.FLOPS, records.LATENCY,
               records.VAL_CURVE, records.EPOCHS_RUN, records.WALL_TIME, records.TEST_METRIC}


def trials_of(cli, name, states=None):
    return optuna.load_study(study_name=name, storage=cli.storage).get_trials(states=states)


def test_search_records_every_trial_and_reports_the_best(cli):
    result = cli("search", *FAST, "--trials", "4", "--pruner", "none", "--study", "s", "--json")
    assert result.returncode == 0, result.stderr
    complete = trials_of(cli, "s", (TrialState.COMPLETE,))
    assert len(complete) == 4
    for t in complete:
        assert RECORD_KEYS <= set(t.user_attrs)
        assert len(t.user_attrs[records.VAL_CURVE]) == 2
    best = json.loads(result.stdout)["best"][0]
    assert best["test_metric"] > 0.3  # chance is 0.1 after two short epochs on 300 images
    study = optuna.load_study(study_name="s", storage=cli.storage)
    assert study.user_attrs["autocnn.config"]["space"] == SPACE
    assert re.search(r"trial +3 COMPLETE", result.stderr) and "ETA" in result.stderr  # progress was shown


def test_same_seed_gives_the_same_study(cli):
    for name in ("a", "b"):
        assert cli("search", *FAST, "--trials", "2", "--epochs", "1", "--seed", "7", "--study", name).returncode == 0
    a, b = trials_of(cli, "a"), trials_of(cli, "b")
    assert [t.params for t in a] == [t.params for t in b]
    assert [t.values for t in a] == [t.values for t in b]


def test_impossible_constraints_are_a_user_error(cli):
    result = cli("search", *FAST, "--trials", "2", "--max-params", "10", "--study", "x")
    assert result.returncode == 2 and "relax" in result.stderr and "Traceback" not in result.stderr


def test_multi_objective_search_has_a_pareto_front_and_a_report(cli):
    result = cli("search", *FAST, "--trials", "8", "--epochs", "1", "--objectives", "accuracy,params",
                 "--sampler", "nsga2", "--study", "mo")
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="mo", storage=cli.storage)
    assert len(study.best_trials) >= 2
    shown = cli("best", "--study", "mo")
    assert shown.returncode == 0 and "Pareto front" in shown.stdout
    assert shown.stdout.count("architecture:") == len(study.best_trials)
    out = cli.path / "report"
    assert cli("report", "--study", "mo", "--out", str(out)).returncode == 0
    for name in ("history", "pareto_front", "accuracy_vs_params", "accuracy_vs_flops", "learning_curves"):
        with Image.open(out / f"{name}.png") as img:
            assert img.size[0] > 100 and img.size[1] > 100
    page = (out / "index.html").read_text()
    assert "Pareto front" in page and "data:image/png;base64" in page


def _wait_for(predicate, timeout=240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError("timed out")


def _complete(cli, name):
    try:
        return len(trials_of(cli, name, (TrialState.COMPLETE,)))
    except KeyError:
        return 0


# kill -9 and resume, rejected candidates: tests/search/test_backend_conformance.py (both backends)
@pytest.mark.parametrize("sig", [signal.SIGINT])
def test_killed_search_resumes_to_exactly_the_budget(cli, sig):
    exe = Path(sys.executable).with_name("autocnn")
    args = [str(exe), "search", *FAST, "--epochs", "3", "--trials", "5", "--pruner", "none", "--study", "k",
            "--storage", cli.storage]
    proc = subprocess.Popen(args, cwd=cli.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: _complete(cli, "k") >= 2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "--resume" in err
    done_before = {t.number: t.values for t in trials_of(cli, "k", (TrialState.COMPLETE,))}
    assert 2 <= len(done_before) < 5
    result = cli("search", "--resume", "--study", "k")
    assert result.returncode == 0, result.stderr
    complete = trials_of(cli, "k", (TrialState.COMPLETE,))
    assert len(complete) == 5
    assert {t.number: t.values for t in complete if t.number in done_before} == done_before  # nothing redone
    if sig == signal.SIGINT:  # a clean stop leaves no trial RUNNING (an interrupted one is FAIL)
        assert not trials_of(cli, "k", (TrialState.RUNNING,))


def test_search_on_an_imagefolder(cli, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("test", 6)):
        for label in ("circle", "square"):
            folder = tmp_path / "imgs" / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
                pixels[3:9, 3:9] = 255 if label == "square" else 0
                Image.fromarray(pixels).save(folder / f"{i}.png")
    result = cli("search", "--space", SPACE, "--dataset", "imagefolder", "--data-root", str(tmp_path / "imgs"),
                 "--trials", "2", "--epochs", "1", "--study", "img")
    assert result.returncode == 0, result.stderr
    (first, *_) = trials_of(cli, "img", (TrialState.COMPLETE,))
    assert first.user_attrs[records.GENOTYPE]["in_chans"] == 3


def test_two_sqlite_files_in_one_folder_do_not_share_a_studys_weights_folder(tmp_path):
    """Studies named alike in two SQLite files of one folder would write `run/trial-N` over each other
    (bench_anytime's side-by-side runs did, and their continuations loaded the other run's weights): the
    second is refused before its file is created, and the first file may take the name again."""
    from autocnn.errors import AutocnnError
    from autocnn.search.config import SearchConfig
    from autocnn.search.engine import create_study

    def create(db: str):
        return create_study(SearchConfig(space=SPACE, dataset="digits", study="run",
                                         storage=f"sqlite:///{tmp_path / db}"))

    _, config = create("a.db")
    assert json.loads((tmp_path / "run" / ".study").read_text())["storage"] == str((tmp_path / "a.db").resolve())
    with pytest.raises(AutocnnError, match="holds the weights of study 'run' of another database"):
        create("b.db")
    assert not (tmp_path / "b.db").exists()
    optuna.delete_study(study_name="run", storage=config.storage)
    assert create("a.db")[1].study == "run"  # a deleted study's name, taken again in its own file
