"""Opening study storages so that crashes and concurrent workers lose nothing.

SQLite gets a busy timeout (several writers otherwise hit "database is locked") and a file that is
busy when first opened is waited for, never reported as corrupt; every RDB storage
gets Optuna's heartbeat so a trial left RUNNING by a killed process is failed and re-queued once
its heartbeat goes stale.

This is the one module that reaches into Optuna's private storage internals (`optuna.storages._rdb`,
`Study._storage`); each use names the public API that is missing.
"""
from __future__ import annotations

import copy
import json
import os
import sqlite3
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import sqlalchemy.dialects.mysql
import sqlalchemy.dialects.postgresql
import sqlalchemy.dialects.sqlite
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._rdb import models  # private: the table models behind the queries below
from optuna.trial import TrialState

from autocnn.errors import AutocnnError, first_line

DEFAULT_STORAGE = "sqlite:///studies/autocnn.db"


def _env_seconds(name: str, default: int) -> int:
    """A whole number of seconds > 0 from the environment (tests shorten the heartbeat), else `default`."""
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else default


# A killed worker's trial is failed (and retried) once its heartbeat is grace_period() seconds old.
# AUTOCNN_HEARTBEAT_INTERVAL / AUTOCNN_HEARTBEAT_GRACE change both (every worker of a study must agree);
# read at each use, not at import, like every AUTOCNN_* variable.
def heartbeat_interval() -> int:
    return _env_seconds("AUTOCNN_HEARTBEAT_INTERVAL", 5)


def grace_period() -> int:
    return max(_env_seconds("AUTOCNN_HEARTBEAT_GRACE", 15), 2 * heartbeat_interval())


MAX_RETRY = 3


class StorageError(AutocnnError):
    """A storage URL that cannot be opened."""


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    return Path(url[len("sqlite:///"):])


# Seconds a busy SQLite file is waited for: by the probe below and by every connection (busy timeout).
SQLITE_BUSY_TIMEOUT = 60
# The probe's transient failures and how long each is retried: a lock held by another process (a writer,
# or a reader such as a dashboard polling the study), and a WAL locking race SQLite gave up on.
# None of them says the file is damaged.
_TRANSIENT_SECONDS = {sqlite3.SQLITE_BUSY: SQLITE_BUSY_TIMEOUT, sqlite3.SQLITE_LOCKED: SQLITE_BUSY_TIMEOUT,
                      sqlite3.SQLITE_PROTOCOL: 5}
_CORRUPT = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_VERIFIED: set[Path] = set()
"""SQLite files whose probe passed in this process: reopening them (the Ray driver does, mid-run) skips it."""


def _check_sqlite_file(path: Path, url: str, create: bool) -> None:
    if path.is_dir():
        raise StorageError(f"--storage {url} names a folder, not an SQLite file; "
                           f"pass e.g. --storage sqlite:///{path / 'autocnn.db'}")
    if path.exists():
        resolved = path.resolve()
        if resolved in _VERIFIED:
            return
        try:
            with open(path, "rb") as fh:
                header = fh.read(16)
        except OSError as err:
            raise StorageError(f"cannot read {path} ({err.strerror}); fix its permissions or pass another --storage")
        if header and header != b"SQLite format 3\x00":
            raise StorageError(f"{path} is not an SQLite database (corrupt or another file); "
                               "restore it from a backup or pass another --storage")
        _probe_sqlite(resolved, path)
        _VERIFIED.add(resolved)
    elif not create:
        raise StorageError(f"no study storage at {path}; run 'autocnn search' first or pass --storage {url}")
    elif not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)


def _probe_sqlite(resolved: Path, path: Path) -> None:
    """Read the schema through a read-only connection; only SQLite's own corruption codes mean corrupt.

    Busy and the other transient failures are retried (SQLite's busy handler waits inside each try)
    until their patience runs out; then the error names the lock, not damage.
    """
    start, delay = time.monotonic(), 0.05
    while True:
        waited = time.monotonic() - start
        try:
            con = sqlite3.connect(f"{resolved.as_uri()}?mode=ro", uri=True,
                                  timeout=max(0.1, SQLITE_BUSY_TIMEOUT - waited))
            try:
                con.execute("PRAGMA schema_version").fetchone()
            finally:
                con.close()
            return
        except sqlite3.DatabaseError as err:
            code = (getattr(err, "sqlite_errorcode", None) or 0) & 0xFF
            if code in _CORRUPT:
                raise StorageError(f"{path} is a corrupt SQLite database; restore it from a backup "
                                   "or pass another --storage") from None
            if waited < _TRANSIENT_SECONDS.get(code, 0):
                pass
            elif code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise StorageError(f"{path} stayed locked by another process for {waited:.0f} s; retry once "
                                   "that process is done, or pass another --storage") from None
            else:
                raise StorageError(f"cannot read {path} ({err}); check its permissions and free disk space, "
                                   "or pass another --storage") from None
        time.sleep(delay)
        delay = min(2 * delay, 1.0)


def open_storage(url: str | None = None, *, create: bool = True, heartbeat: bool = True) -> RDBStorage:
    """An RDBStorage for `url` (default sqlite file under studies/), checked before Optuna touches it."""
    url = url or os.environ.get("AUTOCNN_STORAGE", DEFAULT_STORAGE)
    sqlite_path = _sqlite_path(url)
    engine_kwargs: dict = {}
    if sqlite_path is not None:
        _check_sqlite_file(sqlite_path, url, create)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
    elif url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
        engine_kwargs["pool_pre_ping"] = True
    hb: dict = {}
    if heartbeat:
        hb = dict(heartbeat_interval=heartbeat_interval(), grace_period=grace_period(),
                  heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
    try:
        storage = _new_rdb_storage(url, engine_kwargs, hb)
    except ImportError as err:
        raise StorageError(f"storage {url!r} needs a missing driver ({err.name}); install it, e.g. pip install psycopg2-binary") from None
    except Exception as err:  # SQLAlchemy wraps every connection failure differently
        reason = first_line(err, 160)
        raise StorageError(f"cannot open storage {url!r} ({reason}); check the URL and that the server is reachable") from None
    if sqlite_path is not None:
        sqlalchemy.event.listen(storage.engine, "connect", _tune_sqlite_connection)
        storage.engine.dispose()  # connections Optuna opened before the listener existed
        with storage.engine.connect() as con:  # switch the file to WAL now, before any reader opens it
            con.exec_driver_sql("SELECT 1")
    return storage


SCHEMA_RACE_TRIES = 5


def _new_rdb_storage(url: str, engine_kwargs: dict, hb: dict) -> RDBStorage:
    """`RDBStorage`, retried when another process created the schema at the same moment: a dashboard or
    `autocnn studies` polling a new file while a search starts it. Both see no tables (or no version row) and
    create them; the loser's `CREATE TABLE` or version insert fails, and a second look finds the schema there."""
    for attempt in range(SCHEMA_RACE_TRIES):
        try:
            return RDBStorage(url, engine_kwargs=engine_kwargs, **hb)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as err:
            raced = isinstance(err, sqlalchemy.exc.IntegrityError) or "already exists" in str(err)
            if not raced or attempt == SCHEMA_RACE_TRIES - 1:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def _tune_sqlite_connection(dbapi_connection, _record) -> None:
    """WAL lets readers (the dashboard) and one writer work at once. In WAL mode, synchronous=NORMAL
    skips the fsync of every commit (a trial writes a dozen attributes, each its own commit) yet keeps
    every committed transaction through a crash or kill -9 of the process; only an operating-system
    crash or power cut can roll back the last few commits, never corrupt the file."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's `fail_stale_trials` (retried by the storage's callback), plus `fail_orphaned_trials`."""
    optuna.storages.fail_stale_trials(study)
    fail_orphaned_trials(study)


def fail_orphaned_trials(study: optuna.Study) -> None:
    """Fail and retry RUNNING trials that never recorded a heartbeat.

    Optuna creates a trial (`ask`, which also runs the sampler's relative sampling) before its
    heartbeat thread records the first beat; a worker killed in between leaves a RUNNING trial that
    Optuna never considers stale. Such a trial started more than the grace period ago is failed and
    handed to the storage's retry callback like a stale one.
    """
    storage = study_storage(study)
    backend = _rdb(storage)
    if backend is None or backend.heartbeat_interval is None:
        return
    grace = backend.grace_period or 2 * backend.heartbeat_interval
    started_before = datetime.now() - timedelta(seconds=grace)  # FrozenTrial.datetime_start is local time
    # No public API lists the RUNNING trials without a heartbeat row (RDBStorage._get_stale_trial_ids
    # skips them): one query on the trial and heartbeat tables.
    with backend.engine.connect() as con:
        no_heartbeat = con.execute(
            sqlalchemy.select(models.TrialModel.trial_id)
            .outerjoin(models.TrialHeartbeatModel, models.TrialHeartbeatModel.trial_id == models.TrialModel.trial_id)
            .where(models.TrialModel.study_id == study._study_id, models.TrialModel.state == TrialState.RUNNING,
                   models.TrialHeartbeatModel.trial_id.is_(None))
        ).scalars().all()
    retry = backend.get_heartbeat_stale_trial_callback()
    for trial_id in no_heartbeat:
        started = storage.get_trial(trial_id).datetime_start
        if started is None or started >= started_before:
            continue  # maybe a live worker between ask() and its first beat
        try:
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker got there first
            continue
        if retry is not None:
            retry(study, copy.deepcopy(storage.get_trial(trial_id)))


def study_names(storage: RDBStorage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage a loaded study reads through. `Study` has no public accessor for it (`_storage`)."""
    return study._storage


def trial_id(trial) -> int:
    """A trial's storage-wide id (what the storage's own methods take). `Trial` and `FrozenTrial` expose
    only the per-study `number` publicly (`_trial_id`)."""
    return trial._trial_id


def record_heartbeat(study: optuna.Study, trial) -> None:
    """A heartbeat for RUNNING `trial` now, where the storage keeps them: a worker busy with a trial before
    Optuna's heartbeat thread starts (a prescreening sampler, `autocnn.search.prescreen`) does not read as
    killed to other workers (`fail_orphaned_trials`, Optuna's stale check)."""
    storage = study_storage(study)
    if getattr(storage, "get_heartbeat_interval", lambda: None)() is not None:  # an RDBStorage with heartbeats
        storage.record_heartbeat(trial_id(trial))


def _upsert(dialect: str, table):
    """INSERT ... ON CONFLICT (trial_id, key) UPDATE value_json for `table`, as Optuna writes attributes;
    None for a database this does not know (its writes go through Optuna one by one)."""
    if dialect in ("sqlite", "postgresql"):
        query = getattr(sqlalchemy.dialects, dialect).insert(table)
        return query.on_conflict_do_update(index_elements=[table.c.trial_id, table.c.key],
                                           set_={"value_json": query.excluded.value_json})
    if dialect == "mysql":
        query = sqlalchemy.dialects.mysql.insert(table)
        return query.on_duplicate_key_update(value_json=query.inserted.value_json)
    return None


def set_trial_user_attrs(trial, attrs: dict[str, Any]) -> None:
    """Several user attributes of a running trial in one transaction of two statements.

    `Trial.set_user_attr` commits each attribute in its own transaction (a state check and an upsert)
    and Optuna has no batch write. This checks the trial once (`check_trial_is_updatable`: a finished
    trial refuses, as Optuna's does), upserts every attribute in one statement, JSON-encoded as Optuna
    encodes them, and updates the trial's cached attributes (`Trial._cached_frozen_trial`, what
    `trial.user_attrs` reads: no public setter). Any other trial-like object (a Ray worker's recorder,
    a space's probe), storage or database gets them one call each.
    """
    backend = _rdb(trial.storage) if isinstance(trial, optuna.Trial) else None
    table = models.TrialUserAttributeModel.__table__
    upsert = _upsert(backend.engine.dialect.name, table) if backend is not None else None
    if upsert is None or len(attrs) < 2:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    tid = trial_id(trial)
    rows = [{"trial_id": tid, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]
    with backend.engine.begin() as con:
        state = con.execute(sqlalchemy.select(models.TrialModel.state).where(models.TrialModel.trial_id == tid)).scalar()
        if state is None:
            raise KeyError(f"no trial with id {tid}")
        backend.check_trial_is_updatable(tid, state)
        con.execute(upsert.values(rows))
    trial._cached_frozen_trial.user_attrs.update(attrs)


def _rdb(storage) -> RDBStorage | None:
    """The RDBStorage under `storage`: `optuna.load_study` wraps it in a private `_CachedStorage`
    (`_backend`) and Optuna has no public way to unwrap it."""
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, RDBStorage) else None


def running_trial_heartbeats(storage, study_id: int) -> tuple[set[int], set[int]]:
    """(stale, never beat): numbers of the study's RUNNING trials whose last heartbeat is older than the
    grace period, and of those with no heartbeat row at all (empty sets for a non-RDB storage).

    Read-only, so `autocnn studies` and the dashboard can judge a crashed worker without failing its
    trials. The grace period is the storage's, or grace_period() for a storage opened without heartbeat,
    so every reader agrees. Optuna's public API has only `fail_stale_trials`, which writes;
    `RDBStorage._get_stale_trial_ids` needs a heartbeat-enabled storage and skips trials without a row.
    """
    backend = _rdb(storage)
    if backend is None:
        return set(), set()
    grace = backend.grace_period or (2 * backend.heartbeat_interval if backend.heartbeat_interval else grace_period())
    trial, beat = models.TrialModel, models.TrialHeartbeatModel
    with backend.engine.connect() as con:
        now = con.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar()  # the clock heartbeats are written with
        rows = con.execute(
            sqlalchemy.select(trial.number, beat.heartbeat)
            .outerjoin(beat, beat.trial_id == trial.trial_id)
            .where(trial.study_id == study_id, trial.state == TrialState.RUNNING)
        ).all()
    now = now.replace(tzinfo=None)  # PostgreSQL answers timezone-aware, the column is naive
    stale = {number for number, at in rows if at is not None and at < now - timedelta(seconds=grace)}
    return stale, {number for number, at in rows if at is None}


def _attr_table():
    return models.StudyUserAttributeModel.__table__


def read_study_attr_json(storage, study_id: int, key: str) -> str | None:
    """A study user attribute's JSON text exactly as stored (None when unset), the `expected` of
    `swap_study_attr`. Optuna's `get_study_user_attrs` decodes it, which loses the exact text."""
    backend = _rdb(storage)
    t = _attr_table()
    with backend.engine.connect() as con:
        found = con.execute(sqlalchemy.select(t.c.value_json).where(t.c.study_id == study_id, t.c.key == key)).first()
    return None if found is None else found[0]


def claim_study_attr(storage, study, key: str, value) -> bool:
    """Set `study`'s unset user attribute `key` to `value`; False when it was set already (another process won).

    Written to the study `study` was opened on (Optuna's private `_study_id`: there is no public accessor, and
    looking its name up again could find another study created under the name since)."""
    return swap_study_attr(storage, study._study_id, key, None, value)


def swap_study_attr(storage, study_id: int, key: str, expected_json: str | None, new) -> bool:
    """Atomically set a study user attribute to `new` if it still reads `expected_json`; True when this call won.

    Optuna's `set_study_user_attr` overwrites unconditionally; there is no public compare-and-set.
    A missing row is created with INSERT (the (study_id, key) unique constraint lets one inserter
    win); an existing one is changed with UPDATE ... WHERE value_json = expected (one row or none).
    Values are JSON-encoded as Optuna encodes user attrs, so `study.user_attrs` reads them back.
    """
    backend = _rdb(storage)
    t = _attr_table()
    value = json.dumps(new)
    try:
        with backend.engine.begin() as con:
            if expected_json is None:
                con.execute(sqlalchemy.insert(t).values(study_id=study_id, key=key, value_json=value))
                return True
            done = con.execute(sqlalchemy.update(t).where(t.c.study_id == study_id, t.c.key == key,
                                                          t.c.value_json == expected_json).values(value_json=value))
            return done.rowcount == 1
    except sqlalchemy.exc.IntegrityError:
        return False
