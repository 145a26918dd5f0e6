"""DenseNet (Huang et al. 2017): pre-activation dense layers that concatenate, and transitions."""
from __future__ import annotations

import torch
from torch import nn

from autocnn.catalog import dense_mid
from autocnn.layers.blocks.base import Block


class DenseLayer(Block):
    """BN-act-1x1(expansion*growth)-BN-act-kxk(growth), concatenated to the input.

    For dense stages `out_chs` is the growth rate k and `repeats` the number of layers, so a stage
    emits in + repeats*k channels; `expansion` is DenseNet's bn_size (4).
    """

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        growth = spec.out_chs
        mid = dense_mid(spec)
        self.norm1 = layers.norm(in_chs)
        self.act1 = layers.act()
        self.conv1 = layers.conv(in_chs, mid, 1, kind="standard")
        self.norm2 = layers.norm(mid)
        self.act2 = layers.act()
        self.conv2 = layers.conv(mid, growth, spec.kernel, stride)
        self.attn = layers.attention(growth)

    def forward(self, x):
        new = self.conv1(self.act1(self.norm1(x)))
        new = self.attn(self.conv2(self.act2(self.norm2(new))))
        return torch.cat([x, new], 1)


class Transition(Block):
    """BN-act-1x1 conv (compression) then average pooling by `stride` between dense stages."""

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        self.norm = layers.norm(in_chs)
        self.act = layers.act()
        self.conv = layers.conv(in_chs, out_chs, 1, kind="standard")
        self.attn = layers.attention(out_chs)
        self.pool = nn.AvgPool2d(stride, stride) if stride > 1 else nn.Identity()

    def forward(self, x):
        return self.pool(self.attn(self.conv(self.act(self.norm(x)))))
