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

    def distribution(self):
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)


Dimension = Categorical | Int | Float
