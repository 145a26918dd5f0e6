"""`RayBackend`: each round of the driver is one Tune experiment on the study (see the package doc)."""
from __future__ import annotations

import logging
import os
import warnings
from functools import partial

import optuna
import ray
from ray import tune

from autocnn.search.budget import Budget
from autocnn.search.config import BUDGET_PRUNER, SearchConfig
from autocnn.search.engine import TrialContext, prescreened, study_sampler
from autocnn.search.ray.callbacks import STALE_CHECKPOINTS, Heartbeat, MissingCheckpoints, SkipFinished
from autocnn.cluster import connect
from autocnn.search.ray.keys import (DEFAULT_WEIGHT_DECAY, EXPERIMENT_ATTR, MAX_FAILURES, RUNS_ATTR, VAL,
                                     trial_dirname_of)
from autocnn.search.ray.options import resolve_options, scheduler_for_pruner
from autocnn.search.ray.pbt import starting_lr
from autocnn.search.ray.schedulers import PBT_SCHEDULERS, SCHEDULERS, pruner_of
from autocnn.search.ray.searcher import LIVE, AutocnnSearch, DefineByRun, Live, live_context
from autocnn.search.ray.worker import trainable_for
from autocnn.storage import fail_orphaned_trials, fail_stale_trials, open_storage


class RayBackend:
    """Trials in parallel on Ray Tune (a cluster at `address`, or a Ray started for the run).

    The options are stored with the study (`config.extra["ray"]`), so a resume needs none of them again.
    `pruner` (the search's `--pruner`, when given) runs the Tune scheduler of the same rule
    (`schedulers.PRUNER_SCHEDULERS`); a `scheduler` that says otherwise is refused. A new study with a
    `--timeout` that names neither runs the budget pruner's (`config.BUDGET_PRUNER`: ASHA).
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, scheduler: str | None = None,
                 gpus_per_trial: float | None = None, cpus_per_trial: float | None = None,
                 max_concurrent: int | None = None, storage_path: str | None = None,
                 pruner: str | None = None) -> None:
        self.overrides = dict(address=address, scheduler=scheduler, gpus_per_trial=gpus_per_trial,
                              cpus_per_trial=cpus_per_trial, max_concurrent=max_concurrent,
                              storage_path=storage_path)
        self.pruner = pruner
        self.opts: dict = {}
        self._started = False

    def configure(self, config: SearchConfig, *, resume: bool) -> SearchConfig:
        overrides = dict(self.overrides)
        pruner = self.pruner
        if pruner is None and overrides["scheduler"] is None and not resume and config.timeout is not None \
                and not config.multi_objective:
            pruner = BUDGET_PRUNER  # a time budget that names no rule: asynchronous successive halving
        if pruner is not None:
            overrides["scheduler"] = scheduler_for_pruner(pruner, overrides["scheduler"])
        self.opts = resolve_options(config, config.extra.get("ray", {}) if resume else {}, overrides)
        # the study keeps the pruner of its rule, so the local backend continues it alike
        changes = {"pruner": pruner_of(self.opts["scheduler"])} if overrides["scheduler"] or not resume else {}
        return config.replace(backend="ray", extra={**config.extra, "ray": self.opts}, **changes)

    def open(self, study: optuna.Study, ctx: TrialContext, budget: Budget, progress, *, resume: bool) -> None:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        # checkpoints every epoch with num_to_keep force experiment snapshots; they are small, keep them quiet
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        warnings.filterwarnings("ignore", message="Consider boosting PBT performance")
        logging.getLogger("ray.tune.execution.tune_controller").addFilter(STALE_CHECKPOINTS)  # idempotent
        self._started = connect(self.opts["address"])
        self._ctx = ctx
        LIVE[study.study_name] = Live(ctx=ctx, budget=budget, progress=progress)
        if resume:
            fail_orphaned_trials(study)  # killed before Tune knew them: nothing to continue, retry them now
            self._restore_experiment(study)

    def run(self, study: optuna.Study, n_trials: int) -> None:
        """One Tune experiment of `n_trials` trials on the study."""
        config = self._ctx.config
        runs = int(study.user_attrs.get(RUNS_ATTR) or 0) + 1
        run_config = self._run_config(study, f"run-{runs}")
        tuner = tune.Tuner(
            trainable_for(self._ctx, self.opts),
            tune_config=tune.TuneConfig(search_alg=self._searcher(study), num_samples=n_trials,
                                        scheduler=SCHEDULERS.get(self.opts["scheduler"])(config),
                                        max_concurrent_trials=self.opts["max_concurrent"], reuse_actors=True,
                                        trial_dirname_creator=trial_dirname_of),
            run_config=run_config,
        )
        study.set_user_attr(RUNS_ATTR, runs)
        live = LIVE[study.study_name]
        live.experiment, live.unfinished = f"{run_config.storage_path}/{run_config.name}", 0
        study.set_user_attr(EXPERIMENT_ATTR, live.experiment)
        tuner.fit()
        self._finish(study)
        fail_stale_trials(study)

    def close(self, study: optuna.Study) -> None:
        LIVE.pop(study.study_name, None)
        if self._started:
            ray.shutdown()
            self._started = False

    def _searcher(self, study: optuna.Study) -> AutocnnSearch:
        config = self._ctx.config
        tunable: dict[str, float] = {}
        if self.opts["scheduler"] in PBT_SCHEDULERS:
            tunable = {"lr": starting_lr(config), "weight_decay": DEFAULT_WEIGHT_DECAY}
        sampler = prescreened(study_sampler(config, config.seed + len(study.trials), self._ctx.design), self._ctx,
                              partial(live_context, study.study_name))  # screens in the driver, as it samples
        # metric/mode only satisfy Tune: the study exists, so Optuna loads its own directions (and objectives,
        # which the workers' last report carries for every objective)
        device = "cuda" if self.opts["gpus_per_trial"] > 0 else "cpu"
        return AutocnnSearch(space=DefineByRun(study.study_name, tunable, device), metric=VAL, mode="max",
                             sampler=sampler, study_name=study.study_name,
                             storage=open_storage(config.storage, create=False))

    def _run_config(self, study: optuna.Study, name: str) -> tune.RunConfig:
        storage = self._ctx.config.storage
        return tune.RunConfig(name=name, storage_path=f"{self.opts['storage_path'].rstrip('/')}/{study.study_name}",
                              verbose=0, stop=SkipFinished(storage),
                              callbacks=[Heartbeat(storage, study.study_name), MissingCheckpoints()],
                              failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
                              checkpoint_config=tune.CheckpointConfig(num_to_keep=self._checkpoints_kept()))

    def _checkpoints_kept(self) -> int | None:
        """Two per trial, enough to resume; PBT keeps all, since an exploit restores a donor's checkpoint
        that the donor's later epochs would otherwise have deleted (Ray's PBT docs warn of this)."""
        return None if self.opts["scheduler"] in PBT_SCHEDULERS else 2

    def _restore_experiment(self, study: optuna.Study) -> bool:
        """Finish the Tune experiment a crashed driver left behind, if its directory is still there.

        Running trials continue from their checkpoints and the searcher's asked trials are kept; new
        trials come from the driver's next rounds (`Tuner.restore` cannot add any).
        """
        path = study.user_attrs.get(EXPERIMENT_ATTR)
        if not path or not tune.Tuner.can_restore(path):
            return False
        live = LIVE[study.study_name]
        live.experiment, live.unfinished = path, 0
        try:
            tuner = tune.Tuner.restore(path, trainable=trainable_for(self._ctx, self.opts), resume_unfinished=True)
        except Exception as err:  # an unreadable experiment must not block the study: its trials go stale instead
            warnings.warn(f"cannot restore the Ray experiment {path} ({type(err).__name__}: {err}); continuing the "
                          "study with new trials (its interrupted trials are failed and retried)", RuntimeWarning)
            study.set_user_attr(EXPERIMENT_ATTR, None)
            return False
        tuner.fit()
        self._finish(study)
        return True

    def _finish(self, study: optuna.Study) -> None:
        """After `Tuner.fit`: forget the finished experiment, or stop if Ctrl-C cut it short.

        On Ctrl-C Tune ends its loop, saves the experiment and returns normally (its trials then read as
        terminated); trials still unfinished at its last step tell the two apart. The experiment stays
        recorded on the study, so --resume restores it.
        """
        if LIVE[study.study_name].unfinished:
            raise KeyboardInterrupt
        study.set_user_attr(EXPERIMENT_ATTR, None)
