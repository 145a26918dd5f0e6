"""Tune's trial schedulers by name (`--scheduler`), and the one each local pruner (`--pruner`) maps to."""
from __future__ import annotations

from typing import Callable

from ray.tune.schedulers import (ASHAScheduler, FIFOScheduler, HyperBandScheduler, MedianStoppingRule,
                                 TrialScheduler)

from autocnn.registry import Registry
from autocnn.search.config import SearchConfig
from autocnn.search.ray.keys import EPOCH, VAL
from autocnn.search.ray.pbt import pbt_for

SCHEDULERS: Registry[Callable[[SearchConfig], TrialScheduler]] = Registry("scheduler")

SCHEDULERS.register("fifo", lambda config: FIFOScheduler())
SCHEDULERS.register("asha", lambda config: ASHAScheduler(time_attr=EPOCH, metric=VAL, mode="max",
                                                         max_t=config.epochs, grace_period=1, reduction_factor=3))
SCHEDULERS.register("hyperband", lambda config: HyperBandScheduler(time_attr=EPOCH, metric=VAL, mode="max",
                                                                   max_t=config.epochs, reduction_factor=3))
SCHEDULERS.register("median", lambda config: MedianStoppingRule(time_attr=EPOCH, metric=VAL, mode="max",
                                                                grace_period=1, min_samples_required=3))
SCHEDULERS.register("pbt", pbt_for)

# `--pruner NAME` on Ray runs the Tune scheduler of the same rule (autocnn.search.engine.PRUNERS' keys);
# a study stores the pruner of its scheduler, so the local backend continues it with the same rule.
PRUNER_SCHEDULERS = {"median": "median", "hyperband": "hyperband", "sha": "asha", "none": "fifo"}


def pruner_of(scheduler: str) -> str:
    """The local pruner that applies the rule of Tune scheduler `scheduler` ("none" for fifo and pbt)."""
    return next((p for p, s in PRUNER_SCHEDULERS.items() if s == scheduler), "none")
