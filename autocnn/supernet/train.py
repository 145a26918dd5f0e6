"""Training a supernet: the sandwich rule with in-place distillation, BN recalibration, resumable epochs.

Following BigNAS (Yu et al. 2020), each step trains the largest sub-network on the labels, then the
smallest and `n_random` uniformly sampled ones (SPOS, Guo et al. 2020, samples one path uniformly) on
the largest's detached soft predictions (in-place distillation, from slimmable networks / OFA), and
applies the summed gradients once. The optimiser and learning-rate schedule come from the trainer's
registries (`autocnn.training.optim`), so a supernet can train with the recipe its sub-networks would get
alone; BigNAS's other changes (initialisation, regularisation of the largest only) are not made.
"""
from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from autocnn.data.transforms import resize
from autocnn.supernet import distributed
from autocnn.supernet.model import Supernet, SupernetError
from autocnn.supernet.space import ElasticSpace
from autocnn.training.optim import DEFAULT_LR, OPTIMIZERS, SCHEDULES, param_groups


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable) -> nn.Module:
    """Recompute every BatchNorm's running statistics as the plain average over `batches`.

    Shared statistics are wrong for every sub-network but the one last trained (their channels and
    inputs differ), so each sub-network is evaluated after recalibration, as OFA and BigNAS do. Works on
    a supernet in its active configuration (only the active channels are meaningful afterwards) and on
    a built network alike. A batch is a tensor of inputs or an (inputs, labels) pair. Everything but the
    BatchNorm layers runs as at inference.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch counts equally
    was_training = model.training
    model.eval()  # only the norms in training mode: dropout or drop-path would perturb the statistics they
    for m in norms:  # gather (inference runs without them) and make them depend on the global RNG's state
        m.train()
    try:
        for batch in batches:
            model(batch[0] if isinstance(batch, (tuple, list)) else batch)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return model


def sandwich_step(supernet: Supernet, space: ElasticSpace, x: torch.Tensor, y: torch.Tensor,
                  optimizer: torch.optim.Optimizer, rng: random.Random, n_random: int = 2,
                  forward: nn.Module | None = None) -> float:
    """One optimiser step over the sandwich (largest, smallest, `n_random` random); returns the
    largest's label loss. The supernet is left active as the largest. `forward`: the module that runs
    the supernet (its data-parallel wrapper), when not the supernet itself. `x` is at the largest's
    resolution; a sub-network at another (an elastic resolution) gets it resized as the data pipeline
    resizes a batch, and learns from the largest's predictions on the full-size images (BigNAS)."""
    net = forward if forward is not None else supernet
    supernet.train()
    optimizer.zero_grad(set_to_none=True)
    largest, *others = space.sandwich(rng, n_random)
    supernet.set_active(largest)
    logits = net(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    soft = logits.detach().softmax(-1)
    for g in others:
        supernet.set_active(g)
        F.cross_entropy(net(resize(x, g.resolution) if g.resolution else x), soft).backward()
    optimizer.step()
    supernet.set_active(largest)
    return loss.item()


def train_supernet(supernet: Supernet, space: ElasticSpace, x: torch.Tensor, y: torch.Tensor, *, epochs: int,
                   batch_size: int = 64, optimizer: str = "sgd", lr: float | None = None, weight_decay: float = 0.0,
                   schedule: str = "constant", warmup_epochs: float = 0.0, augment: str = "none", n_random: int = 2,
                   seed: int = 0,
                   checkpoint: str | os.PathLike | None = None,
                   on_epoch: Callable[[int, list[float], float], None] | None = None) -> list[float]:
    """Train to `epochs` epochs of sandwich steps on (x, y); returns each epoch's mean largest-network loss.

    `optimizer` and `schedule` name members of the trainer's registries (`lr` None: the optimiser's default);
    the schedule spans `epochs`, so a finished supernet trained further restarts it over the new total (as
    SGDR does). `augment` names a batch augmentation of `autocnn.data` that works on network inputs (a
    translation or crop-and-flip, as the trainer applies to the dataset; not a pixel policy). With `checkpoint`, the weights, optimiser state and loss history are written there (atomically)
    after every epoch, and a run that finds the file resumes after its last epoch: a killed run continues where
    it stopped, and gives the same result as an uninterrupted one because each epoch's shuffle and sub-network
    draws are seeded by (seed, epoch) rather than carried over, and the learning rate is a function of the step.
    `on_epoch(epoch, history, seconds)` runs after each epoch's checkpoint, in every process.

    In a process group (`autocnn.supernet.distributed.launch`) every process holds the whole (x, y), trains
    on its share of each global batch of `batch_size` rows, and ends each epoch with the same weights and
    statistics as the others; the first process alone writes the checkpoint.
    """
    from autocnn.data.batches import AUGMENTATIONS

    shift = AUGMENTATIONS.get(augment)
    if getattr(shift, "on_pixels", False):
        raise SupernetError(f"augmentation {augment!r} works on stored pixels, which a supernet does not keep; "
                            "use none, translate or crop_flip")
    rank, replicas = distributed.world()
    model = distributed.replicated(supernet)
    device = next(supernet.parameters()).device
    base_lr = lr if lr is not None else DEFAULT_LR[optimizer]
    opt = OPTIMIZERS.get(optimizer)(param_groups(supernet, weight_decay), base_lr, device)
    steps = len(range(0, len(y), batch_size))
    factor = SCHEDULES.get(schedule)(epochs * steps, round(warmup_epochs * steps))
    history: list[float] = []
    start = 0
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("largest") != supernet.largest.to_string():
            raise SupernetError(f"checkpoint {path} belongs to another supernet ({state.get('largest')}); "
                                "delete it or pass another --checkpoint path")
        supernet.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, history = state["epoch"], list(state["history"])
    for epoch in range(start, epochs):
        started = time.perf_counter()
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        rng = random.Random(seed * 100_003 + epoch)
        order = torch.randperm(len(y), generator=gen)
        moves = torch.Generator(device=x.device).manual_seed(seed * 100_003 + epoch)
        losses = []
        for step, i in enumerate(range(0, len(y), batch_size)):
            rows = order[i:i + batch_size]
            if len(rows) < 2 * replicas:  # BatchNorm needs two samples in training mode, in every process
                continue
            for group in opt.param_groups:
                group["lr"] = base_lr * factor(epoch * steps + step)
            xb = x[rows] if augment == "none" else shift(x[rows], moves)  # the whole global batch: every
            mine = slice(rank, None, replicas)                              # replica draws the same moves
            losses.append(sandwich_step(supernet, space, xb[mine], y[rows][mine], opt, rng, n_random, forward=model))
        distributed.average_buffers(supernet)
        history.append(distributed.mean_over_replicas(sum(losses) / len(losses)))
        if path is not None and rank == 0:
            tmp = path.with_name(path.name + ".tmp")
            torch.save({"epoch": epoch + 1, "model": supernet.state_dict(), "optimizer": opt.state_dict(),
                        "history": history, "largest": supernet.largest.to_string()}, tmp)
            os.replace(tmp, path)
        distributed.barrier()  # a resume reads the checkpoint the first process just wrote
        if on_epoch is not None:
            on_epoch(epoch + 1, history, time.perf_counter() - started)
    return history
