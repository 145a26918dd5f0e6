"""Plain stacks (LeNet, AlexNet, VGG) and the stateless pieces stems and heads are made of."""
from __future__ import annotations

from torch import nn

from autocnn.layers.blocks.base import Block


class ConvBlock(Block):
    """conv -> norm -> act [-> attention]: one layer of a LeNet/AlexNet/VGG-style stack."""

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        self.conv = layers.conv(in_chs, out_chs, spec.kernel, stride, padding=spec.padding, groups=spec.groups)
        self.bn = layers.norm(out_chs)
        self.act = layers.act()
        self.attn = layers.attention(out_chs)

    def forward(self, x):
        return self.attn(self.act(self.bn(self.conv(x))))


class _Pool(Block):
    pool_cls: type[nn.Module]

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        self.pool = self.pool_cls(spec.kernel, stride, spec.padding or 0, ceil_mode=spec.ceil_mode)

    def forward(self, x):
        return self.pool(x)


class MaxPool(_Pool):
    pool_cls = nn.MaxPool2d


class AvgPool(_Pool):
    pool_cls = nn.AvgPool2d


class NormAct(Block):
    """norm -> act with no conv: DenseNet's closing BN-ReLU, or a pre-activation stage boundary."""

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        self.bn = layers.norm(in_chs)
        self.act = layers.act()

    def forward(self, x):
        return self.act(self.bn(x))
