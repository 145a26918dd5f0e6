"""The Ray options of a search (`--scheduler`, `--gpus-per-trial`, ...): resolved, checked, stored with the study."""
from __future__ import annotations

from pathlib import Path

from autocnn.artifacts import artifact_root
from autocnn.search.config import ConfigError, SearchConfig
from autocnn.cluster import check_reachable
from autocnn.search.ray.schedulers import PRUNER_SCHEDULERS, SCHEDULERS

DEFAULTS = {"address": None, "scheduler": "fifo", "gpus_per_trial": 0.0, "cpus_per_trial": 1.0,
            "max_concurrent": None, "storage_path": None}


def scheduler_for_pruner(pruner: str, scheduler: str | None) -> str:
    """The scheduler that `--pruner` asks for on Ray; refuses a `--scheduler` that says otherwise."""
    if pruner not in PRUNER_SCHEDULERS:
        raise ConfigError(f"unknown pruner {pruner!r} for --pruner; choose from {', '.join(PRUNER_SCHEDULERS)}")
    mapped = PRUNER_SCHEDULERS[pruner]
    if scheduler is not None and scheduler != mapped:
        raise ConfigError(f"--pruner {pruner} runs --scheduler {mapped} on Ray, not --scheduler {scheduler}; "
                          "give only one of them")
    return mapped


def resolve_options(config: SearchConfig, stored: dict, overrides: dict) -> dict:
    """Ray options: explicit ones, else those stored with the study, else the defaults; validated."""
    opts = {**DEFAULTS, **{k: v for k, v in stored.items() if k in DEFAULTS},
            **{k: v for k, v in overrides.items() if v is not None}}
    if opts["scheduler"] not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {opts['scheduler']!r} for --scheduler; "
                          f"choose from {', '.join(SCHEDULERS.names())}")
    if config.multi_objective and opts["scheduler"] != "fifo":
        raise ConfigError(f"--scheduler {opts['scheduler']} stops trials on one metric; a multi-objective "
                          "search (--objectives with costs) needs --scheduler fifo (--pruner none)")
    gpus, cpus = float(opts["gpus_per_trial"]), float(opts["cpus_per_trial"])
    if gpus < 0 or (gpus > 1 and not gpus.is_integer()):
        raise ConfigError(f"--gpus-per-trial must be a fraction in [0, 1] or a whole number, got {gpus:g}")
    if cpus <= 0:
        raise ConfigError(f"--cpus-per-trial must be > 0, got {cpus:g}")
    if opts["max_concurrent"] is not None and int(opts["max_concurrent"]) < 1:
        raise ConfigError(f"--max-concurrent must be >= 1, got {opts['max_concurrent']}")
    opts.update(gpus_per_trial=gpus, cpus_per_trial=cpus)
    check_reachable(opts["address"])
    if opts["storage_path"] is None:
        opts["storage_path"] = default_storage_path(config.storage)
    elif "://" not in str(opts["storage_path"]):
        opts["storage_path"] = str(Path(opts["storage_path"]).expanduser().resolve())
    return opts


def default_storage_path(storage_url: str | None) -> str:
    """`ray/` beside the study's other files (`autocnn.artifacts`): the SQLite file's folder, else ./studies."""
    return str(artifact_root(storage_url) / "ray")
