"""Data-parallel supernet training: one process per GPU (NCCL), or several CPU processes (gloo), on this
machine (`launch`) or as Ray Train workers on a Ray cluster (`launch_on_ray`).

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
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

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


@contextmanager
def on_ray(address: str | None) -> Iterator[int]:
    """Connected to the Ray cluster at `address` (or a local Ray started for the run) for the block; yields
    the cluster's GPU count."""
    import ray

    from autocnn.cluster import connect

    started = connect(address)
    try:
        yield int(ray.cluster_resources().get("GPU", 0))
    finally:
        if started:
            ray.shutdown()


def launch_on_ray(fn: Callable[[], None], processes: int, *, cuda: bool, folder: str,
                  poll: Callable[[], None] = lambda: None) -> None:
    """Run `fn()` in `processes` Ray Train workers joined in one process group (NCCL, a GPU each; else gloo),
    on the cluster `on_ray` connected to, calling `poll()` here every second meanwhile and once at the end.

    Ray Train's `TorchTrainer` places the workers and sets up the process group; `fn` then trains exactly as
    under `launch`. The workers read the dataset and write the supernet's folder themselves (the first one
    writes), so on a cluster of several machines both must be on storage every node sees; their output stays
    in the cluster's logs, and `poll` (reading what the first worker wrote) is how the driver shows progress.
    Ray Train keeps its own run record under `folder`/ray_train.
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(  # `fn` wrapped: Ray Train would pass its config to a function that takes arguments
        lambda: fn(), scaling_config=ScalingConfig(num_workers=processes, use_gpu=cuda),
        torch_config=TorchConfig(backend="nccl" if cuda else "gloo"),
        run_config=RunConfig(name="supernet", storage_path=str(Path(folder).resolve() / "ray_train"),
                             failure_config=FailureConfig(max_failures=0)))
    failed: list[BaseException] = []
    finished = threading.Event()

    def fit() -> None:
        try:
            trainer.fit()
        except Exception as err:  # Ray Train wraps a worker's error in its own (TrainingFailedError and others)
            failed.append(err.__cause__ or err)
        finally:
            finished.set()

    threading.Thread(target=fit, name="ray-train-fit", daemon=True).start()
    while not finished.wait(1.0):
        poll()
    poll()
    if failed:
        last = (str(failed[0]).strip().splitlines() or [type(failed[0]).__name__])[-1][:300]
        raise SupernetError(f"a supernet training worker on Ray failed: {last}; rerun the command to continue "
                            "from the last finished epoch")
