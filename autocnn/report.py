"""`autocnn report`: PNG figures and one self-contained HTML page for a study (no network needed)."""
from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from autocnn.search import control, records, timing  # noqa: E402
from autocnn.storage import open_storage  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _history(study, complete, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [t.number for t in complete]
    ys = [t.values[0] for t in complete]
    ax.scatter(xs, ys, s=18, label="trial")
    best, running = [], None
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    for y in ys:
        running = y if running is None else (max(running, y) if maximize else min(running, y))
        best.append(running)
    ax.step(xs, best, where="post", color="C3", label="best so far")
    ax.set(xlabel="trial", ylabel="validation metric", title="Optimisation history")
    ax.legend()
    return _save(fig, out / "history.png")


def _anytime(view, complete, out: Path) -> Path:
    """Best so far against wall time since the search started (`control.anytime_curve`), every complete
    trial at its completion, and the --timeout when there was one."""
    curve, origin = view.anytime, view.started
    timeout = view.config.timeout
    done = [(t.datetime_complete - origin).total_seconds() for t in complete]
    end = max([*done, timeout or 0.0])
    unit, scale = ("min", 60.0) if end > 300 else ("s", 1.0)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([x / scale for x in done], [t.values[0] for t in complete], s=14, color="0.6", label="complete trial")
    ys = [p.value for p in curve]
    ax.step([*(p.seconds / scale for p in curve), end / scale], [*ys, ys[-1]], where="post", color="C3",
            label="best so far")
    if timeout:
        ax.axvline(timeout / scale, color="0.3", linestyle="--", linewidth=1, label="--timeout")
    ax.set(xlabel=f"wall time since the search started ({unit})", ylabel="validation metric",
           title="Best so far vs wall time", xlim=(0, None))
    ax.legend()
    return _save(fig, out / "best_vs_time.png")


def _cost_scatter(complete, out: Path) -> list[Path]:
    paths = []
    for cost in (records.PARAMS, records.FLOPS):
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.scatter([t.user_attrs[cost] for t in complete], [t.values[0] for t in complete], s=18)
        ax.set_xscale("log")
        ax.set(xlabel=cost, ylabel="validation metric", title=f"Accuracy vs {cost}")
        paths.append(_save(fig, out / f"accuracy_vs_{cost}.png"))
    return paths


def _pareto(study, view, complete, out: Path) -> list[Path]:
    """One scatter per pair of objectives (objective i against objective j, i < j), so a three-objective
    study shows accuracy-params, accuracy-flops and params-flops, not only its first two objectives."""
    front = {t.number for t in view.pareto}
    n = len(study.directions)
    names = study.metric_names or [f"objective {i}" for i in range(n)]
    paths = []
    for i in range(n):
        for j in range(i + 1, n):
            fig, ax = plt.subplots(figsize=(6, 4))
            for on_front in (False, True):
                pts = [t for t in complete if (t.number in front) == on_front]
                ax.scatter([t.values[j] for t in pts], [t.values[i] for t in pts], s=24 if on_front else 12,
                           color="C3" if on_front else "C0", label="Pareto front" if on_front else "other trials")
            if all(t.values[j] > 0 for t in complete):  # costs span orders of magnitude
                ax.set_xscale("log")
            ax.set(xlabel=names[j], ylabel=names[i], title=f"Pareto front: {names[i]} vs {names[j]}")
            ax.legend()
            stem = "pareto_front" if n == 2 else f"pareto_front_{_slug(names[i])}_vs_{_slug(names[j])}"
            paths.append(_save(fig, out / f"{stem}.png"))
    return paths


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def _curves(study, complete, out: Path, top: int = 5) -> Path:
    ranked = sorted(complete, key=lambda t: t.values[0], reverse=study.directions[0].name == "MAXIMIZE")[:top]
    fig, ax = plt.subplots(figsize=(6, 4))
    for t in ranked:
        curve = t.user_attrs.get(records.VAL_CURVE, [])
        ax.plot(range(1, len(curve) + 1), curve, marker="o", ms=3, label=f"trial {t.number}")
    ax.set(xlabel="epoch", ylabel="validation metric", title=f"Learning curves of the top {len(ranked)}")
    ax.legend()
    return _save(fig, out / "learning_curves.png")


def _importances(study, out: Path) -> Path | None:
    try:
        importances = optuna.importance.get_param_importances(study, target=lambda t: t.values[0])
    except (RuntimeError, ValueError, ZeroDivisionError):  # too few trials or a single distinct value
        return None
    if not importances:
        return None
    names = list(importances)[:15][::-1]
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.3 * len(names) + 1)))
    ax.barh(names, [importances[n] for n in names])
    ax.set(xlabel="importance (fANOVA)", title="Parameter importances")
    return _save(fig, out / "param_importances.png")


def _stage_rows(trial) -> list[list[str]]:
    return [[f"{'stem' if r['section'] == 'stem' else ''}{r['index']}", r["block"], str(r["repeats"]),
             str(r["out_chs"] or "same"), str(r["stride"]), str(r["kernel"]), f"{r['expansion']:g}", r["conv"],
             r["attention"], f"{r['ratio']:g}" if r["ratio"] is not None else ""]
            for r in control.stage_rows(records.genotype_of(trial)) if r["section"] != "head"]


def write_report(study_name: str, storage: str | None, out_dir: str | os.PathLike) -> Path:
    """Write the figures and `index.html` into `out_dir`; returns the HTML path."""
    from autocnn.search.engine import StudyError, missing_config

    backend = open_storage(storage, create=False, heartbeat=False)
    view = control.inspect(backend, study_name)
    if view.config is None:
        raise missing_config(study_name, bool(view.trials))
    study = optuna.load_study(study_name=study_name, storage=backend)
    complete = [t for t in view.trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise StudyError(f"study {study_name!r} has no complete trial to report on; run or resume it first")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = [_history(study, complete, out), _anytime(view, complete, out), *_cost_scatter(complete, out), _curves(study, complete, out)]
    if len(study.directions) > 1:
        figures.extend(_pareto(study, view, complete, out))
    importance = _importances(study, out)
    if importance:
        figures.append(importance)
    page = out / "index.html"
    page.write_text(_html(study, view, figures), encoding="utf-8")
    return page


def _html(study, view, figures) -> str:
    config, best = view.config, view.best
    head = ["#", "block", "repeats", "out", "stride", "kernel", "expansion", "conv", "attention", "ratio"]
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in _stage_rows(best))
    imgs = "".join(
        f'<figure><img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        f"<figcaption>{p.stem.replace('_', ' ').capitalize()}</figcaption></figure>" for p in figures)
    summary = records.summary(best)
    time_model = timing.error_line(view.trials)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(study.study_name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}figure{{display:inline-block;margin:1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px}}</style></head><body>
<h1>Study {html.escape(study.study_name)}</h1>
<p>space {html.escape(config.space.split(':')[0])} · dataset {html.escape(config.dataset)} ·
{len(view.trials)} trials · objectives {html.escape(', '.join(config.objectives))} ·
state <span id="state">{view.state}</span></p>
{f'<p id="time-model">{html.escape(time_model)}</p>' if time_model else ''}
<h2>Best architecture (trial <span id="best-trial">{best.number}</span>)</h2>
<p>validation {summary['values'][0]:.4f} · test {summary['test_metric'] if summary['test_metric'] is not None else '-'}
· params {summary['params']:,} · FLOPs {summary['flops']:,}</p>
<p><code>{html.escape(summary['arch'] or '')}</code></p>
<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{rows}</table>
<h2>Figures</h2>{imgs}</body></html>"""
