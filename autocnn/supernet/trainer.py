"""Training a named supernet on a dataset (`autocnn supernet train`), one epoch at a time, resumably.

Each epoch is a call of `train_supernet` on the same checkpoint: an epoch's shuffle and sub-network draws
depend only on (seed, epoch), so a run killed at any point and rerun gives the same weights as one that
never stopped, and the record (`autocnn.supernet.store`) says which run did which epochs.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from autocnn.supernet.model import Supernet, SupernetError
from autocnn.supernet.space import ElasticSpace
from autocnn.supernet import store

SETTINGS = ("space_name", "dataset", "limit", "resolution", "largest", "choices", "seed", "batch_size", "lr",
            "n_random")
"""Record fields a rerun must match to continue a supernet (only `epochs` may grow)."""


def network_inputs(split, resolution: int | None, rows: int | None = None, batch_size: int = 256) -> torch.Tensor:
    """The first `rows` images of `split` (all: None) as the trainer feeds them to a network at `resolution`
    (normalised, resized bilinearly without antialiasing: `autocnn.data.batches`), on the CPU."""
    from autocnn.data.batches import DeviceBatches

    if rows is not None and rows < len(split):
        split = split.subset(torch.arange(rows))
    return torch.cat([x for x, _ in DeviceBatches(split, batch_size, resolution=resolution)])


def identity(es: ElasticSpace) -> dict[str, Any]:
    """What makes two spaces the same supernet: the elastic choices and the largest genotype (with the fixed
    values, classes, channels and resolution in it), not the file's path or name."""
    return {"largest": es.largest().to_string(), "choices": {k: list(v) for k, v in es.choices.items()}}


def fixed_values(es: ElasticSpace) -> dict[str, Any]:
    """The value of every non-elastic dimension (given, a preset's or the default first choice): what the record
    shows and what a search pins them to."""
    dims = es.space.dimensions()
    return {n: es.fixed_value(n, d) for n, d in dims.items() if n not in es.choices}


def space_label(space: str) -> str:
    """A space as given: a built-in name as it is, a file as its absolute path (a search may run elsewhere)."""
    return str(Path(space).expanduser().resolve()) if space.endswith((".yaml", ".yml")) or os.sep in space else space


def train_named(*, space: str, name: str, dataset: str = "digits", data_root: str | None = None,
                limit: int | None = None, resolution: int | None = None, fixed: dict | None = None,
                epochs: int = 10, batch_size: int = 64, lr: float = 0.05, n_random: int = 2,
                storage: str | None = None, artifacts: str | None = None, seed: int = 0, device: str = "auto",
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train (or continue) supernet `name` to `epochs` epochs; returns its record.

    Everything is checked (name, space, fixed values, dataset, an existing supernet's settings) before the
    folder is created, so a mistake writes nothing.
    """
    from autocnn.artifacts import resolve_artifacts
    from autocnn.data import load_dataset
    from autocnn.spaces import load_space
    from autocnn.training import resolve_device

    store.check_name(name)
    for flag, value in (("--epochs", epochs), ("--batch-size", batch_size), ("--n-random", n_random + 1)):
        if value < 1:
            raise SupernetError(f"{flag} must be >= {1 if flag != '--n-random' else 0}, got "
                                f"{value if flag != '--n-random' else n_random}")
    if not lr > 0:
        raise SupernetError(f"--lr must be > 0, got {lr}")
    loaded = load_space(space)
    data = load_dataset(dataset, data_root, seed=seed, limit=limit)
    if data.multilabel:
        raise SupernetError(f"dataset {dataset!r} is multi-label; supernet training distils single-label "
                            "predictions: use a single-label dataset")
    res = resolution or loaded.base_resolution
    es = ElasticSpace(loaded, fixed=fixed, resolution=res, num_classes=data.num_classes, in_chans=data.in_chans)
    root = resolve_artifacts(artifacts, storage)
    folder = store.supernet_dir(root, name)
    settings = {"space_name": loaded.name, "dataset": data.name, "limit": limit, "resolution": res, **identity(es),
                "seed": seed, "batch_size": batch_size, "lr": lr, "n_random": n_random}
    record = store.read_record(root, name)
    if record is not None:
        differ = [k for k in SETTINGS if record.get(k) != settings[k]]
        if differ:
            raise SupernetError(f"supernet {name!r} exists with another {differ[0]} ({record.get(differ[0])!r}, "
                                f"not {settings[differ[0]]!r}); rerun with its settings to continue it, or choose "
                                "another --name")
    dev = resolve_device(device)
    x = network_inputs(data.train, res).to(dev)
    y = data.train.labels.to(dev)
    torch.manual_seed(seed)
    net = Supernet(es.largest()).to(dev)

    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / store.CHECKPOINT_FILE
    done, losses = 0, []
    if checkpoint.exists():  # the last finished epoch, whatever the record managed to say before a kill
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        done, losses = int(state["epoch"]), list(state["history"])
    if record is None:
        record = {"name": name, "space": space_label(space), **settings, "fixed": fixed_values(es),
                  "num_classes": data.num_classes, "in_chans": data.in_chans, "sub_networks": len(es),
                  "train_images": len(data.train), "device": dev.type, "epochs": epochs, "epochs_done": 0,
                  "losses": [], "seconds": 0.0, "runs": []}
    record.update(epochs=max(epochs, done), epochs_done=done, losses=losses, folder=str(folder))
    run = {"started_at_epoch": done, "epochs_done": done, "seconds": 0.0}
    record["runs"].append(run)
    say = progress or (lambda line: None)
    if done:
        say(f"supernet {name}: resuming after epoch {done}/{epochs}")
    if done >= epochs:
        if not (folder / store.WEIGHTS_FILE).exists():
            net.load_state_dict(torch.load(checkpoint, map_location=dev, weights_only=False)["model"])
            store.save_weights(folder / store.WEIGHTS_FILE, net.state_dict())
        record["runs"].pop()  # nothing was run
        store.write_json(folder / store.RECORD_FILE, record)
        return record
    store.write_json(folder / store.RECORD_FILE, record)
    for epoch in range(done + 1, epochs + 1):
        started = time.perf_counter()
        from autocnn.supernet.train import train_supernet

        history = train_supernet(net, es, x, y, epochs=epoch, batch_size=batch_size, lr=lr, n_random=n_random,
                                 seed=seed, checkpoint=checkpoint)
        seconds = time.perf_counter() - started
        store.save_weights(folder / store.WEIGHTS_FILE, net.state_dict())
        run.update(epochs_done=epoch, seconds=round(run["seconds"] + seconds, 3))
        record.update(epochs_done=epoch, losses=history, seconds=round(record["seconds"] + seconds, 3))
        store.write_json(folder / store.RECORD_FILE, record)
        say(f"supernet {name}: epoch {epoch}/{epochs} loss {history[-1]:.4f} ({seconds:.1f}s)")
    return record
