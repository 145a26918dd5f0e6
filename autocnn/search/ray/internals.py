"""The one module of autocnn on Ray Tune's private API; each access names the public API that is missing.

- `OptunaSearch` keeps the Optuna study, the asked Optuna trial of each Tune trial and the set of told
  trials as private attributes and offers no accessor; `AutocnnSearch` (searcher.py) needs them to record
  what workers report on the same Optuna trial and to tell its real final state.
- `PopulationBasedTraining` has no public way to choose which trials its exploit step copies and what it
  copies, nor to run beside a search algorithm: `ExploitHooksPBT` re-exposes its private exploit step
  (`_checkpoint_or_exploit`, `_exploit`, `_get_new_config`) and trial state (`ray.tune.schedulers.pbt`:
  `_PBTTrialState`, `_fill_config`) under public names, which `ArchitecturePBT` (pbt.py) overrides.
"""
from __future__ import annotations

import optuna
from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining
from ray.tune.schedulers.pbt import _fill_config, _PBTTrialState


def searched_study(searcher) -> optuna.Study:
    """The study `OptunaSearch` asks and tells (`_ot_study`; no public accessor)."""
    return searcher._ot_study


def asked_trials(searcher) -> dict[str, optuna.Trial]:
    """Tune trial id -> the Optuna trial asked for it (`_ot_trials`; no public accessor)."""
    return searcher._ot_trials


def told_trials(searcher) -> set[str]:
    """Tune trial ids already told to the study (`_completed_trials`; no public accessor)."""
    return searcher._completed_trials


def searched_study_name(searcher) -> str:
    """The study's name as `OptunaSearch` was given it (`_study_name`; no public accessor)."""
    return searcher._study_name


class ExploitHooksPBT(PopulationBasedTraining):
    """Ray's PBT with its private exploit step as public methods a subclass may override.

    Ray's step, per trial at each perturbation: `checkpoint_or_exploit` checkpoints a trial of the upper
    quantile and, for one of the lower, `exploit`s a random upper trial (clones its checkpoint, then its
    `explore`d config). Missing public API: a hook for which trials the exploit step copies and what it
    copies (Tune only offers `custom_explore_fn`, which sees the config alone).
    """

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        # Ray's PBT refuses search algorithms because its exploit step rewrites the config a searcher
        # suggested; a subclass that keeps the suggested config lets the searcher stay in charge. Missing
        # public API: registering a trial with PBT (`_trial_state`, `_PBTTrialState`, `_fill_config`).
        if not self._metric or not self._metric_op:
            raise ValueError(f"{type(self).__name__} needs a metric and a mode")
        self._trial_state[trial] = _PBTTrialState(trial)
        for attr, domain in self._hyperparam_mutations.items():
            if attr not in trial.config:
                _fill_config(trial.config, attr, domain)
                trial.evaluated_params[attr] = trial.config[attr]

    @property
    def mutated(self) -> list[str]:
        """The hyperparameters PBT perturbs (`_hyperparam_mutations`; no public accessor)."""
        return list(self._hyperparam_mutations)

    def last_checkpoint(self, trial: Trial):
        """The checkpoint PBT keeps of `trial` for others to copy, or None (`_trial_state`; no public accessor)."""
        return self._trial_state[trial].last_checkpoint

    def checkpoint_or_exploit(self, trial: Trial, tune_controller, upper_quantile: list[Trial],
                              lower_quantile: list[Trial]) -> None:
        """Ray's step: keep a checkpoint of `trial` if it is in `upper_quantile`, and if it is in
        `lower_quantile` exploit a random member of `upper_quantile` that holds one."""
        super()._checkpoint_or_exploit(trial, tune_controller, upper_quantile, lower_quantile)

    def exploit(self, tune_controller, trial: Trial, trial_to_clone: Trial) -> None:
        """Ray's exploit: `trial` continues from `trial_to_clone`'s checkpoint with its explored config."""
        super()._exploit(tune_controller, trial, trial_to_clone)

    def explore(self, trial: Trial, trial_to_clone: Trial) -> dict:
        """`trial_to_clone`'s config with the mutated hyperparameters perturbed (Ray's `_get_new_config`)."""
        new_config, _ = self._get_new_config(trial, trial_to_clone)
        return new_config

    def count_perturbation(self) -> None:
        """Count an exploit made outside `exploit` in PBT's statistics (`_num_perturbations`)."""
        self._num_perturbations += 1

    # Ray's private hooks, routed to the public methods above.
    def _checkpoint_or_exploit(self, trial, tune_controller, upper_quantile, lower_quantile) -> None:
        self.checkpoint_or_exploit(trial, tune_controller, upper_quantile, lower_quantile)

    def _exploit(self, tune_controller, trial, trial_to_clone) -> None:
        self.exploit(tune_controller, trial, trial_to_clone)
