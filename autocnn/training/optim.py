"""Optimizer and learning-rate schedule registries, so the config names them and nothing branches on strings."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..registry import Registry

OptimizerFactory = Callable[[list[dict], float, torch.device], torch.optim.Optimizer]
ScheduleFactory = Callable[[int, int], Callable[[int], float]]
"""(total_steps, warmup_steps) -> step -> learning-rate multiplier."""

OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")
SCHEDULES: Registry[ScheduleFactory] = Registry("schedule")
DEFAULT_LR = {"sgd": 0.05, "adamw": 2e-3}


@OPTIMIZERS.register("sgd")
def _sgd(groups: list[dict], lr: float, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, foreach=True)


@OPTIMIZERS.register("adamw")
def _adamw(groups: list[dict], lr: float, device: torch.device) -> torch.optim.Optimizer:
    # fused on CUDA; elsewhere foreach, which torch enables by default on CUDA only: on a CPU it takes 40 % off
    # the step of a network with a hundred parameter tensors
    cuda = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=lr, fused=cuda, foreach=not cuda)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay only weight matrices and kernels: decaying norm scales and biases hurts small CNNs."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _warm(step: int, warmup: int, start: float) -> float:
    return start + (1.0 - start) * (step + 1) / warmup


@SCHEDULES.register("cosine")
def _cosine(total: int, warmup: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return _warm(step, warmup, 0.0)
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


@SCHEDULES.register("onecycle")
def _onecycle(total: int, warmup: int) -> Callable[[int], float]:
    """Smith's one-cycle: ramp from lr/25 (over 30% of training unless warmup is set), cosine down to lr/2.5e5."""
    warmup = warmup or max(1, round(0.3 * total))
    start, end = 1 / 25, 1 / 25 / 1e4

    def factor(step: int) -> float:
        if step < warmup:
            return _warm(step, warmup, start)
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


@SCHEDULES.register("constant")
def _constant(total: int, warmup: int) -> Callable[[int], float]:
    return lambda step: _warm(step, warmup, 0.0) if step < warmup else 1.0
