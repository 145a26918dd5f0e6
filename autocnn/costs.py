"""Cost model of a candidate: parameters, FLOPs and measured latency.

Params and FLOPs are computed on the meta device, so pricing a genotype allocates no weights and
takes milliseconds even for EfficientNet-B7 at 600 px; constraints are checked before training.
FLOPs equal torch.utils.flop_counter's count (a multiply-add is 2 FLOPs).
"""
from __future__ import annotations

import itertools
import math
import statistics
import time

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from autocnn.builder import build_model
from autocnn.genotype import Genotype


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_layers(model: nn.Module) -> int:
    """Leaf modules: each runs once per batch, a fixed cost whatever its size (`autocnn.search.timing`)."""
    return sum(1 for m in model.modules() if next(m.children(), None) is None)


def meta_model(g: Genotype) -> nn.Module:
    """`g` built without weights: its size is known before any memory is spent on it."""
    with torch.device("meta"), _SkipInit():
        return build_model(g)


# What layer constructors initialise with (nn.init's dispatchable functions and the tensor methods the
# others end in): on the meta device there are no values to fill, and `materialize` runs each layer's
# `reset_parameters` for real once the weights exist.
_INITIALISERS = frozenset({nn.init.uniform_, nn.init.normal_, nn.init.constant_, nn.init.kaiming_uniform_,
                           torch.Tensor.uniform_, torch.Tensor.normal_, torch.Tensor.zero_, torch.Tensor.fill_})


class _SkipInit(TorchFunctionMode):
    """Initialisers as no-ops while building on the meta device: there they run Python reference kernels,
    about a third of building a network, to fill tensors that hold no values."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _INITIALISERS:
            return args[0] if args else next(iter(kwargs.values()))
        return func(*args, **(kwargs or {}))


def _shape_of(x) -> tuple[int, ...]:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else ()


def _same_shape(x, *args, **kwargs) -> tuple[int, ...]:
    return tuple(x.shape)


def _broadcast(x, other=None, *args, **kwargs) -> tuple[int, ...] | None:
    """Elementwise arithmetic's output shape (torch.broadcast_shapes handles symbolic sizes, ~100x slower)."""
    a, b = _shape_of(x), _shape_of(other)
    if a == b or not b:
        return a
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    if any(i != j and 1 not in (i, j) for i, j in zip(a, b)):
        return None
    return tuple(j if i == 1 else i for i, j in zip(a, b))


def _reduced(x, dim=None, keepdim=False, **kwargs) -> tuple[int, ...]:
    """mean/amax/sum over `dim` (None or () reduce every dim, as these ops do)."""
    dims = range(x.dim()) if dim is None or dim == () else ([dim] if isinstance(dim, int) else dim)
    gone = {d % x.dim() for d in dims}
    return tuple(1 if i in gone else n for i, n in enumerate(x.shape) if keepdim or i not in gone)


def _concatenated(tensors, dim=0, **kwargs) -> tuple[int, ...] | None:
    shapes = [list(t.shape) for t in tensors]
    total = sum(shape.pop(dim) for shape in shapes)
    if any(shape != shapes[0] for shape in shapes):
        return None
    shape = list(tensors[0].shape)
    shape[dim] = total
    return tuple(shape)


def _adaptive_pooled(x, output_size, *args, **kwargs) -> tuple[int, ...] | None:
    if args or kwargs.get("return_indices"):
        return None
    size = (output_size,) * 2 if isinstance(output_size, int) else tuple(output_size)
    return tuple(x.shape[:-2]) + tuple(n if s is None else s for s, n in zip(size, x.shape[-2:]))


def _conv_output(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> tuple[int, ...] | None:
    """Output shape of conv1d/2d/3d (torch's formula, string paddings included); None for an input smaller
    than the kernel, so that the op itself raises torch's error."""
    spatial = weight.dim() - 2
    if x.dim() < spatial + 1 or x.shape[-spatial - 1] != weight.shape[1] * groups:
        return None
    expand = (lambda v: (v,) * spatial if isinstance(v, int) else tuple(v))
    sizes = tuple(x.shape[-spatial:])
    if padding == "same":
        out = sizes
    else:
        pads = (0,) * spatial if padding == "valid" else expand(padding)
        out = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, p, d, k, s in
                    zip(sizes, pads, expand(dilation), weight.shape[2:], expand(stride)))
    if min(out) < 1:
        return None
    return tuple(x.shape[:-spatial - 1]) + (weight.shape[0],) + out


def _linear_output(x, weight, bias=None) -> tuple[int, ...] | None:
    return tuple(x.shape[:-1]) + (weight.shape[0],) if x.shape[-1] == weight.shape[1] else None


def _math_ops(*names: str) -> list:
    return [getattr(owner, name) for name in names for owner in (torch, torch.Tensor) if hasattr(owner, name)]


_F = torch.nn.functional
# op -> output shape from its arguments, or None to run the op after all (its meta kernel then raises on
# inputs that do not fit). The ops of these networks whose meta kernels are Python reference code (batch
# norm, reductions, broadcasting arithmetic, convs), ~1 ms a call; a shape worked out here costs microseconds.
_SHAPE_RULES: dict = {
    **dict.fromkeys([_F.batch_norm, _F.group_norm, _F.layer_norm, _F.dropout, _F.relu, _F.relu6, _F.hardtanh,
                     _F.silu, _F.hardswish, _F.hardsigmoid, _F.gelu, _F.elu, _F.leaky_relu,
                     *_math_ops("sigmoid", "sigmoid_", "tanh", "tanh_", "relu", "relu_", "bernoulli_")],
                    _same_shape),
    **dict.fromkeys(_math_ops("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "__add__", "__radd__",
                              "__iadd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__imul__",
                              "__truediv__", "__itruediv__"), _broadcast),
    **dict.fromkeys(_math_ops("mean", "amax", "amin", "sum"), _reduced),
    torch.cat: _concatenated,
    _F.adaptive_avg_pool2d: _adaptive_pooled, _F.adaptive_max_pool2d: _adaptive_pooled,
    torch.conv1d: _conv_output, torch.conv2d: _conv_output, torch.conv3d: _conv_output,
    _F.linear: _linear_output,
}
_MULTIPLY_ADDS = {torch.conv1d, torch.conv2d, torch.conv3d, _F.linear}


class _ShapeForward(TorchFunctionMode):
    """A forward on meta tensors that works out output shapes in Python and counts FLOPs as it goes.

    FLOPs are torch.utils.flop_counter's: 2 x outputs x (inputs feeding each) for every conv and linear
    op (bias not counted), the only ops with a formula in these networks. Ops without a shape rule run
    as usual on the meta device, so any network still runs, only slower.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0
        self.elements = 0  # of every output these ops write: the memory traffic of a forward pass

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rule = _SHAPE_RULES.get(func)
        shape = rule(*args, **kwargs) if rule is not None else None
        if shape is None:
            return func(*args, **kwargs)
        if func in _MULTIPLY_ADDS:
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            self.flops += 2 * math.prod(shape) * math.prod(weight.shape[1:])
        self.elements += math.prod(shape)
        first = args[0][0] if isinstance(args[0], (list, tuple)) else args[0]  # torch.cat takes a list
        return torch.empty(shape, dtype=first.dtype, device="meta")


def count_meta_work(model: nn.Module, g: Genotype, resolution: int | None = None) -> tuple[int, int]:
    """(FLOPs, activation elements) of one image at `resolution` (default: the genotype's) through `model`, a
    meta build of `g`. Activation elements: the outputs of every conv, linear, norm, activation, arithmetic,
    reduction and concatenation, what a memory-bound op costs in proportion to (on a CPU, BatchNorm,
    depthwise convs and attention gates at high resolution take longer than their FLOPs say).

    One shape-only forward: no weights, no kernels, the model left as it was (ready to materialize).
    """
    res = resolution or g.resolution
    with _ShapeForward() as counter, torch.no_grad():
        model(torch.empty(1, g.in_chans, res, res, device="meta"))
    return counter.flops, counter.elements


def count_meta_flops(model: nn.Module, g: Genotype, resolution: int | None = None) -> int:
    """FLOPs of one image through `model`, a meta build of `g` (see `count_meta_work`)."""
    return count_meta_work(model, g, resolution)[0]


def count_flops(g: Genotype, resolution: int | None = None) -> int:
    """FLOPs of one forward pass of one image at `resolution` (default: the genotype's)."""
    return count_meta_flops(meta_model(g), g, resolution)


def genotype_costs(g: Genotype, resolution: int | None = None) -> dict[str, int]:
    model = meta_model(g)  # one meta build serves both counts
    return {"params": count_params(model), "flops": count_meta_flops(model, g, resolution)}


def materialize(model: nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    """Weights for a meta-built model, from the initialisers its layers' constructors run (a model that
    has weights already is returned as it is).

    Pricing a candidate builds it once on the meta device; materializing that build instead of
    building again halves the Python work of constructing every layer.
    """
    if not any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        return model
    model = model.to_empty(device=device)
    with torch.no_grad():
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return model


def measure_latency_ms(model: nn.Module, g: Genotype, *, device: str | torch.device = "cpu") -> float:
    """A candidate's latency as the search records it: batch 1 at its resolution, 1 warm-up and 3 timed passes."""
    return measure_latency(model, resolution=g.resolution, in_chans=g.in_chans, device=device, warmup=1, repeats=3)


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
