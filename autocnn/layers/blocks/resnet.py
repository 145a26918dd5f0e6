"""Residual blocks of ResNet (He et al. 2016), ResNeXt (grouped 3x3) and SE/CBAM-ResNet."""
from __future__ import annotations

from torch import nn

from autocnn.catalog import bottleneck_width
from autocnn.layers.blocks.base import Block
from autocnn.layers.common import DropPath


def projection(in_chs, out_chs, stride, layers) -> nn.Module:
    """1x1 strided projection on the identity path when the shape changes (ResNet option B)."""
    if stride == 1 and in_chs == out_chs:
        return nn.Identity()
    return nn.Sequential(layers.conv(in_chs, out_chs, 1, stride, kind="standard", padding=0, bias=False),
                         layers.norm(out_chs))


class BasicBlock(Block):
    """Two kxk convs; attention sits on the residual branch just before the addition (as in SENet)."""

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        self.conv1 = layers.conv(in_chs, out_chs, spec.kernel, stride, groups=spec.groups)
        self.bn1 = layers.norm(out_chs)
        self.act1 = layers.act()
        self.conv2 = layers.conv(out_chs, out_chs, spec.kernel, groups=spec.groups)
        self.bn2 = layers.norm(out_chs)
        self.attn = layers.attention(out_chs)
        self.downsample = projection(in_chs, out_chs, stride, layers)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()
        self.act2 = layers.act()

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.attn(self.bn2(self.conv2(out)))
        return self.act2(self.drop_path(out) + self.downsample(x))


class Bottleneck(Block):
    """1x1 reduce -> kxk (stride, groups) -> 1x1 expand; `expansion` = out/mid (4 for ResNet, 2 for ResNeXt-32x4d)."""

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        mid = bottleneck_width(out_chs, spec.expansion, spec.groups)
        self.conv1 = layers.conv(in_chs, mid, 1, kind="standard")
        self.bn1 = layers.norm(mid)
        self.act1 = layers.act()
        self.conv2 = layers.conv(mid, mid, spec.kernel, stride, groups=spec.groups)
        self.bn2 = layers.norm(mid)
        self.act2 = layers.act()
        self.conv3 = layers.conv(mid, out_chs, 1, kind="standard")
        self.bn3 = layers.norm(out_chs)
        self.attn = layers.attention(out_chs)
        self.downsample = projection(in_chs, out_chs, stride, layers)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()
        self.act3 = layers.act()

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.attn(self.bn3(self.conv3(out)))
        return self.act3(self.drop_path(out) + self.downsample(x))
