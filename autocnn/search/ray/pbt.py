"""Population-based training of the training hyperparameters and weights, never the architecture.

Tune has no public way to customise which trials PBT's exploit step copies and what it copies:
`ArchitecturePBT` overrides the step through `ExploitHooksPBT` (internals.py, the one module of autocnn
on Ray's private API), which re-exposes it under public names.
"""
from __future__ import annotations

import random

from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from autocnn.search.config import SearchConfig
from autocnn.search.ray.internals import ExploitHooksPBT
from autocnn.search.ray.keys import EPOCH, FINAL, SPEC, VAL
from autocnn.training.optim import DEFAULT_LR


class ArchitecturePBT(ExploitHooksPBT):
    """PBT that exploits within one architecture and never changes a trial's architecture.

    Ray's PBT clones a strong trial's checkpoint and config into a weak one, which in a NAS would swap
    the weak trial's architecture for the strong one's behind the Optuna trial's back. Here a weak trial
    takes a strong trial's weights (its checkpoint: weights, optimizer, epoch, curve) only from a strong
    trial of the same genotype, as real PBT does; with no such donor it takes the strong trial's
    hyperparameters alone and continues its own weights (weights of another architecture cannot load).
    Either way the hyperparameters are then perturbed and the trial keeps its own architecture.
    Unlike Ray's PBT it runs beside a search algorithm: OptunaSearch stays in charge of the architecture.
    """

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(FINAL):  # the trial's last report: nothing left to perturb
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def checkpoint_or_exploit(self, trial, tune_controller, upper_quantile, lower_quantile) -> None:
        weak = trial in lower_quantile and bool(upper_quantile)
        donors = [t for t in upper_quantile
                  if t is not trial and same_architecture(t, trial) and self.last_checkpoint(t)]
        if weak and donors:  # Ray's own path: clone a donor's checkpoint, then `exploit`
            super().checkpoint_or_exploit(trial, tune_controller, donors, [trial])
            return
        # a strong trial keeps its checkpoint for weak trials of its architecture to copy
        super().checkpoint_or_exploit(trial, tune_controller, upper_quantile, [])
        if weak:
            self.exploit_hparams(tune_controller, trial, random.choice(upper_quantile))

    def exploit(self, tune_controller, trial, trial_to_clone) -> None:
        own = dict(trial.config)  # Ray's exploit sets the donor's config: keep the trial's own spec
        super().exploit(tune_controller, trial, trial_to_clone)
        trial.set_config({**own, **{k: trial.config[k] for k in self.mutated}})

    def exploit_hparams(self, tune_controller, trial, trial_to_clone) -> None:
        """Take `trial_to_clone`'s explored hyperparameters and keep the trial's own weights."""
        explored = self.explore(trial, trial_to_clone)
        new_config = {**trial.config, **{k: explored[k] for k in self.mutated}}
        if trial.status != Trial.PAUSED:
            tune_controller.pause_trial(trial, should_checkpoint=False)  # resumes from its own last checkpoint
        trial.set_config(new_config)
        self.count_perturbation()


def same_architecture(a: Trial, b: Trial) -> bool:
    """Whether two trials train the same genotype (so one's weights load into the other)."""
    genotype = a.config.get(SPEC, {}).get("genotype")
    return genotype is not None and genotype == b.config.get(SPEC, {}).get("genotype")


def starting_lr(config: SearchConfig) -> float:
    return config.lr or DEFAULT_LR[config.optimizer]


def pbt_for(config: SearchConfig, synch: bool = False) -> ArchitecturePBT:
    """`synch`: Ray's synchronous PBT; every live trial pauses at each perturbation epoch until all have
    reached it, so which trial exploits which depends on the scores alone, not on which reported first.
    Slower when the trials' epochs differ in length (the fastest wait), but repeatable."""
    lr = starting_lr(config)
    return ArchitecturePBT(time_attr=EPOCH, metric=VAL, mode="max", synch=synch,
                           perturbation_interval=max(1, config.epochs // 4), burn_in_period=config.grace_epochs,
                           hyperparam_mutations={"lr": tune.loguniform(lr / 10, lr * 10),
                                                 "weight_decay": tune.loguniform(1e-5, 1e-2)})
