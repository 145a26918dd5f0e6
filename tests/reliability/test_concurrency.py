"""Several `autocnn search --resume` workers on one study: two on an sqlite file, four on PostgreSQL.

Every worker is a real CLI process started at the same moment; they end with exactly the requested
number of complete trials (none beyond: a worker waits while the others' running trials would meet
the budget), every worker exits 0, and no "database is locked" (or any traceback) reaches the user.
"""
from __future__ import annotations

import itertools
import re

from optuna.trial import TrialState

from conftest import FAST, cli_env, load_trials, sqlite_url, start_cli


def _create_study(storage: str, name: str, trials: int) -> None:
    """The study the workers share, created by the engine exactly as `autocnn search` would create it."""
    from autocnn.search.config import SearchConfig
    from autocnn.search.engine import create_study

    options = dict(zip(FAST[::2], FAST[1::2]))
    create_study(SearchConfig(space=options["--space"], dataset="digits", limit=200, epochs=2, resolution=12,
                              batch_size=32, pruner="none", trials=trials, study=name,
                              storage=storage))


def _run_workers(storage: str, name: str, workers: int, cwd) -> list[tuple[int, str]]:
    procs = [start_cli("search", "--resume", "--study", name, "--storage", storage, cwd=cwd, env=cli_env())
             for _ in range(workers)]
    results = []
    for proc in procs:
        _, err = proc.communicate(timeout=400)
        results.append((proc.returncode, err))
    return results


def _check(storage: str, name: str, trials: int, results: list[tuple[int, str]]) -> None:
    for rc, err in results:
        assert rc == 0, err[-3000:]
        assert "database is locked" not in err and "Traceback" not in err, err[-3000:]
    study_trials = load_trials(storage, name)
    complete = [t for t in study_trials if t.state == TrialState.COMPLETE]
    assert len(complete) == trials, [(t.number, t.state.name, t.user_attrs.get("rejected")) for t in study_trials]
    assert not [t for t in study_trials if t.state in (TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL)]
    # every trial counted once: the workers' progress lines add up to the study
    reported = [len(re.findall(r"trial +\d+ COMPLETE", err)) for _, err in results]
    assert sum(reported) == trials, reported
    assert sum(n > 0 for n in reported) >= 2, f"only one worker trained: {reported}"
    overlapping = [(a.number, b.number) for a, b in itertools.combinations(complete, 2)
                   if a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete]
    assert overlapping, "no two trials ran at the same time"


def test_two_workers_share_one_sqlite_study(tmp_path):
    storage = sqlite_url(tmp_path / "shared.db")
    _create_study(storage, "shared", trials=6)
    results = _run_workers(storage, "shared", 2, tmp_path)
    _check(storage, "shared", 6, results)


def test_four_workers_share_one_postgresql_study(postgres_url, tmp_path):
    _create_study(postgres_url, "pg-shared", trials=8)
    results = _run_workers(postgres_url, "pg-shared", 4, tmp_path)
    _check(postgres_url, "pg-shared", 8, results)
