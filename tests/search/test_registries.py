"""Every registered sampler, pruner and Ray scheduler runs a real (tiny) search, and all share one
grace rule (`--grace-epochs`). Parametrised over the registries: a new member is tested as it lands.

Trials are tiny (tiny_space.yaml, 120 digits at 12 px, 2 trials of 2 epochs, 1 for samplers); Ray runs reuse the
session's Ray head (`ray_cluster` in tests/conftest.py).
"""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autocnn.search import PRUNERS, SAMPLERS
from autocnn.search.config import ConfigError, SearchConfig
from autocnn.search.driver import run_search
from autocnn.search.engine import create_study, pruner_for, pruner_name, stored_config
from conftest import run_cli

SPACE = str(Path(__file__).with_name("tiny_space.yaml"))
TINY = dict(space=SPACE, dataset="digits", limit=120, resolution=12, batch_size=32, trials=2, epochs=2, seed=0)


def _search(tmp_path: Path, **options) -> optuna.Study:
    config = SearchConfig(**{**TINY, "storage": f"sqlite:///{tmp_path / 'studies.db'}", "study": "s", **options})
    return run_search(config)


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))


@pytest.mark.parametrize("sampler", SAMPLERS.names())
def test_every_sampler_runs_a_search(sampler, tmp_path):
    try:  # one epoch: a sampler sees only the final values
        study = _search(tmp_path, sampler=sampler, pruner="none", epochs=1)
    except ConfigError:  # a sampler for Pareto fronts only: it runs with two objectives
        study = _search(tmp_path, sampler=sampler, pruner="none", epochs=1, objectives=("accuracy", "params"))
    trials = _finished(study)
    assert len(trials) == 2
    assert all(0.0 <= t.values[0] <= 1.0 for t in trials)
    assert len({t.user_attrs["arch_id"] for t in study.trials}) >= 1


@pytest.mark.parametrize("pruner", [name for name in PRUNERS.names() if name != "none"])
def test_a_named_pruner_with_several_objectives_is_refused_by_the_api_too(pruner, tmp_path):
    """The CLI's rule holds for `run_search` and `create_study`: nothing silently drops the pruner."""
    config = SearchConfig(**{**TINY, "storage": f"sqlite:///{tmp_path / 'studies.db'}", "study": "s",
                             "pruner": pruner, "objectives": ("accuracy", "params")})
    for start in (run_search, create_study):
        with pytest.raises(ConfigError, match=f"--pruner {pruner} judges one objective"):
            start(config)
    assert not (tmp_path / "studies.db").exists()  # no storage, so no study left behind


def test_an_unnamed_pruner_is_median_for_one_objective_and_none_for_several(tmp_path):
    study = _search(tmp_path, objectives=("accuracy", "params"))  # SearchConfig's default: no pruner named
    assert len(_finished(study)) == 2 and stored_config(study).pruner == "none"
    assert pruner_name(SearchConfig()) == "median"


@pytest.mark.parametrize("pruner", PRUNERS.names())
def test_every_pruner_runs_a_search(pruner, tmp_path):
    study = _search(tmp_path, sampler="random", pruner=pruner, grace_epochs=1)
    trials = _finished(study)
    assert len(trials) == 2
    assert all(len(t.intermediate_values) >= 1 for t in trials)
    assert stored_config(study).grace_epochs == 1  # resume rebuilds the pruner with the same rule


def _first_pruned_step(pruner: optuna.pruners.BasePruner, epochs: int = 6) -> int | None:
    """The first epoch at which `pruner` stops a trial far below four finished trials (None: never)."""
    study = optuna.create_study(study_name="grace", direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(0))
    for _ in range(4):
        trial = study.ask()
        for step in range(1, epochs + 1):
            trial.report(0.9, step)
            trial.should_prune()  # successive halving records a trial's rungs as it asks
        study.tell(trial, 0.9)
    trial = study.ask()
    for step in range(1, epochs + 1):
        trial.report(0.1, step)
        if trial.should_prune():
            return step
    return None


@pytest.mark.parametrize("pruner", PRUNERS.names())
@pytest.mark.parametrize("grace", [1, 3, 4])
def test_no_pruner_judges_a_trial_before_the_grace_epochs(pruner, grace):
    first = _first_pruned_step(pruner_for(SearchConfig(pruner=pruner, grace_epochs=grace)))
    assert first is None or first >= grace  # hyperband's later brackets start later still
    if pruner in ("median", "sha"):  # the rules that stop a clearly worse trial at their first chance
        assert first == grace


def test_grace_epochs_default_is_the_local_rule_and_is_stored():
    assert SearchConfig().grace_epochs == 3
    assert SearchConfig.from_dict(SearchConfig(grace_epochs=5).to_dict()).grace_epochs == 5
    assert SearchConfig.from_dict({"pruner": "sha"}).grace_epochs == 3  # a study stored before the option


@pytest.mark.parametrize("grace", [1, 2])
def test_every_ray_scheduler_takes_the_grace_epochs(grace):
    pytest.importorskip("ray")
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule, PopulationBasedTraining

    from autocnn.search.ray.schedulers import SCHEDULERS

    config = SearchConfig(epochs=9, grace_epochs=grace)
    for name in SCHEDULERS.names():
        scheduler = SCHEDULERS.get(name)(config)
        if isinstance(scheduler, ASHAScheduler):  # asha and (asynchronous) hyperband
            assert min(m for bracket in scheduler._brackets for m, _ in bracket._rungs) == grace, name
        elif isinstance(scheduler, MedianStoppingRule):
            assert scheduler._grace_period == grace
        elif isinstance(scheduler, PopulationBasedTraining):
            assert scheduler._burn_in_period == grace
    assert SCHEDULERS.get("asha")(SearchConfig(epochs=2, grace_epochs=3))  # grace past the epochs: no stop


@pytest.fixture(scope="module")
def ray_search(ray_cluster, tmp_path_factory):
    path = tmp_path_factory.mktemp("ray-registries")

    def search(name: str, *args: str) -> optuna.Study:
        storage = f"sqlite:///{path / 'studies.db'}"
        result = run_cli("search", "--space", SPACE, "--dataset", "digits", "--limit", "120", "--resolution", "12",
                         "--epochs", "2", "--trials", "2", "--sampler", "random", "--study", name, "--storage",
                         storage, "--backend", "ray", "--address", ray_cluster, "--max-concurrent", "1", *args,
                         cwd=path, timeout=400)  # one trial at a time: one worker process imports torch, not two
        assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
        return optuna.load_study(study_name=name, storage=storage)
    return search


def _ray_schedulers() -> list[str]:
    try:
        from autocnn.search.ray.schedulers import SCHEDULERS
    except ImportError:
        return []
    return SCHEDULERS.names()


@pytest.mark.parametrize("scheduler", _ray_schedulers())
def test_every_ray_scheduler_runs_a_search(scheduler, ray_search):
    study = ray_search(f"sched-{scheduler}", "--scheduler", scheduler, "--grace-epochs", "1")
    trials = _finished(study)
    assert len(trials) == 2
    assert stored_config(study).extra["ray"]["scheduler"] == scheduler
    assert stored_config(study).grace_epochs == 1
