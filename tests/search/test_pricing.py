"""Pricing a candidate in a real search: latency only when asked for, each architecture priced once per study."""
import contextlib
import json

import optuna
import pytest
import torch
from optuna.trial import TrialState

from autocnn.costs import genotype_costs
from autocnn.search import engine, records
from autocnn.search.config import SearchConfig
from autocnn.search.fixed import FixedSpace
from test_search_engine import FAST, SPACE


@contextlib.contextmanager
def real_forwards():
    """Counts module forwards on real (non-meta) tensors: with no training, only latency timing runs them."""
    calls = []

    def hook(module, inputs, output):
        if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].device.type != "meta":
            calls.append(type(module).__name__)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def run_unfitted(tmp_path, name, trials, **options):
    """`trials` trials of a real study on the engine, priced and recorded but not trained."""
    config = SearchConfig(trials=trials, storage=f"sqlite:///{tmp_path / 'p.db'}", study=name, seed=3,
                          dataset="digits", limit=200, **{"space": SPACE, **options})
    study, config = engine.create_study(config)
    ctx = engine.TrialContext.create(config)
    study.optimize(lambda trial: engine.evaluate_trial(trial, ctx, train=False), n_trials=trials)
    return study.get_trials(states=(TrialState.COMPLETE,))


def test_no_latency_objective_or_limit_measures_no_latency(tmp_path):
    with real_forwards() as calls:
        trials = run_unfitted(tmp_path, "plain", 4)
    assert len(trials) == 4 and calls == []
    for t in trials:
        assert t.user_attrs[records.LATENCY] is None  # recorded as not measured
        assert {"params": t.user_attrs[records.PARAMS], "flops": t.user_attrs[records.FLOPS]} == \
            genotype_costs(records.genotype_of(t))
        assert records.summary(t)["latency_ms"] is None


def test_latency_objective_or_limit_measures_it(tmp_path):
    for name, options in (("objective", {"objectives": ("accuracy", "latency")}),
                          ("limit", {"constraints": {"max_latency_ms": 1e6}})):
        with real_forwards() as calls:
            trials = run_unfitted(tmp_path, name, 2, **options)
        assert len(trials) == 2 and calls
        for t in trials:
            assert t.user_attrs[records.LATENCY] > 0
            assert t.user_attrs[records.FLOPS] == genotype_costs(records.genotype_of(t))["flops"]


def test_a_repeated_architecture_is_priced_once(tmp_path):
    genotype = records.genotype_of(run_unfitted(tmp_path, "seed", 1)[0])
    fixed = {"space": FixedSpace.spec_for(genotype), "objectives": ("accuracy", "latency")}
    with real_forwards() as once:
        run_unfitted(tmp_path, "one", 1, **fixed)
    with real_forwards() as calls:
        trials = run_unfitted(tmp_path, "three", 3, **fixed)
    assert len(trials) == 3 and once and calls == once  # the second and third trial reuse the first's costs
    assert len({t.user_attrs[records.ARCH_ID] for t in trials}) == 1
    assert len({t.user_attrs[records.LATENCY] for t in trials}) == 1
    assert all(t.user_attrs[records.PARAMS] == genotype_costs(genotype)["params"] for t in trials)


def test_unmeasured_latency_reads_as_not_measured(cli):
    result = cli("search", *FAST, "--trials", "2", "--epochs", "1", "--pruner", "none", "--study", "n", "--json")
    assert result.returncode == 0, result.stderr
    assert [row["latency_ms"] for row in json.loads(result.stdout)["best"]] == [None]
    shown = cli("best", "--study", "n")
    assert shown.returncode == 0, shown.stderr
    assert "not measured" in shown.stdout
    out = cli.path / "card"
    exported = cli("export", "--study", "n", "--out", str(out), "--formats", "none")
    assert exported.returncode == 0, exported.stderr
    assert "| CPU latency, batch 1 | not measured |" in (out / "README.md").read_text()


def test_records_are_written_in_one_transaction_and_read_back_as_optuna_writes_them(tmp_path):
    """`set_trial_user_attrs` batches what a trial records (one commit, not one per attribute) and
    behaves as `Trial.set_user_attr` does: the trial sees the values, a fresh load reads them, a finished
    trial refuses them."""
    import sqlalchemy

    from autocnn.storage import open_storage, set_trial_user_attrs

    url = f"sqlite:///{tmp_path / 'a.db'}"
    study = optuna.create_study(study_name="a", storage=open_storage(url))
    trial = study.ask()
    attrs = {"genotype": {"stages": [1, 2]}, "arch": "c3", "params": 12, "latency_ms": None}
    commits = []
    engine = study._storage._backend.engine

    def count(connection):
        commits.append(connection)

    sqlalchemy.event.listen(engine, "commit", count)
    set_trial_user_attrs(trial, attrs)
    sqlalchemy.event.remove(engine, "commit", count)
    assert len(commits) == 1
    assert trial.user_attrs == attrs
    set_trial_user_attrs(trial, {"arch": "c5", "flops": 7})  # an attribute written again is replaced
    attrs.update(arch="c5", flops=7)
    assert trial.user_attrs == attrs
    study.tell(trial, 1.0)
    assert optuna.load_study(study_name="a", storage=url).trials[0].user_attrs == attrs
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        set_trial_user_attrs(trial, {"late": 1, "later": 2})
