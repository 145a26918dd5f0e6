"""`autocnn studies`, `best` and `report`: what a storage holds, read through `autocnn.search.control`."""
from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from autocnn.cli import cli
from autocnn.search import control, records, timing
from autocnn.storage import open_storage


def _console() -> Console:
    """A console that never cuts a cell: piped output gets the full names and values at any width
    (Rich otherwise assumes 80 columns and ellipsizes, e.g. `quickstar…`)."""
    console = Console()
    return console if console.is_terminal else Console(width=100_000)


def print_best(study, as_json: bool, *, state: str | None = None) -> None:
    """The best trial, or the Pareto front best first, of an optuna.Study or a `control.StudyView`."""
    if isinstance(study, control.StudyView):
        name, trials, directions = study.name, study.trials, study.directions
    else:
        name, trials, directions = study.study_name, study.get_trials(deepcopy=False), study.directions
    ranked = control.ranked_trials(trials, directions)
    shown = ranked if len(directions) > 1 else ranked[:1]
    rows = [records.summary(t) for t in shown]
    error, timed = timing.median_error(trials)
    if as_json:
        detailed = [{**row, "evaluation": t.user_attrs.get(records.EVALUATION, "trained"),
                     "genotype": t.user_attrs.get(records.GENOTYPE)} for row, t in zip(rows, shown)]
        out = {"study": name, **({"state": state} if state else {}),
               "best_trial": shown[0].number if shown else None, "best": detailed,
               "time_model": {"median_error": error, "trials": timed}}
        click.echo(json.dumps(out, indent=2))
        return
    console = _console()
    if not shown:
        console.print(f"study {name}: no complete trial yet")
        return
    title = "Pareto front" if len(directions) > 1 else "best trial"
    table = Table(title=f"{name}{f' ({state})' if state else ''}: {title}")
    metric = rows[0]["metric"]  # the trial's metric by its name: accuracy, mAP or f1
    for col in ("trial", f"val {metric}", f"test {metric}", "params", "MFLOPs", "latency ms"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["number"]), f"{r['values'][0]:.4f}",
                      f"{r['test_metric']:.4f}" if r["test_metric"] is not None else "-",
                      f"{r['params']:,}", f"{r['flops'] / 1e6:.1f}",
                      "not measured" if r["latency_ms"] is None else f"{r['latency_ms']:.2f}")
    console.print(table)
    for r in rows:
        console.print(f"trial {r['number']} architecture: {r['arch']}", soft_wrap=True)
    line = timing.error_line(trials)
    if line:
        console.print(line, soft_wrap=True)


@cli.command()
@click.option("--storage", default=None)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def studies(storage: str | None, fmt: str) -> None:
    """Every study in the storage: state, trials finished / requested, best value."""
    rows = control.study_overview(open_storage(storage, create=False, heartbeat=False))
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title="studies")
    for col in ("name", "state", "trials", "best", "space", "dataset", "last activity"):
        table.add_column(col)
    for r in rows:
        best = f"{r['best']:.4f}" if isinstance(r["best"], float) else str(r["best"] or "-")
        rejected = ", ".join(f"{why} {n}" for why, n in r["rejected"].items() if n)
        trials = f"{r['finished']}/{r['requested'] or '?'}" + (f" (rejected: {rejected})" if rejected else "")
        table.add_row(r["name"], r["state"], trials, best,
                      str(r["space"]), str(r["dataset"]), str(r["last_activity"] or "-"))
    _console().print(table)


@cli.command()
@click.option("--study", default=None, help="Study name (default: the latest autocnn study, as --resume).")
@click.option("--storage", default=None)
@click.option("--json", "as_json", is_flag=True)
def best(study: str | None, storage: str | None, as_json: bool) -> None:
    """The best trial, or the Pareto front of a multi-objective study, with genotype and metrics."""
    backend = open_storage(storage, create=False, heartbeat=False)
    view = control.inspect(backend, study or control.latest_study(backend))
    print_best(view, as_json, state=view.state)


@cli.command()
@click.option("--study", required=True)
@click.option("--storage", default=None)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
def report(study: str, storage: str | None, out_dir: str) -> None:
    """Figures (history, Pareto front, importances, cost scatter, learning curves) and an HTML page."""
    from autocnn.report import write_report

    page = write_report(study, storage, out_dir)
    click.echo(f"wrote {page}")
