"""Cost model of a candidate: parameters, FLOPs and measured latency.

Params and FLOPs are computed on the meta device, so pricing a genotype allocates no weights and
takes milliseconds even for EfficientNet-B7 at 600 px; constraints are checked before training.
FLOPs are torch.utils.flop_counter's count (a multiply-add is 2 FLOPs).
"""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from autocnn.builder import build_model
from autocnn.genotype import Genotype


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta_model(g: Genotype) -> nn.Module:
    with torch.device("meta"):
        return build_model(g)


def count_flops(g: Genotype, resolution: int | None = None) -> int:
    """FLOPs of one forward pass of one image at `resolution` (default: the genotype's)."""
    res = resolution or g.resolution
    model = _meta_model(g).eval()
    x = torch.empty(1, g.in_chans, res, res, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def genotype_costs(g: Genotype, resolution: int | None = None) -> dict[str, int]:
    return {"params": count_params(_meta_model(g)), "flops": count_flops(g, resolution)}


@torch.no_grad()
def measure_latency(model: nn.Module, *, resolution: int, in_chans: int = 3, batch_size: int = 1,
                    device: str | torch.device = "cpu", warmup: int = 3, repeats: int = 10) -> float:
    """Median wall-clock milliseconds of one eval forward pass on `device`."""
    device = torch.device(device)
    was_training = model.training
    model.eval().to(device)
    x = torch.randn(batch_size, in_chans, resolution, resolution, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        model(x)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    model.train(was_training)
    return statistics.median(times)
