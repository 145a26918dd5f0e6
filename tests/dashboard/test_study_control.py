"""One study, one answer: `autocnn studies`, `autocnn best --json`, the dashboard API, `autocnn report`
and `autocnn export` report the same state and the same best trial (autocnn.search.control).

Real `autocnn` subprocesses on one real sqlite storage: a finished multi-objective study, and a study
whose worker was SIGKILLed mid-trial (its RUNNING trial's heartbeat goes stale after 3 s here). The
expected best trial is worked out here from the raw trials, by brute force.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import run_cli
from test_dashboard import Server, autocnn_exe, wait_for

TINY_SPACE = str(Path(__file__).resolve().parents[1] / "search" / "tiny_space.yaml")
TINY = ("--space", TINY_SPACE, "--dataset", "digits", "--resolution", "12", "--batch-size", "32",
        "--pruner", "none", "--device", "cpu")
QUICK_HEARTBEAT = {"AUTOCNN_HEARTBEAT_INTERVAL": "1", "AUTOCNN_HEARTBEAT_GRACE": "3"}
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **QUICK_HEARTBEAT}
MOO, CRASHED = "moo", "crashed"


def trials_of(storage: str, name: str) -> list:
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except KeyError:  # the background search has not created it yet
        return []


def expected_best(trials, directions: list[str]) -> int:
    """The documented rule, by brute force: the Pareto-front member best on the first objective, then
    the next objectives, then the lower trial number (single objective: the best value)."""
    signs = [-1 if d == "maximize" else 1 for d in directions]
    loss = {t.number: [s * v for s, v in zip(signs, t.values)] for t in trials if t.state == TrialState.COMPLETE}
    front = [n for n, a in loss.items()
             if not any(all(x <= y for x, y in zip(b, a)) and b != a for b in loss.values())]
    return min(front, key=lambda n: (loss[n], n))


class Storage:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = f"sqlite:///{folder / 'studies.db'}"

    def cli(self, *args: str, storage: bool = True):
        result = run_cli(*args, *(("--storage", self.url) if storage else ()), cwd=self.folder, env=QUICK_HEARTBEAT)
        assert result.returncode == 0, (args, result.stderr[-3000:])
        return result

    def crash(self, name: str) -> None:
        """`autocnn search` killed with SIGKILL while a trial trains: its lease and RUNNING trial stay behind."""
        with open(self.folder / f"search-{name}.log", "w") as log:
            proc = subprocess.Popen([autocnn_exe(), "search", *TINY, "--limit", "400", "--epochs", "8", "--trials", "4",
                                     "--study", name, "--storage", self.url], stdout=log, stderr=subprocess.STDOUT,
                                    env=ENV, cwd=self.folder)
        def in_flight() -> bool:
            states = [t.state for t in trials_of(self.url, name)]
            return proc.poll() is None and TrialState.COMPLETE in states and TrialState.RUNNING in states

        try:
            wait_for(in_flight, 180, interval=0.1, what="a trial in flight after the first one")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Storage(tmp_path_factory.mktemp("control"))
    s.cli("search", *TINY, "--limit", "200", "--epochs", "1", "--trials", "6", "--objectives", "accuracy,params",
          "--sampler", "nsga2", "--study", MOO)
    s.crash(CRASHED)
    return s


@pytest.fixture(scope="module")
def server(store):
    srv = Server(store.url, store.folder, env=ENV)
    yield srv
    assert srv.stop() == 0, srv.log.read_text()


def answers(store: Storage, server: Server, name: str) -> dict[str, tuple[str | None, int]]:
    """(state, best trial number) from each of the five readers; export gives the best trial only."""
    out: dict[str, tuple[str | None, int]] = {}
    row = next(r for r in json.loads(store.cli("studies", "--format", "json").stdout) if r["name"] == name)
    out["studies"] = (row["state"], row["best_trial"])
    best = json.loads(store.cli("best", "--study", name, "--json").stdout)
    assert best["best"][0]["number"] == best["best_trial"]  # the best trial comes first
    out["best --json"] = (best["state"], best["best_trial"])
    listed = server.study(name)
    out["dashboard list"] = (listed["state"], listed["best_trial"])
    status, detail = server.get(f"/api/autocnn/studies/{name}")
    assert status == 200, detail
    out["dashboard detail"] = (detail["study"]["state"], detail["best"][0]["number"])
    report = store.folder / f"report-{name}"
    store.cli("report", "--study", name, "--out", str(report))
    page = (report / "index.html").read_text()
    out["report"] = (re.search(r'<span id="state">(\w+)</span>', page)[1],
                     int(re.search(r'<span id="best-trial">(\d+)</span>', page)[1]))
    exported = store.folder / f"export-{name}"
    store.cli("export", "--study", name, "--out", str(exported), "--force")
    out["export"] = (None, json.loads((exported / "config.json").read_text())["source"]["trial"])
    return out


def test_a_multi_objective_study_has_one_state_and_one_best_trial(store, server):
    trials = trials_of(store.url, MOO)
    front_size = len(optuna.load_study(study_name=MOO, storage=store.url).best_trials)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6 and front_size >= 2
    best = expected_best(trials, ["maximize", "minimize"])
    got = answers(store, server, MOO)
    assert {reader: answer for reader, answer in got.items()} == {
        reader: ("finished" if reader != "export" else None, best) for reader in got}, got


def test_a_crashed_study_is_failed_everywhere_with_the_same_best_trial(store, server):
    # the SIGKILLed worker's trial stays RUNNING; once its heartbeat is stale (3 s) every reader says failed
    wait_for(lambda: server.study(CRASHED)["state"] == "failed", 60, what="the dashboard to call it failed")
    trials = trials_of(store.url, CRASHED)
    best = expected_best(trials, ["maximize"])
    got = answers(store, server, CRASHED)
    assert got == {reader: ("failed" if reader != "export" else None, best) for reader in got}, got
    # reading changed nothing: the dead worker's trial is still RUNNING and its lease still there
    after = optuna.load_study(study_name=CRASHED, storage=store.url)
    assert [t.state for t in after.get_trials(deepcopy=False)] == [t.state for t in trials]
    assert TrialState.RUNNING in [t.state for t in trials] and after.user_attrs["autocnn.worker"]["pid"] > 0


def test_best_without_study_takes_the_latest_study(store):
    latest = json.loads(store.cli("best", "--json").stdout)
    assert latest["study"] == CRASHED and latest["best_trial"] == expected_best(trials_of(store.url, CRASHED),
                                                                                ["maximize"])
    shown = store.cli("best").stdout  # the table names the study and its state
    assert f"{CRASHED} (failed): best trial" in shown


def test_studies_prints_full_names_when_piped(store):
    from autocnn.search.config import SearchConfig
    from autocnn.search.engine import create_study

    long_name = "quickstart-efficientnet_compound-digits-20261201-041500"
    create_study(SearchConfig(space=TINY_SPACE, dataset="digits", trials=3, study=long_name, storage=store.url))
    table = store.cli("studies").stdout  # stdout is a pipe here, as in `autocnn studies | grep ...`
    assert long_name in table and "…" not in table
    line = next(line for line in table.splitlines() if long_name in line)
    assert "stopped" in line and "0/3" in line
    rows = {r["name"]: r for r in json.loads(store.cli("studies", "--format", "json").stdout)}
    assert rows[long_name]["state"] == "stopped" and rows[long_name]["best_trial"] is None
    assert (rows[MOO]["finished"], rows[MOO]["requested"]) == (6, 6)
