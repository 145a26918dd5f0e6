"""Attention modules. Contract: `(channels, *, ratio, act_layer, rd_channels=None)`.

`ratio` is the reduction divisor r of the papers (hidden = channels / r); a block may pass
`rd_channels` when its reference network reduces from another width (EfficientNet squeezes from
the block's input width, not the expanded one).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from autocnn import catalog
from autocnn.registry import Registry

ATTENTION: Registry[Callable[..., nn.Module]] = Registry.implementing(catalog.ATTENTION)


def reduced_channels(channels: int, ratio: float, rd_channels: int | None) -> int:
    return rd_channels if rd_channels is not None else max(1, int(channels / ratio))


@ATTENTION.register("none")
def no_attention(channels: int, *, ratio: float, act_layer, rd_channels: int | None = None) -> nn.Module:
    return nn.Identity()


@ATTENTION.register("se")
class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al. 2018), 1x1-conv form as in torchvision and timm.

    x * sigmoid(W2 act(W1 avgpool(x) + b1) + b2)
    """

    def __init__(self, channels: int, *, ratio: float = 16.0, act_layer=nn.ReLU, rd_channels: int | None = None):
        super().__init__()
        rd = reduced_channels(channels, ratio, rd_channels)
        self.fc1 = nn.Conv2d(channels, rd, 1)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(rd, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.fc2(self.act(self.fc1(scale)))
        return x * scale.sigmoid()


@ATTENTION.register("se_fc")
class SqueezeExciteFC(nn.Module):
    """Squeeze-and-Excitation with fully connected layers, as the paper and the seeds' Keras code write it."""

    def __init__(self, channels: int, *, ratio: float = 16.0, act_layer=nn.ReLU, rd_channels: int | None = None):
        super().__init__()
        rd = reduced_channels(channels, ratio, rd_channels)
        self.fc1 = nn.Linear(channels, rd)
        self.act = act_layer()
        self.fc2 = nn.Linear(rd, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.act(self.fc1(x.mean((2, 3)))))
        return x * scale.sigmoid()[:, :, None, None]


@ATTENTION.register("cbam")
class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018): channel then spatial attention.

    Mc = sigmoid(MLP(avgpool x) + MLP(maxpool x)), MLP = W1 act(W0 .) without biases;
    Ms = sigmoid(conv7x7([mean_c; max_c])).
    """

    def __init__(self, channels: int, *, ratio: float = 16.0, act_layer=nn.ReLU,
                 rd_channels: int | None = None, spatial_kernel: int = 7):
        super().__init__()
        rd = reduced_channels(channels, ratio, rd_channels)
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=False)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=False)
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        mx = self.fc2(self.act(self.fc1(x.amax((2, 3), keepdim=True))))
        x = x * (avg + mx).sigmoid()
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * self.spatial(pooled).sigmoid()


def eca_kernel_size(channels: int, gamma: int = 2, beta: int = 1) -> int:
    """k = |log2(C)/gamma + beta/gamma| rounded to the nearest odd number upward (Wang et al. 2020)."""
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 else t + 1


@ATTENTION.register("eca")
class ECA(nn.Module):
    """Efficient Channel Attention: a 1-D conv across the pooled channel descriptor; no reduction."""

    def __init__(self, channels: int, *, ratio: float = 16.0, act_layer=nn.ReLU, rd_channels: int | None = None):
        super().__init__()
        k = eca_kernel_size(channels)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.conv(x.mean((2, 3)).unsqueeze(1)).squeeze(1)
        return x * scale.sigmoid()[:, :, None, None]
