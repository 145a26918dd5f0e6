"""`--prescreen PROXY:K` in process: the sampler screens K candidates per trial on real data (digits) with a
real proxy, the trial trains the best-scored, every trial records its score, and the draws are a function
of the seed and the trial number. (The CLI run on both backends: test_backend_conformance.py.)"""
from __future__ import annotations

import pickle
from functools import partial
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from autocnn.costs import materialize, meta_model
from autocnn.proxies import PROXIES
from autocnn.search import records
from autocnn.search.config import ConfigError, SearchConfig
from autocnn.search.engine import (TrialContext, check_choices, enqueue_presets, prescreened, sample_architecture,
                                   study_sampler)
from autocnn.search.prescreen import PrescreenSampler, best_index, proxy_batch, screen

SPACE = str(Path(__file__).with_name("tiny_space.yaml"))
CONFIG = SearchConfig(space=SPACE, dataset="digits", limit=120, resolution=16, batch_size=16, seed=3,
                      prescreen="synflow:3", enqueue=("lenet5",))


@pytest.fixture(scope="module")
def ctx() -> TrialContext:
    return TrialContext.create(CONFIG)


def recomputed(ctx: TrialContext, trial) -> float:
    """The proxy score of the trial's architecture with the trial's initial weights, worked out afresh."""
    g = records.genotype_of(trial)
    torch.manual_seed(ctx.config.seed + trial.number)  # as engine._evaluate_trial seeds the trial's weights
    model = materialize(meta_model(g))
    x, y = proxy_batch(ctx.data, ctx.config.batch_size, ctx.config.seed + trial.number, g.resolution)
    return PROXIES.get("synflow")(model, x, y)


def run(ctx: TrialContext, trials: int = 4) -> optuna.Study:
    """`trials` trials sampled as a search samples them (scored, not trained)."""
    study = optuna.create_study(direction="maximize", sampler=prescreened(study_sampler(ctx.config, 0), ctx))
    enqueue_presets(study, ctx)
    for _ in range(trials):
        trial = study.ask()
        genotype = sample_architecture(trial, ctx)
        study.tell(trial, genotype.stages[0].out_chs / 100)  # a value to learn from
    return study


def test_each_trial_trains_the_best_scored_of_k_and_records_the_screening(ctx):
    study = run(ctx)
    assert isinstance(study.sampler, PrescreenSampler)
    preset, *screened = study.trials
    assert preset.user_attrs[records.PROXY_SCREENED] == 1  # an enqueued preset keeps its architecture
    assert preset.user_attrs[records.PROXY_CANDIDATES] == [preset.user_attrs[records.ARCH_ID]]
    for t in study.trials:
        attrs = t.user_attrs
        assert attrs[records.PROXY] == "synflow"
        assert attrs[records.PROXY_SCORE] == pytest.approx(recomputed(ctx, t), rel=1e-9)
    distinct = 0
    for t in screened:
        attrs = t.user_attrs
        scores, candidates = attrs[records.PROXY_SCORES], attrs[records.PROXY_CANDIDATES]
        assert attrs[records.PROXY_SCREENED] == len(scores) == len(candidates) == 3
        assert attrs[records.PROXY_SCORE] == max(s for s in scores if s is not None)
        assert attrs[records.ARCH_ID] == candidates[scores.index(attrs[records.PROXY_SCORE])]
        distinct += len(set(candidates)) > 1
    assert distinct, "no trial screened two different candidates"
    assert sum(t.user_attrs[records.ARCH_ID] != t.user_attrs[records.PROXY_CANDIDATES][0] for t in screened) >= 1, \
        "the proxy never chose other than the first draw: the screening changed nothing"


def test_screening_is_a_function_of_the_seed_and_the_trial_number(ctx):
    a, b = run(ctx), run(ctx)
    keys = (records.ARCH_ID, records.PROXY_CANDIDATES, records.PROXY_SCORES)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [[t.user_attrs[k] for k in keys] for t in a.trials] == [[t.user_attrs[k] for k in keys] for t in b.trials]
    other = TrialContext(config=ctx.config.replace(seed=4), space=ctx.space, data=ctx.data)
    fresh = lambda seed: optuna.samplers.RandomSampler(seed=seed)  # noqa: E731
    assert screen(other, a, 9, fresh) == screen(other, a, 9, fresh)


def test_a_retried_trial_keeps_its_architecture_and_screening(ctx):
    study = run(ctx, trials=2)
    first = study.trials[-1]
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=first.params,
                                              distributions=first.distributions, user_attrs=first.user_attrs))
    trial = study.ask()
    sample_architecture(trial, ctx)
    study.tell(trial, 0.5)
    retried = study.trials[-1]
    for key in (records.ARCH_ID, records.PROXY_SCREENED, records.PROXY_CANDIDATES, records.PROXY_SCORES):
        assert retried.user_attrs[key] == first.user_attrs[key], key


def test_a_trial_being_screened_beats_for_itself(ctx, tmp_path):
    """Screening runs in `ask`, before Optuna's heartbeat thread: without its own beats, another worker on the
    study would take the trial for a killed one (`fail_orphaned_trials`)."""
    from autocnn.storage import open_storage, running_trial_heartbeats

    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")  # heartbeats on, as every search's
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize",
                                sampler=prescreened(study_sampler(ctx.config, 0), ctx))
    trial = study.ask()  # no heartbeat thread here
    assert trial.number in ctx.screenings  # it was screened
    stale, never_beat = running_trial_heartbeats(storage, storage.get_study_id_from_name("s"))
    assert trial.number not in never_beat | stale


def test_the_best_index_is_the_first_highest_and_zero_when_none_scored():
    assert best_index([1.0, None, 3.0, 3.0, 2.0]) == 2
    assert best_index([None, -5.0]) == 1
    assert best_index([None, None]) == 0


@pytest.mark.parametrize("text,message", [("bogus:3", "unknown proxy 'bogus' for --prescreen; choose from params"),
                                          ("synflow:0", "K must be >= 1"), ("synflow", "is not PROXY:K"),
                                          ("synflow:x", "is not PROXY:K"), (":4", "is not PROXY:K")])
def test_a_bad_prescreen_is_a_config_error(text, message):
    with pytest.raises(ConfigError, match=message):
        check_choices(SearchConfig(prescreen=text))


def test_the_study_stores_the_prescreen_for_resume():
    stored = SearchConfig.from_dict(CONFIG.to_dict())
    assert stored.prescreen == "synflow:3" and stored.screening == ("synflow", 3)
    assert SearchConfig().screening is None


def test_the_cli_help_names_every_proxy():
    from autocnn.cli.search import search

    option = next(p for p in search.params if p.name == "prescreen")
    assert all(name in option.help for name in PROXIES.names())


def test_the_ray_searchers_sampler_pickles_without_the_run(ctx):
    """Tune checkpoints its searcher, sampler included: it must reach the run through LIVE, not carry it."""
    pytest.importorskip("ray")
    from autocnn.search.ray.searcher import LIVE, Live, live_context

    sampler = prescreened(study_sampler(ctx.config, 0), ctx, partial(live_context, "s"))
    data = pickle.dumps(sampler)
    assert len(data) < 100_000  # no dataset in it
    LIVE["s"] = Live(ctx=ctx, budget=None)
    try:
        assert pickle.loads(data).context() is ctx
    finally:
        LIVE.pop("s")
