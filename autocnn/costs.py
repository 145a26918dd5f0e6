"""Cost model of a candidate: parameters, FLOPs and measured latency.

Params and FLOPs are computed on the meta device, so pricing a genotype allocates no weights and
takes milliseconds even for EfficientNet-B7 at 600 px; constraints are checked before training.
FLOPs equal torch.utils.flop_counter's count (a multiply-add is 2 FLOPs).
"""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from autocnn.builder import build_model
from autocnn.genotype import Genotype


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_layers(model: nn.Module) -> int:
    """Leaf modules: each runs once per batch, a fixed cost whatever its size (`autocnn.search.timing`)."""
    return sum(1 for m in model.modules() if next(m.children(), None) is None)


def meta_model(g: Genotype) -> nn.Module:
    """`g` built without weights: its size is known before any memory is spent on it."""
    with torch.device("meta"):
        return build_model(g)


def _multiply_adds_hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
    """FLOPs of a conv or linear layer from its output shape: 2 x outputs x (inputs feeding each).

    The same count as torch.utils.flop_counter's conv and addmm formulas (bias not counted), which
    are the only ops with a formula in these networks; a hook per layer costs a fraction of a
    TorchDispatchMode that intercepts every aten op.
    """
    fan_in = module.in_features if isinstance(module, nn.Linear) else module.weight[0].numel()
    module.autocnn_flops += 2 * output.numel() * fan_in


_COUNTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


# Shape-preserving modules without multiply-adds: no formula counts anything in them, but on the
# meta device their forward runs Python reference kernels (eval batch norm alone was over half of the
# cost model's time), so the throwaway model used for counting swaps them for nn.Identity.
_FLOP_FREE = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.Dropout, nn.ReLU, nn.ReLU6,
              nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.GELU, nn.Tanh, nn.Sigmoid)


def _strip_flop_free(module: nn.Module, swapped: list | None = None) -> nn.Module:
    """`module` with its flop-free children replaced by nn.Identity; `swapped` collects what to put back."""
    for name, child in module.named_children():
        if isinstance(child, _FLOP_FREE):
            setattr(module, name, nn.Identity())
            if swapped is not None:
                swapped.append((module, name, child))
        else:
            _strip_flop_free(child, swapped)
    return module


class _FlopHooks:
    """Counts FLOPs of the forward passes run while attached; detaches without a trace on the model."""

    def __init__(self, model: nn.Module) -> None:
        self.counted = [m for m in model.modules() if isinstance(m, _COUNTED)]
        self.handles, self.final = [], None
        for module in self.counted:
            module.autocnn_flops = 0
            self.handles.append(module.register_forward_hook(_multiply_adds_hook))

    @property
    def total(self) -> int:
        return self.final if self.final is not None else int(sum(m.autocnn_flops for m in self.counted))

    def detach(self) -> None:
        if self.final is not None:
            return
        self.final = self.total
        for handle in self.handles:
            handle.remove()
        for module in self.counted:
            del module.autocnn_flops


def _count_flops(model: nn.Module, g: Genotype, resolution: int | None) -> int:
    """FLOPs of `model` (a meta copy of `g`, consumed) on one image at `resolution`."""
    res = resolution or g.resolution
    hooks = _FlopHooks(_strip_flop_free(model.eval()))
    try:
        with torch.no_grad():
            model(torch.empty(1, g.in_chans, res, res, device="meta"))
    finally:
        hooks.detach()
    return hooks.total


def count_meta_flops(model: nn.Module, g: Genotype) -> int:
    """FLOPs of `g` counted on its meta build `model`, which is left as it was (ready to materialize).

    Costs a meta forward and no second build: the way to price a candidate whose latency is not wanted.
    """
    swapped: list = []
    was_training = model.training
    try:
        return _count_flops(_strip_flop_free(model, swapped), g, None)
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
        model.train(was_training)


def count_flops(g: Genotype, resolution: int | None = None) -> int:
    """FLOPs of one forward pass of one image at `resolution` (default: the genotype's)."""
    return _count_flops(meta_model(g), g, resolution)


def genotype_costs(g: Genotype, resolution: int | None = None) -> dict[str, int]:
    model = meta_model(g)  # one meta build serves both counts
    params = count_params(model)
    return {"params": params, "flops": _count_flops(model, g, resolution)}


def materialize(model: nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    """Weights for a meta-built model, from the initialisers its layers' constructors run.

    Pricing a candidate builds it once on the meta device; materializing that build instead of
    building again halves the Python work of constructing every layer.
    """
    model = model.to_empty(device=device)
    with torch.no_grad():
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return model


def measure_costs(model: nn.Module, g: Genotype, *, device: str | torch.device = "cpu", warmup: int = 1,
                  repeats: int = 3) -> dict[str, float]:
    """FLOPs and latency of a built model in one go: the warm-up passes also count the FLOPs."""
    hooks = _FlopHooks(model)
    try:
        latency = measure_latency(model, resolution=g.resolution, in_chans=g.in_chans, device=device,
                                  warmup=max(1, warmup), repeats=repeats, after_warmup=hooks.detach)
    except BaseException:
        hooks.detach()
        raise
    return {"flops": hooks.total // max(1, warmup), "latency_ms": latency}


@torch.no_grad()
def measure_latency(model: nn.Module, *, resolution: int, in_chans: int = 3, batch_size: int = 1,
                    device: str | torch.device = "cpu", warmup: int = 3, repeats: int = 10,
                    after_warmup=None) -> float:
    """Median wall-clock milliseconds of one eval forward pass on `device`."""
    device = torch.device(device)
    was_training = model.training
    model.eval().to(device)
    x = torch.randn(batch_size, in_chans, resolution, resolution, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        model(x)
    sync()
    if after_warmup is not None:
        after_warmup()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    model.train(was_training)
    return statistics.median(times)
