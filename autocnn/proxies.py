"""Zero-cost proxies: a score of an untrained network from one mini-batch; higher predicts better.

Each proxy is `proxy(model, x, y) -> float`: `model` freshly initialised, `x` a normalised mini-batch
N×C×H×W at the model's resolution, `y` its targets (class indices, or multi-hot floats for multi-label
data). A proxy leaves the model as it found it (weights, BatchNorm statistics, gradients, modes): it
measures through `torch.func.functional_call` on copies of the buffers and takes gradients with
`torch.autograd.grad`, never in `.grad`. Dropout and stochastic depth are off while measuring, so a
score is a function of the weights and the batch alone (deterministic on CPU).

`autocnn search --prescreen PROXY:K` ranks K sampled candidates with one and trains the best
(`autocnn.search.prescreen`). Evaluations of these proxies find that many rank architectures no better
than the parameter count (Ning et al. 2021, "Evaluating Efficient Performance Estimators of Neural
Architectures", NeurIPS; White et al. 2022, "A Deeper Look at Zero-Cost Proxies for Lightweight NAS",
ICLR blog track): `params` is the baseline any other proxy must beat on a space to be worth its cost.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from autocnn.registry import Registry

Proxy = Callable[[nn.Module, torch.Tensor, torch.Tensor], float]
PROXIES: Registry[Proxy] = Registry("proxy")


@contextmanager
def _measuring(model: nn.Module, batch_stats: bool):
    """Every module in eval mode but BatchNorm, which normalises with the batch's statistics when
    `batch_stats` (train mode, as an untrained network starts training); each module's mode restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    if batch_stats:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.train()  # a frozen block's BatchNorm (autocnn.weights.FrozenBatchNorm2d) stays in eval mode
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def _forward(model: nn.Module, x: torch.Tensor, *, batch_stats: bool, params: dict | None = None,
             dtype: torch.dtype | None = None) -> torch.Tensor:
    """`model(x)` with `params` (name -> tensor) replacing its parameters and copies of its buffers (in
    `dtype` if given), so that running statistics a train-mode BatchNorm updates are not the model's."""
    buffers = {name: b.to(dtype) if dtype is not None and b.is_floating_point() else b.clone()
               for name, b in model.named_buffers()}
    with _measuring(model, batch_stats):
        return functional_call(model, {**(params or {}), **buffers}, (x,))


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if y.is_floating_point():  # multi-hot targets of multi-label data
        return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))
    return F.cross_entropy(logits, y)


def _weights(model: nn.Module) -> list[nn.Parameter]:
    """The conv and linear weights (parameters of 2 or more dims) that train: what the papers score."""
    return [p for p in model.parameters() if p.requires_grad and p.dim() > 1]


def _gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, d loss / d weight) of every weight on the batch; a weight the loss does not reach gets zeros."""
    weights = _weights(model)
    loss = _loss(_forward(model, x, batch_stats=True), y)
    grads = torch.autograd.grad(loss, weights, allow_unused=True)
    return [(w.detach(), torch.zeros_like(w) if g is None else g) for w, g in zip(weights, grads)]


@PROXIES.register("params")
def params(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The parameter count itself (not its log): the baseline. In a fixed training recipe larger networks
    tend to reach higher accuracy, and the evaluations cited in the module doc find this ranks candidates
    as well as most published proxies."""
    return float(sum(p.numel() for p in model.parameters()))


@PROXIES.register("flops")
def flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """FLOPs of one image of the batch (torch.utils.flop_counter's count, as `autocnn.costs`): the other
    free baseline, which unlike `params` sees the resolution and the strides."""
    from torch.utils.flop_counter import FlopCounterMode  # here: importing it loads triton (0.2 s a start)

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        _forward(model, x[:1], batch_stats=False)
    return float(counter.get_total_flops())


@PROXIES.register("synflow")
def synflow(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """SynFlow (Tanaka et al. 2020, "Pruning neural networks without any data by iteratively conserving
    synaptic flow", NeurIPS; as a NAS proxy: Abdelfattah et al. 2021, "Zero-Cost Proxies for Lightweight
    NAS", ICLR): sum over weights of |θ| · dR/d|θ|, R the sum of the outputs of the network with every
    parameter replaced by its absolute value on an all-ones image. Data-free: `x` gives only the shape.

    Computed in float64 as Abdelfattah et al. do (products over the depth overflow float32), on absolute
    copies of the parameters, so the model's weights are untouched. BatchNorm in eval mode: at
    initialisation (running mean 0, variance 1) it is a positive per-channel scale, which keeps the network
    the linearised one the paper defines; batch statistics of one constant image would zero every channel.
    Saturating activations (relu6, hardswish, sigmoid, tanh) clip that flow, so scores compare best across
    candidates of one activation.
    """
    flow = {name: p.detach().abs().double().requires_grad_() for name, p in model.named_parameters()}
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    out = _forward(model, ones, batch_stats=False, params=flow, dtype=torch.float64)
    weights = [w for w in flow.values() if w.dim() > 1]  # scored: the conv and linear weights, as the others
    grads = torch.autograd.grad(out.sum(), weights, allow_unused=True)
    return float(sum((w.detach() * g).sum() for w, g in zip(weights, grads) if g is not None))


@PROXIES.register("naswot")
def naswot(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """NASWOT (Mellor et al. 2021, "Neural Architecture Search without Training", ICML): log |det K|, where
    K[i, j] counts the activation units on which images i and j of the batch fall on the same side of zero
    (the input of every activation module, > 0 or not: for ReLU, active or not). A network whose units tell
    the images apart has a K far from singular. BatchNorm normalises with the batch's statistics, as in the
    paper's untrained networks in train mode. -inf when two images get identical codes everywhere."""
    from autocnn.layers.common import ACTIVATIONS

    kinds = tuple({type(make()) for _, make in ACTIVATIONS.items()})
    kernel = torch.zeros((len(x), len(x)), dtype=torch.float64, device=x.device)

    def count(module, inputs) -> None:  # before the module: activations run in place
        codes = (inputs[0].detach().flatten(1) > 0).double()
        kernel.add_(codes @ codes.T + (1 - codes) @ (1 - codes).T)

    hooks = [m.register_forward_pre_hook(count) for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            _forward(model, x, batch_stats=True)
    finally:
        for hook in hooks:
            hook.remove()
    return float(torch.linalg.slogdet(kernel).logabsdet)


@PROXIES.register("grad_norm")
def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """grad_norm (Abdelfattah et al. 2021, "Zero-Cost Proxies for Lightweight NAS", ICLR): the sum over
    layers of the L2 norm of the loss's gradient on their weights, for the batch at initialisation."""
    return float(sum(g.norm() for _, g in _gradients(model, x, y)))


@PROXIES.register("snip")
def snip(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """SNIP (Lee et al. 2019, "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR),
    summed over the network as Abdelfattah et al. 2021 ("Zero-Cost Proxies for Lightweight NAS", ICLR) make
    it a proxy: Σ |θ · dL/dθ| over the weights, the loss's first-order sensitivity to removing each one."""
    return float(sum((w * g).abs().sum() for w, g in _gradients(model, x, y)))


@PROXIES.register("zico")
def zico(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """ZiCo (Li et al. 2023, "ZiCo: Zero-shot NAS via Inverse Coefficient of Variation on Gradients", ICLR):
    Σ over layers of log Σ_θ mean|g_θ| / std(g_θ), the gradient's mean and (population) deviation taken over
    mini-batches: large, consistent gradients predict fast convergence to good accuracy. The paper uses two
    mini-batches; here the one batch is split in two halves. Weights whose gradient does not vary are
    skipped, as in the paper's code; a batch of one image scores 0."""
    halves = [_gradients(model, xs, ys) for xs, ys in zip(x.chunk(2), y.chunk(2))]
    if len(halves) < 2:
        return 0.0
    score = 0.0
    for layer in zip(*halves):
        grads = torch.stack([g for _, g in layer])
        std = (grads - grads.mean(dim=0)).square().mean(dim=0).sqrt()  # torch.std over a dim of 2 is slow on CPU
        mean = grads.abs().mean(dim=0)
        varies = std > 0
        total = float((mean[varies] / std[varies]).sum())
        if total > 0:
            score += math.log(total)
    return score
