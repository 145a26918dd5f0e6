"""The first trials of a new study: a design that spans the space from its cheapest candidates to its
largest, enqueued smallest first.

Left to a sampler, the first trials are random draws: with `--seed 0` every built-in space started
with a ~9.5 M-parameter network, whatever the data or the time budget. Instead the first
`config.initial_design` trials are rungs of a ladder through the unit cube of the space's dimensions
(`SearchSpace.dimensions`): a rung puts every ordered dimension (numbers: widths, depths, scaling
coefficients, kernels) at one level in [0, 1] and the dimensions without a size order (block kinds,
attention, families) at a scrambled Halton point of its own, so rungs also differ in kind. The first
rung is level 0 (the low end of every size), the last the highest level the constraints allow (found
by bisection), and the rungs between are placed, again by bisection, so that their parameter counts
step evenly in log scale from the first to the last: sizes multiply across dimensions, so even levels
would put most rungs at one end. Candidates are priced on the meta device (the costs are cached for
their trials), and the rungs are enqueued by FLOPs, cheapest first, so under a tight budget a small
candidate finishes first. The Halton scramble is seeded by `config.seed`: a seed gives the same design.

It applies to any space, generically: nothing here knows a space's parameters by name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna
from scipy.stats import qmc

from autocnn.costs import count_meta_flops, count_params, meta_model
from autocnn.genotype import GenotypeError
from autocnn.search import records
from autocnn.spaces import SpaceError
from autocnn.spaces.dimensions import Dimension
from autocnn.spaces.space import AnsweringTrial

DRAWS = 3  # Halton draws per end of the ladder: the first rung keeps the smallest at level 0, the last the
# highest any climbs to within the constraints (the rungs between take their first feasible draw)
BISECTIONS = 5  # steps that find how high a draw may climb within the constraints
SPREAD = 4.0  # an ordered dimension sits at level ** SPREAD ** (2q - 1), q its Halton coordinate (see `_Pricer.at`)


class _DesignTrial(AnsweringTrial):
    """Answers each dimension from a point of the unit cube (0.5 for a name the point lacks)."""

    def __init__(self, point: dict[str, float]) -> None:
        super().__init__()
        self.point = point

    def answer(self, name: str, dim: Dimension) -> Any:
        return dim.at(self.point.get(name, 0.5))


@dataclass(frozen=True)
class DesignPoint:
    """One rung: the parameters to enqueue and what its candidate costs."""

    rung: int
    params: dict
    arch_id: str
    params_count: int
    flops: int


@dataclass
class _Candidate:
    level: float
    params: dict
    genotype: Any
    meta: Any
    params_count: int


class _Pricer:
    """Prices the candidate at a level of a draw (None: a `require` or the params/FLOPs limits refuse it),
    each architecture once; `trace` keeps (level, params) of every feasible one.

    The ordered dimensions climb from 0 to 1 with the level, each on its own curve (level ** e, e in
    [1/SPREAD, SPREAD] by its coordinate of the draw): they reach their larger values at different
    levels, so the size grows in many steps rather than in a few jumps that skip most sizes."""

    def __init__(self, ctx, dimensions: dict[str, Dimension]) -> None:
        self.ctx, self.dimensions = ctx, dimensions
        self.models: dict[str, tuple] = {}

    def at(self, draw: dict[str, float], level: float) -> _Candidate | None:
        point = {name: level ** SPREAD ** (2 * q - 1) if self.dimensions[name].ordered else float(q)
                 for name, q in draw.items()}
        trial = _DesignTrial(point)
        try:
            genotype = self.ctx.sample(trial)
            if genotype.arch_id not in self.models:
                meta = meta_model(genotype)
                self.models[genotype.arch_id] = (meta, count_params(meta))
        except (optuna.TrialPruned, SpaceError, GenotypeError):  # a `require` failed, or no valid genotype
            return None
        meta, params = self.models[genotype.arch_id]
        limits = self.ctx.constraints
        if params > limits.get("max_params", math.inf):
            return None
        if "max_flops" in limits and self.flops(genotype, meta, params) > limits["max_flops"]:
            return None
        return _Candidate(level, dict(trial.params), genotype, meta, params)

    def flops(self, genotype, meta, params: int) -> int:
        """FLOPs, recorded in the run's cost cache (`TrialContext.costs`) so the trial is not priced again."""
        costs = self.ctx.costs.setdefault(genotype.arch_id, {"params": params})
        if "flops" not in costs:
            costs["flops"] = count_meta_flops(meta, genotype)
        return costs["flops"]

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
    """The design of `ctx`'s space, `rungs` points at most, cheapest first (see the module docstring).

    Fills `ctx.costs` (by arch id) with every kept point's params and FLOPs, so its trial is not priced twice.
    """
    dimensions = getattr(ctx.space, "dimensions", lambda: {})()
    if rungs < 1 or not dimensions:
        return []
    rows = qmc.Halton(d=len(dimensions), scramble=True, seed=ctx.config.seed).random(rungs * DRAWS)
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
                level = _level_for(trace, math.exp(low + (high - low) * k / (rungs - 1)))
                chosen[k] = next(filter(None, (pricer.at(d, level) for d in draws[k])), None)
    kept: dict[str, DesignPoint] = {}
    for k, found in sorted(chosen.items()):
        if found is not None and found.genotype.arch_id not in kept:
            flops = pricer.flops(found.genotype, found.meta, found.params_count)
            kept[found.genotype.arch_id] = DesignPoint(k, found.params, found.genotype.arch_id,
                                                       found.params_count, flops)
    return sorted(kept.values(), key=lambda p: (p.flops, p.params_count, p.rung))


def enqueue_design(study: optuna.Study, ctx) -> list[DesignPoint]:
    """Enqueue the initial design of a new study (after any `--enqueue` presets), cheapest first."""
    rungs = min(ctx.config.initial_design, ctx.config.trials)
    points = initial_design(ctx, rungs)
    for order, point in enumerate(points):
        study.enqueue_trial(point.params, user_attrs={records.DESIGN: order})
    return points
