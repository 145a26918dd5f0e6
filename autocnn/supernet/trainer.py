"""Training a named supernet on a dataset (`autocnn supernet train`), one epoch at a time, resumably.

Each epoch is a call of `train_supernet` on the same checkpoint: an epoch's shuffle and sub-network draws
depend only on (seed, epoch), so a run killed at any point and rerun gives the same weights as one that
never stopped, and the record (`autocnn.supernet.store`) says which run did which epochs.
"""
from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from autocnn.supernet.model import Supernet, SupernetError
from autocnn.supernet.space import ElasticSpace
from autocnn.supernet import store

SETTINGS = ("space_name", "dataset", "limit", "resolution", "largest", "choices", "seed", "batch_size", "optimizer",
            "lr", "weight_decay", "schedule", "warmup_epochs", "augment", "n_random")
"""Record fields a rerun must match to continue a supernet (only `epochs` may grow)."""

BACKENDS = ("local", "ray")  # where data-parallel processes run: this machine, or Ray Train workers
RECIPE = {"optimizer": "sgd", "lr": 0.05, "weight_decay": 0.0, "schedule": "constant", "warmup_epochs": 0.0,
          "augment": "none"}
"""How a supernet trains unless told otherwise; also what a record written before these were settable used."""


def network_inputs(split, resolution: int | None, batch_size: int = 256) -> torch.Tensor:
    """The images of `split` as the trainer feeds them to a network at `resolution` (normalised, resized
    bilinearly without antialiasing: `autocnn.data.batches`), on the CPU."""
    from autocnn.data.batches import DeviceBatches

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
                limit: int | None = None, resolution: int | Sequence[int] | None = None, fixed: dict | None = None,
                epochs: int = 10, batch_size: int = 64, optimizer: str = RECIPE["optimizer"], lr: float | None = None,
                weight_decay: float = RECIPE["weight_decay"], schedule: str = RECIPE["schedule"],
                warmup_epochs: float = RECIPE["warmup_epochs"], augment: str | None = None, n_random: int = 2,
                storage: str | None = None, artifacts: str | None = None, seed: int = 0, device: str = "auto",
                processes: int | None = None, backend: str = "local", address: str | None = None,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train (or continue) supernet `name` to `epochs` epochs; returns its record.

    Everything is checked (name, space, fixed values, dataset, an existing supernet's settings) before the
    folder is created, so a mistake writes nothing. Several resolutions make the input resolution elastic: the
    images are prepared at the largest, and a sub-network at a smaller one trains on them resized. `augment`
    None: the dataset's own, as its trials train.
    `processes` > 1 trains data-parallel (`autocnn.supernet.distributed`); by default one process per GPU on
    CUDA, one on the CPU. `backend` "ray" runs the processes as Ray Train workers on the cluster at `address`
    (or a local Ray), where device "auto" means the cluster's GPUs if it has any.
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
    from autocnn.training.optim import DEFAULT_LR, OPTIMIZERS, SCHEDULES

    for flag, value, registry in (("--optimizer", optimizer, OPTIMIZERS), ("--schedule", schedule, SCHEDULES)):
        if value not in registry:
            raise SupernetError(f"{flag} must be one of {', '.join(registry.names())}, got {value!r}")
    lr = lr if lr is not None else DEFAULT_LR[optimizer]
    if not lr > 0:
        raise SupernetError(f"--lr must be > 0, got {lr}")
    if weight_decay < 0:
        raise SupernetError(f"--weight-decay must be >= 0, got {weight_decay}")
    if not 0 <= warmup_epochs <= epochs:
        raise SupernetError(f"--warmup-epochs must be in [0, --epochs], got {warmup_epochs}")
    if processes is not None and processes < 1:
        raise SupernetError(f"--processes must be >= 1, got {processes}")
    if backend not in BACKENDS:
        raise SupernetError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if address is not None and backend != "ray":
        raise SupernetError("--address needs --backend ray")
    if backend == "ray":
        from autocnn.cluster import check_reachable

        check_reachable(address)
    loaded = load_space(space)
    data = load_dataset(dataset, data_root, seed=seed, limit=limit)
    if data.multilabel:
        raise SupernetError(f"dataset {dataset!r} is multi-label; supernet training distils single-label "
                            "predictions: use a single-label dataset")
    from autocnn.data import AUGMENTATIONS

    augment = augment or data.augment
    if augment not in AUGMENTATIONS or getattr(AUGMENTATIONS.get(augment), "on_pixels", False):
        shifts = [n for n in AUGMENTATIONS.names() if not getattr(AUGMENTATIONS.get(n), "on_pixels", False)]
        raise SupernetError(f"--augment must be one of {', '.join(shifts)} for a supernet (it trains on network "
                            f"inputs, not stored pixels), got {augment!r}")
    es = ElasticSpace(loaded, fixed=fixed, resolution=resolution or loaded.base_resolution,
                      num_classes=data.num_classes, in_chans=data.in_chans)
    resolutions = list(es.resolutions)
    if not resolutions or resolutions[0] < 4:
        raise SupernetError(f"--resolution must be one or more sizes of at least 4 pixels, got {resolution!r}")
    res = resolutions[-1]  # the largest sub-network's, at which the images are prepared
    root = resolve_artifacts(artifacts, storage)
    folder = store.supernet_dir(root, name)
    settings = {"space_name": loaded.name, "dataset": data.name, "limit": limit, "resolution": res, **identity(es),
                "seed": seed, "batch_size": batch_size, "optimizer": optimizer, "lr": lr, "weight_decay": weight_decay,
                "schedule": schedule, "warmup_epochs": warmup_epochs, "augment": augment, "n_random": n_random}
    record = store.read_record(root, name)
    if record is not None:
        record = {**RECIPE, **record}
        differ = [k for k in SETTINGS if record.get(k) != settings[k]]
        if differ:
            raise SupernetError(f"supernet {name!r} exists with another {differ[0]} ({record.get(differ[0])!r}, "
                                f"not {settings[differ[0]]!r}); rerun with its settings to continue it, or choose "
                                "another --name")
    from autocnn.supernet import distributed

    with (distributed.on_ray(address) if backend == "ray" else nullcontext()) as cluster_gpus:
        gpus = torch.cuda.device_count() if cluster_gpus is None else cluster_gpus
        dev = resolve_device(device) if cluster_gpus is None or device != "auto" else \
            torch.device("cuda" if cluster_gpus else "cpu")
        if processes is None:
            processes = max(gpus, 1) if dev.type == "cuda" else 1
        if dev.type == "cuda" and processes > max(gpus, 1):
            where = "this machine has" if cluster_gpus is None else "the Ray cluster has"
            raise SupernetError(f"--processes {processes} needs {processes} GPUs; {where} {gpus}: pass "
                                f"--processes {max(gpus, 1)}")
        if batch_size < 2 * processes:
            raise SupernetError(f"--batch-size {batch_size} is split between {processes} processes and each needs 2 "
                                f"images per step (BatchNorm): pass --batch-size {2 * processes} or more")

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
        record["runs"].append({"started_at_epoch": done, "epochs_done": done, "seconds": 0.0, "processes": processes,
                               "backend": backend})
        say = progress or (lambda line: None)
        if done:
            say(f"supernet {name}: resuming after epoch {done}/{epochs}")
        if done >= epochs:
            if not (folder / store.WEIGHTS_FILE).exists():
                torch.manual_seed(seed)
                net = Supernet(es.largest())
                net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["model"])
                store.save_weights(folder / store.WEIGHTS_FILE, net.state_dict())
            record["runs"].pop()  # nothing was run
            store.write_json(folder / store.RECORD_FILE, record)
            return record
        store.write_json(folder / store.RECORD_FILE, record)
        job = EpochsJob(space=space, dataset=dataset, data_root=data_root, limit=limit, resolution=resolutions,
                        fixed=fixed, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                        weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs, augment=augment,
                        n_random=n_random, seed=seed, device=str(dev), folder=str(folder), record=record)
        group = "NCCL" if dev.type == "cuda" else "gloo"
        if backend == "ray":
            say(f"supernet {name}: training in {processes} Ray Train workers ({group})")
            shown = [done]

            def report_epochs() -> None:
                """Say the epochs the first worker has added to the record since the last look."""
                now = store.read_record(root, name) or {}
                for epoch in range(shown[0] + 1, int(now.get("epochs_done", 0)) + 1):
                    say(f"supernet {name}: epoch {epoch}/{epochs} loss {now['losses'][epoch - 1]:.4f}")
                    shown[0] = epoch

            distributed.launch_on_ray(job.run, processes, cuda=dev.type == "cuda", folder=str(folder),
                                      poll=report_epochs)
        elif processes == 1:
            job.run(say, data)
        else:
            say(f"supernet {name}: training in {processes} processes ({group})")
            distributed.launch(job.run, processes, cuda=dev.type == "cuda")
        return store.read_record(root, name)


@dataclass
class EpochsJob:
    """The epochs left of a supernet's training, as one process (or each data-parallel replica) runs them.

    Picklable, so that replicas started by `distributed.launch` rebuild the data, space and network from the
    same settings; the first replica writes the checkpoint, weights and record, and prints the progress.
    """

    space: str
    dataset: str
    data_root: str | None
    limit: int | None
    resolution: list[int]  # every resolution it trains at (one: not elastic)
    fixed: dict | None
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float
    schedule: str
    warmup_epochs: float
    augment: str
    n_random: int
    seed: int
    device: str
    folder: str
    record: dict[str, Any]

    def run(self, progress: Callable[[str], None] | None = None, data=None) -> None:
        """`data`: the dataset when the caller has it loaded already (the one-process case)."""
        from autocnn.data import load_dataset
        from autocnn.spaces import load_space
        from autocnn.supernet.distributed import replica_device, world
        from autocnn.supernet.train import train_supernet

        rank, _ = world()
        say = (progress or _print_err) if rank == 0 else (lambda line: None)
        dev = replica_device(torch.device(self.device))
        if data is None:
            data = load_dataset(self.dataset, self.data_root, seed=self.seed, limit=self.limit)
        es = ElasticSpace(load_space(self.space), fixed=self.fixed, resolution=self.resolution,
                          num_classes=data.num_classes, in_chans=data.in_chans)
        x = network_inputs(data.train, max(self.resolution)).to(dev)
        y = data.train.labels.to(dev)
        torch.manual_seed(self.seed)
        net = Supernet(es.largest()).to(dev)
        folder, record = Path(self.folder), self.record
        run = record["runs"][-1]

        def saved(epoch: int, history: list[float], seconds: float) -> None:
            if rank:
                return
            store.save_weights(folder / store.WEIGHTS_FILE, net.state_dict())
            run.update(epochs_done=epoch, seconds=round(run["seconds"] + seconds, 3))
            record.update(epochs_done=epoch, losses=history, seconds=round(record["seconds"] + seconds, 3))
            store.write_json(folder / store.RECORD_FILE, record)
            say(f"supernet {record['name']}: epoch {epoch}/{self.epochs} loss {history[-1]:.4f} ({seconds:.1f}s)")

        train_supernet(net, es, x, y, epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer,
                       lr=self.lr, weight_decay=self.weight_decay, schedule=self.schedule,
                       warmup_epochs=self.warmup_epochs, augment=self.augment, n_random=self.n_random, seed=self.seed,
                       checkpoint=folder / store.CHECKPOINT_FILE, on_epoch=saved)


def _print_err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
