"""The first trials of a new study: a design that spans the space from its cheapest candidates to its
largest, tried smallest first.

Left to a sampler, the first trials are random draws: with `--seed 0` every built-in space started
with a ~9.5 M-parameter network, whatever the data or the time budget. Instead the first
`config.initial_design` trials are rungs of a ladder through the unit cube of the space's dimensions
(`SearchSpace.dimensions`). A rung climbs to a level in [0, 1]: every ordered dimension (numbers:
widths, depths, scaling coefficients, kernels) sits at level ** e, its exponent e set by a scrambled
Halton draw, while the dimensions without a size order (block kinds, attention, families) take the
draw's value, so rungs also differ in kind. The first rung is level 0 (the low end of every size; the
smallest of a few draws), the last the highest level a draw reaches within the constraints (bisection;
the largest of a few draws), and the rungs between sit where the last rung's climb passed parameter
counts evenly spaced in log scale between the two, each taking whichever of a few draws lands nearest
its count there (draws of other kinds or families differ in size at one level). Candidates are priced
on the meta device (the costs are cached for their trials; one whose forward pass fails is skipped) and
ordered by the seconds per epoch the time model's prior predicts from FLOPs, parameters and layers (a
deep network of few FLOPs is slow on a CPU), fastest first, so under a tight budget a quick candidate
finishes first. The Halton scrambling is seeded by `config.seed`: a seed gives the same design.

A space may name start points (`start:` in its YAML, e.g. a plain CNN that trains well in seconds): they come
before the rungs, in their order, as AutoGluon starts from a portfolio of defaults before it searches.
Under a timeout, a first point whose full training the prior prices above `FIRST_LOOK_SHARE` of the budget
comes twice: its first trial is cut to a quick first look (`engine.price_time`), the second trains it in full.

`DesignSampler` hands the design to the trials that follow the `--enqueue` presets, by trial number,
on either backend and on resume, and leaves every later trial to the study's sampler. (Enqueued
Optuna trials would do the same, but a run stopped early would leave the rest of them WAITING.)

It applies to any space, generically: nothing here knows a space's parameters by name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna
import numpy as np

from autocnn.costs import count_layers, count_meta_work, count_params, meta_model
from autocnn.genotype import GenotypeError
from autocnn.search.config import FIRST_LOOK_SHARE
from autocnn.search.timing import TimeModel
from autocnn.spaces import SpaceError
from autocnn.spaces.dimensions import Dimension
from autocnn.spaces.space import AnsweringTrial
from autocnn.training.config import resolve_device

DRAWS = 3  # Halton draws per end of the ladder: the first rung keeps the smallest at level 0, the last the
# highest any climbs to within the constraints (the rungs between take their first feasible draw)
BISECTIONS = 5  # steps that find how high a draw may climb within the constraints
SPREAD = 4.0  # an ordered dimension sits at level ** SPREAD ** (2q - 1), q its Halton coordinate (see `_Pricer.at`)


def halton(n: int, dims: int, seed: int) -> np.ndarray:
    """n points of the Halton sequence in [0, 1)^dims (bases: the first `dims` primes), scrambled: each digit
    position of each base permutes its digits at random (seeded), and a point moves at random within its
    finest cell. Plain Halton points step by 1/base in large bases, so the first few would be near copies
    of each other in every dimension past the first few; scrambled ones stay evenly spread, and each seed
    gives another such design. (scipy's `qmc` does the same but costs seconds to import in every process.)"""
    rng = np.random.default_rng(seed)
    bases, candidate = [], 2
    while len(bases) < dims:
        if all(candidate % p for p in bases if p * p <= candidate):
            bases.append(candidate)
        candidate += 1
    points = np.empty((n, dims))
    for j, base in enumerate(bases):
        digits = 1
        while base ** digits < n:
            digits += 1
        perms = [rng.permutation(base) for _ in range(digits)]
        for i in range(n):
            index, value = i, 0.0
            for k in range(digits):
                value += perms[k][index % base] / base ** (k + 1)
                index //= base
            points[i, j] = value
        points[:, j] += rng.random(n) / base ** digits
    return points


class _DesignTrial(AnsweringTrial):
    """Answers each dimension from a point of the unit cube (0.5 for a name the point lacks)."""

    def __init__(self, point: dict[str, float]) -> None:
        super().__init__()
        self.point = point

    def answer(self, name: str, dim: Dimension) -> Any:
        return dim.at(self.point.get(name, 0.5))


@dataclass(frozen=True)
class DesignPoint:
    """One rung (-1: a start point of the space): the parameters its trial takes and what its candidate costs."""

    rung: int
    params: dict
    arch_id: str
    params_count: int
    flops: int
    seconds: float  # per epoch, as the time model's prior for the device predicts before any epoch ran


@dataclass
class _Candidate:
    level: float
    params: dict
    genotype: Any
    meta: Any
    params_count: int


class _Pricer:
    """Prices the candidate at a level of a draw (None: a `require` or the params/FLOPs limits refuse it),
    each architecture once.

    The ordered dimensions climb from 0 to 1 with the level, each on its own curve (level ** e, e in
    [1/SPREAD, SPREAD] by its coordinate of the draw): they reach their larger values at different
    levels, so the size grows in many steps rather than in a few jumps that skip most sizes."""

    def __init__(self, ctx, dimensions: dict[str, Dimension]) -> None:
        self.ctx, self.dimensions = ctx, dimensions
        self.models: dict[str, tuple] = {}

    def at(self, draw: dict[str, float], level: float) -> _Candidate | None:
        point = {name: level ** SPREAD ** (2 * q - 1) if self.dimensions[name].ordered else float(q)
                 for name, q in draw.items()}
        return self.priced(_DesignTrial(point), level)

    def priced(self, trial, level: float) -> _Candidate | None:
        try:
            genotype = self.ctx.sample(trial)
            if genotype.arch_id not in self.models:
                meta = meta_model(genotype)
                self.models[genotype.arch_id] = (meta, count_params(meta))
        except (optuna.TrialPruned, SpaceError, GenotypeError, ValueError):  # a `require` failed, no valid genotype
            return None  # (or a start point that misses a parameter)
        meta, params = self.models[genotype.arch_id]
        limits = self.ctx.constraints
        if params > limits.get("max_params", math.inf):
            return None
        if "max_flops" in limits and (self.flops(genotype, meta, params) or math.inf) > limits["max_flops"]:
            return None
        return _Candidate(level, dict(trial.params), genotype, meta, params)

    def flops(self, genotype, meta, params: int) -> int | None:
        """FLOPs, recorded in the run's cost cache (`TrialContext.costs`) so the trial is not priced again;
        None for a candidate whose forward pass fails (its trial would fail: the design skips it)."""
        costs = self.ctx.costs.get(genotype.arch_id) or {}
        if "flops" in costs:
            return costs["flops"]
        try:
            flops, activations = count_meta_work(meta, genotype)
        except (RuntimeError, ValueError):
            return None
        self.ctx.costs[genotype.arch_id] = {"params": params, "layers": count_layers(meta), "latency_ms": None,
                                             **costs, "flops": flops, "activations": activations}
        return flops

    def climb(self, draw: dict[str, float]) -> list[_Candidate]:
        """The feasible candidates met while finding how high `draw` may climb (level 1, else bisection)."""
        top = self.at(draw, 1.0)
        if top is not None:
            return [top]
        seen, low, high = [], 0.0, 1.0
        for _ in range(BISECTIONS):
            middle = (low + high) / 2
            found = self.at(draw, middle)
            if found is None:
                high = middle
            else:
                seen.append(found)
                low = middle
        return seen


def _level_for(trace: list[_Candidate], target: float) -> float:
    """The level at which the traced sizes reach `target` params (log-linear between traced points)."""
    points = sorted((c.level, math.log(c.params_count)) for c in trace)
    goal = math.log(target)
    for (l0, p0), (l1, p1) in zip(points, points[1:]):
        if p0 <= goal <= p1:
            return l0 if p1 == p0 else l0 + (l1 - l0) * (goal - p0) / (p1 - p0)
    return points[-1][0] if goal > points[-1][1] else points[0][0]


def initial_design(ctx, rungs: int) -> list[DesignPoint]:
    """The design of `ctx`'s space: its start points (`SearchSpace.start_points`), then `rungs` points at most,
    quickest first (see the module docstring); nothing when `rungs` is 0.

    Fills `ctx.costs` (by arch id) with every kept point's params and FLOPs, so its trial is not priced twice.
    """
    dimensions = getattr(ctx.space, "dimensions", lambda: {})()
    if rungs < 1 or not dimensions:
        return []
    rows = halton(rungs * DRAWS, len(dimensions), ctx.config.seed)
    draws = [[dict(zip(dimensions, rows[k * DRAWS + a])) for a in range(DRAWS)] for k in range(rungs)]
    pricer = _Pricer(ctx, dimensions)
    chosen: dict[int, _Candidate | None] = {0: min(filter(None, (pricer.at(d, 0.0) for d in draws[0])),
                                                   key=lambda c: c.params_count, default=None)}
    if rungs > 1:
        climbs = [pricer.climb(draw) for draw in draws[-1]]
        highest = max(climbs, key=lambda seen: max((c.params_count for c in seen), default=0))
        chosen[rungs - 1] = max(highest, key=lambda c: c.params_count, default=None)
        if chosen[0] is not None and chosen[rungs - 1] is not None:
            trace = [chosen[0], *highest]  # how size grows with the level, to place the rungs between
            low, high = math.log(chosen[0].params_count), math.log(chosen[rungs - 1].params_count)
            for k in range(1, rungs - 1):
                target = low + (high - low) * k / (rungs - 1)
                level = _level_for(trace, math.exp(target))
                # the draws differ in kind (in a union, in family), so one level gives them different sizes:
                # the rung takes the draw that comes nearest its size
                chosen[k] = min(filter(None, (pricer.at(d, level) for d in draws[k])), default=None,
                                key=lambda c: abs(math.log(c.params_count) - target))
    starts = [pricer.priced(optuna.trial.FixedTrial(params), 0.0)
              for params in getattr(ctx.space, "start_points", list)()]
    kept: dict[str, DesignPoint] = {}
    clock = TimeModel.prior(resolve_device(ctx.config.device).type)
    for k, found in [*((-1, c) for c in starts), *sorted(chosen.items())]:
        flops = None if found is None or found.genotype.arch_id in kept else \
            pricer.flops(found.genotype, found.meta, found.params_count)
        if flops is not None:
            cached = ctx.costs[found.genotype.arch_id]
            seconds = clock.epoch_seconds(flops, found.params_count, cached["layers"], ctx.epoch_shape,
                                          cached.get("activations", 0))
            kept[found.genotype.arch_id] = DesignPoint(k, found.params, found.genotype.arch_id,
                                                       found.params_count, flops, seconds)
    first = [p for p in kept.values() if p.rung < 0]
    ordered = first + sorted((p for p in kept.values() if p.rung >= 0), key=lambda p: (p.seconds, p.flops, p.rung))
    config = ctx.config
    if ordered and config.timeout and ordered[0].seconds * config.epochs > FIRST_LOOK_SHARE * config.timeout:
        # its first trial is cut short to a first look (`engine.price_time`): the second trains it in full
        ordered.insert(1, ordered[0])
    return ordered


def plan_design(ctx) -> list[DesignPoint]:
    """The design of a run: the space's start points and `config.initial_design` rungs at most, within the trial
    budget left after the enqueued presets."""
    config = ctx.config
    left = max(0, config.trials - len(config.enqueue))
    return initial_design(ctx, min(config.initial_design, left))[:left]


class DesignSampler(optuna.samplers.BaseSampler):
    """`base`, except that trials `offset`, `offset + 1`, ... take the parameters of design point 0, 1, ...
    (a parameter a point lacks, and every later trial, comes from `base`)."""

    def __init__(self, base: optuna.samplers.BaseSampler, points: list[dict], offset: int) -> None:
        self.base, self.points, self.offset = base, list(points), offset

    def point(self, number: int) -> dict | None:
        index = number - self.offset
        return self.points[index] if 0 <= index < len(self.points) else None

    def infer_relative_search_space(self, study, trial):
        return {} if self.point(trial.number) is not None else self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return {} if self.point(trial.number) is not None else self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        point = self.point(trial.number)
        if point is not None and param_name in point:
            return point[param_name]
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()


def with_design(sampler: optuna.samplers.BaseSampler, design: list[DesignPoint], offset: int):
    """`sampler` handing `design` to the trials from number `offset` on (itself when there is no design)."""
    return DesignSampler(sampler, [p.params for p in design], offset) if design else sampler
