"""The run configuration a study stores, so `--resume` and the dashboard need only the study name."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from autocnn.errors import AutocnnError

QUALITY = {"accuracy": "accuracy", "map": "mAP", "f1": "f1"}
"""Quality objective -> the trainer's metric: accuracy (subset accuracy on multi-label data), map = mAP
(multi-label data only), f1 = macro-F1 on single-label and micro-F1 on multi-label data."""
MAXIMIZE = set(QUALITY)
MINIMIZE = {"params", "flops", "latency"}
CONFIG_ATTR = "autocnn.config"
CONSTRAINTS = ("max_params", "max_flops", "max_latency_ms")
DATA_MODES = ("auto", "resident", "stream")
RECIPE_OPTIONS = ("epochs", "batch_size", "optimizer", "lr", "warmup_epochs")
"""Recipe fields that are `SearchConfig` fields of their own (budgets and pruners read them); the rest of
the recipe (`autocnn.training.RECIPE_FIELDS`) is `SearchConfig.recipe`."""
ALL_TRIALS = "*"  # a `weights` key: every trial starts from the file (`autocnn train`, one fixed architecture)
DEFAULT_TRIAL_SHARE = 0.5  # --max-trial-share: a candidate may take at most half the time left (see `timing`)
FIRST_LOOK_SHARE = 0.05
"""Under a timeout, the share of the whole budget a candidate may train for before the study has measured an
epoch on this device: the time model's prior can be off by half, and an anytime search owes a first model
early (`engine.price_time`; the design then trains the first point again in full from the look's weights,
`design.initial_design`). A twentieth: on a loaded 2-core machine a tenth (6 s of a 60-s budget, after 5-10 s of
imports) put the first model past a quarter of the budget in most runs; the look's epochs are not lost."""
LOOK_SHARE = 0.2
"""Under a timeout, once the device is timed, the most of the whole budget a candidate's first look (its grace
epochs, or its whole schedule if shorter) may take: a search looks at five candidates at least, and a short
budget is not spent on one or two large networks before they can be compared (`engine.price_time`)."""
LOOK_VS_BEST = 3.0
"""Under a timeout, once a model is fully trained, the most a sampled candidate's first look may cost in full
trainings of the best model so far (at that model's measured pace; `engine.price_time`, `engine.look_guard`):
the time of a look that costs more would train several networks like the best instead. The initial design is
exempt (its large points are how the search learns that large networks pay), a larger best raises the cap, and
a look within `FIRST_LOOK_SHARE` of the budget is always allowed (a best that trains in a blink does not turn away
candidates the budget holds twenty looks of).
On digits in 180 s (bench_anytime, six seeds) TPE's later samples included ResNets at 32 px whose looks cost
3-15 times the best plain CNN's whole training (9-29 s each, 20-60 s a run) and all scored below it; on `shapes`
every winner's look cost under that best's training (0.7 times at most)."""
SETTLING_LR = 0.1
"""The learning rate, as a share of the run's, of a continuation that the time left gives fewer epochs than its
first look (`engine.price_time`, `engine.fitted`), trained without warm-up: it settles the weights it continues
instead of restarting them. With the recipe's warm-up, one epoch ends at the peak rate (continuations of 0.87-0.89
networks scored 0.35-0.76 on `shapes`); on 20,000 `shapes` images a 6-epoch plain CNN (0.9533) continued for
two epochs reached 0.9557 this way, its first epoch 0.9543, where a warm restart's first epoch fell to 0.8817."""
DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
UNTIL_TIMEOUT_TRIALS = 1_000_000  # the trial budget of a search given a time budget and no --trials
STRATEGIES = ("train", "oneshot")  # SearchConfig.strategy
BUDGET_PRUNER = "sha"
"""The pruner of a search under a time budget that names none: successive halving over epochs gives many
candidates a cheap first look (`grace_epochs`) and the survivors the full recipe (Ray: ASHA)."""


class ConfigError(AutocnnError):
    """A search option that cannot work."""


def default_pruner(timeout: float | None, objectives: tuple[str, ...]) -> str:
    """The pruner of a search that names none: `BUDGET_PRUNER` under a time budget, else median; none for
    a Pareto search (several objectives: every trial is trained fully)."""
    if len(objectives) > 1:
        return "none"
    return BUDGET_PRUNER if timeout is not None else "median"


def parse_duration(text: str, flag: str = "--timeout") -> float:
    """Seconds in `text`: plain seconds or a number with a unit, `90s`, `20m`, `2h`, `1.5h`."""
    value = str(text).strip().lower()
    scale = DURATION_UNITS.get(value[-1:], None)
    number = value[:-1] if scale is not None else value
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not a duration; give seconds or a number with s, m or h, "
                          "e.g. 90s, 20m, 2h") from None
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"{flag} must be a positive duration, got {text!r}; e.g. 90s, 20m or 2h")
    return seconds


def parse_prescreen(text: str) -> tuple[str, int]:
    """`--prescreen PROXY:K` as (proxy, K); whether PROXY is registered is checked with the other names
    (`engine.check_choices`), where the registry is loaded."""
    proxy, _, k = str(text).strip().rpartition(":")
    try:
        count = int(k)
    except ValueError:
        count = None
    if not proxy.strip() or count is None:
        raise ConfigError(f"--prescreen {text!r} is not PROXY:K; e.g. synflow:4 trains the best of 4 candidates "
                          "by its synflow score")
    if count < 1:
        raise ConfigError(f"--prescreen {text!r} screens {count} candidates; K must be >= 1, e.g. synflow:4")
    return proxy.strip(), count


@dataclass(frozen=True)
class SearchConfig:
    space: str = "auto"
    dataset: str = "digits"
    data_root: str | None = None
    trials: int = 10
    timeout: float | None = None
    """Seconds the whole run may take (each run: a resume gets it afresh); running trials stop at an epoch
    boundary when it runs out (`autocnn.search.budget`)."""
    stop_starting_after: float | None = None  # seconds after which no trial starts (running ones finish)
    max_trial_share: float | None = DEFAULT_TRIAL_SHARE
    """Under a timeout, the share of the time left that one candidate's predicted training may take
    (`autocnn.search.timing`); None: candidates are never rejected for time."""
    epochs: int = 12
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float | None = 0.005
    warmup_epochs: float = 1.0
    sampler: str = "tpe"
    initial_design: int = 5
    """The first trials of a new study: a design from the space's smallest candidates to its largest,
    smallest first (`autocnn.search.design`); as many as TPE's random startup trials. 0: none."""
    pruner: str | None = None
    """`--pruner`; None: not named (`default_pruner`; the study stores the one it runs)."""
    grace_epochs: int = 3  # the earliest epoch any pruner or Ray scheduler may stop a trial at
    objectives: tuple[str, ...] = ("accuracy",)
    study: str | None = None
    storage: str | None = None
    seed: int = 0
    device: str = "auto"
    backend: str = "local"
    resolution: int | None = None
    limit: int | None = None
    enqueue: tuple[str, ...] = ()
    weights: dict[str, str] = field(default_factory=dict)  # enqueued preset (or ALL_TRIALS) -> state_dict file
    freeze: int = 0  # blocks frozen in trials that start from weights
    artifacts: str | None = None
    """Folder of the trials' weights (`autocnn.artifacts`); absolute once the study is created."""
    constraints: dict[str, float] = field(default_factory=dict)
    image_size: int | None = None  # image files decoded at this square size (default: their own, capped)
    channels: int | None = None  # image files converted to 1 (grey) or 3 (RGB) channels (default: their own)
    cache_dir: str | None = None  # the decoded cache (autocnn.data.cache); absolute once the study is created
    data_mode: str = "auto"  # resident, stream or auto (autocnn.data.batches.choose_mode)
    data_memory: int | None = None  # bytes the data may take resident (auto mode)
    recipe: dict[str, Any] = field(default_factory=dict)
    """The rest of the training recipe (`autocnn.training.RECIPE_FIELDS` but `RECIPE_OPTIONS`): label smoothing,
    EMA, augmentation ...; fields not given keep `TrainConfig`'s defaults. The CLI stores every one."""
    prescreen: str | None = None
    """`--prescreen PROXY:K`: each trial trains the best of K sampled candidates by the zero-cost proxy
    PROXY (`autocnn.proxies`, scored at initialisation; `autocnn.search.prescreen`); None: no screening."""
    strategy: str = "train"
    """How a trial values its candidate: `train` it from scratch with the recipe, or `oneshot`: inherit its
    weights from the trained supernet `supernet` (`autocnn.search.oneshot`) and only validate them."""
    supernet: str | None = None  # --supernet NAME: a supernet under the study's artifact root (oneshot)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.strategy == "oneshot" and not self.supernet:
            raise ConfigError("--strategy oneshot needs --supernet NAME, a supernet trained with "
                              "'autocnn supernet train --space SPACE --name NAME'")
        if self.strategy != "oneshot" and self.supernet:
            raise ConfigError(f"--supernet {self.supernet} goes with --strategy oneshot; add it, or drop --supernet")
        if self.trials < 1:
            raise ConfigError(f"--trials must be >= 1, got {self.trials}; ask for at least one trial")
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}; train each candidate at least one epoch")
        if self.grace_epochs < 1:
            raise ConfigError(f"--grace-epochs must be >= 1, got {self.grace_epochs}; no trial can be judged before it trains")
        if self.initial_design < 0:
            raise ConfigError(f"--initial-design must be >= 0 trials, got {self.initial_design}; 0 turns it off")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        for flag, value in (("--timeout", self.timeout), ("--stop-starting-after", self.stop_starting_after)):
            if value is not None and not value > 0:
                raise ConfigError(f"{flag} must be > 0 seconds, got {value:g}; e.g. 90s, 20m or 2h")
        if self.max_trial_share is not None and not 0 < self.max_trial_share <= 1:
            raise ConfigError(f"--max-trial-share must be in (0, 1], got {self.max_trial_share:g}; "
                              "or 'none' to never reject a candidate for time")
        if self.resolution is not None and self.resolution < 4:
            raise ConfigError(f"--resolution must be >= 4 pixels, got {self.resolution}")
        if self.data_mode not in DATA_MODES:
            raise ConfigError(f"--data-mode must be one of {', '.join(DATA_MODES)}, got {self.data_mode!r}")
        own = [key for key in self.recipe if key in RECIPE_OPTIONS]
        if own:
            raise ConfigError(f"recipe field {own[0]} is a search option of its own (--{own[0].replace('_', '-')}); "
                              "set it there, not in SearchConfig.recipe")
        if self.data_memory is not None and self.data_memory < 0:
            raise ConfigError(f"--data-memory must be >= 0 bytes, got {self.data_memory}")
        if not self.objectives:
            raise ConfigError("--objectives is empty; use e.g. accuracy or accuracy,params")
        unknown = [o for o in self.objectives if o not in MAXIMIZE | MINIMIZE]
        if unknown:
            raise ConfigError(f"unknown objective {unknown[0]!r}; choose from "
                              f"{', '.join(sorted(MAXIMIZE))} (maximised) and {', '.join(sorted(MINIMIZE))} (minimised)")
        for key, value in self.constraints.items():
            if key not in CONSTRAINTS:
                raise ConfigError(f"unknown constraint {key!r}; choose from {', '.join(CONSTRAINTS)}")
            if not value > 0:
                raise ConfigError(f"--{key.replace('_', '-')} must be > 0, got {value}; no architecture could satisfy it")
        if self.freeze < 0:
            raise ConfigError(f"--freeze must be >= 0 blocks, got {self.freeze}")
        if self.freeze and not self.weights:
            raise ConfigError("--freeze needs --weights: only blocks loaded from reference weights are frozen")
        stray = [name for name in self.weights if name != ALL_TRIALS and name not in self.enqueue]
        if stray:
            raise ConfigError(f"--weights {stray[0]}=FILE names a preset that is not enqueued; "
                              f"add --enqueue {stray[0]}")
        if self.prescreen is not None:
            parse_prescreen(self.prescreen)
        if self.objectives[0] not in MAXIMIZE:
            raise ConfigError(f"the first objective must be a quality metric ({', '.join(sorted(MAXIMIZE))}), "
                              f"got {self.objectives[0]!r}")
        quality = [o for o in self.objectives if o in QUALITY]
        if len(quality) > 1:
            raise ConfigError(f"--objectives has {len(quality)} quality metrics ({', '.join(quality)}); a search "
                              "trains for one: keep one of them, plus params/flops/latency")

    @property
    def directions(self) -> list[str]:
        return ["maximize" if o in MAXIMIZE else "minimize" for o in self.objectives]

    @property
    def metric(self) -> str:
        """The trainer's metric (`autocnn.training.METRICS`) of the quality objective."""
        return QUALITY[self.objectives[0]]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def screening(self) -> tuple[str, int] | None:
        """(proxy, K) of `--prescreen`, or None."""
        return None if self.prescreen is None else parse_prescreen(self.prescreen)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["objectives"] = list(self.objectives)
        data["enqueue"] = list(self.enqueue)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        for key in ("objectives", "enqueue"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def replace(self, **changes: Any) -> "SearchConfig":
        return dataclasses.replace(self, **changes)
