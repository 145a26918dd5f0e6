"""Dimensions: the searched values of a space, each one Optuna `suggest_*` call.

A dimension is named by its key path in the space (`stages.3.attention`), so every sampler sees one
stable, flat set of parameters. `suggest` works with any object that has Optuna's trial API
(`optuna.trial.Trial`, `FixedTrial`, the trial Ray Tune's `OptunaSearch` passes a define-by-run
function), and `contains` tells whether a fixed value (from `fixed_params`) lies in the dimension.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

Choice = None | bool | int | float | str


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _bin(u: float, n: int) -> int:
    """Which of `n` equal bins of [0, 1] holds u (u = 1 falls in the last)."""
    return min(max(int(u * n), 0), n - 1)


def _between(low: float, high: float, u: float, log: bool) -> float:
    u = min(max(u, 0.0), 1.0)
    if log:
        return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    return low + u * (high - low)


@dataclass(frozen=True)
class Categorical:
    choices: tuple[Choice, ...]

    def suggest(self, trial: Any, name: str) -> Choice:
        return trial.suggest_categorical(name, list(self.choices))

    def contains(self, value: Any) -> bool:
        return any(type(value) is type(c) and value == c for c in self.choices) or (
            _number(value) and any(_number(c) and value == c for c in self.choices))

    def canonical(self, value: Any) -> Choice:
        """The declared choice equal to `value` (so 4 given for a 4.0 choice comes back as 4.0)."""
        for c in self.choices:
            if type(value) is type(c) and value == c:
                return c
        return next(c for c in self.choices if _number(c) and value == c)

    @property
    def ordered(self) -> bool:
        return all(_number(c) for c in self.choices)

    def at(self, u: float) -> Choice:
        """Numeric choices from the smallest up; others in their declared order."""
        choices = sorted(self.choices) if self.ordered else self.choices
        return choices[_bin(u, len(choices))]

    def distribution(self):
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(list(self.choices))


@dataclass(frozen=True)
class Int:
    low: int
    high: int
    step: int = 1
    log: bool = False

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        return (_number(value) and float(value).is_integer() and self.low <= value <= self.high
                and (value - self.low) % self.step == 0)

    def canonical(self, value: Any) -> int:
        return int(value)

    ordered = True

    def at(self, u: float) -> int:
        if self.log:
            return min(max(round(_between(self.low, self.high, u, True)), self.low), self.high)
        return self.low + _bin(u, (self.high - self.low) // self.step + 1) * self.step

    def distribution(self):
        from optuna.distributions import IntDistribution

        return IntDistribution(self.low, self.high, log=self.log, step=self.step)


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    step: float | None = None
    log: bool = False

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        if not (_number(value) and self.low <= value <= self.high):
            return False
        if self.step is None:
            return True
        k = (value - self.low) / self.step
        return math.isclose(k, round(k), abs_tol=1e-8)

    def canonical(self, value: Any) -> float:
        return float(value)

    ordered = True

    def at(self, u: float) -> float:
        value = _between(self.low, self.high, u, self.log)
        if self.step is None:
            return value
        return min(self.low + round((value - self.low) / self.step) * self.step, self.high)

    def distribution(self):
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)


Dimension = Categorical | Int | Float
