"""What a trial records in the study, under fixed attribute names, so `studies`, `best`, `export`
and the dashboard read everything from the storage alone."""
from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial

from autocnn.genotype import Genotype
from autocnn.storage import set_trial_user_attrs

GENOTYPE = "genotype"
ARCH = "arch"
ARCH_ID = "arch_id"
PARAMS = "params"
FLOPS = "flops"
LATENCY = "latency_ms"
VAL_CURVE = "val_curve"
EPOCHS_RUN = "epochs_run"
BEST_EPOCH = "best_epoch"  # 1-based: the epoch whose weights were saved and whose figures were recorded
WALL_TIME = "wall_time"
TRAIN_LOSS = "train_loss"  # mean training loss of the last epoch run (with the recipe's smoothing and mixing)
TEST_METRIC = "test_metric"
METRIC = "metric"
REJECTED = "rejected"
FAIL_REASON = "fail_reason"
ENQUEUED = "enqueued_preset"
OUTSIDE_SPACE = "outside_space"  # an enqueued preset the space cannot express, trained as a fixed architecture
START_WEIGHTS = "start_weights"  # the reference weights file a fine-tuned trial started from
CONTINUES = "continues"  # the trial (its number) whose weights this one starts from: a design point's first look,
# or the finished twin of a repeated proposal (`engine.trained_twin_of`)
WEIGHTS_PATH = "weights_path"  # trained weights, relative to the artifact root (autocnn.artifacts)
LAYERS = "layers"  # leaf modules of the built network: the per-step overhead the time model prices
ACTIVATIONS = "activations"  # elements the ops of one image's forward pass write: memory traffic, priced alike
EPOCH_SECONDS = "epoch_seconds"  # wall seconds of each finished epoch (training and validation)
PREDICTED_EPOCH_S = "predicted_epoch_s"  # seconds per epoch the time model predicted before training
TIME_MODEL_EPOCHS = "time_model_epochs"  # finished epochs of the study the prediction was fitted on
PLANNED_EPOCHS = "planned_epochs"  # fewer epochs than the run's, fitted to the time left (price_time)
SETTLING = "settling"  # a continuation given fewer epochs than its look: no warm-up, a tenth of the rate (price_time)
POLISHES = "polishes"  # the fully trained best (its number) this trial settles further with time nothing new fits in
PREDICTED_S = "predicted_s"  # a candidate rejected for time: its predicted training seconds
REMAINING_S = "remaining_s"  # ... and the seconds left of the run's time budget when it was priced
OUT_OF_TIME = "out_of_time"  # a trial the --timeout stopped at an epoch boundary (pruned, weights saved)
WOULD_NOT_FINISH = "would not finish"  # how a REJECTED message for time begins
FIRST_LOOK = "for a first look"  # in a REJECTED message for time: the look is too large a share of the budget
DESIGN = "initial_design"  # the point of the initial design a trial took (autocnn.search.design), 0: cheapest
# what the Ray driver records and hands its worker, which prices the trial again (`engine.price_time` reads them)
PRICED_WITH = (CONTINUES, POLISHES, DESIGN)
# --prescreen (autocnn.search.prescreen): the proxy, the trained candidate's score at initialisation (None:
# could not be scored), how many candidates were screened for the trial (1: a preset, a design point or a
# retry, scored alone) and each candidate's arch id and score in the order drawn (None: outside the space's
# `require`, over the params/FLOPs limits, or it failed to run); the trained one is the best-scored
# --strategy oneshot (autocnn.search.oneshot): how the trial was valued ("oneshot": weights inherited from a
# supernet and validated untrained; absent: trained), the supernet's name and the epochs it had been trained
EVALUATION = "evaluation"
SUPERNET = "supernet"
SUPERNET_EPOCHS = "supernet_epochs"
PROXY = "proxy"
PROXY_SCORE = "proxy_score"
PROXY_SCREENED = "proxy_screened"
PROXY_CANDIDATES = "proxy_candidates"
PROXY_SCORES = "proxy_scores"


class HeldAttrs:
    """`trial` with its user-attribute writes held back (in `attrs`), so that what a space records while
    sampling is written in one go with the architecture; everything else goes to `trial`."""

    def __init__(self, trial) -> None:
        self._trial = trial
        self.attrs: dict[str, Any] = {}

    def set_user_attr(self, key: str, value: Any) -> None:
        self.attrs[key] = value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)


def record_architecture(trial, genotype: Genotype, start_weights: str | None = None,
                        held: dict[str, Any] | None = None) -> None:
    """The genotype, its compact string and id, and the weights file a fine-tuned trial starts from,
    with the attributes `held` back while sampling, in one write."""
    attrs = {**(held or {}), GENOTYPE: genotype.to_dict(), ARCH: genotype.to_string(), ARCH_ID: genotype.arch_id}
    if start_weights:
        attrs[START_WEIGHTS] = start_weights
    set_trial_user_attrs(trial, attrs)


def record_costs(trial, costs: dict[str, Any], rejected: str | None = None) -> None:
    """Params, FLOPs and latency (None: not measured, no latency objective or limit), and why the
    constraints rejected the candidate if they did."""
    latency = costs.get("latency_ms")
    attrs = {PARAMS: int(costs["params"]), FLOPS: int(costs["flops"]),
             LATENCY: None if latency is None else float(latency)}
    if "layers" in costs:
        attrs[LAYERS] = int(costs["layers"])
    if "activations" in costs:
        attrs[ACTIVATIONS] = int(costs["activations"])
    if rejected:
        attrs[REJECTED] = rejected
    set_trial_user_attrs(trial, attrs)


def record_result(trial, result, params: int) -> None:
    trial.set_user_attr(METRIC, result.metric_name)
    trial.set_user_attr(VAL_CURVE, list(result.val_curve))
    trial.set_user_attr(EPOCHS_RUN, result.epochs_run)
    trial.set_user_attr(BEST_EPOCH, result.best_epoch)
    trial.set_user_attr(TRAIN_LOSS, float(result.train_loss))
    if result.test_metric is not None:
        trial.set_user_attr(TEST_METRIC, float(result.test_metric))
    for key, value in result.extra.items():
        trial.set_user_attr(key, float(value))


def record_epoch_seconds(trial, seconds: list[float]) -> None:
    trial.set_user_attr(EPOCH_SECONDS, [round(s, 4) for s in seconds])


def rejected_for_time(trial) -> bool:
    """A candidate rejected untrained because its predicted training would not finish in the time left."""
    return str(trial.user_attrs.get(REJECTED, "")).startswith(WOULD_NOT_FINISH)


def rejected_for_a_look(trial) -> bool:
    """A candidate rejected for time because even its first look would take too much of the whole budget
    (`engine.price_time`, `LOOK_SHARE`): the budget's size, not the time left, rules it out."""
    return rejected_for_time(trial) and FIRST_LOOK in str(trial.user_attrs.get(REJECTED, ""))


def genotype_of(trial: FrozenTrial) -> Genotype:
    return Genotype.from_dict(trial.user_attrs[GENOTYPE])


def summary(trial: FrozenTrial) -> dict[str, Any]:
    """One flat row per trial for tables and JSON output."""
    attrs = trial.user_attrs
    return {
        "number": trial.number, "state": trial.state.name,
        "values": list(trial.values) if trial.values else None,
        "test_metric": attrs.get(TEST_METRIC), "metric": attrs.get(METRIC, "accuracy"),
        "params": attrs.get(PARAMS), "flops": attrs.get(FLOPS), "latency_ms": attrs.get(LATENCY),
        "epochs_run": attrs.get(EPOCHS_RUN), "wall_time": attrs.get(WALL_TIME),
        "arch": attrs.get(ARCH), "rejected": attrs.get(REJECTED), "fail_reason": attrs.get(FAIL_REASON),
        "out_of_time": attrs.get(OUT_OF_TIME), "proxy": attrs.get(PROXY), "proxy_score": attrs.get(PROXY_SCORE),
    }
