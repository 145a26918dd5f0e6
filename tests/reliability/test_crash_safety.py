"""kill -9 of the real `autocnn search` process at several moments, then `--resume`.

Each test watches the study's sqlite file from outside (read-only, every millisecond) and sends SIGKILL
at one moment of a trial's life: while it is being sampled (created by Optuna's `ask`, before its
heartbeat thread's first beat), in the middle of an epoch, and while its results are being written.
After every kill the resumed search must finish exactly the budget; trials that were complete stay
exactly as they were; the trial the dead process left RUNNING ends FAIL once its heartbeat is stale
(shortened to 3 s here through AUTOCNN_HEARTBEAT_*) and is retried as a new trial that completes.
(`tests/search/test_search_engine.py` covers kill -9 and Ctrl-C between trials.)
"""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import FAST, QUICK_HEARTBEAT, cli_env, load_trials, run_cli, sqlite_url, start_cli

GRACE = int(QUICK_HEARTBEAT["AUTOCNN_HEARTBEAT_GRACE"])
# Ray turns token authentication on for `ray start` once ~/.ray/auth_token exists, but not for its
# clients: the test cluster on 127.0.0.1 and its drivers run without it.
ENV = cli_env(RAY_AUTH_MODE="disabled", **QUICK_HEARTBEAT)

# Moments of a trial, read straight from Optuna's tables; each query gives the number of a RUNNING trial.
SAMPLING = """
    SELECT t.number FROM trials t LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id
    WHERE t.state = 'RUNNING' AND h.trial_id IS NULL
      AND (SELECT count(*) FROM trials WHERE state = 'COMPLETE') >= 1"""
MID_EPOCH = """
    SELECT t.number FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id
    WHERE t.state = 'RUNNING' AND a.key = 'epochs_run' AND a.value_json = '1'"""
WRITING = """
    SELECT t.number FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id
    WHERE t.state = 'RUNNING' AND a.key = 'test_metric'"""


class Crash:
    """One study in tmp_path that is searched, killed and resumed, with what every kill left behind."""

    def __init__(self, tmp_path: Path, trials: int, epochs: int = 2, backend: tuple[str, ...] = ()) -> None:
        self.path = tmp_path
        self.db = tmp_path / "crash.db"
        self.storage = sqlite_url(self.db)
        self.trials = trials
        self.backend = backend  # e.g. ("--backend", "ray", "--address", ...), on every run and resume
        self.args = ("search", *FAST, "--epochs", str(epochs), "--trials", str(trials), "--study", "k",
                     "--storage", self.storage, *backend)
        self.complete: dict[int, tuple] = {}  # every trial seen COMPLETE after a kill -> its record then
        self.killed: set[int] = set()        # trials that were RUNNING when their process died
        self.last_kill = 0.0

    def run_and_kill(self, query: str, *, resume: bool, delay: tuple[float, float] = (0.0, 0.0)) -> int:
        """Start (or resume) the search; SIGKILL it `delay` seconds after `query` first names a trial."""
        self.wait_for_grace()
        args = ("search", "--resume", "--study", "k", "--storage", self.storage, *self.backend) if resume else self.args
        proc = start_cli(*args, cwd=self.path, env=ENV, start_new_session=True)  # its own process group
        con, deadline = None, time.monotonic() + 240
        try:
            while True:
                assert proc.poll() is None, f"the search ended before the kill:\n{proc.communicate()[1][-3000:]}"
                assert time.monotonic() < deadline, "timed out waiting for the moment to kill"
                if con is None and self.db.exists():
                    con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
                try:
                    row = con.execute(query).fetchone() if con is not None else None
                except sqlite3.OperationalError:  # tables not created yet, or a write in progress
                    row = None
                if row is not None:
                    time.sleep(random.uniform(*delay))
                    os.killpg(proc.pid, signal.SIGKILL)  # the CLI process and anything it started
                    proc.communicate(timeout=60)
                    self.last_kill = time.monotonic()
                    break
                time.sleep(0.001)
        finally:
            if con is not None:
                con.close()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
        self.record_state()
        return row[0]

    def record_state(self) -> None:
        for t in load_trials(self.storage, "k"):
            if t.state == TrialState.COMPLETE:
                self.complete.setdefault(t.number, _record(t))
            elif t.state == TrialState.RUNNING:
                self.killed.add(t.number)

    def wait_for_grace(self) -> None:
        """Let the dead process's heartbeat go stale, so the resume fails and retries its trial at once."""
        time.sleep(max(0.0, self.last_kill + GRACE + 1.0 - time.monotonic()))

    def resume_to_the_end(self, *, continued_ok: bool = False) -> list:
        """`continued_ok`: a killed trial may also finish as itself (the Ray backend restores its
        interrupted Tune experiment and continues the trial from its last checkpoint)."""
        self.wait_for_grace()
        result = run_cli("search", "--resume", "--study", "k", "--storage", self.storage, *self.backend,
                         cwd=self.path, env=ENV)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        trials = load_trials(self.storage, "k")
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        assert len(complete) == self.trials, [(t.number, t.state.name) for t in trials]
        assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        by_number = {t.number: t for t in trials}
        for number, record in self.complete.items():  # nothing lost, redone or overwritten
            assert by_number[number].state == TrialState.COMPLETE and _record(by_number[number]) == record, number
        for number in self.killed:
            if continued_ok and by_number[number].state == TrialState.COMPLETE:
                assert not [t for t in complete if number in t.system_attrs.get("retry_history", [])]
                continue
            assert by_number[number].state == TrialState.FAIL, (number, by_number[number].state)
            retries = [t for t in complete if number in t.system_attrs.get("retry_history", [])]
            assert len(retries) == 1, f"killed trial {number} was not retried exactly once"
            assert retries[0].system_attrs["failed_trial"] <= number
        retried = {t.system_attrs["failed_trial"] for t in complete if "failed_trial" in t.system_attrs}
        assert not retried & {t.number for t in complete}, "a trial and its retry both completed (duplicate)"
        return trials


def _record(trial) -> tuple:
    return (trial.values, trial.params, json.dumps(trial.user_attrs, sort_keys=True), trial.datetime_complete)


def test_kill_while_a_trial_is_being_sampled(tmp_path):
    crash = Crash(tmp_path, trials=3)
    number = crash.run_and_kill(SAMPLING, resume=False)
    (killed,) = [t for t in load_trials(crash.storage, "k") if t.number == number]
    assert killed.state == TrialState.RUNNING and "genotype" not in killed.user_attrs  # caught before sampling ended
    trials = crash.resume_to_the_end()
    assert trials[number].state == TrialState.FAIL


def test_kill_in_the_middle_of_an_epoch(tmp_path):
    crash = Crash(tmp_path, trials=3, epochs=3)
    crash.args = (*crash.args, "--limit", "1000")  # epochs long enough to land inside one
    number = crash.run_and_kill(MID_EPOCH, resume=False, delay=(0.0, 0.1))
    (killed,) = [t for t in load_trials(crash.storage, "k") if t.number == number]
    assert killed.state == TrialState.RUNNING and 1 <= killed.user_attrs["epochs_run"] <= 2
    assert "test_metric" not in killed.user_attrs  # training had not finished
    trials = crash.resume_to_the_end()
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == number)
    assert retry.params == killed.params  # the same architecture, trained again from the start
    assert len(retry.user_attrs["val_curve"]) == 3


def test_kill_between_creating_the_study_and_storing_its_configuration(tmp_path):
    """Optuna creates the study and autocnn stores its configuration in a second write; a kill between the two
    left a shell that neither --resume (no configuration) nor a new run (name taken) could use."""
    crash = Crash(tmp_path, trials=1, epochs=1)
    optuna.create_study(study_name="k", storage=crash.storage)  # what such a kill leaves
    resumed = run_cli("search", "--resume", "--study", "k", "--storage", crash.storage, cwd=tmp_path, env=ENV)
    assert resumed.returncode == 2 and "Traceback" not in resumed.stderr
    assert "start it again without --resume" in resumed.stderr
    result = run_cli(*crash.args, cwd=tmp_path, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [t.state for t in load_trials(crash.storage, "k")] == [TrialState.COMPLETE]


def test_two_runs_creating_one_new_study_at_once_do_not_both_take_it(tmp_path, monkeypatch):
    """Run A has created study "k" and not yet stored its configuration when run B, started with the same new
    --study, finds the empty study. B took it for a killed run's shell, deleted it and created its own, which
    SQLite gave the same id, so A's configuration then landed on B's study and both ran it as their own. Now B
    takes the shell over instead, and of the two configuration writes only the first succeeds."""
    from autocnn.search.config import CONFIG_ATTR, SearchConfig
    from autocnn.search.engine import StudyError, create_study
    from autocnn.storage import claim_study_attr, open_storage

    storage = sqlite_url(tmp_path / "studies.db")
    shell = optuna.create_study(study_name="k", storage=storage, direction="maximize")  # A, between its writes
    load = optuna.load_study

    def a_stores_its_configuration_first(*args, **kwargs):
        study = load(*args, **kwargs)
        assert claim_study_attr(open_storage(storage), shell, CONFIG_ATTR, {"run": "A"})
        return study

    monkeypatch.setattr(optuna, "load_study", a_stores_its_configuration_first)
    with pytest.raises(StudyError, match="already exists"):  # B, reading the shell before A's write
        create_study(SearchConfig(study="k", storage=storage))
    monkeypatch.undo()
    (study,) = optuna.get_all_study_summaries(storage, include_best_trial=False)
    assert study.user_attrs == {CONFIG_ATTR: {"run": "A"}}

    optuna.create_study(study_name="k2", storage=storage, direction="maximize")  # a shell whose run died
    taken, config = create_study(SearchConfig(study="k2", storage=storage))
    assert taken.user_attrs[CONFIG_ATTR] == config.to_dict()
    assert not claim_study_attr(open_storage(storage), taken, CONFIG_ATTR, {"run": "late"})  # its creator, had it lived, would lose


@pytest.mark.slow
def test_kill_while_results_are_written(tmp_path):
    """Three kills in a row, each a random 0-30 ms after a trial's test metric was written (the last
    records, the weights file and the COMPLETE state follow), resuming the same study in between."""
    random.seed(0)
    crash = Crash(tmp_path, trials=4)
    for round_ in range(3):
        crash.run_and_kill(WRITING, resume=round_ > 0, delay=(0.0, 0.03))
    crash.resume_to_the_end()


# -- the Ray backend (on the session's `ray_cluster`, tests/conftest.py) -----------------------------------

@pytest.mark.slow
def test_ray_driver_killed_at_each_moment_resumes_to_the_budget(ray_cluster, tmp_path):
    """The Ray driver killed while sampling, mid-epoch and while writing results, resumed each time
    (`--resume --backend ray`): the budget completes exactly, complete trials stay untouched, and every
    killed trial is either continued from its checkpoint (a restored Tune experiment) or failed and retried."""
    random.seed(1)
    crash = Crash(tmp_path, trials=4, epochs=3,
                  backend=("--backend", "ray", "--address", ray_cluster, "--max-concurrent", "1"))
    crash.run_and_kill(SAMPLING, resume=False)
    crash.run_and_kill(MID_EPOCH.replace("'1'", "'2'"), resume=True, delay=(0.0, 0.3))
    crash.run_and_kill(WRITING, resume=True, delay=(0.0, 0.03))
    crash.resume_to_the_end(continued_ok=True)
