"""Data-parallel supernet training: one process per GPU (NCCL), or several CPU processes (gloo).

Every replica draws the same sandwich of sub-networks and the same global batch order from (seed, epoch),
trains on its share of each global batch, and `DistributedDataParallel` averages the gradients after each
sub-network's backward. A sandwich step runs several sub-networks that leave different parameters unused,
hence `find_unused_parameters=True`: the largest runs first and touches every parameter, so a parameter a
smaller sub-network leaves unused still carries the (already averaged) gradient of the largest, and
averaging it again changes nothing.
"""
from __future__ import annotations

import os
import socket
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from autocnn.supernet.model import SupernetError


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def replicated(model: nn.Module) -> nn.Module:
    """`model` wrapped for data-parallel training when this process is one of several, else itself."""
    if world()[1] == 1:
        return model
    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def mean_over_replicas(value: float) -> float:
    """The mean of a per-replica figure (an epoch's loss) over all replicas."""
    if world()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return t.item() / world()[1]


def average_buffers(model: nn.Module) -> None:
    """Average the floating-point buffers (BatchNorm running statistics) over the replicas.

    DDP broadcasts rank 0's buffers before each forward, but every replica's last forward then updates them
    with its own share of the batch: without this the replicas would end an epoch with different statistics.
    """
    rank_count = world()[1]
    if rank_count == 1:
        return
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf.div_(rank_count)


def replica_device(device: torch.device) -> torch.device:
    """This replica's device: its own GPU (the rank's, set by `launch`) on CUDA."""
    if device.type == "cuda" and world()[1] > 1:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(fn: Callable[..., None], processes: int, *args, cuda: bool = False) -> None:
    """Run `fn(*args)` in `processes` new processes joined in one process group on this machine.

    CUDA: NCCL, process `rank` on GPU `rank`. CPU: gloo, the cores shared out between the processes
    (each would otherwise start one thread per core). A failing process fails the launch with its error.
    """
    import torch.multiprocessing as mp

    try:
        mp.start_processes(_replica, args=(processes, _free_port(), cuda, fn, args), nprocs=processes, join=True,
                           start_method="spawn")
    except mp.ProcessRaisedException as err:
        last = str(err).strip().splitlines()[-1]
        raise SupernetError(f"a supernet training process failed: {last}") from None
    except mp.ProcessExitedException as err:
        raise SupernetError(f"a supernet training process died ({err}); rerun the command to continue "
                            "from the last finished epoch") from None


def _replica(rank: int, processes: int, port: int, cuda: bool, fn: Callable[..., None], args: tuple) -> None:
    if cuda:
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // processes))
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=processes)
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()
