"""The search's pieces every backend shares: registries, studies, and the steps of one trial.

`evaluate_trial` samples, prices, trains and records one trial (what the local backend,
`autocnn.search.local`, runs per trial); its pieces (`sample_architecture`, `price_candidate`,
`epoch_recorder`, `fit_candidate`) are shared with the Ray backend (`autocnn.search.ray`), which
samples in its driver and prices and trains in its workers, so both record trials alike. With
`--prescreen`, both wrap the study's sampler (`prescreened`) so that it screens candidates before each
trial (`autocnn.search.prescreen`). The search loop itself (budget, rounds, resume, failure rules) is
`autocnn.search.driver`.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Callable

import optuna
import torch

from autocnn.artifacts import check_study_folder, claim_study_folder, resolve_weights, save_trial_weights
from autocnn.costs import (count_flops, count_layers, count_meta_work, count_params, materialize,
                           measure_latency_ms, meta_model)
from autocnn.data import DataSplits, choose_mode, load_dataset
from autocnn.errors import AutocnnError
from autocnn.proxies import PROXIES
from autocnn.registry import Registry
from autocnn.search import records
from autocnn.search.budget import (MAX_REJECTIONS, LookOverran, OutOfTime, best_training_s, check_deadline,
                                   longest_training, remaining_s)
from autocnn.search.config import (ALL_TRIALS, CONFIG_ATTR, FIRST_LOOK_SHARE, LOOK_SHARE, LOOK_VS_BEST, SETTLING_LR,
                                   ConfigError, SearchConfig,
                                   default_pruner)
from autocnn.search.control import latest_study
from autocnn.search.design import DesignPoint, with_design
from autocnn.search.oneshot import Oneshot, PinnedSpace, record_oneshot
from autocnn.search.prescreen import PrescreenSampler, screening_for
from autocnn.search.timing import EpochShape, TimeModel, study_model
from autocnn.storage import claim_study_attr, open_storage
from autocnn.training import DivergedError, EpochReport, TrainConfig, resolve_device, train
from autocnn.training.config import check_recipe
from autocnn.weights import freeze_blocks, load_reference_weights

SAMPLERS: Registry[Callable[..., optuna.samplers.BaseSampler]] = Registry("sampler")
PRUNERS: Registry[Callable[[int], optuna.pruners.BasePruner]] = Registry("pruner")

SAMPLERS.register("tpe", lambda seed, multi: optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                                                        constant_liar=True, n_startup_trials=5))
SAMPLERS.register("random", lambda seed, multi: optuna.samplers.RandomSampler(seed=seed))
SAMPLERS.register("cmaes", lambda seed, multi: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False))
SAMPLERS.register("gp", lambda seed, multi: optuna.samplers.GPSampler(seed=seed))
SAMPLERS.register("nsga2", lambda seed, multi: optuna.samplers.NSGAIISampler(seed=seed, population_size=8))
# Optuna's CmaEsSampler raises on a study with several directions (GPSampler handles them since Optuna 4.2)
SINGLE_OBJECTIVE_SAMPLERS = frozenset({"cmaes"})

# Small candidates often sit near chance for the first epochs (warm-up, BatchNorm statistics), so no
# trial is judged before epoch `grace` (`--grace-epochs`, default 3; steps are 1-based epochs). The Ray
# schedulers (autocnn.search.ray.schedulers) take the same rule.
PRUNERS.register("median", lambda grace: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=grace))
PRUNERS.register("hyperband", lambda grace: optuna.pruners.HyperbandPruner(min_resource=grace))
# reduction factor 3, as Ray's ASHA and Optuna's HyperbandPruner: with 12 epochs, looks at epochs 3 and 9
SHA_REDUCTION = 3
PRUNERS.register("sha", lambda grace: optuna.pruners.SuccessiveHalvingPruner(min_resource=grace,
                                                                             reduction_factor=SHA_REDUCTION))
PRUNERS.register("none", lambda grace: optuna.pruners.NopPruner())

# metric names, heartbeat retries and GPSampler are "experimental" in Optuna but stable in use
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# What fails one trial alone (diverged, a block's forward raising, out of memory) on every backend;
# any other exception is a bug or a user error and ends the search.
TRIAL_ERRORS = (DivergedError, RuntimeError, MemoryError)


class StudyError(AutocnnError):
    """A study that does not exist, already exists, or cannot be continued."""


def check_choices(config: SearchConfig) -> None:
    """Refuse a sampler, pruner and objectives that do not go together, before anything is written (the
    CLI and the Python API alike; `run_search` checks before a backend reads its options)."""
    choices = ((SAMPLERS, config.sampler, "--sampler"), (PRUNERS, pruner_name(config), "--pruner"))
    for registry, value, flag in choices:
        if value not in registry:
            raise ConfigError(f"unknown {registry.kind} {value!r} for {flag}; choose from {', '.join(registry.names())}")
    if config.screening is not None and config.screening[0] not in PROXIES:
        raise ConfigError(f"unknown proxy {config.screening[0]!r} for --prescreen; choose from {', '.join(PROXIES.names())}")
    if config.multi_objective and config.sampler in SINGLE_OBJECTIVE_SAMPLERS:
        multi = ", ".join(n for n in SAMPLERS.names() if n not in SINGLE_OBJECTIVE_SAMPLERS)
        raise ConfigError(f"--sampler {config.sampler} optimises one objective, not {','.join(config.objectives)}; "
                          f"use --sampler {multi} or a single objective")
    if config.multi_objective and config.pruner not in (None, "none"):
        raise ConfigError(f"--pruner {config.pruner} judges one objective; a Pareto search "
                          f"({','.join(config.objectives)}) trains every trial fully: drop --pruner")
    try:
        check_recipe(config.recipe, "recipe")
        train_config_for(config, 0, device="cpu")
    except ValueError as err:  # RecipeError names the field; TrainConfig's own checks name theirs
        raise ConfigError(f"{str(err).removeprefix('TrainConfig.')}; fix the recipe file, flag or space's "
                          "training: section") from None


def default_study_name(config: SearchConfig) -> str:
    space = config.space.rsplit("/", 1)[-1].removesuffix(".yaml").removesuffix(".yml")
    return f"{space}-{config.dataset}-{datetime.now():%Y%m%d-%H%M%S}"


def load_study(name: str, storage_url: str | None, *, heartbeat: bool = True) -> optuna.Study:
    storage = open_storage(storage_url, create=False, heartbeat=heartbeat)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))
        raise StudyError(f"no study named {name!r} in the storage; existing studies: {names or 'none'}") from None


def interrupted_creation(summary) -> bool:
    """A study with neither a configuration nor a trial: a run was killed between Optuna creating it and
    `create_study` storing the configuration (two writes). Nothing was lost, so a new run may take its name."""
    return CONFIG_ATTR not in summary.user_attrs and summary.n_trials == 0


def missing_config(name: str, ran: bool) -> StudyError:
    """What to say of a study without autocnn's configuration: one that ran nothing was interrupted while it was
    being created (`interrupted_creation`) and can be started again; any other is not autocnn's."""
    if not ran:
        return StudyError(f"study {name!r} was interrupted before its configuration was stored and ran nothing; "
                          f"start it again without --resume (autocnn search --study {name} ...)")
    return StudyError(f"study {name!r} was not created by autocnn (no stored configuration)")


def stored_config(study: optuna.Study) -> SearchConfig:
    data = study.user_attrs.get(CONFIG_ATTR)
    if data is None:
        raise missing_config(study.study_name, bool(study.trials))
    return SearchConfig.from_dict(data)


def pruner_name(config: SearchConfig) -> str:
    """The pruner a study runs: its `--pruner`, else `config.default_pruner`'s (the study stores the one it runs)."""
    return config.pruner or default_pruner(config.timeout, config.objectives)


def study_sampler(config: SearchConfig, seed: int, design: list[DesignPoint] = ()) -> optuna.samplers.BaseSampler:
    """The `--sampler` of the study (seeded by `seed`), handing `design` to the trials after the presets."""
    return with_design(SAMPLERS.get(config.sampler)(seed, config.multi_objective), design, len(config.enqueue))


def fresh_sampler(name: str, multi: bool, seed: int) -> optuna.samplers.BaseSampler:
    """A new sampler `name` seeded by `seed` (module-level, so that a partial of it pickles)."""
    return SAMPLERS.get(name)(seed, multi)


def prescreened(sampler: optuna.samplers.BaseSampler, ctx: "TrialContext",
                context: Callable[[], "TrialContext"] | None = None) -> optuna.samplers.BaseSampler:
    """`sampler` screening each of its trials' candidates with the run's proxy (`--prescreen`,
    `autocnn.search.prescreen`); itself without one. `context` gives the run's context where the sampler is
    pickled (Ray's searcher) and must not carry it."""
    if ctx.config.screening is None or isinstance(sampler, PrescreenSampler):
        return sampler
    return PrescreenSampler(sampler, context or (lambda: ctx),
                            partial(fresh_sampler, ctx.config.sampler, ctx.config.multi_objective))


def pruner_for(config: SearchConfig) -> optuna.pruners.BasePruner:
    """The study's pruner with its grace epochs (none for a multi-objective study, whatever it stored)."""
    if config.multi_objective:
        return optuna.pruners.NopPruner()
    return PRUNERS.get(pruner_name(config))(config.grace_epochs)


def create_study(config: SearchConfig, design: list[DesignPoint] = ()) -> tuple[optuna.Study, SearchConfig]:
    """A new study holding `config`; the name defaults to space-dataset-timestamp. Its first trials after
    the enqueued presets take the points of `design` (`autocnn.search.design`)."""
    check_choices(config)
    locations = absolute_locations(config)  # before the storage: a bad --artifacts writes nothing
    name = config.study or default_study_name(config)
    check_study_folder(locations["artifacts"], name, config.storage)  # (before the storage too)
    storage = open_storage(config.storage, create=True)
    taken = StudyError(f"study {name!r} already exists; pass --resume to continue it or choose another --study")
    shell = next((s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
                  if s.study_name == name), None)
    if shell is not None and not interrupted_creation(shell):
        raise taken
    sampler = study_sampler(config, config.seed, design)
    pruner = pruner_for(config)
    study = None
    if shell is not None and [d.name.lower() for d in shell.directions] == config.directions:
        try:  # taken over, not replaced: the run creating it may be alive, and its claim below must then fail
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        except KeyError:  # deleted since
            pass
    elif shell is not None:
        optuna.delete_study(study_name=name, storage=storage)
    if study is None:
        try:
            study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                        directions=config.directions)
        except optuna.exceptions.DuplicatedStudyError:
            raise taken from None
    config = config.replace(study=name, pruner=pruner_name(config), **locations)
    if not claim_study_attr(storage, study, CONFIG_ATTR, config.to_dict()):  # two runs started with one new --study
        raise taken
    claim_study_folder(config.artifacts, name, config.storage)
    study.set_metric_names(list(config.objectives))
    return study, config


def absolute_locations(config: SearchConfig) -> dict:
    """`artifacts`, `data_root` and `weights` made absolute, so that a process in another folder (a Ray
    worker, a resumed run) finds them."""
    from pathlib import Path

    from autocnn.artifacts import resolve_artifacts

    root = str(Path(config.data_root).expanduser().resolve()) if config.data_root else None
    weights = {name: str(Path(path).expanduser().resolve()) for name, path in config.weights.items()}
    cache = str(Path(config.cache_dir).expanduser().resolve()) if config.cache_dir else None
    return {"artifacts": resolve_artifacts(config.artifacts, config.storage), "data_root": root, "weights": weights,
            "cache_dir": cache}


def reopen_study(name: str | None, storage_url: str | None, *, trials: int | None = None,
                 timeout: float | None = None, stop_starting_after: float | None = None
                 ) -> tuple[optuna.Study, SearchConfig]:
    """Load a study (default: the latest autocnn study) with its stored configuration.

    Only the budget may change on resume: a larger `trials`, a new `timeout` or `stop_starting_after`
    (each run gets its time afresh; without one, the stored one).
    """
    if name is None:
        name = latest_study(open_storage(storage_url, create=False))
    study = load_study(name, storage_url)
    config = stored_config(study).replace(storage=storage_url)
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    config = config.replace(trials=max(config.trials, trials or 0), timeout=timeout or config.timeout,
                            stop_starting_after=stop_starting_after or config.stop_starting_after)
    study.set_user_attr(CONFIG_ATTR, config.to_dict())
    return attach_sampler(study, config), config


def attach_sampler(study: optuna.Study, config: SearchConfig, design: list[DesignPoint] = ()) -> optuna.Study:
    """A loaded study gets the sampler and pruner of its configuration back (Optuna does not store them),
    with the rest of its initial design when a run stopped before the design was through."""
    study.sampler = study_sampler(config, config.seed + len(study.trials), design)
    study.pruner = pruner_for(config)
    return study


@dataclass
class TrialContext:
    """What every trial of one run shares: the space, the data and the configuration."""

    config: SearchConfig
    space: object
    data: DataSplits
    costs: dict = dataclasses.field(default_factory=dict, repr=False)  # by arch id: a repeat is priced once
    deadline: float | None = None  # the run's end (time.time(), `Budget.ends_at`); None: no --timeout
    design: list[DesignPoint] = dataclasses.field(default_factory=list, repr=False)  # the initial design
    screenings: dict = dataclasses.field(default_factory=dict, repr=False)  # trial number -> its prescreen.Screening
    oneshot: object = dataclasses.field(default=None, repr=False)  # --strategy oneshot: the loaded supernet (oneshot.Oneshot)

    def design_index(self, number: int) -> int | None:
        """Which point of the initial design trial `number` takes (None: the sampler's own trial)."""
        index = number - len(self.config.enqueue)
        return index if 0 <= index < len(self.design) else None

    @classmethod
    def create(cls, config: SearchConfig) -> "TrialContext":
        from autocnn.search.fixed import PREFIX, FixedSpace

        if config.space.startswith(PREFIX):
            space = FixedSpace.from_spec(config.space)
        else:
            from autocnn.spaces import load_space

            space = load_space(config.space)
        data = load_data(config)
        if config.strategy == "oneshot":  # candidates are the supernet's sub-networks, valued by its weights
            shot = Oneshot(config, space, data)
            return cls(config=config, space=PinnedSpace(space, shot.elastic), data=data, oneshot=shot)
        return cls(config=config, space=space, data=data)

    @property
    def constraints(self) -> dict:
        """The space's limits, tightened or replaced by the run's own (--max-params, ...)."""
        return {**(getattr(self.space, "constraints", None) or {}), **self.config.constraints}

    @property
    def measures_latency(self) -> bool:
        return needs_latency(self.config.objectives, self.constraints)

    @property
    def epoch_shape(self) -> EpochShape:
        return EpochShape(len(self.data.train), len(self.data.val), self.config.batch_size)

    def time_model(self, study: optuna.Study, device: str | None = None) -> TimeModel:
        """The training-time model calibrated on every finished epoch of `study` so far (`timing`)."""
        device = device or resolve_device(self.config.device).type
        return study_model(study.get_trials(deepcopy=False), self.epoch_shape, device)

    def sample(self, trial):
        space = self.space
        if trial.user_attrs.get(records.OUTSIDE_SPACE):  # an enqueued preset the space cannot express
            space = preset_space(trial.user_attrs[records.ENQUEUED])
        g = space.sample(trial, resolution=self.config.resolution, num_classes=self.data.num_classes,
                         in_chans=self.data.in_chans, native_resolution=self.data.native_resolution)
        if self.data.multilabel != g.head.multilabel:
            g = g.replace(head=dataclasses.replace(g.head, multilabel=self.data.multilabel))
        return g


def load_data(config: SearchConfig, name: str | None = None, data_root: str | None = None) -> DataSplits:
    """The run's dataset (or `name` at `data_root`, decoded with the run's settings) as every trial sees it."""
    same = name in (None, config.dataset)
    return load_dataset(name or config.dataset, config.data_root if same and data_root is None else data_root,
                        seed=config.seed, limit=config.limit if same else None, image_size=config.image_size,
                        channels=config.channels, cache_dir=config.cache_dir)


def describe_data(config: SearchConfig, data: DataSplits) -> str:
    """The data, and how batches reach the device (resident or streamed, and why), in one line."""
    _, why = choose_mode(data.nbytes, resolve_device(config.device), config.data_mode, config.data_memory)
    where = "; each Ray trial chooses on its own device" if config.backend == "ray" else ""
    return f"{data.describe()}; {why}{where}"


def objective_values(config: SearchConfig, metric: float, costs: dict) -> list[float]:
    by_name = {"accuracy": metric, "map": metric, "f1": metric, "params": costs["params"],
               "flops": costs["flops"], "latency": costs["latency_ms"]}
    return [float(by_name[o]) for o in config.objectives]


def needs_latency(objectives, constraints: dict) -> bool:
    """Latency costs real forward passes: measured only for a latency objective or limit."""
    return "latency" in objectives or constraints.get("max_latency_ms") is not None


def constraint_violation(limits: dict, costs: dict) -> str | None:
    for key, cost in (("max_params", "params"), ("max_flops", "flops"), ("max_latency_ms", "latency_ms")):
        limit = limits.get(key)
        if limit is not None and costs[cost] > limit:
            return f"{cost} {costs[cost]:,.6g} exceeds {key} {limit:,.6g}"
    return None


def evaluate_trial(trial, ctx: TrialContext, *, on_epoch: Callable[[EpochReport], None] | None = None,
                   prune: bool = True, device: str | None = None, train: bool = True) -> list[float]:
    """`_evaluate_trial`, recording `fail_reason` on the trial for any exception (pruning aside)."""
    try:
        return _evaluate_trial(trial, ctx, on_epoch=on_epoch, prune=prune, device=device, train=train)
    except optuna.TrialPruned:
        raise
    except Exception as err:  # the trial fails; `drive` decides whether the search goes on
        record_failure(trial, err)
        raise


def record_failure(trial, err: BaseException) -> None:
    """Store `fail_reason` ("Type: first line of the message") on a trial that is about to fail."""
    message = (str(err).strip().splitlines() or [""])[0][:300]
    try:
        trial.set_user_attr(records.FAIL_REASON, f"{type(err).__name__}: {message}" if message else type(err).__name__)
    except Exception:  # noqa: BLE001 - a storage error must not hide the trial's own error
        pass


def _evaluate_trial(trial, ctx: TrialContext, *, on_epoch: Callable[[EpochReport], None] | None = None,
                    prune: bool = True, device: str | None = None, train: bool = True) -> list[float]:
    """Sample, price, (maybe) train and record one trial; returns the objective values.

    Raises optuna.TrialPruned for candidates outside the constraints or that would not finish in the
    time left (never trained), for trials the pruner stops and for trials the run's deadline stops at an
    epoch boundary (their weights saved); DivergedError for a trial whose loss blew up. `train=False`
    skips training and scores the candidate with a constant metric of 0 (a zero-epoch budget: what
    scripts/bench_overhead.py times as the framework's own per-trial cost).
    """
    config = ctx.config
    if ctx.oneshot is not None:  # inherited weights, validated untrained (autocnn.search.oneshot)
        genotype = sample_architecture(trial, ctx)
        model, costs = price_candidate(trial, genotype, ctx.constraints, latency=ctx.measures_latency,
                                       cache=ctx.costs)
        return objective_values(config, record_oneshot(trial, ctx, genotype, model), costs)
    genotype = sample_architecture(trial, ctx)
    torch.manual_seed(config.seed + trial.number)  # initial weights: a function of the trial, not of earlier trials
    best_s = best_training_s(trial.study, config.epochs) if train and ctx.deadline is not None else None
    admit = None if not train else partial(price_time, trial, config=config, shape=ctx.epoch_shape,
                                           model=ctx.time_model(trial.study, device), deadline=ctx.deadline,
                                           rival_epochs=longest_training(trial.study), best_s=best_s)
    model, costs = price_candidate(trial, genotype, ctx.constraints, latency=ctx.measures_latency, cache=ctx.costs,
                                   admit=admit)
    if not train:
        return objective_values(config, 0.0, costs)
    config = fitted(config, trial.user_attrs)
    # a schedule cut to the time left (or to a first look) anneals sooner: its early epochs are not comparable
    # with full ones, so it does not join the pruner's rungs; under successive halving it still faces them,
    # against trials whose schedules were at least as long (`outranked_at_rung`)
    cut = records.PLANNED_EPOCHS in trial.user_attrs
    halving = prune and not config.multi_objective and pruner_name(config) == "sha"
    look = halving and cut
    prune = prune and not cut
    model = weights_for(model, trial.user_attrs.get(records.START_WEIGHTS), config.freeze)
    record_epoch = epoch_recorder(trial)
    guard_look = look_guard(config, trial.user_attrs, best_s)

    def report(epoch: EpochReport) -> None:
        record_epoch(epoch)
        if on_epoch is not None:
            on_epoch(epoch)
        if not config.multi_objective and math.isfinite(epoch.val_metric):
            trial.report(epoch.val_metric, epoch.epoch)  # a trial stopped early is valued by its last epoch
            margin = noise_margin(epoch.val_metric, len(ctx.data.val))
            if prune and epoch.epoch < config.epochs and trial.should_prune() \
                    and (not halving or outranked_at_rung(trial, epoch.epoch, epoch.val_metric, config.epochs,
                                                          config.grace_epochs, margin, epoch.seconds)):
                raise optuna.TrialPruned(f"pruned after epoch {epoch.epoch}")  # (a fully trained trial is complete)
            if look and epoch.epoch < config.epochs and outranked_at_rung(trial, epoch.epoch, epoch.val_metric,
                                                                          config.epochs, config.grace_epochs, margin,
                                                                          epoch.seconds):
                raise optuna.TrialPruned(f"pruned after epoch {epoch.epoch} (outranked at its rung)")
        if guard_look is not None:
            guard_look(epoch)
        check_deadline(ctx.deadline, epoch.epoch, config.epochs, epoch.seconds)

    try:
        values = fit_candidate(trial, config, ctx.data, genotype, model, costs,
                               train_config=train_config_for(config, trial.number, device), on_epoch=report)
    except OutOfTime as stop:
        trial.set_user_attr(records.OUT_OF_TIME, str(stop))
        _save_weights(trial, model, config)
        raise optuna.TrialPruned(str(stop)) from None
    _save_weights(trial, model, config)
    return values


def noise_margin(value: float, images: int) -> float:
    """One standard error of an accuracy-like `value` measured on `images` validation images (0 outside [0, 1]).

    Successive halving ranks trials at a rung by validation scores that are this noisy: on digits (360
    images) trials at epoch 9 of 12 scored 0.986-0.992, two images apart, and SHA stopped the 0.989 one with
    three quarters of its training spent; a stopped trial's model does not count, and the time is lost."""
    return math.sqrt(value * (1 - value) / images) if 0 <= value <= 1 and images > 0 else 0.0


def outranked_at_rung(trial, step: int, value: float, planned: int, grace: int, margin: float = 0.0,
                      epoch_s: float | None = None) -> bool:
    """Whether a trial with a cut schedule (`planned` epochs) falls below successive halving's cut at `step`.

    Its rivals are the trials that reported `step` on a schedule at least as long as its own (a full one, or
    cut to no fewer epochs): at equal step theirs were annealed no further, so the comparison can only favour
    it, and a trial still outside the top 1/`SHA_REDUCTION` (the best one when there are fewer than
    `SHA_REDUCTION` trials in all) is worse than they were, not merely less far along. Without this a candidate
    fitted to half the remaining budget ran to the end whatever its first epochs showed (bench_anytime,
    digits: two such candidates took 41 of 60 s and finished below the first 4-s network). The rivals are read,
    never written: its values stay out of the rungs full trials are judged by. A trial that started from
    another's weights (`records.CONTINUES`) is a rival at its own epochs, many epochs into its network's
    training: under a time budget the question is whether a candidate is on course to beat the best network,
    and judging by the network's epochs instead let slow candidates the warm rival had stopped run on (digits in
    60 s: a 175 k- and a 1.2 M-parameter network ran to 0.978 and 0.989 for 38 of the 60 s).

    A rival counts as better only by more than `margin` (`noise_margin`); a full-schedule trial that SHA
    would stop is stopped only if this holds for it too (its rivals: the full-schedule trials). The benefit of
    that doubt shrinks with what it costs: against a rival k times faster per epoch (`epoch_s`, the trial's
    seconds per epoch, against the rival's recorded median) the margin is a k-th. Otherwise a tie on noise
    kept a slow candidate going (digits: an EfficientNet at 32 px, 2.2 s an epoch, ran 9 epochs, 22 s of a 60-s
    budget, level on noise at epoch 3 with a 0.4-s plain CNN it never beat).
    """
    rung = grace
    while rung < step:
        rung *= SHA_REDUCTION
    if step < grace or rung != step or not math.isfinite(value):
        return False
    rivals = [(t.intermediate_values[step], _rival_margin(t, margin, epoch_s))
              for t in trial.study.get_trials(deepcopy=False)
              if t.number != trial.number and step in t.intermediate_values  # no `planned_epochs`: the whole schedule
              and t.user_attrs.get(records.PLANNED_EPOCHS, math.inf) >= planned]
    if not rivals:
        return False
    maximize = trial.study.direction == optuna.study.StudyDirection.MAXIMIZE
    better = sum(1 for v, m in rivals if (v > value + m if maximize else v < value - m))
    return better >= max(1, (len(rivals) + 1) // SHA_REDUCTION)


def _rival_margin(rival, margin: float, epoch_s: float | None) -> float:
    """`margin` scaled by how much faster per epoch `rival` trained than the judged trial (never raised)."""
    seconds = rival.user_attrs.get(records.EPOCH_SECONDS) or []
    if not margin or not epoch_s or epoch_s <= 0 or not seconds:
        return margin
    return margin * min(1.0, statistics.median(seconds) / epoch_s)


def _save_weights(trial, model, config: SearchConfig) -> None:
    weights = save_trial_weights(model, config.storage, trial.study.study_name, trial.number, config.artifacts)
    if weights:
        trial.set_user_attr(records.WEIGHTS_PATH, weights)


# The pieces of `evaluate_trial`, shared with the Ray backend (autocnn.search.ray.worker), which
# samples in its driver and prices and trains in its workers: both backends record the same way.

def sample_architecture(trial, ctx: TrialContext):
    """Sample a genotype on `trial` and record it in one write: what the space records, the genotype, arch
    string and id, the weights it starts from, its place in the initial design and, with `--prescreen`, the
    candidates screened for it and their proxy scores (a retried trial keeps those of its first run)."""
    held = records.HeldAttrs(trial)
    screened = ctx.screenings.pop(trial.number, None)  # taken first: a sample that fails leaves none behind
    genotype = ctx.sample(held)
    design = ctx.design_index(trial.number)
    if design is not None and not trial.user_attrs.get(records.ENQUEUED):
        held.attrs[records.DESIGN] = design
    if ctx.config.screening is not None and records.PROXY_SCORE not in trial.user_attrs:
        held.attrs.update(screening_for(ctx, trial.number, genotype, screened).attrs())
    start = start_weights_for(ctx.config, trial.user_attrs.get(records.ENQUEUED))
    look = None if start or ctx.oneshot is not None else (
        (first_look_of(trial, ctx, design, genotype.arch_id) if design is not None else None)
        or trained_twin_of(trial, genotype.arch_id))
    if look is not None:
        held.attrs[records.CONTINUES] = look.number
        start = str(resolve_weights(ctx.config.storage, look.user_attrs[records.WEIGHTS_PATH], ctx.config.artifacts))
    records.record_architecture(trial, genotype, start, held.attrs)
    return genotype


def first_look_of(trial, ctx: TrialContext, design: int, arch_id: str):
    """The finished first look of the design point that trial `trial` trains in full (None: there is none).

    A design point priced above `FIRST_LOOK_SHARE` of the budget comes twice (`design.initial_design`): a
    first look cut to a few epochs, then its full training. Started from scratch, the full training threw
    the look's epochs away (on `shapes` in 60 s, 8 of them); it starts from the look's weights instead, with
    a schedule of its own (a warm restart). On Ray the two are sampled side by side: the look has not
    finished, and the full training starts from scratch as before."""
    if design < 1 or ctx.design[design - 1].arch_id != ctx.design[design].arch_id:
        return None
    for earlier in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        attrs = earlier.user_attrs
        if earlier.number == trial.number - 1 and attrs.get(records.ARCH_ID) == arch_id \
                and records.PLANNED_EPOCHS in attrs and attrs.get(records.WEIGHTS_PATH):
            return earlier
    return None


def trained_twin_of(trial, arch_id: str):
    """The best finished trial with exactly `trial`'s parameters and architecture, if the time budget cut its
    schedule short (`planned_epochs`) and its weights were saved (None otherwise).

    A sampler that proposes a trained candidate again (TPE does, near its best) asks for more of it. When the
    budget had cut that network's training, the repeat continues its weights with a schedule of its own (a warm
    restart), as the design's full training continues its first look: on `shapes` in 60 s TPE's repeat of the
    start point's plain CNN (5 epochs of 12) retrained it from scratch for 13 s and ended below it (0.69 vs
    0.87), where continuing it reached 0.89. A network that had its whole schedule is trained again from
    scratch, another draw of its score (on digits such a repeat scored 0.997 against the first one's 0.992)."""
    if not trial.params:  # a fixed architecture (an enqueued preset outside the space): nothing was proposed
        return None
    polished = trial.user_attrs.get(records.POLISHES)  # enqueued by `continue_the_best`: that one, fully trained
    direction = trial.study.directions[0]
    twins = [t for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
             if t.number != trial.number and t.params == trial.params and t.values
             and t.user_attrs.get(records.ARCH_ID) == arch_id and t.user_attrs.get(records.WEIGHTS_PATH)]
    if polished is not None:
        return next((t for t in twins if t.number == polished), None)
    sign = 1.0 if direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
    best = max(twins, key=lambda t: (sign * t.values[0], t.number), default=None)
    return best if best is not None and records.PLANNED_EPOCHS in best.user_attrs else None


def continue_the_best(study: optuna.Study, continued: set[int]) -> int | None:
    """When the time left fits no new candidate, enqueue the best complete trial again (once: `continued`): the
    repeat continues its weights with what fits (`trained_twin_of`, `price_time`) instead of leaving the rest of
    the budget unused. A best the budget had cut short continues with a schedule of its own; one that had its
    whole schedule is polished (`records.POLISHES`): it settles further at a tenth of the rate, no warm-up, in all
    of the time left. Returns the number of the trial continued (None: nothing to continue, the best is itself a
    settling continuation, or a multi-objective study).

    On `shapes` in 60 s a run whose start point was fitted to 8 epochs ended 18 s early, every later candidate
    rejected for time; at 20,000 images runs ended 55-78 s before a 300-s budget with a 6-epoch best. Runs whose
    best had all its epochs ended 3-18 s early (of 60) until the polish took that time."""
    if len(study.directions) != 1:
        return None
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.values and t.params]
    best = max(complete, key=lambda t: (sign * t.values[0], -t.number), default=None)
    if best is None or best.number in continued or not best.user_attrs.get(records.WEIGHTS_PATH) \
            or best.user_attrs.get(records.SETTLING):
        return None
    cut = records.PLANNED_EPOCHS in best.user_attrs
    study.enqueue_trial(best.params, user_attrs=None if cut else {records.POLISHES: best.number},
                        skip_if_exists=False)
    return best.number


def start_weights_for(config: SearchConfig, preset: str | None) -> str | None:
    """The weights file a trial starts from: its enqueued preset's, else the run's for every trial (`train`)."""
    return config.weights.get(preset or "", config.weights.get(ALL_TRIALS))


def start_from_weights(model, path: str, freeze: int) -> None:
    """Fine-tuning: load reference weights into a priced candidate and freeze its first `freeze` blocks."""
    load_reference_weights(model, path)
    if freeze:
        freeze_blocks(model, freeze)


def price_candidate(trial, genotype, constraints: dict, *, latency: bool = True, cache: dict | None = None,
                    admit: Callable[[dict], object] | None = None):
    """Build the candidate on the meta device and record its costs; raises optuna.TrialPruned (recorded as
    rejected) outside `constraints` or when `admit(costs)` (the time check, `price_time`) refuses it.

    Params, FLOPs and layers come from the meta build, so a candidate over a params or FLOPs limit never
    gets a weight. With `latency` the build is materialized and timed; otherwise latency is recorded as not
    measured (None) and the model returned is still the meta build: `weights_for` gives it weights when
    training starts. `cache` (arch id -> costs, one per study) prices a repeated architecture once.
    """
    model = meta_model(genotype)
    costs = dict((cache or {}).get(genotype.arch_id) or {})
    if not costs:
        flops, activations = count_meta_work(model, genotype)
        costs = {"params": count_params(model), "flops": flops, "layers": count_layers(model),
                 "activations": activations, "latency_ms": None}
    violation = constraint_violation({k: v for k, v in constraints.items() if k != "max_latency_ms"}, costs)
    if not violation and latency and costs["latency_ms"] is None:
        model = materialize(model)
        costs["latency_ms"] = measure_latency_ms(model, genotype)
        violation = constraint_violation(constraints, costs)
    if cache is not None:
        cache[genotype.arch_id] = dict(costs)
    records.record_costs(trial, costs, rejected=violation)
    if violation:
        raise optuna.TrialPruned(f"constraint: {violation}")
    if admit is not None:
        admit(costs)
    return model, costs


def weights_for(model, start: str | None, freeze: int):
    """A priced candidate ready to train: its initial weights (materialized from the meta build under the
    trial's seed), or the reference weights `start` with the first `freeze` blocks frozen."""
    model = materialize(model)
    if start:
        start_from_weights(model, start, freeze)
    return model


def price_time(trial, costs: dict, *, config: SearchConfig, shape: EpochShape, model: TimeModel,
               deadline: float | None, epochs: int | None = None, rival_epochs: int = 0,
               best_s: float | None = None) -> float:
    """Predict the candidate's seconds per epoch on this device (`timing`) and record them; returns them.

    Under a time budget a candidate is rejected (pruned untrained, at no cost, recorded with the predicted
    and the remaining seconds) when its `epochs` (default: the run's) would take more than
    `config.max_trial_share` of the time left until `deadline`; with no share, when not even one epoch
    would finish. Past the deadline nothing starts.

    A candidate whose full training does not fit but whose first `grace_epochs` do is trained with as many
    epochs as fit (recorded as `planned_epochs`, a complete schedule of its own), as AutoGluon fits its
    models to a time limit: a tight budget still yields fully trained models instead of rejections only.
    Until the time model has seen an epoch, a candidate trains at most `FIRST_LOOK_SHARE` of the whole
    budget when one epoch fits in it: a quick first model, and a calibrated time model for the rest. After
    that (and with a share), one that fits but whose first look (its first `grace_epochs`) would take more
    than `LOOK_SHARE` of the whole budget is rejected the same way: on digits in 60 s, two EfficientNets of
    the initial design took 30 of the 60 s for three epochs each and lost to a 4-s plain CNN (bench_anytime).
    A sampled candidate's look is also held to `LOOK_VS_BEST` full trainings of the best model so far (`best_s`,
    `budget.best_training_s`; `look_cap`). As it trains, its measured epochs hold it to that cap (`look_guard`).
    The full training of a design point that had its first look (`records.CONTINUES`) is exempt: on `shapes`
    its look measured 4.05 s an epoch, 12.2 s for three, and the design's best candidate was turned away.
    Near the end (once timed), a candidate whose first look would not fit in what its share keeps back may
    take all of the time left (the last call): the share keeps time for later candidates, and that time could
    not hold even this one's look; without it `shapes` runs ended with a quarter of their 60 s unused. A trial
    that continues another's weights and gets fewer epochs than its `grace_epochs` settles them instead of
    restarting (`records.SETTLING`, `fitted`): at 20,000 images an epoch can be a tenth of the budget, and runs
    whose start point's continuation did not fit its look ended with a fifth of the budget unused.
    A new candidate is not fitted to fewer epochs than `rival_epochs`, the longest training of a complete trial
    of the study (`budget.longest_training`): it is rejected instead, and the time goes to one that fits. Cut
    shorter than the models it must beat, it rarely beats them (on digits in 60 s, TPE's repeats of the start
    point fitted to 9 of its 12 epochs scored 0.9889 against the original's 0.9944, and 3- and 4-epoch fits of
    larger networks 0.97-0.98). In side-by-side runs of bench_anytime's 60-s setting (six seeds) it raised the
    best at 100 % from 0.8639 to 0.8889 on `shapes` and from 0.9931 to 0.9935 on digits. When those epochs fit in
    the time left but not in its share, the candidate gets them: every later one is held to the same floor, so
    the time the share keeps back would go unused (on `shapes`, runs whose start point had all 12 epochs ended
    26 s before their 60, thirty candidates of 9-11 fitting epochs rejected in a row).
    """
    per_epoch = model.epoch_seconds(costs["flops"], costs["params"], costs["layers"], shape,
                                    costs.get("activations", 0))
    trial.set_user_attr(records.PREDICTED_EPOCH_S, round(per_epoch, 4))
    trial.set_user_attr(records.TIME_MODEL_EPOCHS, model.epochs)
    left = remaining_s(deadline)
    if left is None:
        return per_epoch
    share = config.max_trial_share
    planned = epochs or config.epochs
    if model.epochs == 0 and config.timeout and per_epoch > 0:  # nothing measured yet: a first look
        look = int(FIRST_LOOK_SHARE * config.timeout // per_epoch)
        if 1 <= look < planned:  # (not even one epoch fits a first look: the usual rules below decide)
            planned = look
            trial.set_user_attr(records.PLANNED_EPOCHS, planned)
    look_s = min(planned, config.grace_epochs) * per_epoch
    polishes = records.POLISHES in trial.user_attrs
    if share is not None and model.epochs and left > 0 and ((1 - share) * left < look_s or polishes):
        share = 1.0  # the last call: what the share would keep back could not hold even this candidate's look
        # (a polish comes only when nothing new fits: there is nothing to keep time back for)
    needed = per_epoch if share is None else planned * per_epoch
    fit = int(share * left // per_epoch) if share is not None and left > 0 and per_epoch > 0 else 0
    continues = records.CONTINUES in trial.user_attrs  # its look is behind it (`first_look_of`, `trained_twin_of`)
    floor = min(rival_epochs, planned)
    if share is not None and not continues and fit < floor and left > 0 and floor * per_epoch <= left:
        fit = floor  # the rival's epochs fit in the time left, not in its share: what the share keeps back no
        # later candidate could use either (each is held to the same floor), so this one may take them
    settles = continues and 1 <= fit and (fit < min(planned, config.grace_epochs) or polishes)
    if (left > 0 and needed <= (share or 1.0) * left) or fit >= min(planned, config.grace_epochs) or settles:
        # it fits: is its first look a fair share?
        cap, why = look_cap(config, trial.user_attrs, best_s)
        if share is not None and model.epochs and look_s > cap and not continues:
            look_s, left = round(look_s, 1), round(max(left, 0.0), 1)
            return _reject_for_time(trial, look_s, left, f"{records.WOULD_NOT_FINISH}: predicted {look_s}s "
                                    f"{records.FIRST_LOOK} > {why}")
        if not (left > 0 and needed <= (share or 1.0) * left):
            if min(fit, planned) < floor and not continues:
                needed, left = round(planned * per_epoch, 1), round(max(left, 0.0), 1)
                return _reject_for_time(trial, needed, left, f"{records.WOULD_NOT_FINISH}: predicted {needed}s > "
                                        f"remaining {left}s x {share:g} (only {min(fit, planned)} epochs would fit; a "
                                        f"complete trial trained {rival_epochs})")
            if fit < planned:  # (given the floor, it may have all its epochs: its schedule is not cut)
                trial.set_user_attr(records.PLANNED_EPOCHS, fit)
        if settles:
            trial.set_user_attr(records.SETTLING, True)
        return per_epoch
    needed, left = round(needed, 1), round(max(left, 0.0), 1)
    what = "per epoch " if share is None else ""
    limit = f" x {share:g}" if share not in (None, 1) and left > 0 else ""
    return _reject_for_time(trial, needed, left, f"{records.WOULD_NOT_FINISH}: predicted {needed}s {what}> "
                            f"remaining {left}s{limit}")


def look_cap(config: SearchConfig, attrs: dict, best_s: float | None) -> tuple[float, str]:
    """The most seconds a candidate's first look may take under a timeout, and why: `LOOK_SHARE` of the budget,
    and for a sampled candidate (not a point of the initial design) `LOOK_VS_BEST` times `best_s`, the seconds
    the best model so far takes to train (None: none yet), but never less than `FIRST_LOOK_SHARE` of the budget:
    a best that trains in a blink does not turn away candidates the budget holds twenty looks of."""
    if not config.timeout:
        return math.inf, "no time budget"
    cap, why = LOOK_SHARE * config.timeout, f"{LOOK_SHARE:g} x the {config.timeout:g}s budget"
    if not best_s or records.DESIGN in attrs:
        return cap, why
    floor, held = FIRST_LOOK_SHARE * config.timeout, LOOK_VS_BEST * best_s
    if max(held, floor) < cap:
        best = f"{LOOK_VS_BEST:g} x the {best_s:.1f}s the best model so far trains in"
        cap, why = max(held, floor), best if held >= floor else \
            f"{FIRST_LOOK_SHARE:g} x the {config.timeout:g}s budget (more than {best})"
    return cap, why


def look_guard(config: SearchConfig, attrs: dict,
               best_s: float | None = None) -> Callable[[EpochReport], None] | None:
    """Holds a trial's first look to the cap `price_time` admitted it under (`look_cap`), as its epochs are
    measured (None: no look to hold: no timeout or share, an untimed device, or a continuation).

    The time model prices a network unlike those timed so far loosely: on digits in 180 s (bench_anytime), ResNets
    of 4-20 M parameters at 32 px were priced at 4-11 s an epoch and took 7-19 s, and one 3-epoch look took 56 s,
    a third of the budget, before successive halving stopped it. At the pace of its epochs so far, a look that
    would run past its share stops at this epoch boundary (`LookOverran`: pruned with its last score and its
    weights, like a trial the deadline stops); its measured epochs still calibrate the time model. The cap holds
    with `best_s` as when the trial was priced (the driver's figure on Ray)."""
    if not (config.timeout and config.max_trial_share is not None and attrs.get(records.TIME_MODEL_EPOCHS)) \
            or records.CONTINUES in attrs:  # (as `price_time` exempts it: its look is behind it)
        return None
    look_epochs, cap = min(config.epochs, config.grace_epochs), look_cap(config, attrs, best_s)[0]
    spent = 0.0

    def guard(epoch: EpochReport) -> None:
        nonlocal spent
        spent += epoch.seconds
        projected = spent + (look_epochs - epoch.epoch) * epoch.seconds
        if epoch.epoch < look_epochs and projected > cap:
            raise LookOverran(epoch.epoch, projected, cap)

    return guard


def _reject_for_time(trial, predicted: float, left: float, reason: str):
    """Record a rejection for time with both figures, and reject (raises)."""
    trial.set_user_attr(records.PREDICTED_S, predicted)
    trial.set_user_attr(records.REMAINING_S, left)
    trial.set_user_attr(records.REJECTED, reason)
    raise optuna.TrialPruned(reason)


def fitted(config: SearchConfig, attrs: dict) -> SearchConfig:
    """The run's configuration with the epochs `price_time` fitted this trial to (`planned_epochs`), if any, and
    for a settling continuation (`records.SETTLING`) no warm-up and `SETTLING_LR` of the learning rate."""
    planned = attrs.get(records.PLANNED_EPOCHS)
    if planned is not None:
        config = config.replace(epochs=int(planned))
    if attrs.get(records.SETTLING):
        config = config.replace(lr=config.lr * SETTLING_LR, warmup_epochs=0.0)
    return config


def epoch_recorder(trial, curve: list[float] | None = None,
                   seconds: list[float] | None = None) -> Callable[[EpochReport], None]:
    """An on_epoch that records the validation curve so far, the epochs run and their seconds (`curve`,
    `seconds`: of the epochs already run)."""
    curve, seconds = list(curve or []), list(seconds or [])

    def record(epoch: EpochReport) -> None:
        curve.append(epoch.val_metric)
        seconds.append(epoch.seconds)
        trial.set_user_attr(records.VAL_CURVE, list(curve))
        trial.set_user_attr(records.EPOCHS_RUN, epoch.epoch)
        records.record_epoch_seconds(trial, seconds)

    return record


def train_config_for(config: SearchConfig, number: int, device: str | None = None) -> TrainConfig:
    """The training recipe of trial `number` (seeded by the trial number)."""
    return TrainConfig(epochs=config.epochs, batch_size=config.batch_size, optimizer=config.optimizer,
                       lr=config.lr, warmup_epochs=min(config.warmup_epochs, config.epochs),
                       seed=config.seed + number, device=device or config.device, metric=config.metric,
                       data_mode=config.data_mode, data_memory=config.data_memory, **config.recipe)


def fit_candidate(trial, config: SearchConfig, data: DataSplits, genotype, model, costs: dict, *,
                  train_config: TrainConfig, on_epoch: Callable[[EpochReport], None],
                  run: Callable = train, elapsed: float = 0.0) -> list[float]:
    """Train a priced candidate with `run` (`train` or a drop-in), record the result; returns the objectives.

    `elapsed` is wall time already spent on this trial (a run resumed from a checkpoint).
    """
    started = time.perf_counter()
    try:
        result = run(model, data, train_config, resolution=genotype.resolution, on_epoch=on_epoch)
    except DivergedError as err:
        trial.set_user_attr(records.FAIL_REASON, str(err))
        raise
    finally:
        trial.set_user_attr(records.WALL_TIME, elapsed + time.perf_counter() - started)
    records.record_result(trial, result, count_params(model))
    return objective_values(config, result.best_val, costs)


def prepare_context(config: SearchConfig) -> TrialContext:
    """Check everything a run needs before any storage is touched: options, space, dataset, constraints,
    enqueued presets and the weights they start from."""
    check_choices(config)
    _check_enqueue(config)
    ctx = TrialContext.create(config)
    if ctx.data.multilabel and (config.recipe.get("mixup") or config.recipe.get("cutmix")):
        raise ConfigError(f"mixup and cutmix mix single-label data; dataset {config.dataset!r} is multi-label: "
                          "set them to 0")
    if config.metric == "mAP" and not ctx.data.multilabel:
        raise ConfigError(f"--objectives map needs multi-label data; dataset {config.dataset!r} is single-label: "
                          "use accuracy or f1 (macro-F1)")
    check_feasible(ctx, MAX_REJECTIONS)
    _check_weights(ctx)
    return ctx


def preset_space(name: str):
    """A one-point space of preset `name`: how an enqueued preset outside the searched space is sampled."""
    from autocnn.presets import get_preset
    from autocnn.search.fixed import FixedSpace

    return FixedSpace(get_preset(name))


def _check_enqueue(config: SearchConfig) -> None:
    from autocnn.presets import PRESETS

    unknown = [name for name in config.enqueue if name not in PRESETS]
    if unknown:
        raise ConfigError(f"unknown preset {unknown[0]!r} for --enqueue; choose from 'autocnn models'")
    from autocnn.search.fixed import PREFIX

    if ALL_TRIALS in config.weights and not config.space.startswith(PREFIX):
        raise ConfigError("--weights FILE without a preset name fits one fixed architecture ('autocnn train'); "
                          "in a search use --enqueue NAME --weights NAME=FILE")


def _check_weights(ctx: TrialContext) -> None:
    """Every weights file must load into the architecture it starts (shapes checked on the meta device)."""
    from autocnn.weights import map_state_dict, read_state_dict

    for name, path in ctx.config.weights.items():
        space = ctx.space if name == ALL_TRIALS else preset_space(name)
        genotype = space.sample(None, resolution=ctx.config.resolution, num_classes=ctx.data.num_classes,
                                in_chans=ctx.data.in_chans, native_resolution=ctx.data.native_resolution)
        map_state_dict(meta_model(genotype), read_state_dict(path), origin=f"weights {path}")


def check_feasible(ctx: TrialContext, attempts: int) -> None:
    """Refuse a space whose `require` or params/FLOPs limits no candidate meets, before a study exists.

    Samples (randomly, in a throwaway in-memory study) until a candidate fits, at most `attempts`
    times: the search itself gives up after as many rejections in a row. Usually the first one fits.
    """
    limits = {k: v for k, v in ctx.constraints.items() if k in ("max_params", "max_flops")}
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=ctx.config.seed))
    unmet = 0
    for _ in range(attempts):
        try:
            genotype = ctx.sample(probe.ask())
        except optuna.TrialPruned:  # a `require` of the space failed
            unmet += 1
            continue
        if not limits:
            return
        try:
            if count_params(meta_model(genotype)) > limits.get("max_params", math.inf):  # cheap; FLOPs are not
                continue
            if "max_flops" not in limits or count_flops(genotype) <= limits["max_flops"]:
                return
        except Exception:  # noqa: BLE001 - a candidate that cannot be priced fails as a trial, in the search
            return
    if unmet == attempts:
        raise StudyError(f"the space's require conditions held for none of {attempts} sampled candidates; "
                         "loosen 'require' in the space file")
    raise StudyError(f"the constraints {limits} rejected all {attempts} sampled candidates; "
                     "relax --max-params/--max-flops or the space's constraints")


def enqueue_presets(study: optuna.Study, ctx: TrialContext) -> list[str]:
    """Warm-start with preset architectures (`--enqueue`): as the space's parameters where it can express
    the preset, else as a fixed architecture recorded as outside the space (no parameters to learn from)."""
    for name in ctx.config.enqueue:
        params = ctx.space.fixed_params(name)
        attrs = {records.ENQUEUED: name} if params is not None else {records.ENQUEUED: name, records.OUTSIDE_SPACE: True}
        study.enqueue_trial(params or {}, user_attrs=attrs)
    return list(ctx.config.enqueue)
