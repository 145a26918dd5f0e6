"""`autocnn search` and `train`."""
from __future__ import annotations

import logging
import signal
import sys
import time
from datetime import datetime, timedelta

import click
import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn
from rich.text import Text

from autocnn.cli import cli
from autocnn.cli.studies import print_best as _print_best
from autocnn.search import records
from autocnn.search.config import (DEFAULT_TRIAL_SHARE, UNTIL_TIMEOUT_TRIALS, ConfigError, SearchConfig,
                                   parse_duration)

optuna.logging.set_verbosity(optuna.logging.WARNING)


class FailedTrialLogFilter(logging.Filter):
    """Drops Optuna's "Trial N failed with ..." warnings: they print the parameters and the whole traceback of
    every failed trial (90 lines each for a genotype too large for its input), while the progress already
    shows the trial's reason in one line and the study records it (`fail_reason`, `autocnn best`). An
    exception that is not a trial's failure (a bug) still ends the command with its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (str(record.msg).startswith("Trial ") and " failed with " in str(record.msg))


# the logger Optuna's optimize loop reports trials on (filters act where a record is made, not where it propagates)
logging.getLogger("optuna.study._optimize").addFilter(FailedTrialLogFilter())


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


def predicted_finish(elapsed: float, done: int, remaining: int, time_left: float | None) -> float | None:
    """Seconds until the run ends: the remaining trials at this run's pace so far (`done` trials in
    `elapsed` seconds), capped by what is left of the time budget; None when neither is known yet."""
    pace = elapsed / done * max(remaining, 0) if done > 0 else None
    if time_left is None:
        return pace
    time_left = max(time_left, 0.0)
    return time_left if pace is None else min(pace, time_left)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class BudgetColumn(ProgressColumn):
    """Time since the run started, under a time budget what is left of it, and the predicted finish (ETA
    and clock time), worked out at each refresh."""

    def __init__(self, owner: "RichProgress") -> None:
        super().__init__()
        self.owner = owner

    def render(self, task) -> Text:
        return Text(self.owner.budget_text(), style="progress.remaining")


class RichProgress:
    """Trial n/N (under --timeout: the share of the time budget used), the budget left, the predicted
    finish (ETA), the running trial's epoch and accuracy, and the best so far."""

    def __init__(self, console: Console, interrupt: GracefulInterrupt | None = None) -> None:
        self.console = console
        self.interrupt = interrupt
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[trials]}"),
                                 BudgetColumn(self), console=console, transient=False)
        self.task = None
        self.best: float | None = None
        self.epochs = 0
        self.started = time.time()
        self.timeout: float | None = None
        self.ends_at: float | None = None
        self.trials = 0
        self.done_before = self.done = 0

    def start(self, study, config: SearchConfig) -> None:
        from autocnn.search.budget import BUDGET_ATTR, finished_trials

        self.epochs = config.epochs
        self.maximize = config.directions[0] == "maximize"
        budget = study.user_attrs.get(BUDGET_ATTR) or {}  # this run's time budget, as the driver keeps it
        self.started, self.ends_at = budget.get("started", time.time()), budget.get("ends_at")
        self.timeout, self.trials = budget.get("timeout_s"), config.trials
        done = self.done_before = self.done = finished_trials(study)
        values = [t.values[0] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        if values:
            self.best = max(values) if self.maximize else min(values)
        budget = f", time budget {_clock(self.timeout)}" if self.timeout else ""
        self.console.print(f"study [bold]{study.study_name}[/bold]: {done}/{config.trials} trials done, "
                           f"space {config.space.split(':')[0]}, dataset {config.dataset}, "
                           f"{config.epochs} epochs/trial{budget}")
        self.progress.start()
        self.task = self.progress.add_task(self._describe(None, None, None), total=self.timeout or config.trials,
                                           trials=self._trials_text())
        self._update()

    def _trials_text(self) -> str:
        """n/N trials; under a time budget without a trial budget (`UNTIL_TIMEOUT_TRIALS`) only n."""
        return f"{self.done} trials" if self.trials >= UNTIL_TIMEOUT_TRIALS else f"{self.done}/{self.trials} trials"

    def _update(self, **changes) -> None:
        """The bar is the time budget used under --timeout, else the trial budget."""
        used = min(time.time() - self.started, self.timeout) if self.timeout else self.done
        self.progress.update(self.task, completed=used, trials=self._trials_text(), **changes)

    def budget_text(self) -> str:
        elapsed = time.time() - self.started
        left = None if self.ends_at is None else max(self.ends_at - time.time(), 0.0)
        finish = predicted_finish(elapsed, self.done - self.done_before, self.trials - self.done, left)
        at = "" if finish is None else f" (~{datetime.now() + timedelta(seconds=finish):%H:%M:%S})"
        budget = "" if left is None else f"budget left {_clock(left)} "
        return f"{_clock(elapsed)} {budget}ETA {_clock(finish)}{at}"

    def on_data(self, line: str) -> None:
        self.console.print(line)

    def _describe(self, number, epoch, value) -> str:
        best = f"{self.best:.4f}" if self.best is not None else "-"
        if number is None:
            return f"best {best}"
        return f"trial {number} epoch {epoch}/{self.epochs} val {value:.4f} best {best}"

    def on_epoch(self, number: int, report) -> None:
        self._update(description=self._describe(number, report.epoch, report.val_metric))
        if self.interrupt is not None:
            self.interrupt.check()

    def on_trial_end(self, study, trial) -> None:
        from autocnn.search.budget import finished_trials

        row = records.summary(trial)
        if trial.state == TrialState.COMPLETE:
            value = trial.values[0]
            if self.best is None or (value > self.best if self.maximize else value < self.best):
                self.best = value
        detail = row["rejected"] or row["fail_reason"] or row["out_of_time"] or ""
        value = f"{trial.values[0]:.4f}" if trial.values else "-"
        proxy = f"{row['proxy']} {row['proxy_score']:.4g} " if row["proxy_score"] is not None else ""
        self.progress.console.print(
            f"trial {trial.number:>3} {trial.state.name:<8} val {value} params {row['params'] or 0:,} "
            f"epochs {row['epochs_run'] or 0} {proxy}{detail}".rstrip())
        self.done = finished_trials(study)
        self._update(description=self._describe(None, None, None))
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


def recipe_options(command):
    """The training recipe beyond the common flags (`autocnn.training.RECIPE_FIELDS`): `search` and `train` share
    them. Unset (None), a flag leaves the field to --recipe, then to the space's `training:`, then the default."""
    options = [
        click.option("--recipe", "recipe_file", type=click.Path(dir_okay=False), default=None, metavar="FILE.yaml",
                     help="Training recipe file: a YAML mapping of recipe fields (epochs, batch_size, optimizer, lr, "
                          "weight_decay, schedule, warmup_epochs, label_smoothing, grad_clip, amp, channels_last, "
                          "compile, ema_decay, augment, mixup, cutmix); flags override it, it overrides the "
                          "space's `training:`."),
        click.option("--weight-decay", type=float, default=None, help="Weight decay of kernels (default 5e-4)."),
        click.option("--schedule", type=click.Choice(["cosine", "onecycle", "constant"]), default=None,
                     help="Learning-rate schedule (default cosine)."),
        click.option("--warmup-epochs", type=float, default=None, help="Linear warm-up epochs (default 1)."),
        click.option("--label-smoothing", type=float, default=None, help="Label smoothing in [0, 1) (default 0)."),
        click.option("--grad-clip", type=float, default=None, help="Clip the gradient norm at this (default 5)."),
        click.option("--amp/--no-amp", default=None, help="Mixed precision (default: on CUDA only)."),
        click.option("--channels-last/--no-channels-last", default=None,
                     help="NHWC memory format (default: on CUDA only)."),
        click.option("--compile/--no-compile", "compile_model", default=None,
                     help="Train through torch.compile (default off: compiling costs time per candidate)."),
        click.option("--ema", "ema_decay", type=float, default=None, metavar="DECAY",
                     help="Evaluate, keep and export an exponential moving average of the weights, e.g. 0.999."),
        click.option("--augment", default=None,
                     help="Train-time augmentation: none, translate, crop_flip, trivial_augment, rand_augment "
                          "(default: the dataset's own)."),
        click.option("--mixup", type=float, default=None, help="MixUp Beta(a, a) per batch; 0: off (default)."),
        click.option("--cutmix", type=float, default=None, help="CutMix Beta(a, a) per batch; 0: off (default)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


_RECIPE_FLAGS = {"weight_decay": "weight_decay", "schedule": "schedule", "warmup_epochs": "warmup_epochs",
                 "label_smoothing": "label_smoothing", "grad_clip": "grad_clip", "amp": "amp",
                 "channels_last": "channels_last", "compile_model": "compile", "ema_decay": "ema_decay",
                 "augment": "augment", "mixup": "mixup", "cutmix": "cutmix"}
_COMMON_FLAGS = ("epochs", "batch_size", "optimizer", "lr")


def _read_recipe_file(path: str) -> dict:
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"--recipe {path}: no such file; give a YAML file of recipe fields") from None
    except OSError as err:
        raise ConfigError(f"--recipe {path} cannot be read ({err.strerror}); check its permissions") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"--recipe {path} is not valid YAML{where}; write a mapping such as "
                          "`label_smoothing: 0.1`") from None
    return {} if data is None else data


def resolve_recipe(options: dict, space_training: dict) -> dict:
    """Pop the recipe flags from `options` and put the resolved recipe back as `SearchConfig` keywords: the
    common fields (--epochs, ...) and `recipe`, every other field. Precedence, lowest first: the defaults, the
    space's `training:`, the --recipe file, flags given on the command line."""
    from click.core import ParameterSource

    from autocnn.search.config import RECIPE_OPTIONS
    from autocnn.training.config import RecipeError, check_recipe, default_recipe

    ctx = click.get_current_context()
    path = options.pop("recipe_file")
    flags = {field: options.pop(name) for name, field in _RECIPE_FLAGS.items()}
    flags = {field: value for field, value in flags.items() if value is not None}
    try:
        merged = dict(space_training)
        if path is not None:
            merged.update(check_recipe(_read_recipe_file(path), f"--recipe {path}"))
        for field, value in flags.items():
            flag = next((name for name, f in _RECIPE_FLAGS.items() if f == field), field).replace("_", "-")
            merged.update(check_recipe({field: value}, f"--{'compile' if flag == 'compile-model' else flag}"))
    except RecipeError as err:
        raise ConfigError(str(err)) from None
    # the common flags given on the command line win; SearchConfig checks them with its own messages
    merged.update({name: options[name] for name in _COMMON_FLAGS
                   if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)})
    options.update({key: merged.pop(key) for key in RECIPE_OPTIONS if key in merged})
    rest = {k: v for k, v in default_recipe().items() if k not in RECIPE_OPTIONS}
    options["recipe"] = {**rest, **merged}
    return options


def _space_training(space: str) -> dict:
    """The `training:` section of the space a search is given (nothing for a space that does not load: the
    search reports that itself)."""
    from autocnn.errors import AutocnnError
    from autocnn.spaces import load_space

    try:
        return load_space(space).training
    except AutocnnError:
        return {}


RAY_OPTIONS = ("address", "scheduler", "gpus_per_trial", "cpus_per_trial", "max_concurrent", "ray_storage")


def _duration(ctx, param, value: str | None) -> float | None:
    return None if value is None else parse_duration(value, f"--{param.name.replace('_', '-')}")


def _trial_share(ctx, param, value: str) -> float | None:
    """`--max-trial-share`: a fraction of the time left, or none (never reject a candidate for time)."""
    if value.strip().lower() in ("none", "off"):
        return None
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"--max-trial-share {value!r} is not a number; give a fraction of the time left "
                          "such as 0.5, or none") from None


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
@click.option("--space", default="auto", show_default=True,
              help="Built-in space name or YAML path; `auto` spans plain CNNs at native resolution to EfficientNets.")
@click.option("--dataset", default="digits", show_default=True)
@click.option("--data-root", type=click.Path(), default=None, help="Folder holding the dataset (never downloaded).")
@click.option("--trials", type=int, default=None,
              help="Trials to finish (default 10, or as many as --timeout allows; on --resume: raise the budget).")
@click.option("--timeout", callback=_duration, default=None, metavar="DURATION",
              help="Time budget of the whole run (90s, 20m, 2h or seconds; a resume gets it afresh): running trials "
                   "stop at an epoch boundary when it runs out, recorded as pruned with their weights.")
@click.option("--stop-starting-after", callback=_duration, default=None, metavar="DURATION",
              help="Start no trial after this long; running trials finish (the old --timeout).")
@click.option("--max-trial-share", callback=_trial_share, default=str(DEFAULT_TRIAL_SHARE), show_default=True,
              help="Under --timeout, reject (untrained, at no cost) a candidate whose predicted training would take "
                   "more than this share of the time left; none: never.")
@click.option("--epochs", type=int, default=12, show_default=True, help="Training epochs per candidate.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="adamw", show_default=True)
@click.option("--lr", type=float, default=0.005, show_default=True)
@click.option("--max-params", type=float, default=None, help="Skip (never train) candidates above this many parameters.")
@click.option("--max-flops", type=float, default=None, help="Skip candidates above this many FLOPs per image.")
@click.option("--max-latency-ms", type=float, default=None, help="Skip candidates slower than this (CPU, batch 1).")
@click.option("--sampler", default="tpe", show_default=True, help="tpe, random, cmaes, gp or nsga2.")
@click.option("--pruner", default=None,
              help="median, hyperband, sha or none; on Ray the Tune scheduler of the same rule. Default: sha "
                   "(successive halving over epochs) with --timeout, else median.")
@click.option("--initial-design", type=int, default=5, show_default=True,
              help="First trials of a new study: a design from the space's smallest candidates to its largest, "
                   "smallest first; 0: the sampler's own first trials.")
@click.option("--prescreen", default=None, metavar="PROXY:K",
              help="Train the best of K sampled candidates by a zero-cost proxy scored at initialisation on one "
                   "training mini-batch: params (the baseline to beat), flops, synflow, naswot, grad_norm, snip or "
                   "zico. Every trial records its proxy score.")
@click.option("--strategy", type=click.Choice(["train", "oneshot"]), default="train", show_default=True,
              help="train: train every candidate with the recipe; oneshot: value it by the weights it inherits from "
                   "--supernet (BatchNorm recalibrated, validated untrained: a fraction of a second per trial).")
@click.option("--supernet", default=None, metavar="NAME",
              help="[oneshot] Supernet trained with 'autocnn supernet train --name NAME' (same --storage).")
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
@click.option("--scheduler", default=None, help="[ray] fifo, asha, hyperband, median, pbt or pbt_sync (default fifo).")
@click.option("--gpus-per-trial", type=float, default=None, help="[ray] GPUs per trial; 0.25 packs 4 trials per GPU.")
@click.option("--cpus-per-trial", type=float, default=None, help="[ray] CPUs per trial (default 1).")
@click.option("--max-concurrent", type=int, default=None, help="[ray] At most this many trials at once.")
@click.option("--ray-storage", default=None,
              help="[ray] Checkpoint folder or URI (shared by all nodes on a cluster; default next to the study).")
@click.option("--resume", is_flag=True, help="Continue --study (default: the latest) to its budget.")
@click.option("--json", "as_json", is_flag=True, help="Print the best trial as JSON at the end.")
@recipe_options
@data_options
def search(resume: bool, as_json: bool, trials, timeout, stop_starting_after, max_params, max_flops, max_latency_ms,
           **options) -> None:
    """Search a space of architectures, training every candidate on real data."""
    from autocnn.search.budget import process_started
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
                                  stop_starting_after=stop_starting_after, progress=progress, backend=backend,
                                  started=process_started())
        else:
            options["objectives"] = _split(options["objectives"])
            options["enqueue"] = _split(options["enqueue"])
            limits = {"max_params": max_params, "max_flops": max_flops, "max_latency_ms": max_latency_ms}
            if trials is None:  # a time budget alone runs trials until it is spent
                trials = 10 if timeout is None else UNTIL_TIMEOUT_TRIALS
            resolve_recipe(options, _space_training(options["space"]))
            config = SearchConfig(trials=trials, timeout=timeout, stop_starting_after=stop_starting_after,
                                  pruner=pruner,
                                  constraints={k: v for k, v in limits.items() if v is not None}, **options)
            study = run_search(config, progress=progress, backend=backend, started=process_started())
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
@recipe_options
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

    resolve_recipe(options, {})
    config = SearchConfig(space=FixedSpace.spec_for(genotype), trials=1, pruner="none", sampler="random",
                          study=study, weights={ALL_TRIALS: os.path.abspath(weights)} if weights else {}, **options)
    console = Console(stderr=True)
    run = run_search(config, progress=RichProgress(console))
    _print_best(run, False)
