"""Activations, norms, conv kinds and the conv-norm-act unit every block is made of."""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

from autocnn import catalog
from autocnn.layers.attention import ATTENTION
from autocnn.registry import Registry

ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry.implementing(catalog.ACTIVATIONS)
NORMS: Registry[Callable[[int, float], nn.Module]] = Registry.implementing(catalog.NORMS)
CONVS: Registry[Callable[..., nn.Module]] = Registry.implementing(catalog.CONVS)

ACTIVATIONS.register("relu", lambda: nn.ReLU(inplace=True))
ACTIVATIONS.register("relu6", lambda: nn.ReLU6(inplace=True))
ACTIVATIONS.register("silu", lambda: nn.SiLU(inplace=True))
ACTIVATIONS.register("swish", lambda: nn.SiLU(inplace=True))
ACTIVATIONS.register("hardswish", lambda: nn.Hardswish(inplace=True))
ACTIVATIONS.register("gelu", lambda: nn.GELU())
ACTIVATIONS.register("tanh", lambda: nn.Tanh())
ACTIVATIONS.register("sigmoid", lambda: nn.Sigmoid())


@NORMS.register("batch")
def batch_norm(channels: int, eps: float) -> nn.Module:
    return nn.BatchNorm2d(channels, eps=eps)


@NORMS.register("group")
def group_norm(channels: int, eps: float) -> nn.Module:
    """32 groups where the width allows (Wu & He), otherwise the largest common divisor."""
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=eps)


@NORMS.register("none")
def no_norm(channels: int, eps: float) -> nn.Module:
    return nn.Identity()


def same_padding(kernel, dilation: int = 1):
    if isinstance(kernel, tuple):
        return tuple(((k - 1) // 2) * dilation for k in kernel)
    return ((kernel - 1) // 2) * dilation


# Every conv kind has the signature (in_chs, out_chs, kernel, stride, padding, dilation, groups, bias).
# A block builds its spatial (kxk) convs of the stage's conv kind and its 1x1 projections `standard`;
# `autocnn.catalog` lists each block kind's spatial convs and refuses the kinds they cannot be.

@CONVS.register("standard")
def standard_conv(in_chs, out_chs, kernel, stride, padding, dilation, groups, bias) -> nn.Module:
    return nn.Conv2d(in_chs, out_chs, kernel, stride, padding, dilation, groups, bias=bias)


@CONVS.register("depthwise")
def depthwise_conv(in_chs, out_chs, kernel, stride, padding, dilation, groups, bias) -> nn.Module:
    """One filter group per input channel; out_chs = m * in_chs gives each channel m filters (Keras'
    `depth_multiplier`). Other widths have no depthwise form: the genotype refuses them
    (`catalog.BlockKind.conv_problems`), so they never reach this; `groups` is ignored."""
    if out_chs % in_chs:
        raise ValueError(f"a depthwise conv needs out_chs a multiple of in_chs, got {in_chs} -> {out_chs}")
    return nn.Conv2d(in_chs, out_chs, kernel, stride, padding, dilation, in_chs, bias=bias)


@CONVS.register("separable")
def separable_conv(in_chs, out_chs, kernel, stride, padding, dilation, groups, bias) -> nn.Module:
    """Depthwise then pointwise, with nothing between (Keras `SeparableConv2D`, timm's Xception): any widths."""
    return nn.Sequential(OrderedDict(
        dw=nn.Conv2d(in_chs, in_chs, kernel, stride, padding, dilation, in_chs, bias=False),
        pw=nn.Conv2d(in_chs, out_chs, 1, bias=bias),
    ))


@CONVS.register("separable_pw")
def separable_pw_conv(in_chs, out_chs, kernel, stride, padding, dilation, groups, bias) -> nn.Module:
    """Pointwise then depthwise: the order the Xception paper describes for its "extreme" Inception."""
    return nn.Sequential(OrderedDict(
        pw=nn.Conv2d(in_chs, out_chs, 1, bias=False),
        dw=nn.Conv2d(out_chs, out_chs, kernel, stride, padding, dilation, out_chs, bias=bias),
    ))


class LayerFactory:
    """What a block needs to make its layers: the stage's choices bound once by the builder."""

    def __init__(self, *, act: str, norm: str, eps: float, conv: str, attention: str, ratio: float,
                 dilation: int = 1, bias: bool = False) -> None:
        self._act = ACTIVATIONS.get(act)
        self._norm = NORMS.get(norm)
        self._conv = CONVS.get(conv)
        self._attention = ATTENTION.get(attention)
        self.act_name, self.norm_name, self.conv_name = act, norm, conv
        self.attention_name = attention
        self.eps, self.ratio, self.dilation, self.bias = eps, ratio, dilation, bias

    def act(self) -> nn.Module:
        return self._act()

    def norm(self, channels: int) -> nn.Module:
        return self._norm(channels, self.eps)

    def conv(self, in_chs: int, out_chs: int, kernel=3, stride: int = 1, *, padding=None,
             groups: int = 1, kind: str | None = None, bias: bool | None = None) -> nn.Module:
        """A spatial conv of the stage's conv kind (or `kind` for convs whose kind is fixed, like 1x1)."""
        factory = CONVS.get(kind) if kind else self._conv
        dilation = self.dilation if kernel != 1 else 1
        if padding is None:
            padding = same_padding(kernel, dilation)
        return factory(in_chs, out_chs, kernel, stride, padding, dilation, groups,
                       self.bias if bias is None else bias)

    def cna(self, in_chs: int, out_chs: int, kernel=3, stride: int = 1, *, padding=None,
            groups: int = 1, kind: str | None = None, act: bool = True) -> "ConvNormAct":
        return ConvNormAct(
            self.conv(in_chs, out_chs, kernel, stride, padding=padding, groups=groups, kind=kind),
            self.norm(out_chs), self.act() if act else nn.Identity(),
        )

    def attention(self, channels: int, rd_channels: int | None = None) -> nn.Module:
        return self._attention(channels, ratio=self.ratio, act_layer=self._act, rd_channels=rd_channels)


class ConvNormAct(nn.Sequential):
    """conv -> norm -> act with stable child names (`conv`, `bn`, `act`) for export and weight maps."""

    def __init__(self, conv: nn.Module, norm: nn.Module, act: nn.Module) -> None:
        super().__init__(OrderedDict(conv=conv, bn=norm, act=act))


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al. 2016): drops the residual branch, rescales the kept."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"
