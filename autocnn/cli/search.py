"""`autocnn search` and `train`."""
from __future__ import annotations

import signal
import sys
import time

import click
import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from autocnn.cli import cli
from autocnn.cli.studies import print_best as _print_best
from autocnn.search import records
from autocnn.search.config import ConfigError, SearchConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)


class GracefulInterrupt:
    """First Ctrl-C: finish the current epoch, mark the trial failed (resumable), exit. Second: abort.

    Python delivers KeyboardInterrupt wherever the main thread happens to be, including inside
    SQLAlchemy's garbage-collection hooks where it is swallowed; raising it ourselves at an epoch
    boundary keeps the study consistent.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.requested = False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            signal.default_int_handler(signum, frame)
        self.requested = True
        self.console.print("[yellow]stopping after this epoch[/yellow] (Ctrl-C again to abort at once)")

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


class RichProgress:
    """Trial n/N with ETA, the running trial's epoch and accuracy, and the best so far."""

    def __init__(self, console: Console, interrupt: GracefulInterrupt | None = None) -> None:
        self.console = console
        self.interrupt = interrupt
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=console, transient=False)
        self.task = None
        self.best: float | None = None
        self.epochs = 0

    def start(self, study, config: SearchConfig) -> None:
        from autocnn.search.budget import finished_trials

        self.epochs = config.epochs
        self.maximize = config.directions[0] == "maximize"
        done = finished_trials(study)
        values = [t.values[0] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        if values:
            self.best = max(values) if self.maximize else min(values)
        self.console.print(f"study [bold]{study.study_name}[/bold]: {done}/{config.trials} trials done, "
                           f"space {config.space.split(':')[0]}, dataset {config.dataset}, {config.epochs} epochs/trial")
        self.progress.start()
        self.task = self.progress.add_task(self._describe(None, None, None), total=config.trials, completed=done)

    def on_data(self, line: str) -> None:
        self.console.print(line)

    def _describe(self, number, epoch, value) -> str:
        best = f"{self.best:.4f}" if self.best is not None else "-"
        if number is None:
            return f"best {best}"
        return f"trial {number} epoch {epoch}/{self.epochs} val {value:.4f} best {best}"

    def on_epoch(self, number: int, report) -> None:
        self.progress.update(self.task, description=self._describe(number, report.epoch, report.val_metric))
        if self.interrupt is not None:
            self.interrupt.check()

    def on_trial_end(self, study, trial) -> None:
        from autocnn.search.budget import finished_trials

        row = records.summary(trial)
        if trial.state == TrialState.COMPLETE:
            value = trial.values[0]
            if self.best is None or (value > self.best if self.maximize else value < self.best):
                self.best = value
        detail = row["rejected"] or row["fail_reason"] or ""
        value = f"{trial.values[0]:.4f}" if trial.values else "-"
        self.progress.console.print(
            f"trial {trial.number:>3} {trial.state.name:<8} val {value} params {row['params'] or 0:,} "
            f"epochs {row['epochs_run'] or 0} {detail}".rstrip())
        self.progress.update(self.task, completed=finished_trials(study), description=self._describe(None, None, None))
        if self.interrupt is not None:
            self.interrupt.check()

    def stop(self, study) -> None:
        self.progress.stop()


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}


def _bytes(ctx, param, value: str | None) -> int | None:
    """`--data-memory 2GB` (or 1.5GiB, 500MB, 1e9) as a number of bytes."""
    if value is None:
        return None
    text = value.strip().lower().replace(" ", "")
    number = text.rstrip("kmgtib")
    try:
        amount = float(number) * _UNITS[text[len(number):]]
    except (ValueError, KeyError):
        raise ConfigError(f"--data-memory {value!r} is not an amount of memory; write e.g. 2GB, 512MiB or "
                          "1000000000") from None
    return int(amount)


def data_options(command):
    """How the dataset is decoded and fed to the device: the options `search` and `train` share."""
    options = [
        click.option("--image-size", type=int, default=None,
                     help="Decode image files (imagefolder, csv, multilabel) at this square size: shorter side "
                          "resized, centre-cropped (default: their median shorter side, at most 256)."),
        click.option("--channels", type=click.Choice(["1", "3"]), default=None,
                     callback=lambda ctx, param, v: int(v) if v else None,
                     help="Convert image files to 1 (grey) or 3 (RGB) channels (default: their own)."),
        click.option("--cache-dir", default=None,
                     help="Folder of decoded image caches (default: $AUTOCNN_CACHE_DIR or ~/.cache/autocnn)."),
        click.option("--data-mode", type=click.Choice(["auto", "resident", "stream"]), default="auto",
                     show_default=True, help="Hold the data on the device, stream it from the cache, or choose "
                                             "by size."),
        click.option("--data-memory", default=None, callback=_bytes,
                     help="Memory the data may take on the device in auto mode, e.g. 4GB (default: half the "
                          "free memory)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


RAY_OPTIONS = ("address", "scheduler", "gpus_per_trial", "cpus_per_trial", "max_concurrent", "ray_storage")


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def _named_weights(pairs: tuple[str, ...]) -> dict[str, str]:
    """`--weights NAME=FILE` options as {preset: absolute path} (a resumed run may start elsewhere)."""
    import os

    named = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"--weights {pair!r} is not NAME=FILE; e.g. --enqueue resnet18 --weights resnet18=r18.pth")
        named[name.strip()] = os.path.abspath(path.strip())
    return named


@cli.command()
@click.option("--space", default="efficientnet_compound", show_default=True, help="Built-in space name or YAML path.")
@click.option("--dataset", default="digits", show_default=True)
@click.option("--data-root", type=click.Path(), default=None, help="Folder holding the dataset (never downloaded).")
@click.option("--trials", type=int, default=None, help="Trials to finish (default 10; on --resume: raise the budget).")
@click.option("--timeout", type=float, default=None, help="Stop starting trials after this many seconds.")
@click.option("--epochs", type=int, default=12, show_default=True, help="Training epochs per candidate.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="adamw", show_default=True)
@click.option("--lr", type=float, default=0.005, show_default=True)
@click.option("--max-params", type=float, default=None, help="Skip (never train) candidates above this many parameters.")
@click.option("--max-flops", type=float, default=None, help="Skip candidates above this many FLOPs per image.")
@click.option("--max-latency-ms", type=float, default=None, help="Skip candidates slower than this (CPU, batch 1).")
@click.option("--sampler", default="tpe", show_default=True, help="tpe, random, cmaes, gp or nsga2.")
@click.option("--pruner", default=None,
              help="median (default), hyperband, sha or none; on Ray the Tune scheduler of the same rule.")
@click.option("--grace-epochs", type=int, default=3, show_default=True,
              help="No pruner or Ray scheduler stops a trial before this epoch.")
@click.option("--objectives", default="accuracy", show_default=True,
              help="One quality metric (accuracy, f1: macro-F1, micro-F1 on multi-label data, map: multi-label "
                   "only), optionally plus params/flops/latency for a Pareto search. accuracy on multi-label data "
                   "is subset accuracy.")
@click.option("--study", default=None, help="Study name (default: SPACE-DATASET-TIMESTAMP).")
@click.option("--storage", default=None, help="SQLAlchemy URL (default sqlite:///studies/autocnn.db).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--resolution", type=int, default=None, help="Input resolution (default: the space's).")
@click.option("--limit", type=int, default=None, help="Use at most this many training images.")
@click.option("--artifacts", default=None,
              help="Folder (or file:// URI) for the trials' weights, stored with the study "
                   "(default: next to a SQLite file, else ./studies).")
@click.option("--enqueue", default=None, help="Comma-separated presets to try first, e.g. resnet18,efficientnet_b0; "
              "one the space cannot express trains as a fixed architecture.")
@click.option("--weights", "weights", multiple=True, metavar="NAME=FILE",
              help="Start enqueued preset NAME from a state_dict file (fine-tuning); repeat per preset.")
@click.option("--freeze", type=int, default=0, show_default=True,
              help="Freeze the first N blocks of trials started from --weights.")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process; ray: trials in parallel on Ray Tune (pip install 'autocnn[ray]').")
@click.option("--address", default=None,
              help="[ray] Existing Ray cluster HOST:PORT; 'local' (the default) starts a Ray for the run.")
@click.option("--scheduler", default=None, help="[ray] fifo, asha, hyperband, median or pbt (default fifo).")
@click.option("--gpus-per-trial", type=float, default=None, help="[ray] GPUs per trial; 0.25 packs 4 trials per GPU.")
@click.option("--cpus-per-trial", type=float, default=None, help="[ray] CPUs per trial (default 1).")
@click.option("--max-concurrent", type=int, default=None, help="[ray] At most this many trials at once.")
@click.option("--ray-storage", default=None,
              help="[ray] Checkpoint folder or URI (shared by all nodes on a cluster; default next to the study).")
@click.option("--resume", is_flag=True, help="Continue --study (default: the latest) to its budget.")
@click.option("--json", "as_json", is_flag=True, help="Print the best trial as JSON at the end.")
@data_options
def search(resume: bool, as_json: bool, trials, timeout, max_params, max_flops, max_latency_ms, **options) -> None:
    """Search a space of architectures, training every candidate on real data."""
    from autocnn.search.driver import backend_for, resume_search, run_search

    console = Console(stderr=True)
    interrupt = GracefulInterrupt(console)
    interrupt.install()
    progress = RichProgress(console, interrupt)
    ray_options = {key: options.pop(key) for key in RAY_OPTIONS}
    ray_options["storage_path"] = ray_options.pop("ray_storage")
    pruner = options.pop("pruner")
    options["weights"] = _named_weights(options["weights"])
    if options["backend"] == "ray":  # an explicit --pruner picks Ray's scheduler of the same rule
        ray_options["pruner"] = pruner
    elif any(v is not None for v in ray_options.values()):
        given = next(k for k, v in ray_options.items() if v is not None).replace("storage_path", "ray_storage")
        raise ConfigError(f"--{given.replace('_', '-')} needs --backend ray")
    try:
        backend = backend_for(options["backend"], **ray_options)
        if resume:
            study = resume_search(options["study"], options["storage"], trials=trials, timeout=timeout,
                                  progress=progress, backend=backend)
        else:
            options["objectives"] = _split(options["objectives"])
            if len(options["objectives"]) > 1 and pruner not in (None, "none"):
                raise ConfigError(f"--pruner {pruner} judges one objective; a Pareto search "
                                  f"({options['objectives'][0]},...) trains every trial fully: drop --pruner")
            options["enqueue"] = _split(options["enqueue"])
            limits = {"max_params": max_params, "max_flops": max_flops, "max_latency_ms": max_latency_ms}
            config = SearchConfig(trials=trials if trials is not None else 10, timeout=timeout,
                                  pruner=pruner or "median",
                                  constraints={k: v for k, v in limits.items() if v is not None}, **options)
            study = run_search(config, progress=progress, backend=backend)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: the running trial was marked failed; "
                      "continue with 'autocnn search --resume --study NAME'")
        sys.exit(130)
    _print_best(study, as_json)


@cli.command(name="train")
@click.option("--model", "model_name", required=True, help="Preset name, genotype file or genotype string.")
@click.option("--dataset", default="digits", show_default=True)
@click.option("--data-root", type=click.Path(), default=None)
@click.option("--epochs", type=int, default=12, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="adamw", show_default=True)
@click.option("--lr", type=float, default=0.005, show_default=True)
@click.option("--resolution", type=int, default=None, help="Input resolution (default: the model's).")
@click.option("--study", default=None)
@click.option("--storage", default=None)
@click.option("--artifacts", default=None,
              help="Folder (or file:// URI) for the trials' weights, stored with the study "
                   "(default: next to a SQLite file, else ./studies).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--limit", type=int, default=None)
@click.option("--weights", type=click.Path(), default=None, help="Start from this state_dict file (fine-tuning).")
@click.option("--freeze", type=int, default=0, show_default=True, help="Freeze the first N blocks (with --weights).")
@data_options
def train_command(model_name: str, weights: str | None, **options) -> None:
    """Train one architecture with the search's recipe and record it as a one-trial study."""
    from autocnn.api import resolve_genotype
    from autocnn.search.driver import run_search
    from autocnn.search.fixed import FixedSpace

    genotype = resolve_genotype(model_name)
    study = options.pop("study") or f"train-{model_name.rsplit('/', 1)[-1]}-{options['dataset']}-{time.strftime('%Y%m%d-%H%M%S')}"
    import os

    from autocnn.search.config import ALL_TRIALS

    config = SearchConfig(space=FixedSpace.spec_for(genotype), trials=1, pruner="none", sampler="random",
                          study=study, weights={ALL_TRIALS: os.path.abspath(weights)} if weights else {}, **options)
    console = Console(stderr=True)
    run = run_search(config, progress=RichProgress(console))
    _print_best(run, False)
