"""The time budget (`--timeout`) and time-priced candidates, through the real CLI on both backends.

A search with a timeout ends on time: running trials stop at an epoch boundary, recorded as pruned
with their last score and weights; candidates whose predicted training would not finish in the time
left are rejected untrained, at no cost, with both figures. Bounds on overrun come from the run's own
records (its longest epoch, its start-up), never from a fixed timing constant.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autocnn.search import records
from autocnn.search.budget import BUDGET_ATTR, TIME_REJECTIONS_TO_END
from conftest import run_cli
from test_backend_conformance import FAST, SPACE, search  # noqa: F401 - the two-backend fixture

# The budget includes loading the data and warming up torch (seconds on a busy machine); Ray also starts its
# workers inside it (under a loaded CI machine they have taken over 25 s to start).
TIMEOUT = {"local": 15, "ray": 35}
# Epochs no trial of the tiny space finishes inside those budgets: at 60, on a fast machine (0.05 s an epoch),
# three trials completed in 15 s and the fourth found no time left, so the deadline stopped none
LONG_EPOCHS = 1000


def _space(tmp_path: Path, widths: str) -> str:
    """tiny_space.yaml with the first stage's width one of `widths` (the second stage doubles it)."""
    path = tmp_path / "space.yaml"
    path.write_text(Path(SPACE).read_text().replace("{int: [4, 24], step: 4}", f"{{choices: {widths}}}"))
    return str(path)


def _seconds(trial) -> float:
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def test_timeout_ends_the_search_on_time_and_keeps_the_stopped_trials(search):
    timeout = TIMEOUT[search.name]
    launched = time.time()
    search(*FAST, "--epochs", str(LONG_EPOCHS), "--trials", "50", "--timeout", f"{timeout}s", "--max-trial-share",
           "none", "--pruner", "none", "--study", "t")
    ended = time.time()
    study = search.study("t")
    trials = study.get_trials()
    budget = study.user_attrs[BUDGET_ATTR]
    assert budget["timeout_s"] == timeout and budget["ends_at"] == pytest.approx(budget["started"] + timeout)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    trained = [t for t in trials if t.user_attrs.get(records.EPOCH_SECONDS)]
    assert trained, [(t.number, t.state.name, t.user_attrs.get(records.REJECTED)) for t in trials]
    longest = max(s for t in trained for s in t.user_attrs[records.EPOCH_SECONDS])
    # what a trial costs besides its epochs (pricing, test evaluation, saving, the storage), as recorded
    overhead = max(_seconds(t) - t.user_attrs[records.WALL_TIME] for t in trained) + max(
        t.user_attrs[records.WALL_TIME] - sum(t.user_attrs[records.EPOCH_SECONDS]) for t in trained)
    last_end = max(t.datetime_complete.timestamp() for t in trials)
    assert last_end <= budget["ends_at"] + 2 * longest + overhead, (last_end - budget["ends_at"], longest, overhead)
    startup = budget["started"] - launched  # imports before the clock starts; the exit costs no more
    assert ended - launched <= startup + timeout + 2 * longest + overhead + startup, (ended - launched, startup)

    stopped = [t for t in trials if records.OUT_OF_TIME in t.user_attrs]
    assert stopped, f"{LONG_EPOCHS}-epoch trials of a 15-25 s budget: the deadline must stop one"
    for t in stopped:
        curve = t.user_attrs[records.VAL_CURVE]
        assert t.state == TrialState.PRUNED and records.REJECTED not in t.user_attrs  # it used the budget
        assert 1 <= len(curve) < LONG_EPOCHS and list(t.intermediate_values.values()) == curve
        assert t.values == [curve[-1]]  # valued by its last score, like a trial the pruner stops
        assert len(t.user_attrs[records.EPOCH_SECONDS]) == len(curve)
        assert (search.path / t.user_attrs[records.WEIGHTS_PATH]).is_file()


def test_candidates_that_would_not_finish_are_rejected_untrained(search, tmp_path):
    """One cheap width and one that needs minutes per epoch, in a two-minute budget."""
    space = _space(tmp_path, "[4, 4096]")
    result = search("--space", space, *FAST[2:], "--epochs", "3", "--trials", "2", "--timeout", "2m",
                    "--sampler", "random", "--pruner", "none", "--study", "r")
    trials = search.trials("r")
    big = [t for t in trials if t.params["width"] == 4096]
    small = [t for t in trials if t.params["width"] == 4]
    assert big and small, [t.params for t in trials]
    for t in big:
        attrs = t.user_attrs
        assert t.state == TrialState.PRUNED and records.rejected_for_time(t), attrs.get(records.REJECTED)
        predicted, left = attrs[records.PREDICTED_S], attrs[records.REMAINING_S]
        # Priced once the device was timed, its first look alone needs more than the half the default share
        # keeps back, so it has the last call on all of the time left (`engine.price_time`), and not even that
        # holds it; priced before (Ray prices trials side by side), the default share, 0.5, applies.
        last_call = attrs[records.TIME_MODEL_EPOCHS] > 0 and left > 0
        assert predicted > (left if last_call else 0.5 * left)
        assert attrs[records.REJECTED] == (f"would not finish: predicted {predicted}s > remaining {left}s"
                                           + ("" if last_call or left <= 0 else " x 0.5"))
        assert not t.intermediate_values and records.EPOCH_SECONDS not in attrs and records.WEIGHTS_PATH not in attrs
    trained = [t for t in small if t.state == TrialState.COMPLETE]
    assert trained, [(t.number, t.state.name) for t in small]
    for t in trained:  # every trained trial records predicted vs measured seconds per epoch
        assert t.user_attrs[records.PREDICTED_EPOCH_S] > 0 and len(t.user_attrs[records.EPOCH_SECONDS]) == 3
    assert "would not finish" in result.stderr  # the progress line of a rejection

    shown = run_cli("studies", "--storage", search.storage, "--format", "json")
    row = next(r for r in json.loads(shown.stdout) if r["name"] == "r")
    assert row["rejected"] == {"constraints": 0, "would not finish": len(big)}
    table = run_cli("studies", "--storage", search.storage)
    assert f"rejected: would not finish {len(big)}" in table.stdout, table.stdout

    # a resume gets a budget of its own, and the study's epochs calibrate its time model
    before = _budget(search, "r")
    search("--resume", "--study", "r", "--trials", "3", "--timeout", "90s", local=True)
    after = _budget(search, "r")
    assert (before["timeout_s"], after["timeout_s"]) == (120, 90)
    assert after["started"] >= before["started"] and after["ends_at"] == pytest.approx(after["started"] + 90)
    trained = [t for t in search.trials("r") if t.state == TrialState.COMPLETE]
    calibrated = [t.user_attrs[records.TIME_MODEL_EPOCHS] for t in trained]
    assert len(trained) == 3 and calibrated == sorted(calibrated) and calibrated[-1] >= 6, calibrated
    shown = json.loads(run_cli("best", "--study", "r", "--storage", search.storage, "--json").stdout)["time_model"]
    assert shown["trials"] == 3 and shown["median_error"] >= 0
    out = search.path / "report"
    assert run_cli("report", "--study", "r", "--storage", search.storage, "--out", str(out)).returncode == 0
    assert (f"training-time model: median error {shown['median_error']:.0%} over 3 trained trials"
            in (out / "index.html").read_text())


def test_a_budget_no_candidate_fits_ends_the_search_without_an_error(cli, tmp_path):
    """Every candidate needs minutes: the search ends once it has rejected enough in a row, well before its
    deadline and without the constraints' "rejected N in a row" error."""
    space = _space(tmp_path, "[4096]")
    result = cli("search", "--space", space, *FAST[2:], "--epochs", "3", "--trials", "5", "--timeout", "10m",
                 "--study", "n")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "time budget spent" in result.stderr and "Traceback" not in result.stderr
    trials = _study(cli, "n").get_trials()
    assert len(trials) == TIME_REJECTIONS_TO_END and all(records.rejected_for_time(t) for t in trials)


def test_candidates_too_large_for_a_look_do_not_spend_the_budget():
    """Rejections because a first look is too large a share of the budget say nothing about the time left:
    a sampler may still propose smaller candidates, so a run of them does not end the search as spent."""
    from autocnn.search.budget import MAX_REJECTIONS, rejection_verdict

    def reject(study, reason, n):
        for _ in range(n):
            trial = study.ask()
            trial.set_user_attr(records.REJECTED, reason)
            study.tell(trial, state=TrialState.PRUNED)

    look = f"{records.WOULD_NOT_FINISH}: predicted 14.2s {records.FIRST_LOOK} > 0.2 x the 60s budget"
    left = f"{records.WOULD_NOT_FINISH}: predicted 30.0s > remaining 20.0s x 0.5"
    study = optuna.create_study(direction="maximize")
    reject(study, look, TIME_REJECTIONS_TO_END + 5)
    assert rejection_verdict(study) is None
    reject(study, left, TIME_REJECTIONS_TO_END - 1)
    assert rejection_verdict(study) is None
    reject(study, left, 1)
    assert rejection_verdict(study) == "time"
    many = optuna.create_study(direction="maximize")
    reject(many, "params 3e+07 exceeds max_params 2e+07", MAX_REJECTIONS - 1)
    reject(many, look, 1)  # a long run that includes them: spent time, not impossible constraints
    assert rejection_verdict(many) == "time"
    assert records.rejected_for_a_look(many.trials[-1]) and not records.rejected_for_a_look(study.trials[-1])


def test_a_full_training_that_does_not_fit_is_fitted_to_the_time_left(cli, tmp_path):
    """500 epochs never fit a 15 s budget, a few dozen do: candidates train a complete shorter schedule
    (`planned_epochs`) instead of being rejected, and the search still ends on time."""
    space = _space(tmp_path, "[4]")
    result = cli("search", "--space", space, *FAST[2:], "--epochs", "500", "--timeout", "15s", "--pruner", "none",
                 "--study", "fit")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = _study(cli, "fit").get_trials()
    fitted = [t for t in trials if t.state == TrialState.COMPLETE and records.PLANNED_EPOCHS in t.user_attrs]
    assert fitted, [(t.state.name, t.user_attrs.get(records.REJECTED), t.user_attrs.get(records.OUT_OF_TIME))
                    for t in trials]
    for t in fitted:
        planned = t.user_attrs[records.PLANNED_EPOCHS]
        # trained to its own end; at least its first look (3 epochs), unless it continues another's weights and
        # settles them in the one or two epochs left (`records.SETTLING`: the one candidate here is always a repeat)
        settles = t.user_attrs.get(records.SETTLING) and t.user_attrs.get(records.CONTINUES) is not None
        assert 3 <= planned < 500 or (settles and planned < 3), (t.number, planned)
        assert len(t.user_attrs[records.VAL_CURVE]) == planned
        assert t.values == [max(t.user_attrs[records.VAL_CURVE])]
    budget = _study(cli, "fit").user_attrs[BUDGET_ATTR]
    longest = max(s for t in trials for s in t.user_attrs.get(records.EPOCH_SECONDS, [0.0]))
    assert max(t.datetime_complete.timestamp() for t in trials) <= budget["ends_at"] + 2 * longest + 5


def _study(runner, name: str):
    """The study `name` of a `cli` or `search` runner's storage."""
    import optuna

    return optuna.load_study(study_name=name, storage=runner.storage)


def _budget(runner, name: str) -> dict:
    return _study(runner, name).user_attrs[BUDGET_ATTR]
