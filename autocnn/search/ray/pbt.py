"""Population-based training that perturbs training hyperparameters, never the architecture.

The only module of autocnn on Ray's private API (`ray.tune.schedulers.pbt`: `_PBTTrialState`,
`_fill_config`, and the `_checkpoint_or_exploit` / `_exploit` / `_get_new_config` hooks): Tune has no
public way to customise what PBT's exploit step copies from a strong trial into a weak one.
"""
from __future__ import annotations

import random

from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
from ray.tune.schedulers.pbt import _fill_config, _PBTTrialState

from autocnn.search.config import SearchConfig
from autocnn.search.ray.keys import EPOCH, FINAL, VAL
from autocnn.training.optim import DEFAULT_LR


class ArchitecturePBT(PopulationBasedTraining):
    """PBT that perturbs training hyperparameters only.

    Ray's PBT clones a strong trial's checkpoint and config into a weak one, which in a NAS would swap
    the weak trial's architecture for the strong one's behind the Optuna trial's back. Here the weak
    trial takes the strong trial's hyperparameters (perturbed) and resumes from its own checkpoint.
    """

    def on_trial_add(self, tune_controller, trial) -> None:
        # Ray's PBT refuses search algorithms because its exploit step rewrites the config a searcher
        # suggested; this one keeps the suggested architecture, so OptunaSearch stays in charge of it.
        if not self._metric or not self._metric_op:
            raise ValueError(f"{type(self).__name__} needs a metric and a mode")
        self._trial_state[trial] = _PBTTrialState(trial)
        for attr, domain in self._hyperparam_mutations.items():
            if attr not in trial.config:
                _fill_config(trial.config, attr, domain)
                trial.evaluated_params[attr] = trial.config[attr]

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(FINAL):  # the trial's last report: nothing left to perturb
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def _checkpoint_or_exploit(self, trial, tune_controller, upper_quantile, lower_quantile) -> None:
        # A strong trial needs no checkpoint here (only its hyperparameters are copied); a weak one
        # resumes from the checkpoint it reported with this very result.
        if trial in lower_quantile and upper_quantile:
            self._exploit(tune_controller, trial, random.choice(upper_quantile))

    def _exploit(self, tune_controller, trial, trial_to_clone) -> None:
        explored, _ = self._get_new_config(trial, trial_to_clone)
        new_config = {**trial.config, **{k: explored[k] for k in self._hyperparam_mutations}}
        if trial.status != Trial.PAUSED:
            tune_controller.pause_trial(trial, should_checkpoint=False)  # resumes from its own last checkpoint
        trial.set_config(new_config)
        self._num_perturbations += 1


def starting_lr(config: SearchConfig) -> float:
    return config.lr or DEFAULT_LR[config.optimizer]


def pbt_for(config: SearchConfig) -> ArchitecturePBT:
    lr = starting_lr(config)
    return ArchitecturePBT(time_attr=EPOCH, metric=VAL, mode="max",
                           perturbation_interval=max(1, config.epochs // 4), burn_in_period=config.grace_epochs,
                           hyperparam_mutations={"lr": tune.loguniform(lr / 10, lr * 10),
                                                 "weight_decay": tune.loguniform(1e-5, 1e-2)})
