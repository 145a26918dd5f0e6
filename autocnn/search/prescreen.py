"""`--prescreen PROXY:K`: each trial trains the best of K candidates by a zero-cost proxy (`autocnn.proxies`),
scored at initialisation on one mini-batch of the training data.

An Optuna trial takes its parameters from the study's sampler while the space is sampled (define-by-run)
and cannot change them afterwards, so the screening comes first: `PrescreenSampler` wraps the study's
sampler and, as a trial starts (`before_trial`), asks a fresh sampler of the same kind, seeded by the run's
seed and the trial's number, for K candidates on an in-memory copy of the study's history (what the
study's sampler would propose, without K trials in the study), scores them and hands the winner's
parameters to the trial. The study's own sampler is never asked for a screened trial, so every draw is a
function of the seed, the trial number and the history, on either backend: the local one samples in
`study.optimize`, Ray in its driver (`ray.searcher`), both through this sampler (`engine.prescreened`).

Enqueued presets, initial-design points and retried trials keep their parameters: their one candidate is
scored alone (`screening_for`), so every trial records a proxy score. The trial exists (RUNNING) while its
candidates are screened, before Optuna's heartbeat thread starts: the screening beats for it, so that other
workers on the study do not take it for a killed one. A candidate outside the space's
`require`, over the run's params/FLOPs limits, or whose forward pass fails ranks last; when no candidate
scores, the first is taken, and its trial is rejected or fails as it would have unscreened.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from autocnn.costs import count_meta_flops, count_params, materialize, meta_model
from autocnn.data import DataSplits, DeviceBatches
from autocnn.genotype import Genotype, GenotypeError
from autocnn.proxies import PROXIES
from autocnn.search import records
from autocnn.search.design import DesignSampler
from autocnn.spaces import SpaceError
from autocnn.storage import record_heartbeat
from autocnn.training import resolve_device

HISTORY = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
SCORING_ERRORS = (RuntimeError, MemoryError, ValueError)  # a candidate that cannot run scores None


@dataclass(frozen=True)
class Screening:
    """The candidates screened for one trial, in the order drawn, and the one it trains (`chosen`)."""

    proxy: str
    candidates: list[str | None]  # arch ids (None: outside the space)
    scores: list[float | None]
    chosen: int
    params: dict | None = None  # the chosen candidate's parameters (None: the trial's own, scored alone)

    @property
    def arch_id(self) -> str | None:
        return self.candidates[self.chosen]

    def attrs(self) -> dict[str, Any]:
        return {records.PROXY: self.proxy, records.PROXY_SCORE: self.scores[self.chosen],
                records.PROXY_SCREENED: len(self.scores), records.PROXY_CANDIDATES: list(self.candidates),
                records.PROXY_SCORES: list(self.scores)}


def best_index(scores: list[float | None]) -> int:
    """The highest score, the first drawn among equals; 0 when none scored."""
    ranked = [(score, -i) for i, score in enumerate(scores) if score is not None]
    return -max(ranked)[1] if ranked else 0


def proxy_batch(data: DataSplits, batch_size: int, seed: int, resolution: int | None,
                device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The mini-batch a trial's candidates are scored on: `batch_size` training images drawn by `seed`,
    prepared as training prepares them (normalised, resized to `resolution`) without augmentation."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(data.train), generator=generator)[:batch_size]
    split = data.train.subset(rows)
    return next(iter(DeviceBatches(split, len(split), device=device, resolution=resolution, generator=generator)))


class Scorer:
    """Scores the candidates of trial `number` with the run's proxy: initial weights as the trial's own
    (seeded by `config.seed + number` and materialized on the CPU, as `engine` does) and one mini-batch
    (`proxy_batch`, the same images for every candidate), on the run's device. Each architecture once."""

    def __init__(self, ctx, number: int) -> None:
        self.ctx, self.seed = ctx, ctx.config.seed + number
        self.name = ctx.config.screening[0]
        self.proxy = PROXIES.get(self.name)
        self.device = resolve_device(ctx.config.device)
        self.batches: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.scores: dict[str, float | None] = {}

    def __call__(self, genotype: Genotype) -> float | None:
        if genotype.arch_id not in self.scores:
            self.scores[genotype.arch_id] = self._score(genotype)
        return self.scores[genotype.arch_id]

    def _score(self, genotype: Genotype) -> float | None:
        limits = self.ctx.constraints
        try:
            meta = meta_model(genotype)
            if count_params(meta) > limits.get("max_params", math.inf):
                return None
            if "max_flops" in limits and count_meta_flops(meta, genotype) > limits["max_flops"]:
                return None
            with torch.random.fork_rng(devices=[]):  # the run's random state is left as it was
                torch.manual_seed(self.seed)
                model = materialize(meta).to(self.device)
            if genotype.resolution not in self.batches:
                self.batches[genotype.resolution] = proxy_batch(self.ctx.data, self.ctx.config.batch_size, self.seed,
                                                                genotype.resolution, self.device)
            score = self.proxy(model, *self.batches[genotype.resolution])
        except SCORING_ERRORS:
            return None
        return score if math.isfinite(score) else None  # JSON has no infinities; a non-finite score ranks last


def history(study: optuna.Study, number: int) -> list[FrozenTrial]:
    """The study's trials but trial `number` and those waiting, stripped of user attributes (samplers read
    none), to copy into an in-memory study."""
    return [optuna.trial.create_trial(state=t.state, values=t.values if t.state != TrialState.FAIL else None,
                                      params=t.params, distributions=t.distributions, system_attrs=t.system_attrs,
                                      intermediate_values=t.intermediate_values)
            for t in study.get_trials(deepcopy=False, states=HISTORY) if t.number != number]


def screen(ctx, study: optuna.Study, number: int, fresh: Callable[[int], optuna.samplers.BaseSampler],
           beat: Callable[[], None] = lambda: None) -> Screening:
    """Draw K candidates for trial `number` from `fresh(seed)` (a sampler like the study's) on a copy of the
    study's history, score each and choose the best; `beat()` before each (the trial's heartbeat)."""
    proxy, k = ctx.config.screening
    probe = optuna.create_study(directions=study.directions, sampler=fresh(ctx.config.seed + number))
    probe.add_trials(history(study, number))
    scorer = Scorer(ctx, number)
    drawn: list[tuple[dict, str | None, float | None]] = []
    for _ in range(k):
        beat()
        trial = probe.ask()
        try:
            genotype = ctx.sample(trial)
        except (optuna.TrialPruned, SpaceError, GenotypeError):  # a `require` failed, or no valid genotype
            genotype = None
        drawn.append((dict(trial.params), genotype and genotype.arch_id, genotype and scorer(genotype)))
        probe.tell(trial, state=TrialState.FAIL)  # a draw, not a result: no sampler learns from it
    chosen = best_index([score for _, _, score in drawn])
    return Screening(proxy, [arch for _, arch, _ in drawn], [score for _, _, score in drawn], chosen, drawn[chosen][0])


def screening_for(ctx, number: int, genotype: Genotype, screening: Screening | None) -> Screening:
    """What trial `number`, sampled as `genotype`, records: its `screening`, or its candidate scored alone (a
    preset, a design point or a retried trial, which the sampler did not screen)."""
    if screening is not None and screening.arch_id == genotype.arch_id:
        return screening
    return Screening(ctx.config.screening[0], [genotype.arch_id], [Scorer(ctx, number)(genotype)], 0)


class PrescreenSampler(optuna.samplers.BaseSampler):
    """`base`, except that each trial of its own takes the parameters of the best of K screened candidates
    (`screen`), its screening left in the run's `TrialContext.screenings` for `engine.sample_architecture` to
    record. `context()` gives the run's TrialContext and `fresh(seed)` a new sampler of the study's kind:
    both picklable on Ray, which checkpoints its searcher (sampler included) but must not pickle the data."""

    def __init__(self, base: optuna.samplers.BaseSampler, context: Callable[[], Any],
                 fresh: Callable[[int], optuna.samplers.BaseSampler]) -> None:
        self.base, self.context, self.fresh = base, context, fresh
        self.points: dict[int, dict] = {}  # trial number -> the chosen candidate's parameters

    def screens(self, trial: FrozenTrial) -> bool:
        """Whether the sampler chooses `trial`'s parameters: not an enqueued preset, a design point or a retry."""
        if trial.params or "fixed_params" in trial.system_attrs or records.ENQUEUED in trial.user_attrs:
            return False
        return not (isinstance(self.base, DesignSampler) and self.base.point(trial.number) is not None)

    def before_trial(self, study, trial) -> None:
        if self.screens(trial):
            ctx = self.context()
            screening = screen(ctx, study, trial.number, self.fresh, partial(record_heartbeat, study, trial))
            ctx.screenings[trial.number] = screening
            self.points[trial.number] = screening.params
        self.base.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return {} if trial.number in self.points else self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return {} if trial.number in self.points else self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        point = self.points.get(trial.number)
        if point is not None and param_name in point:
            return point[param_name]
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self.points.pop(trial.number, None)
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
