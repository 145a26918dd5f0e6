"""What a trial records in the study, under fixed attribute names, so `studies`, `best`, `export`
and the dashboard read everything from the storage alone."""
from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial

from autocnn.genotype import Genotype

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
TEST_METRIC = "test_metric"
METRIC = "metric"
REJECTED = "rejected"
FAIL_REASON = "fail_reason"
ENQUEUED = "enqueued_preset"
OUTSIDE_SPACE = "outside_space"  # an enqueued preset the space cannot express, trained as a fixed architecture
START_WEIGHTS = "start_weights"  # the reference weights file a fine-tuned trial started from
WEIGHTS_PATH = "weights_path"  # trained weights, relative to the artifact root (autocnn.artifacts)


def record_architecture(trial, genotype: Genotype) -> None:
    trial.set_user_attr(GENOTYPE, genotype.to_dict())
    trial.set_user_attr(ARCH, genotype.to_string())
    trial.set_user_attr(ARCH_ID, genotype.arch_id)


def record_costs(trial, costs: dict[str, Any]) -> None:
    trial.set_user_attr(PARAMS, int(costs["params"]))
    trial.set_user_attr(FLOPS, int(costs["flops"]))
    latency = costs.get("latency_ms")  # None: not measured (no latency objective or limit)
    trial.set_user_attr(LATENCY, None if latency is None else float(latency))


def record_result(trial, result, params: int) -> None:
    trial.set_user_attr(METRIC, result.metric_name)
    trial.set_user_attr(VAL_CURVE, list(result.val_curve))
    trial.set_user_attr(EPOCHS_RUN, result.epochs_run)
    trial.set_user_attr(BEST_EPOCH, result.best_epoch)
    if result.test_metric is not None:
        trial.set_user_attr(TEST_METRIC, float(result.test_metric))
    for key, value in result.extra.items():
        trial.set_user_attr(key, float(value))


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
    }
