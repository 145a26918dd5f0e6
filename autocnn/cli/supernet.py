"""`autocnn supernet train`: one weight-sharing network over a space's elastic dimensions, kept with the
study storage's artifacts (`autocnn.supernet.store`) so that `autocnn search --strategy oneshot` finds it."""
from __future__ import annotations

import click

from autocnn.cli import cli


def parse_fixed(pairs: tuple[str, ...]) -> dict:
    """`--fixed NAME=VALUE` options as {dimension: value}, values read as YAML scalars (3, 4.0, silu)."""
    import yaml

    from autocnn.supernet import SupernetError

    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise SupernetError(f"--fixed {pair!r} is not NAME=VALUE; e.g. --fixed act=relu")
        out[name.strip()] = yaml.safe_load(value.strip())
    return out


def parse_resolutions(value: str | None) -> int | list[int] | None:
    """`--resolution 32` (one size) or `--resolution 24,28,32` (an elastic resolution: each a sub-network may take)."""
    from autocnn.supernet import SupernetError

    if value is None:
        return None
    try:
        sizes = [int(size) for size in value.split(",")]
    except ValueError:
        raise SupernetError(f"--resolution takes sizes in pixels, e.g. 32 or 24,28,32; got {value!r}") from None
    return sizes[0] if len(sizes) == 1 else sizes


@cli.group(name="supernet")
def supernet_group() -> None:
    """Weight-sharing supernets for one-shot search (train once, evaluate thousands of sub-networks)."""


@supernet_group.command(name="train")
@click.option("--space", required=True, help="Built-in space name or YAML path; its per-stage kernel, expansion "
              "and repeats choices, SE on/off and ratio, and its width_mult are elastic.")
@click.option("--name", "name", required=True, help="Name of the supernet, for --supernet NAME in a search.")
@click.option("--dataset", default="digits", show_default=True)
@click.option("--data-root", type=click.Path(), default=None, help="Folder holding the dataset (never downloaded).")
@click.option("--limit", type=int, default=None, help="Use at most this many training images.")
@click.option("--resolution", default=None, help="Input resolution (default: the space's), or several, "
              "comma-separated (24,28,32), which makes it elastic: each sub-network takes one of them.")
@click.option("--fixed", "fixed", multiple=True, metavar="NAME=VALUE",
              help="Value of a dimension, pinned for the whole supernet (default for a non-elastic one: its first "
              "choice), e.g. width_mult=0.25; repeat per dimension.")
@click.option("--epochs", type=int, default=10, show_default=True, help="Epochs of sandwich training (in total).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--optimizer", default="sgd", show_default=True, help="Optimizer, as the trainer's recipe names it "
              "(sgd: momentum 0.9, Nesterov; adamw).")
@click.option("--lr", type=float, default=None, help="Peak learning rate (default: the optimizer's, as in training).")
@click.option("--weight-decay", type=float, default=0.0, show_default=True, help="On weights and kernels only.")
@click.option("--schedule", default="constant", show_default=True,
              help="Learning-rate schedule over --epochs (constant, cosine, onecycle).")
@click.option("--warmup-epochs", type=float, default=0.0, show_default=True)
@click.option("--augment", default=None, help="Batch augmentation (none, translate, crop_flip; default: the "
              "dataset's, as its trials train).")
@click.option("--n-random", type=int, default=2, show_default=True,
              help="Random sub-networks per step besides the largest and the smallest (sandwich rule).")
@click.option("--storage", default=None, help="SQLAlchemy URL of the studies that will search it "
              "(default sqlite:///studies/autocnn.db); the supernet lives with its artifacts.")
@click.option("--artifacts", default=None, help="Artifact root instead of the storage's (as search --artifacts).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--processes", type=int, default=None, help="Data-parallel training processes "
              "(DistributedDataParallel; --batch-size is split between them): default one per GPU on CUDA "
              "(NCCL), 1 on the CPU, where more run with gloo.")
@click.option("--backend", default="local", show_default=True, help="Where the processes run: local (this "
              "machine) or ray (Ray Train workers on the cluster at --address, or a local Ray; --device auto then "
              "means the cluster's GPUs). The dataset and the storage's folder must be visible to every node.")
@click.option("--address", default=None, help="Ray cluster address (HOST:PORT) for --backend ray.")
def train_supernet_command(space, name, dataset, data_root, limit, resolution, fixed, epochs, batch_size, optimizer,
                           lr, weight_decay, schedule, warmup_epochs, augment, n_random, storage, artifacts, seed, device,
                           processes, backend, address) -> None:
    """Train a supernet over a space's elastic dimensions, resumably (rerun the command to continue).

    \b
      autocnn supernet train --space SPACE --name NAME [--dataset digits] [--epochs N]
    """
    from autocnn.supernet.trainer import train_named

    def progress(line: str) -> None:
        click.echo(line, err=True)

    record = train_named(space=space, name=name, dataset=dataset, data_root=data_root, limit=limit,
                         resolution=parse_resolutions(resolution), fixed=parse_fixed(fixed), epochs=epochs,
                         batch_size=batch_size, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                         schedule=schedule, warmup_epochs=warmup_epochs, augment=augment, n_random=n_random, storage=storage,
                         artifacts=artifacts, seed=seed, device=device, processes=processes, backend=backend,
                         address=address, progress=progress)
    click.echo(f"supernet {name}: {record['epochs_done']} epochs, loss {record['losses'][-1]:.4f}, "
               f"{record['sub_networks']:,} sub-networks; {record['folder']}")
