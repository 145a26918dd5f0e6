"""The one search driver: budget, rounds, run and resume, stop and failure rules, for every backend.

A `Backend` only decides how trials are launched and where they run (`LocalBackend`: Optuna's
`study.optimize` in this process; `RayBackend`: a Ray Tune experiment per round). The driver runs
rounds until the study holds `config.trials` trials that count toward the budget
(`autocnn.search.budget`), the time budget is spent or a stop is requested, and ends the search with a
`StudyError` when the constraints rejected `MAX_REJECTIONS` candidates in a row or
`MAX_FAILED_ROUNDS` rounds in a row ended in failed trials only.

The time budget (`--timeout`) runs from the call of `run_search` / `resume_search`: its deadline
(`Budget.ends_at`) is handed to the backend in the `TrialContext`, so that candidates are priced in
time against what is left and running trials stop at an epoch boundary on both backends. When the last
candidates would not finish in the time left, the budget is spent: the search ends without an error.
"""
from __future__ import annotations

import logging
import time
from typing import Protocol

import optuna
from optuna.trial import TrialState

from autocnn.search import oneshot, records
from autocnn.search.budget import Budget, finished_trials, rejection_verdict, rejections_in_a_row
from autocnn.search.config import CONFIG_ATTR, ConfigError, SearchConfig
from autocnn.search.control import (GIVE_UP_FAILURES, STARTED_ATTR, STOP_ATTR, release_worker_lease,
                                    take_worker_lease)
from autocnn.search.design import plan_design
from autocnn.search.engine import (StudyError, TrialContext, attach_sampler, check_choices, continue_the_best,
                                   create_study, describe_data, enqueue_presets, prepare_context, reopen_study)
from autocnn.search.local import LocalBackend
from autocnn.storage import fail_stale_trials, study_storage

MAX_FAILED_ROUNDS = GIVE_UP_FAILURES  # rounds in a row that ended in failed trials only (control reads it too)


class Backend(Protocol):
    """How trials are launched and where they run; the driver owns everything else."""

    name: str

    def configure(self, config: SearchConfig, *, resume: bool) -> SearchConfig:
        """Check the backend's options before any study is touched; returns the configuration to store."""

    def open(self, study: optuna.Study, ctx: TrialContext, budget: Budget, progress, *, resume: bool) -> None:
        """Get ready to run trials of `study` (connect, restore what a killed run left in flight)."""

    def run(self, study: optuna.Study, n_trials: int) -> None:
        """Run at most `n_trials` new trials (fewer once the budget is met, stopped or past the deadline)."""

    def close(self, study: optuna.Study) -> None:
        """Release what `open` took; called however the run ends."""


def backend_for(name: str, **options) -> Backend:
    """The backend called `name` ("local" or "ray"), with its options (`RayBackend`'s keywords)."""
    if name == "ray":
        from autocnn.search.ray import RayBackend  # an optional extra: imported only when asked for

        return RayBackend(**options)
    if name != "local":
        raise ConfigError(f"unknown backend {name!r}; choose from local, ray")
    given = [key for key, value in options.items() if value is not None]
    if given:
        raise ConfigError(f"--{given[0].replace('_', '-')} needs --backend ray")
    return LocalBackend()


def last_fail_reason(study: optuna.Study) -> str:
    """The newest failed trial's recorded reason, so the error that ends the search says what went wrong."""
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    lines = str(failed[-1].user_attrs.get(records.FAIL_REASON) or "").strip().splitlines() if failed else []
    return lines[0][:300] if lines else "no reason recorded"


def run_search(config: SearchConfig, *, progress=None, backend: Backend | None = None,
               started: float | None = None) -> optuna.Study:
    """Create a study for `config` and run it to its budget (on `backend`, default `config.backend`'s).

    The time budget runs from `started` (a `time.time()`; default now, so it includes loading the data; the
    CLI passes its process's start, `budget.process_started`)."""
    started = time.time() if started is None else started
    backend = backend or backend_for(config.backend)
    check_choices(config)  # one rule for every backend, before a backend maps the pruner to its own options
    config = oneshot.configure(config, backend.name)  # a oneshot search's supernet, before anything is written
    config = backend.configure(config, resume=False)
    ctx = prepare_context(config)  # a bad space, dataset or constraint creates no storage and no study
    ctx.design = plan_design(ctx)
    study, ctx.config = create_study(config, ctx.design)
    try:
        study.set_user_attr(STARTED_ATTR, started)  # where the anytime curve (best so far vs time) starts
        enqueue_presets(study, ctx)
        return drive(study, ctx, backend, progress, started=started)
    except BaseException:
        delete_if_unstarted(study)
        raise


def delete_if_unstarted(study: optuna.Study) -> None:
    """Delete a study whose run failed before its first trial started: an empty study only blocks its name."""
    try:
        if all(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False)):
            optuna.delete_study(study_name=study.study_name, storage=study_storage(study))
    except Exception:  # noqa: BLE001 - the run's own error is the one to report
        pass


def resume_search(name: str | None, storage_url: str | None, *, trials: int | None = None,
                  timeout: float | None = None, stop_starting_after: float | None = None, progress=None,
                  backend: Backend | None = None, started: float | None = None) -> optuna.Study:
    """Continue a stopped or crashed study (default: the latest) to its (possibly raised) budget.

    No finished trial reruns; either backend continues a study started by either. Options a backend
    is not given are taken from the study. A time budget is this run's, afresh (`timeout`, else the stored one),
    from `started` as in `run_search`.
    """
    started = time.time() if started is None else started
    study, config = reopen_study(name, storage_url, trials=trials, timeout=timeout,
                                 stop_starting_after=stop_starting_after)
    backend = backend or LocalBackend()
    oneshot.check_backend(config, backend)
    stored = config
    config = backend.configure(config, resume=True)
    if config != stored:
        study.set_user_attr(CONFIG_ATTR, config.to_dict())
    ctx = TrialContext.create(config)
    if len(study.trials) < len(config.enqueue) + config.initial_design:  # stopped before its design was through
        ctx.design = plan_design(ctx)
        attach_sampler(study, config, ctx.design)
    return drive(study, ctx, backend, progress, resume=True, started=started)


def drive(study: optuna.Study, ctx: TrialContext, backend: Backend | None = None, progress=None, *,
          resume: bool = False, started: float | None = None) -> optuna.Study:
    """Run rounds of trials on `backend` until `config.trials` trials count toward the budget, or its time
    (from `started`, a `time.time()`; default now) is spent.

    Failed trials (diverged, out of memory, killed workers) do not count: stale ones are failed and
    retried, new samples replace the rest.
    """
    backend = backend or LocalBackend()
    config = ctx.config
    budget = Budget(study, config.trials, timeout=config.timeout, stop_starting_after=config.stop_starting_after,
                    started=started)
    ctx.deadline = budget.ends_at
    budget.record()
    study.set_user_attr(STOP_ATTR, False)
    lease = take_worker_lease(study)
    if progress is not None:
        progress.start(study, config)
        if hasattr(progress, "on_data"):
            progress.on_data(describe_data(config, ctx.data))
    failures = 0
    continued: set[int] = set()  # best trials enqueued again to continue (`engine.continue_the_best`)
    try:
        backend.open(study, ctx, budget, progress, resume=resume)
        fail_stale_trials(study)  # trials of a killed run that nothing continues: failed, then retried
        while not budget.expired and budget.wait_for_slot():
            before = finished_trials(study)
            backend.run(study, config.trials - before)
            rejected, for_time, _ = rejections_in_a_row(study)
            verdict = rejection_verdict(study)
            if verdict == "time" and (best := continue_the_best(study, continued)) is not None:
                continued.add(best)  # the time left goes to more epochs of the best, cut short before
                continue
            if verdict == "time":
                logging.getLogger("autocnn").warning(
                    f"time budget spent: the last {for_time} sampled candidates would not finish in the "
                    f"{max(0.0, budget.remaining_s() or 0.0):.0f}s left")
                break
            if verdict == "constraints":
                raise StudyError(f"the constraints {ctx.constraints} rejected {rejected} sampled candidates in a "
                                 "row; relax --max-params/--max-flops/--max-latency-ms or the space's")
            if finished_trials(study) > before:
                failures = 0
            elif not rejected:  # the round ended in failed trials, not rejections
                failures += 1
            if failures >= MAX_FAILED_ROUNDS:
                raise StudyError(f"every recent trial of study {study.study_name!r} failed (the last: "
                                 f"{last_fail_reason(study)}); see 'autocnn best --study {study.study_name}' for "
                                 "every reason and check the space and data")
    finally:
        try:
            backend.close(study)
        finally:
            release_worker_lease(study, lease)
            if progress is not None:
                progress.stop(study)
    return study
