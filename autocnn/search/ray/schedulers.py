"""Tune's trial schedulers by name (`--scheduler`), and the one each local pruner (`--pruner`) maps to."""
from __future__ import annotations

import math
from functools import partial
from typing import Callable

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule, TrialScheduler

from autocnn.registry import Registry
from autocnn.search.config import SearchConfig
from autocnn.search.ray.keys import EPOCH, VAL
from autocnn.search.ray.pbt import pbt_for

SCHEDULERS: Registry[Callable[[SearchConfig], TrialScheduler]] = Registry("scheduler")

SCHEDULERS.register("fifo", lambda config: FIFOScheduler())


def grace(config: SearchConfig) -> int:
    """The earliest epoch a scheduler may stop a trial at: the local pruners' rule (`--grace-epochs`),
    within the run's epochs (Tune refuses a grace period past `max_t`)."""
    return min(config.grace_epochs, config.epochs)


def asha_for(config: SearchConfig, brackets: int = 1) -> ASHAScheduler:
    return ASHAScheduler(time_attr=EPOCH, metric=VAL, mode="max", max_t=config.epochs, grace_period=grace(config),
                         reduction_factor=3, brackets=brackets)


def hyperband_for(config: SearchConfig) -> ASHAScheduler:
    """Asynchronous HyperBand: successive halving in every bracket Optuna's HyperbandPruner would make
    from the same minimum resource (the grace epochs), reduction factor 3."""
    return asha_for(config, brackets=int(math.log(config.epochs / grace(config), 3) + 1e-9) + 1)


SCHEDULERS.register("asha", asha_for)
SCHEDULERS.register("hyperband", hyperband_for)
SCHEDULERS.register("median", lambda config: MedianStoppingRule(time_attr=EPOCH, metric=VAL, mode="max",
                                                                grace_period=grace(config), min_samples_required=3))
SCHEDULERS.register("pbt", pbt_for)
SCHEDULERS.register("pbt_sync", partial(pbt_for, synch=True))

# population-based schedulers: they tune lr and weight decay, and an exploit restores a donor's checkpoint
PBT_SCHEDULERS = frozenset({"pbt", "pbt_sync"})

# `--pruner NAME` on Ray runs the Tune scheduler of the same rule (autocnn.search.engine.PRUNERS' keys);
# a study stores the pruner of its scheduler, so the local backend continues it with the same rule.
PRUNER_SCHEDULERS = {"median": "median", "hyperband": "hyperband", "sha": "asha", "none": "fifo"}


def pruner_of(scheduler: str) -> str:
    """The local pruner that applies the rule of Tune scheduler `scheduler` ("none" for fifo and both PBTs)."""
    return next((p for p, s in PRUNER_SCHEDULERS.items() if s == scheduler), "none")
