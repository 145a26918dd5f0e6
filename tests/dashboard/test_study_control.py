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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import QUICK_HEARTBEAT, run_cli
from test_dashboard import Server, autocnn_exe, wait_for

TINY_SPACE = str(Path(__file__).resolve().parents[1] / "search" / "tiny_space.yaml")
TINY = ("--space", TINY_SPACE, "--dataset", "digits", "--resolution", "12", "--batch-size", "32",
        "--pruner", "none", "--device", "cpu")
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

    def cli(self, *args: str, check: bool = True):
        result = run_cli(*args, "--storage", self.url, cwd=self.folder, env=QUICK_HEARTBEAT)
        assert result.returncode == 0 or not check, (args, result.stderr[-3000:])
        return result

    def crash(self, name: str) -> None:
        """`autocnn search` killed with SIGKILL while a trial trains: its lease and RUNNING trial stay behind."""
        with open(self.folder / f"search-{name}.log", "w") as log:
            proc = subprocess.Popen([autocnn_exe(), "search", *TINY, "--limit", "200", "--epochs", "4", "--trials", "4",
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


LONG_NAME = "quickstart-efficientnet_compound-digits-20261201-041500"  # cut to `quickstar…` in a pipe before


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from autocnn.search.config import SearchConfig
    from autocnn.search.engine import create_study

    s = Storage(tmp_path_factory.mktemp("control"))
    s.cli("search", *TINY, "--limit", "200", "--epochs", "1", "--trials", "6", "--objectives", "accuracy,params",
          "--sampler", "nsga2", "--study", MOO)
    s.crash(CRASHED)
    create_study(SearchConfig(space=TINY_SPACE, dataset="digits", trials=3, study=LONG_NAME, storage=s.url))
    return s


@pytest.fixture(scope="module")
def server(store):
    srv = Server(store.url, store.folder, env=ENV)
    yield srv
    assert srv.stop() == 0, srv.log.read_text()


@pytest.fixture(scope="module")
def outputs(store, server):
    """Every command's stdout, run side by side (stdout is a pipe, as in `autocnn studies | grep`), once
    the crashed study's RUNNING trial has gone stale (3 s). Each test checks the exit codes it needs."""
    wait_for(lambda: server.study(CRASHED)["state"] == "failed", 60, what="the dashboard to call it failed")
    commands = {"studies": ("studies",), "studies json": ("studies", "--format", "json"),
                "latest": ("best", "--json"), "latest table": ("best",)}
    for name in (MOO, CRASHED):
        commands[f"best {name}"] = ("best", "--study", name, "--json")
        commands[f"report {name}"] = ("report", "--study", name, "--out", str(store.folder / f"report-{name}"))
        commands[f"export {name}"] = ("export", "--study", name, "--out", str(store.folder / f"export-{name}"),
                                     "--formats", "none")
    with ThreadPoolExecutor(max_workers=3) as pool:
        running = {key: pool.submit(store.cli, *args, check=False) for key, args in commands.items()}
        return {key: job.result() for key, job in running.items()}


def stdout(outputs: dict, *keys: str) -> list[str]:
    """The output of commands that must have succeeded."""
    for key in keys:
        assert outputs[key].returncode == 0, (key, outputs[key].stderr[-3000:])
    return [outputs[key].stdout for key in keys]


def answers(store: Storage, server: Server, outputs: dict, name: str) -> dict[str, tuple[str | None, int]]:
    """(state, best trial number) from each of the five readers; export gives the best trial only."""
    out: dict[str, tuple[str | None, int]] = {}
    listing, shown, _, _ = stdout(outputs, "studies json", f"best {name}", f"report {name}", f"export {name}")
    row = next(r for r in json.loads(listing) if r["name"] == name)
    out["studies"] = (row["state"], row["best_trial"])
    best = json.loads(shown)
    assert best["best"][0]["number"] == best["best_trial"]  # the best trial comes first
    out["best --json"] = (best["state"], best["best_trial"])
    listed = server.study(name)
    out["dashboard list"] = (listed["state"], listed["best_trial"])
    status, detail = server.get(f"/api/autocnn/studies/{name}")
    assert status == 200, detail
    out["dashboard detail"] = (detail["study"]["state"], detail["best"][0]["number"])
    page = (store.folder / f"report-{name}" / "index.html").read_text()
    out["report"] = (re.search(r'<span id="state">(\w+)</span>', page)[1],
                     int(re.search(r'<span id="best-trial">(\d+)</span>', page)[1]))
    config = json.loads((store.folder / f"export-{name}" / "config.json").read_text())
    out["export"] = (None, config["source"]["trial"])
    return out


def test_a_multi_objective_study_has_one_state_and_one_best_trial(store, server, outputs):
    trials = trials_of(store.url, MOO)
    front_size = len(optuna.load_study(study_name=MOO, storage=store.url).best_trials)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6 and front_size >= 2
    best = expected_best(trials, ["maximize", "minimize"])
    got = answers(store, server, outputs, MOO)
    assert got == {reader: ("finished" if reader != "export" else None, best) for reader in got}, got
    assert len(json.loads(outputs[f"best {MOO}"].stdout)["best"]) == front_size  # `best` lists the whole front


def test_a_crashed_study_is_failed_everywhere_with_the_same_best_trial(store, server, outputs):
    # the SIGKILLed worker's trial stays RUNNING; once its heartbeat is stale every reader says failed
    trials = trials_of(store.url, CRASHED)
    best = expected_best(trials, ["maximize"])
    got = answers(store, server, outputs, CRASHED)
    assert got == {reader: ("failed" if reader != "export" else None, best) for reader in got}, got
    # reading changed nothing: the dead worker's trial is still RUNNING and its lease still there
    after = optuna.load_study(study_name=CRASHED, storage=store.url)
    assert TrialState.RUNNING in [t.state for t in trials] and after.user_attrs["autocnn.worker"]["pid"] > 0
    assert [t.state for t in after.get_trials(deepcopy=False)] == [t.state for t in trials]


def test_best_without_study_takes_the_latest_study(store, outputs):
    latest, table = stdout(outputs, "latest", "latest table")
    latest = json.loads(latest)
    assert latest["study"] == CRASHED and latest["best_trial"] == expected_best(trials_of(store.url, CRASHED),
                                                                                ["maximize"])
    assert f"{CRASHED} (failed): best trial" in table  # the table names the study and its state


def test_studies_prints_full_names_when_piped(outputs):
    table, listing = stdout(outputs, "studies", "studies json")
    assert LONG_NAME in table and "…" not in table
    line = next(line for line in table.splitlines() if LONG_NAME in line)
    assert "stopped" in line and "0/3" in line
    rows = {r["name"]: r for r in json.loads(listing)}
    assert rows[LONG_NAME]["state"] == "stopped" and rows[LONG_NAME]["best_trial"] is None
    assert (rows[MOO]["finished"], rows[MOO]["requested"]) == (6, 6)
    assert (rows[CRASHED]["state"], rows[MOO]["state"]) == ("failed", "finished")
