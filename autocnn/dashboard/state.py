"""What the dashboard shows about a study, read from the storage alone.

The state, the best trials and the worker lease come from `autocnn.search.control`, the same
answers `autocnn studies`, `autocnn best`, `autocnn report` and `autocnn export` give. Because
everything is read from the storage, a restarted dashboard sees exactly what the old one saw.
"""
from __future__ import annotations

import math
import re
from typing import Any

from optuna.trial import TrialState

from autocnn.errors import AutocnnError
from autocnn.genotype import Genotype
from autocnn.search import control, records
from autocnn.search.control import StudyView
from autocnn.storage import study_names

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class DashboardError(AutocnnError):
    """A request the dashboard refuses; `status` is the HTTP status it maps to."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_name(name: str) -> str:
    """A study name the dashboard may act on: letters, digits, `_ . -`, not starting with `.` or `-`."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise DashboardError(400, f"malformed study name {name!r}: use 1-128 letters, digits, '_', '.' or '-', "
                                  "starting with a letter or digit")
    return name


def inspect(storage, name: str, *, owned_alive: bool = False) -> StudyView:
    """`control.inspect`, with an unknown study as a 404."""
    try:
        return control.inspect(storage, name, owned_alive=owned_alive)
    except control.UnknownStudyError:
        raise DashboardError(404, f"no study named {name!r} in this storage") from None


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def row(view: StudyView) -> dict[str, Any]:
    """The studies-page row (and `GET /api/autocnn/studies` item) for one study."""
    config, best = view.config, view.best
    lease = view.lease
    ray = (config.extra or {}).get("ray", {}) if config else {}
    return {
        "name": view.name, "study_id": view.study_id, "autocnn": config is not None,
        "controllable": config is not None and bool(NAME_PATTERN.match(view.name)),
        "state": view.state, "space": config.space.split(":")[0] if config else None,
        "dataset": config.dataset if config else None, "backend": config.backend if config else None,
        "ray_address": ray.get("address") if isinstance(ray, dict) else None,
        "objectives": list(config.objectives) if config else None, "directions": view.directions,
        "complete": view.counts.get("complete", 0), "pruned": view.counts.get("pruned", 0),
        "rejected": view.counts["rejected"], "rejected_time": view.counts["would_not_finish"],
        "failed": view.counts.get("fail", 0),
        "running": view.counts.get("running", 0),
        "finished": view.finished, "requested": view.requested,
        "best": _finite(best.values[0]) if best else None, "best_trial": best.number if best else None,
        "pareto_size": len(view.pareto) if len(view.directions) > 1 else None,
        "last_activity": control.last_activity(view), "stop_requested": view.stop_requested,
        "worker": ({**lease, "alive": view.lease_alive} if lease else None),
        "resumable_in_s": view.resumable_in_s,
    }


def list_studies(storage) -> list[str]:
    return study_names(storage)


def detail(view: StudyView, *, top: int = 10) -> dict[str, Any]:
    """The study page: best trials with genotype strings, the best architecture stage by stage,
    cost-vs-accuracy points and links into optuna-dashboard."""
    ranked = view.ranked()
    best_numbers = {t.number for t in ranked[:top]} if len(view.directions) == 1 else {t.number for t in ranked}
    base = f"/dashboard/studies/{view.study_id}"
    best = []
    for t in ranked[:top] if len(view.directions) == 1 else ranked:
        summary = records.summary(t)
        summary["values"] = [_finite(v) for v in summary["values"] or []]
        summary["link"] = f"{base}/trials?numbers={t.number}"
        best.append(summary)
    stages, stage_error = [], None
    if ranked and records.GENOTYPE in ranked[0].user_attrs:
        try:
            stages = control.stage_rows(Genotype.from_dict(ranked[0].user_attrs[records.GENOTYPE]))
        except (AutocnnError, ValueError, TypeError) as err:
            stage_error = str(err)
    points = [{"number": t.number, "value": _finite(t.values[0]), "params": t.user_attrs.get(records.PARAMS),
               "flops": t.user_attrs.get(records.FLOPS), "latency_ms": t.user_attrs.get(records.LATENCY),
               "best": t.number in best_numbers}
              for t in view.trials if t.state == TrialState.COMPLETE and t.values]
    return {
        "study": row(view), "config": view.config.to_dict() if view.config else None,
        "best": best, "best_stages": stages, "best_stages_error": stage_error, "points": points,
        "links": {"history": base, "analytics": f"{base}/analytics", "trials": f"{base}/trials",
                  "trial_table": f"{base}/trialTable", "note": f"{base}/note"},
    }
