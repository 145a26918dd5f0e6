"""Ghost bottleneck (GhostNet, Han et al., CVPR 2020): half of each 1x1 conv's outputs are cheap depthwise
"ghosts" of the other half, so the block costs about half the multiply-adds of an inverted residual."""
from __future__ import annotations

import math

import torch
from torch import nn

from autocnn.layers.blocks.base import Block
from autocnn.layers.common import DropPath
from autocnn.scaling import make_divisible


class GhostModule(nn.Module):
    """1x1 conv to ceil(out/2) intrinsic maps, a 3x3 depthwise conv makes as many ghosts; concatenated, cut to out."""

    def __init__(self, in_chs, out_chs, *, layers, act=True):
        super().__init__()
        self.out_chs = out_chs
        intrinsic = math.ceil(out_chs / 2)
        self.primary = layers.cna(in_chs, intrinsic, 1, kind="standard", act=act)
        self.cheap = layers.cna(intrinsic, intrinsic, 3, groups=intrinsic, kind="standard", act=act)

    def forward(self, x):
        primary = self.primary(x)
        return torch.cat([primary, self.cheap(primary)], dim=1)[:, :self.out_chs]


class GhostBottleneck(Block):
    """ghost expand -> (strided depthwise kxk) -> attention -> ghost project, identity or projected shortcut."""

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        mid = make_divisible(in_chs * spec.expansion, 4)
        self.expand = GhostModule(in_chs, mid, layers=layers)
        self.conv_dw = (nn.Sequential(layers.conv(mid, mid, spec.kernel, stride, groups=mid, kind="standard"),
                                      layers.norm(mid)) if stride > 1 else nn.Identity())
        self.attn = layers.attention(mid)
        self.project = GhostModule(mid, out_chs, layers=layers, act=False)
        if stride == 1 and in_chs == out_chs:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                layers.conv(in_chs, in_chs, spec.kernel, stride, groups=in_chs, kind="standard"), layers.norm(in_chs),
                layers.conv(in_chs, out_chs, 1, kind="standard", padding=0), layers.norm(out_chs))
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x):
        out = self.project(self.attn(self.conv_dw(self.expand(x))))
        return self.drop_path(out) + self.shortcut(x)
