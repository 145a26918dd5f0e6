"""Anytime search (issue #14): successive halving by default under a time budget, a first design that spans
the space small to large, and the best-so-far-vs-wall-time curve (study, report).

The design is priced on the meta device (no training); the end-to-end search trains tiny candidates
(tiny_space.yaml, 200 digits at 12 px, 3 epochs).
"""
from __future__ import annotations

import math
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState
from PIL import Image

from autocnn.cli.search import predicted_finish
from autocnn.costs import count_meta_flops, count_params, meta_model
from autocnn.data import load_dataset
from autocnn.search import records
from autocnn.search.config import BUDGET_PRUNER, FIRST_LOOK_SHARE, SearchConfig
from autocnn.search.control import STARTED_ATTR, anytime_curve, best_trial, inspect
from autocnn.search.design import DesignSampler, initial_design
from autocnn.search.engine import TrialContext, pruner_name
from autocnn.search.timing import EpochShape, TimeModel
from autocnn.spaces import Categorical, Float, Int, load_space
from autocnn.storage import open_storage

SPACE = str(Path(__file__).with_name("tiny_space.yaml"))
FAST = ("--space", SPACE, "--dataset", "digits", "--limit", "200", "--batch-size", "32")


# -- the default pruner under a time budget ---------------------------------------------------------

def test_a_time_budget_without_a_pruner_runs_successive_halving():
    assert pruner_name(SearchConfig(timeout=60)) == BUDGET_PRUNER == "sha"
    assert pruner_name(SearchConfig()) == "median"  # no time budget: the rule of a plain search stays
    assert pruner_name(SearchConfig(timeout=60, pruner="none")) == "none"  # a named pruner wins
    assert pruner_name(SearchConfig(timeout=60, objectives=("accuracy", "params"))) == "none"  # Pareto: never pruned


def _trained(study, curve: list[float], planned: int | None = None, epoch_s: float | None = None,
             continues: int | None = None):
    """A finished trial of `study` that reported `curve` epoch by epoch (`planned`: its cut schedule; `epoch_s`:
    its seconds per epoch; `continues`: the trial whose weights it started from)."""
    trial = study.ask()
    if continues is not None:
        trial.set_user_attr(records.CONTINUES, continues)
    if epoch_s is not None:
        records.record_epoch_seconds(trial, [epoch_s] * len(curve))
    if planned is not None:
        trial.set_user_attr(records.PLANNED_EPOCHS, planned)
    for epoch, value in enumerate(curve, 1):
        trial.report(value, epoch)
    study.tell(trial, curve[-1])
    return trial


def test_a_cut_schedule_faces_the_rungs_of_schedules_at_least_as_long():
    from autocnn.search.engine import noise_margin, outranked_at_rung

    assert noise_margin(0.99, 360) == pytest.approx(0.00524, abs=1e-5)  # about two of digits' 360 val images
    assert noise_margin(0.5, 100) == pytest.approx(0.05) and noise_margin(2.5, 100) == 0.0 == noise_margin(0.5, 0)

    study = optuna.create_study(direction="maximize")
    _trained(study, [0.90, 0.96, 0.97, 0.98])             # full schedule
    _trained(study, [0.50, 0.70, 0.80])                   # full schedule, pruned at the first rung
    _trained(study, [0.99, 0.99, 0.99], planned=3)        # cut shorter than the judged trial's: not a rival
    judged = study.ask()
    judged.set_user_attr(records.PLANNED_EPOCHS, 5)
    for epoch, value in enumerate([0.2, 0.8, 0.93], 1):
        judged.report(value, epoch)
    # 3 trials at the rung (the judged one and two rivals): only the best goes on, and 0.97 beats 0.93
    assert outranked_at_rung(judged, 3, 0.93, planned=5, grace=3)
    assert not outranked_at_rung(judged, 3, 0.975, planned=5, grace=3)
    assert not outranked_at_rung(judged, 2, 0.10, planned=5, grace=3)  # no rung before the grace epochs
    assert not outranked_at_rung(judged, 4, 0.10, planned=5, grace=3)  # between rungs (3, 9, 27, ...)
    # within the validation noise of the rivals (0.97 - 0.93 < 0.05) it goes on
    assert not outranked_at_rung(judged, 3, 0.93, planned=5, grace=3, margin=0.05)
    assert outranked_at_rung(judged, 3, 0.93, planned=5, grace=3, margin=0.03)
    # the doubt shrinks with the cost of going on: a rival 5x faster per epoch grants a fifth of the margin
    quick = optuna.create_study(direction="maximize")
    _trained(quick, [0.90, 0.96, 0.97, 0.98], epoch_s=0.4)
    slow = quick.ask()
    slow.set_user_attr(records.PLANNED_EPOCHS, 9)
    assert not outranked_at_rung(slow, 3, 0.965, planned=9, grace=3, margin=0.01, epoch_s=0.4)
    assert outranked_at_rung(slow, 3, 0.965, planned=9, grace=3, margin=0.01, epoch_s=2.0)
    assert not outranked_at_rung(slow, 3, 0.965, planned=9, grace=3, margin=0.01, epoch_s=0.1)  # never raised
    assert not outranked_at_rung(slow, 3, 0.969, planned=9, grace=3, margin=0.01, epoch_s=2.0)  # 0.97 - 0.969 < 0.002
    # a longer cut schedule is annealed less at epoch 3 than the 3-epoch one: that one no longer counts
    lone = optuna.create_study(direction="maximize")
    _trained(lone, [0.99, 0.99, 0.99], planned=3)
    first = lone.ask()
    assert not outranked_at_rung(first, 3, 0.5, planned=5, grace=3)
    # minimising (a loss metric): lower is better
    losses = optuna.create_study(direction="minimize")
    _trained(losses, [0.9, 0.5, 0.3])
    looked = losses.ask()
    assert outranked_at_rung(looked, 3, 0.4, planned=5, grace=3)
    assert not outranked_at_rung(looked, 3, 0.2, planned=5, grace=3)


def test_once_the_device_is_timed_no_first_look_takes_more_than_a_fifth_of_the_budget():
    import dataclasses
    import time

    from autocnn.search.config import LOOK_SHARE
    from autocnn.search.engine import price_time

    shape = EpochShape(train=1000, val=200, batch_size=50)
    costs = {"flops": 5e7, "params": 1e6, "layers": 30, "activations": 1e6}
    timed = dataclasses.replace(TimeModel.prior(), epochs=5)
    per_epoch = timed.epoch_seconds(costs["flops"], costs["params"], costs["layers"], shape, costs["activations"])
    study = optuna.create_study(direction="maximize")

    def price(model, timeout, share=0.5, continues=None):
        config = SearchConfig(timeout=timeout, epochs=12, grace_epochs=3, max_trial_share=share)
        trial = study.ask()
        if continues is not None:
            trial.set_user_attr(records.CONTINUES, continues)
        try:
            price_time(trial, costs, config=config, shape=shape, model=model, deadline=time.time() + timeout)
        except optuna.TrialPruned as rejected:
            return trial, str(rejected)
        return trial, None

    # 12 budget-epochs: half the time fits 6 epochs (it would be cut to them), but its 3-epoch look is a quarter
    trial, reason = price(timed, 12 * per_epoch)
    assert 3 * per_epoch > LOOK_SHARE * 12 * per_epoch and reason is not None
    assert reason.startswith(records.WOULD_NOT_FINISH) and "first look" in reason
    assert trial.user_attrs[records.PREDICTED_S] == round(3 * per_epoch, 1)  # both figures recorded
    assert trial.user_attrs[records.REMAINING_S] > 0
    assert price(timed, 20 * per_epoch)[1] is None  # a fifth of 20 epochs' time holds the look
    assert price(dataclasses.replace(timed, epochs=0), 12 * per_epoch)[1] is None  # untimed: the first-look rule
    assert price(timed, 12 * per_epoch, share=None)[1] is None  # --max-trial-share none: never rejected for time
    # the full training of a design point that had its first look: the look is behind it, it trains what fits
    trial, reason = price(timed, 12 * per_epoch, continues=0)
    assert reason is None and 3 <= trial.user_attrs[records.PLANNED_EPOCHS] <= 6  # half the time left


def test_a_sampled_look_may_cost_at_most_three_trainings_of_the_best_model_so_far():
    """`LOOK_VS_BEST`: once a model is fully trained, a sampled candidate whose first look would cost more than
    three full trainings of the best one is rejected before training, as a look too large (not as spent time),
    unless the look is within a twentieth of the budget; the initial design, continuations and a study with no
    complete trial are not held to it."""
    import dataclasses

    from autocnn.search.budget import best_training_s
    from autocnn.search.config import LOOK_VS_BEST
    from autocnn.search.engine import price_time

    shape = EpochShape(train=1000, val=200, batch_size=50)
    costs = {"flops": 5e7, "params": 1e6, "layers": 30, "activations": 1e6}
    timed = dataclasses.replace(TimeModel.prior(), epochs=5)
    per_epoch = timed.epoch_seconds(costs["flops"], costs["params"], costs["layers"], shape, costs["activations"])
    look_s = 3 * per_epoch
    config = SearchConfig(timeout=40 * per_epoch, epochs=12, grace_epochs=3)  # a fifth: 8 epochs, a twentieth: 2
    study = optuna.create_study(direction="maximize")

    def price(best_s, config=config, **attrs):
        trial = study.ask()
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        try:
            price_time(trial, costs, config=config, shape=shape, model=timed, deadline=time.time() + config.timeout,
                       best_s=best_s)
        except optuna.TrialPruned as rejected:
            return str(rejected)
        return None

    reason = price(look_s / LOOK_VS_BEST * 0.9)  # the best trains in 0.9 of a third of this look
    assert reason.startswith(records.WOULD_NOT_FINISH) and "first look" in reason and "the best model" in reason
    assert records.rejected_for_a_look(study.trials[-1])  # a look too large: the time left did not refuse it
    assert price(look_s / LOOK_VS_BEST * 1.1) is None
    assert price(None) is None  # no model trained yet
    reason = price(look_s / 10)  # three trainings of the best take 0.9 epochs: a twentieth of the budget, 2, holds
    assert "0.05 x the" in reason and "(more than 3 x the" in reason
    assert price(look_s / 10, config=config.replace(timeout=80 * per_epoch)) is None  # a twentieth: 4 epochs
    assert price(look_s / 10, **{records.DESIGN: 4}) is None  # the design spans the space's costs
    assert price(look_s / 10, **{records.CONTINUES: 0}) is None  # its look is behind it

    # what it is weighed against: the best complete trial's whole schedule at its median pace
    assert best_training_s(study, 12) is None  # nothing timed
    _trained(study, [0.5, 0.9], epoch_s=2.0)
    _trained(study, [0.5, 0.7], epoch_s=0.5)
    assert best_training_s(study, 12) == 24.0
    losses = optuna.create_study(direction="minimize")
    _trained(losses, [0.5, 0.9], epoch_s=2.0)
    _trained(losses, [0.5, 0.7], epoch_s=0.5)
    assert best_training_s(losses, 10) == 5.0
    assert best_training_s(optuna.create_study(directions=["maximize", "minimize"]), 12) is None


def test_a_first_look_slower_than_priced_stops_once_its_pace_would_overrun_its_share():
    """`look_guard`: the time model admitted a look within `LOOK_SHARE` of the budget, but its epochs measure
    slower: once the look's pace would take it past that share it stops at the epoch boundary."""
    from autocnn.search.budget import LookOverran
    from autocnn.search.engine import look_guard
    from autocnn.training import EpochReport

    config = SearchConfig(timeout=100, epochs=12, grace_epochs=3)  # a look may take 20 s
    timed = {records.TIME_MODEL_EPOCHS: 5}

    def look(*seconds, attrs=timed, config=config, best_s=None):
        guard = look_guard(config, attrs, best_s)
        if guard is None:
            return "unguarded"
        for epoch, s in enumerate(seconds, 1):
            try:
                guard(EpochReport(epoch=epoch, val_metric=0.5, train_loss=1.0, seconds=s))
            except LookOverran as stop:
                return stop.epoch, str(stop)
        return None

    assert look(6.0, 6.0, 6.0, 30.0) is None  # 18 s: within its share; after the look it is not held
    epoch, why = look(7.0, 6.0)  # 7 + 2 x 7 = 21 s at the first epoch's pace
    assert epoch == 1 and "would take 21.0s" in why and "20.0s" in why
    assert look(5.0, 9.0)[0] == 2  # 14 + 9 = 23 s: the second epoch slowed down
    assert look(7.0, attrs={}) == "unguarded"  # untimed device: the first-look rule fits it instead
    assert look(7.0, attrs={**timed, records.CONTINUES: 0}) == "unguarded"  # its look is behind it
    assert look(7.0, config=config.replace(max_trial_share=None)) == "unguarded"  # never rejected for time
    assert look(7.0, config=SearchConfig(epochs=12, grace_epochs=3)) == "unguarded"  # no time budget
    # a sampled look is also held to three trainings of the best model so far (5 s: 15 s), a design point is not
    epoch, why = look(4.0, 6.0, best_s=5.0)  # 12 s at the first epoch's pace, 4 + 6 + 6 = 16 s at the second's
    assert epoch == 2 and "would take 16.0s" in why and "15.0s" in why
    assert look(6.0, 6.0, 6.0, attrs={**timed, records.DESIGN: 3}, best_s=5.0) is None  # 18 s: the budget's fifth


def test_a_trial_whose_look_overruns_is_stopped_and_recorded_with_its_weights(tmp_path):
    """The local backend's wiring: a study timed at microseconds an epoch admits a candidate whose real epochs
    take milliseconds; under a 10-ms budget (a 2-ms look) it stops after its first epoch, pruned with its score,
    the reason and its weights."""
    from autocnn.search.engine import evaluate_trial

    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="look", storage=storage, direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={
        records.EPOCH_SECONDS: [1e-6] * 5, records.FLOPS: 10 ** 6, records.PARAMS: 10 ** 5, records.LAYERS: 10,
        records.ACTIVATIONS: 10 ** 5}))
    config = SearchConfig(space="plain_cnn", dataset="digits", limit=100, seed=0, timeout=0.01, epochs=4,
                          grace_epochs=3, storage=storage)
    ctx = TrialContext.create(config)
    ctx.deadline = time.time() + 600  # the run's end is far: only the look's share stops it
    study.optimize(lambda trial: evaluate_trial(trial, ctx), n_trials=1)
    stopped = study.trials[-1]
    assert stopped.state == TrialState.PRUNED and records.REJECTED not in stopped.user_attrs
    assert "first look" in stopped.user_attrs[records.OUT_OF_TIME]
    assert len(stopped.user_attrs[records.EPOCH_SECONDS]) == 1 and list(stopped.intermediate_values) == [1]
    assert stopped.user_attrs[records.PREDICTED_EPOCH_S] < 1e-3 < stopped.user_attrs[records.EPOCH_SECONDS][0]
    assert stopped.user_attrs[records.WEIGHTS_PATH]  # saved, as a trial the deadline stops


def test_the_last_candidate_that_fits_gets_all_of_the_time_left():
    """Near the end, half the time left cannot hold a candidate's 3-epoch look, and the other half could not
    hold it either: rather than leave the rest of the budget unused, the candidate is fitted to all of it. A
    continuation that gets fewer epochs than its look settles its weights (no warm-up, a tenth of the rate)."""
    import dataclasses
    import time

    from autocnn.search.config import SETTLING_LR
    from autocnn.search.engine import fitted, price_time

    shape = EpochShape(train=1000, val=200, batch_size=50)
    costs = {"flops": 5e7, "params": 1e6, "layers": 30, "activations": 1e6}
    timed = dataclasses.replace(TimeModel.prior(), epochs=5)
    per_epoch = timed.epoch_seconds(costs["flops"], costs["params"], costs["layers"], shape, costs["activations"])
    study = optuna.create_study(direction="maximize")

    def planned(model, left, continues=None):
        config = SearchConfig(timeout=20 * per_epoch, epochs=12, grace_epochs=3)  # a look is 3/20 of the budget
        trial = study.ask()
        if continues is not None:
            trial.set_user_attr(records.CONTINUES, continues)
        try:
            price_time(trial, costs, config=config, shape=shape, model=model, deadline=time.time() + left)
        except optuna.TrialPruned as rejected:
            return str(rejected)
        settling.append(trial.user_attrs.get(records.SETTLING, False))
        return trial.user_attrs.get(records.PLANNED_EPOCHS, 12)

    settling = []
    assert planned(timed, 5.5 * per_epoch) in (4, 5)  # all of 5.5 epochs' time, not half of it (2: rejected)
    assert planned(timed, 7 * per_epoch) == 3  # half of 7 holds the look: it keeps to its share
    assert planned(timed, 2.5 * per_epoch).startswith(records.WOULD_NOT_FINISH)  # not even its look fits
    assert settling == [False, False]
    # a trial continuing another's weights gets what fits, fewer epochs than its look included: it settles them
    assert planned(timed, 2.5 * per_epoch, continues=0) == 2 and settling[-1] is True
    assert planned(timed, 0.5 * per_epoch, continues=0).startswith(records.WOULD_NOT_FINISH)  # not one epoch
    assert planned(timed, 5.5 * per_epoch, continues=0) in (4, 5) and settling[-1] is False  # a warm restart
    settled = fitted(SearchConfig(lr=0.005, warmup_epochs=1.0),
                     {records.PLANNED_EPOCHS: 2, records.SETTLING: True})
    assert (settled.epochs, settled.warmup_epochs, settled.lr) == (2, 0.0, pytest.approx(0.005 * SETTLING_LR))
    restart = fitted(SearchConfig(lr=0.005, warmup_epochs=1.0), {records.PLANNED_EPOCHS: 4})
    assert (restart.epochs, restart.warmup_epochs, restart.lr) == (4, 1.0, 0.005)
    # untimed, a first candidate is never handed the whole budget: the first-look rule fits it to a twentieth
    assert planned(dataclasses.replace(timed, epochs=0), 5.5 * per_epoch) == 1


def test_once_a_trial_is_fully_trained_no_new_candidate_is_cut_shorter_than_it():
    """A candidate whose schedule no longer fits is fitted to what does only while that is at least as long as
    the longest complete training of the study (`budget.longest_training`); shorter, it is rejected for time
    (and costs nothing). A continuation still gets what fits."""
    import dataclasses
    import time

    from autocnn.search.budget import longest_training
    from autocnn.search.engine import price_time

    shape = EpochShape(train=1000, val=200, batch_size=50)
    costs = {"flops": 5e7, "params": 1e6, "layers": 30, "activations": 1e6}
    timed = dataclasses.replace(TimeModel.prior(), epochs=5)
    per_epoch = timed.epoch_seconds(costs["flops"], costs["params"], costs["layers"], shape, costs["activations"])
    study = optuna.create_study(direction="maximize")
    assert longest_training(study) == 0
    for epochs_run in (12, 8):
        trial = study.ask()
        trial.set_user_attr(records.EPOCHS_RUN, epochs_run)
        study.tell(trial, 0.9)
    cut = study.ask()
    cut.set_user_attr(records.EPOCHS_RUN, 20)
    study.tell(cut, state=optuna.trial.TrialState.PRUNED)  # a pruned trial is no rival
    rival = longest_training(study)
    assert rival == 12

    def planned(left, rival_epochs, continues=None):
        config = SearchConfig(timeout=20 * per_epoch, epochs=12, grace_epochs=3)
        trial = study.ask()
        if continues is not None:
            trial.set_user_attr(records.CONTINUES, continues)
        try:
            price_time(trial, costs, config=config, shape=shape, model=timed, deadline=time.time() + left,
                       rival_epochs=rival_epochs)
        except optuna.TrialPruned as rejected:
            assert trial.user_attrs[records.PREDICTED_S] == round(12 * per_epoch, 1)  # its whole schedule
            return str(rejected)
        return trial.user_attrs.get(records.PLANNED_EPOCHS, 12)

    assert planned(13 * per_epoch, 0) == 6 and planned(13 * per_epoch, 6) == 6  # as long as the longest: fitted
    reason = planned(11 * per_epoch, rival)
    assert reason.startswith(records.WOULD_NOT_FINISH) and "only 5 epochs would fit" in reason, reason
    assert "trained 12" in reason, reason
    # the rival's epochs fit in the time left but not in the share (half of it): the candidate takes them, since
    # every later candidate would be held to the same floor and the share's time would go unused (on `shapes` in
    # 60 s, runs whose start point trained all 12 epochs ended 26 s early, 30 candidates rejected in a row)
    assert planned(13 * per_epoch, rival) == 12 and planned(13 * per_epoch, 8) == 8
    assert planned(25 * per_epoch, rival) == 12  # its whole schedule fits: the rule has nothing to say
    assert planned(13 * per_epoch, rival, continues=0) == 6  # a continuation's epochs add to those it continues

    def polished(left):
        trial = study.ask()
        trial.set_user_attr(records.CONTINUES, 0)
        trial.set_user_attr(records.POLISHES, 0)
        price_time(trial, costs, config=SearchConfig(timeout=20 * per_epoch, epochs=12, grace_epochs=3), shape=shape,
                   model=timed, deadline=time.time() + left, rival_epochs=rival)
        return trial.user_attrs.get(records.PLANNED_EPOCHS, 12), trial.user_attrs.get(records.SETTLING)

    # a polish of the fully trained best takes all of the time left (no share kept back: nothing new fits), and
    # settles the weights (a tenth of the rate, no warm-up) however many epochs that is
    assert polished(7.5 * per_epoch) == (7, True) and polished(25 * per_epoch) == (12, True)


def test_when_no_new_candidate_fits_the_best_is_enqueued_to_continue_or_to_be_polished():
    """`continue_the_best`: the time no new candidate fits in goes to more epochs of the best complete trial,
    once per trial (and only when its weights were saved): a schedule of its own when the budget had cut its
    schedule short, a polish (`records.POLISHES`) when it had all its epochs."""
    from optuna.distributions import IntDistribution

    from autocnn.search.engine import continue_the_best

    study = optuna.create_study(direction="maximize")

    def finished(width, value, **attrs):
        study.add_trial(optuna.trial.create_trial(params={"width": width}, value=value, user_attrs=attrs,
                                                  distributions={"width": IntDistribution(8, 64)}))
        return study.trials[-1].number

    assert continue_the_best(study, set()) is None  # nothing trained yet
    finished(8, 0.99, **{records.PLANNED_EPOCHS: 3})  # no weights saved: nothing to continue
    assert continue_the_best(study, set()) is None
    study = optuna.create_study(direction="maximize")
    whole = finished(8, 0.95, **{records.WEIGHTS_PATH: "w/0.safetensors"})  # the best had its whole schedule
    assert continue_the_best(study, set()) == whole
    [polish] = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert polish.user_attrs == {records.POLISHES: whole} and polish.system_attrs["fixed_params"] == {"width": 8}
    study = optuna.create_study(direction="maximize")  # a settling continuation is the end of its line
    finished(8, 0.96, **{records.WEIGHTS_PATH: "w/1.safetensors", records.SETTLING: True})
    assert continue_the_best(study, set()) is None
    study = optuna.create_study(direction="maximize")
    finished(8, 0.90, **{records.PLANNED_EPOCHS: 5, records.WEIGHTS_PATH: "w/0.safetensors"})
    best = finished(16, 0.93, **{records.PLANNED_EPOCHS: 6, records.WEIGHTS_PATH: "w/1.safetensors"})
    assert continue_the_best(study, {best}) is None  # continued once already
    assert continue_the_best(study, set()) == best
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [{"width": 16}]  # its twin, which `trained_twin_of` continues
    assert waiting[0].user_attrs == {}  # a schedule of its own, not a polish
    twoway = optuna.create_study(directions=["maximize", "minimize"])
    assert continue_the_best(twoway, set()) is None


def test_a_ray_search_under_a_time_budget_runs_asha(tmp_path):
    pytest.importorskip("ray")
    from autocnn.search.ray import RayBackend

    base = SearchConfig(storage=f"sqlite:///{tmp_path / 's.db'}")
    timed = RayBackend().configure(base.replace(timeout=60), resume=False)
    assert (timed.extra["ray"]["scheduler"], timed.pruner) == ("asha", "sha")
    plain = RayBackend().configure(base, resume=False)
    assert (plain.extra["ray"]["scheduler"], plain.pruner) == ("fifo", "none")
    named = RayBackend(scheduler="median").configure(base.replace(timeout=60), resume=False)
    assert named.extra["ray"]["scheduler"] == "median"


def test_a_timed_search_prunes_spans_the_space_and_draws_its_anytime_curve(cli):
    """--timeout without --pruner: SHA stops some trials after the grace epoch, the best is fully trained;
    the first trials are the design, cheapest first; the study's curve is what the report plots."""
    result = cli("search", *FAST, "--epochs", "3", "--grace-epochs", "1", "--trials", "10", "--timeout", "1h",
                 "--study", "t")
    assert result.returncode == 0, result.stderr
    assert "budget left" in result.stderr and "ETA" in result.stderr and "10/10 trials" in result.stderr
    storage = open_storage(cli.storage, create=False, heartbeat=False)
    view = inspect(storage, "t")
    assert view.config.pruner == "sha"
    trials = sorted(view.trials, key=lambda t: t.number)
    pruned = [t for t in trials if t.state == TrialState.PRUNED and records.REJECTED not in t.user_attrs]
    assert pruned and all(t.user_attrs[records.EPOCHS_RUN] < 3 for t in pruned)
    best = best_trial(trials, view.directions)
    assert best.state == TrialState.COMPLETE and best.user_attrs[records.EPOCHS_RUN] == 3

    design = [t for t in trials if records.DESIGN in t.user_attrs]
    assert [t.user_attrs[records.DESIGN] for t in design] == list(range(5)) == [t.number for t in design]
    flops = [t.user_attrs[records.FLOPS] for t in design]
    data = load_dataset("digits", limit=200)
    shape = EpochShape(len(data.train), len(data.val), 32)
    seconds = [TimeModel.prior("cpu").epoch_seconds(t.user_attrs[records.FLOPS], t.user_attrs[records.PARAMS],
                                                    t.user_attrs[records.LAYERS], shape,
                                                    t.user_attrs[records.ACTIVATIONS]) for t in design]
    assert seconds == sorted(seconds) and flops[-1] > 10 * flops[0]  # quickest first, up to the large end

    curve = view.anytime
    started = datetime.fromtimestamp(view.user_attrs[STARTED_ATTR])
    by_number = {t.number: t for t in trials}
    assert [p.seconds for p in curve] == [(by_number[p.trial].datetime_complete - started).total_seconds()
                                          for p in curve]
    assert all(a.seconds <= b.seconds and a.value < b.value for a, b in zip(curve, curve[1:]))
    assert curve[0].seconds > 0 and curve[0].trial == min(t.number for t in trials if t.state == TrialState.COMPLETE)
    assert (curve[-1].value, curve[-1].trial) == (best.values[0], best.number)

    out = cli.path / "report"
    assert cli("report", "--study", "t", "--out", str(out)).returncode == 0
    with Image.open(out / "best_vs_time.png") as img:
        assert img.size[0] > 100
    assert "Best vs time" in (out / "index.html").read_text()


def test_a_repeated_proposal_continues_its_twin_when_the_budget_had_cut_it_short(cli):
    """A space of one candidate under a 20-s budget: the first trial is cut to a first look (a twentieth of the
    budget, priced by the untimed prior: far fewer than its 400 epochs), so the second, proposed the same
    network, continues its weights (a warm restart) instead of training it from scratch again."""
    space = cli.path / "one.yaml"
    space.write_text(Path(SPACE).read_text().replace("{int: [4, 24], step: 4}", "{choices: [24]}")
                     .replace("{int: [1, 2]}", "{choices: [1]}").replace("[none, se, eca]", "[none]")
                     .replace("[conv, basic]", "[conv]"))
    result = cli("search", "--space", str(space), *FAST[2:], "--epochs", "400", "--trials", "2", "--timeout", "20",
                 "--sampler", "random", "--pruner", "none", "--initial-design", "0", "--study", "twin")
    assert result.returncode == 0, result.stderr
    first, second = sorted(inspect(open_storage(cli.storage, create=False, heartbeat=False), "twin").trials,
                           key=lambda t: t.number)
    assert first.state == TrialState.COMPLETE and first.user_attrs[records.PLANNED_EPOCHS] < 400
    assert records.CONTINUES not in first.user_attrs and second.user_attrs[records.CONTINUES] == 0
    assert second.user_attrs[records.START_WEIGHTS].endswith(first.user_attrs[records.WEIGHTS_PATH])
    # its first epoch starts where the twin's training ended, not from chance
    assert second.user_attrs[records.VAL_CURVE][0] > first.user_attrs[records.VAL_CURVE][0] + 0.2


def test_a_repeat_of_a_fully_trained_network_is_another_draw_from_scratch():
    from autocnn.search.engine import trained_twin_of

    study = optuna.create_study(direction="maximize")

    def finished(value: float, planned: int | None) -> None:
        trial = study.ask()
        trial.suggest_int("width", 8, 8)
        trial.set_user_attr(records.ARCH_ID, "a")
        trial.set_user_attr(records.WEIGHTS_PATH, f"w{trial.number}")
        if planned is not None:
            trial.set_user_attr(records.PLANNED_EPOCHS, planned)
        study.tell(trial, value)

    def repeat():
        trial = study.ask()
        trial.suggest_int("width", 8, 8)
        return trial

    finished(0.9, planned=5)
    finished(0.8, planned=None)
    assert trained_twin_of(repeat(), "a").number == 0  # the best twin, its schedule cut short: continued
    assert trained_twin_of(repeat(), "b") is None  # another architecture
    finished(0.95, planned=None)
    assert trained_twin_of(repeat(), "a") is None  # the best twin had its whole schedule: from scratch


def test_a_default_search_on_small_images_trains_quick_networks_at_their_own_resolution(cli):
    """Only --timeout given: the `auto` space's design starts with plain CNNs at the digits' own 8 px, which train in
    seconds and reach what a hand-written loop does (EfficientNets at 32 px reached 94 % in a minute).

    The start point's 12 epochs are priced above a twentieth of the 20 s budget: its first trial is a first look
    cut to what fits in 1 s, and the next trial trains the same network with the time model calibrated by it (how
    many epochs that fits in the time left depends on the machine's load), starting from the look's weights."""
    result = cli("search", "--timeout", "20s", "--seed", "0", "--study", "d")
    assert result.returncode == 0, result.stderr
    view = inspect(open_storage(cli.storage, create=False, heartbeat=False), "d")
    assert view.config.space == "auto"
    trained = [t for t in view.trials if t.state == TrialState.COMPLETE]
    assert trained and trained[0].params["family"] == "plain_cnn"
    assert records.genotype_of(trained[0]).resolution == 8
    assert best_trial(view.trials, view.directions).values[0] >= 0.95

    look, full = sorted(view.trials, key=lambda t: t.number)[:2]
    assert look.user_attrs[records.ARCH] == full.user_attrs[records.ARCH]
    planned = look.user_attrs[records.PLANNED_EPOCHS]
    assert 1 <= planned < 12 and len(look.user_attrs[records.VAL_CURVE]) == planned
    assert planned * look.user_attrs[records.PREDICTED_EPOCH_S] <= FIRST_LOOK_SHARE * 20
    assert look.user_attrs[records.TIME_MODEL_EPOCHS] == 0 < full.user_attrs[records.TIME_MODEL_EPOCHS]
    assert full.user_attrs[records.CONTINUES] == look.number and records.CONTINUES not in look.user_attrs
    start = Path(full.user_attrs[records.START_WEIGHTS])
    assert start.is_file() and start.as_posix().endswith(look.user_attrs[records.WEIGHTS_PATH])


def test_the_predicted_finish_is_the_pace_so_far_capped_by_the_time_left():
    assert predicted_finish(60.0, 3, 7, None) == 140.0  # 20 s a trial, 7 to go
    assert predicted_finish(60.0, 3, 7, 100.0) == 100.0  # the time budget ends first
    assert predicted_finish(60.0, 3, 1, 100.0) == 20.0  # the trial budget ends first
    assert predicted_finish(5.0, 0, 10, 30.0) == 30.0 and predicted_finish(5.0, 0, 10, None) is None
    assert predicted_finish(90.0, 2, 5, -3.0) == 0.0  # past the deadline: ending now


# -- the anytime curve --------------------------------------------------------------------------------

def _done(number: int, value: float, at: float, origin: datetime, state=TrialState.COMPLETE) -> FrozenTrial:
    return FrozenTrial(number=number, state=state, value=value if state == TrialState.COMPLETE else None,
                       datetime_start=origin + timedelta(seconds=at - 1), datetime_complete=origin + timedelta(seconds=at),
                       params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}, user_attrs={},
                       system_attrs={}, intermediate_values={1: value}, trial_id=number)


def test_the_anytime_curve_steps_at_each_improvement_in_seconds_since_the_start():
    origin = datetime(2026, 1, 1, 12, 0, 0)
    trials = [_done(0, 0.5, 5, origin), _done(1, 0.4, 7, origin), _done(3, 0.8, 12, origin),
              _done(2, 0.8, 9, origin), _done(4, 0.9, 11, origin, TrialState.PRUNED)]
    curve = anytime_curve(trials, ["maximize"], origin.timestamp() - 3)  # the search began 3 s before origin
    assert [(p.seconds, p.value, p.trial) for p in curve] == [(8.0, 0.5, 0), (12.0, 0.8, 2)]
    assert curve[-1].trial == best_trial(trials, ["maximize"]).number  # a tie keeps the earlier trial
    lowest = anytime_curve(trials, ["minimize"])  # no start stored: the first trial's start
    assert [(p.seconds, p.value, p.trial) for p in lowest] == [(1.0, 0.5, 0), (3.0, 0.4, 1)]
    assert anytime_curve([_done(0, 0.1, 1, origin, TrialState.PRUNED)], ["maximize"]) == []


# -- the initial design -------------------------------------------------------------------------------

def test_dimensions_map_the_unit_interval_low_to_high():
    assert [Int(4, 24, 4).at(u) for u in (0.0, 0.2, 0.5, 1.0)] == [4, 8, 16, 24]
    assert [Float(1e-4, 1e-2, log=True).at(u) for u in (0.0, 0.5, 1.0)] == pytest.approx([1e-4, 1e-3, 1e-2])
    assert Float(1.0, 2.0, step=0.25).at(0.6) == 1.5
    assert [Categorical((4.0, 1.0, 6.0)).at(u) for u in (0.0, 0.5, 1.0)] == [1.0, 4.0, 6.0]  # numbers: by size
    assert [Categorical(("se", "none")).at(u) for u in (0.0, 0.99)] == ["se", "none"]  # names: as declared
    assert Categorical((1, 2)).ordered and not Categorical(("a", 1)).ordered and Int(1, 2).ordered


def _context(space: str, seed: int = 0, **constraints) -> TrialContext:
    return TrialContext.create(SearchConfig(space=space, dataset="digits", limit=100, seed=seed,
                                            constraints=constraints))


def _sampled_costs(ctx: TrialContext, n: int) -> list[tuple[int, int]]:
    """(params, FLOPs) of `n` random feasible candidates: the space's range as sampling sees it."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=123))
    costs = []
    while len(costs) < n:
        genotype = ctx.sample(study.ask())
        meta = meta_model(genotype)
        params = count_params(meta)
        if params <= ctx.constraints.get("max_params", float("inf")):
            costs.append((params, count_meta_flops(meta, genotype)))
    return costs


def _decile(values, q: float) -> float:
    return sorted(values)[int(q * (len(values) - 1))]


@pytest.mark.parametrize("space", [SPACE, "vgg", "auto"])
def test_the_design_spans_the_space_from_its_cheapest_candidates(space):
    ctx = _context(space)
    design = initial_design(ctx, 5)
    sampled = _sampled_costs(ctx, 40)
    params = [p.params_count for p in design]
    assert len(design) >= 4
    if space == "auto":  # up the size range across families that differ in size (its middle rungs were all large)
        sizes = sorted(math.log(p) for p in params)
        assert max(b - a for a, b in zip(sizes, sizes[1:])) <= 0.5 * (sizes[-1] - sizes[0]), params
    assert min(params) <= _decile([p for p, _ in sampled], 0.1)
    assert max(params) >= _decile([p for p, _ in sampled], 0.9)
    rungs = [p for p in design if p.rung >= 0]  # after the space's start points, if any
    assert [p.seconds for p in rungs] == sorted(p.seconds for p in rungs)  # fastest first (predicted)
    assert rungs[0].flops <= _decile([f for _, f in sampled], 0.1)
    for point in design:  # the costs are cached for the trials, which price nothing again
        cached = ctx.costs[point.arch_id]
        assert (cached["params"], cached["flops"], cached["layers"] > 0) == (point.params_count, point.flops, True)


def test_a_spaces_start_points_come_first_in_the_design():
    start = load_space("plain_cnn").start_points()
    assert start
    for space, family in (("plain_cnn", None), ("auto", "plain_cnn")):
        design = initial_design(_context(space), 5)
        expected = start[0] if family is None else {"family": family, **{f"{family}.{k}": v for k, v in start[0].items()}}
        assert design[0].params == expected and design[0].rung == -1
        assert len(design) >= 5 and all(p.rung >= 0 for p in design[1:])
    assert initial_design(_context("plain_cnn"), 0) == []


def test_a_start_point_too_slow_for_a_first_look_comes_twice_under_a_timeout():
    """Priced above FIRST_LOOK_SHARE of the budget (12 epochs of ~0.4 s against 1 s of a 20 s budget), the first
    point comes again second, to be trained in full once its first look has calibrated the time model; under a
    budget it fits in, or with no budget, it comes once."""
    def design(timeout):
        ctx = TrialContext.create(SearchConfig(space="plain_cnn", dataset="digits", timeout=timeout))
        return initial_design(ctx, 5)

    short, roomy, unbounded = design(20.0), design(3600.0), design(None)
    assert short[0].seconds * 12 > FIRST_LOOK_SHARE * 20 and roomy[0].seconds * 12 <= FIRST_LOOK_SHARE * 3600
    assert short[0] == short[1] and short[0].rung == -1 and short[2].rung >= 0
    assert [p.params for p in short[1:]] == [p.params for p in roomy] == [p.params for p in unbounded]


def test_the_design_is_a_function_of_the_seed_and_keeps_the_constraints():
    first, again, other = (initial_design(_context("vgg", seed), 5) for seed in (0, 0, 1))
    assert [p.params for p in first] == [p.params for p in again]
    assert [p.params for p in first] != [p.params for p in other]
    limit = 2_000_000
    bounded = initial_design(_context("vgg", max_params=limit), 5)
    assert len(bounded) >= 4 and all(p.params_count <= limit for p in bounded)
    assert max(p.params_count for p in bounded) > limit / 4  # it still climbs towards the limit
    assert initial_design(_context("vgg"), 0) == []


def test_the_design_sampler_hands_its_points_to_the_trials_after_the_presets():
    study = optuna.create_study(sampler=DesignSampler(optuna.samplers.RandomSampler(seed=0), [{"x": 0.25}, {"x": 0.75}],
                                                      offset=1))
    values = [study.ask().suggest_float("x", 0.0, 1.0) for _ in range(4)]
    assert values[1:3] == [0.25, 0.75] and values[0] not in (0.25, 0.75) and values[3] not in (0.25, 0.75)


def test_the_clis_time_budget_counts_from_the_start_of_its_process():
    """`process_started` is when the process began, not when it was asked: a process that sleeps half a second
    before asking is half a second older, whatever it imported since (the CLI passes it to `run_search`)."""
    code = ("import time; before = time.time(); time.sleep(0.5)\n"
            "from autocnn.search.budget import process_started\n"
            "print(before - process_started(), time.time() - process_started())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    startup, age = map(float, result.stdout.split())
    assert 0.0 <= startup < 0.45  # the interpreter's own start-up, before the script's first line
    assert age >= 0.5 + startup - 0.02  # the sleep and the import count
