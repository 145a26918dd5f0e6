"""A study read by other processes while it runs: busy is not corrupt.

`autocnn studies`, the dashboard and optuna-dashboard read a study with plain `optuna.load_study` while
a search writes it. A reader that holds the SQLite file at the moment the search (re)opens its storage
must make the search wait, never stop it as "a corrupt SQLite database". The searches run through the
CLI beside a real reader process that loads the study every 0.2 s; a process holding a lock for longer
than SQLite's default busy timeout shows the wait deterministically.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import TINY_SPACE, cli_env, load_trials, run_cli, sqlite_url

# `optuna.load_study` every INTERVAL s (argv: URL STUDY INTERVAL), as a dashboard polls; one line per load that found the study. On a
# storage that does not exist yet, Optuna creates the file (in SQLite's default rollback-journal mode).
READER = """\
import sys, time
import optuna

optuna.logging.set_verbosity(optuna.logging.ERROR)
url, name, interval = sys.argv[1], sys.argv[2], float(sys.argv[3])
while True:
    try:
        print("read", len(optuna.load_study(study_name=name, storage=url).get_trials()), flush=True)
    except KeyError:  # no such study yet
        pass
    except Exception as err:  # a reader that loses a race retries, as a dashboard poll would
        print("reader error", type(err).__name__, err, file=sys.stderr, flush=True)
    time.sleep(interval)
"""
SEARCH = ("search", "--space", TINY_SPACE, "--dataset", "digits", "--limit", "200", "--resolution", "12",
          "--batch-size", "32", "--epochs", "1", "--pruner", "none", "--study", "busy")


def _search_beside_a_reader(tmp_path: Path, *args: str, trials: int) -> None:
    """Run the search to its end while a reader, started first, polls its study every 0.2 s."""
    db = tmp_path / "busy.db"
    reader = subprocess.Popen([sys.executable, "-c", READER, sqlite_url(db), "busy", "0.2"], env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        result = run_cli(*SEARCH, "--trials", str(trials), "--storage", sqlite_url(db), *args,
                         cwd=tmp_path, timeout=600)
    finally:
        reader.terminate()
        out, _ = reader.communicate(timeout=60)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    assert "corrupt" not in result.stderr
    states = [t.state for t in load_trials(sqlite_url(db), "busy")]
    assert states == [TrialState.COMPLETE] * trials, states
    reads = [line for line in out.splitlines() if line.startswith("read ")]
    assert len(reads) >= 3, f"the reader should have loaded the study during the search: {out[-1000:]}"


def test_local_search_completes_while_another_process_reads_the_study(tmp_path):
    _search_beside_a_reader(tmp_path, trials=6)


@pytest.mark.slow
def test_ray_search_completes_while_another_process_reads_the_study(tmp_path):
    """The Ray driver reopens the storage during the run (its searcher, stopper and heartbeat callback)."""
    _search_beside_a_reader(tmp_path, "--backend", "ray", "--max-concurrent", "2", trials=8)


def _plain_optuna_study(db: Path) -> None:
    """A study made by plain Optuna: its file keeps SQLite's rollback journal, where a writer's lock
    blocks readers (autocnn's own files are switched to WAL)."""
    study = optuna.create_study(study_name="plain", storage=sqlite_url(db))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)


def test_a_locked_database_is_waited_for_not_called_corrupt(tmp_path):
    """Another process holds an exclusive lock for longer than SQLite's default 5 s busy timeout."""
    db = tmp_path / "plain.db"
    _plain_optuna_study(db)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         "con = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "con.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(12); con.execute('ROLLBACK')",
         str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        result = run_cli("studies", "--storage", sqlite_url(db), "--format", "json", cwd=tmp_path, timeout=120)
        waited = time.monotonic() - started
    finally:
        holder.wait(timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [row["name"] for row in json.loads(result.stdout)] == ["plain"]
    assert waited > 6, "the command should have waited for the lock"


def test_processes_that_create_a_new_storage_at_once_all_open_it(tmp_path):
    """A dashboard or `autocnn studies` polling a file that a search is creating: every process sees no schema and
    creates it; without a retry the losers failed with "table ... already exists" or a duplicate version row
    (2 to 5 of 6 processes on every try before the fix)."""
    db = tmp_path / "new.db"
    start = time.time() + 3  # every process past its imports, then all at the same instant
    code = ("import sys, time\nfrom autocnn.storage import open_storage\n"
            f"while time.time() < {start}: pass\n"
            "open_storage(sys.argv[1]); print('opened', flush=True)")
    procs = [subprocess.Popen([sys.executable, "-W", "ignore", "-c", code, sqlite_url(db)], env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [out.strip() for out, _ in results] == ["opened"] * 6, [err[-500:] for _, err in results]
    assert optuna.get_all_study_summaries(sqlite_url(db)) == []  # one valid, empty storage
