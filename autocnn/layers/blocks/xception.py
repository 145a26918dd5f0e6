"""Xception's residual module (Chollet 2017), with the semantics of timm's `legacy_xception` Block."""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from autocnn.catalog import xception_units
from autocnn.layers.blocks.base import Block
from autocnn.layers.blocks.resnet import projection
from autocnn.layers.common import DropPath


class XceptionBlock(Block):
    """[act -> kxk conv -> norm] x n [-> maxpool 3x3/stride], added to the input or its 1x1 projection.

    The conv is the stage's conv kind: the Xception presets use `separable` (depthwise then pointwise,
    nothing between). `spec.widths` gives the output width of each unit (the exit block's (728, 1024));
    without it a downsampling block has 2 units (entry/exit flow) and a stride-1 block 3 (middle flow),
    all of width `out_chs`. The shortcut is registered before the main path, as in timm, so reference
    weights map in order. Attention sits on the main path just before the addition.
    """

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        widths = xception_units(out_chs, stride, spec)
        self.shortcut = projection(in_chs, out_chs, stride, layers)
        units, chs = [], in_chs
        for i, width in enumerate(widths):
            act = layers.act()
            if i == 0 and hasattr(act, "inplace"):
                # the block input is still needed by the shortcut (and its backward): timm's first ReLU
                # is not in-place either
                act.inplace = False
            units.append(nn.Sequential(OrderedDict(
                act=act, conv=layers.conv(chs, width, spec.kernel), bn=layers.norm(width))))
            chs = width
        self.units = nn.Sequential(*units)
        self.pool = nn.MaxPool2d(3, stride, 1) if stride > 1 else nn.Identity()
        self.attn = layers.attention(out_chs)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x):
        shortcut = self.shortcut(x)
        out = self.attn(self.pool(self.units(x)))
        return self.drop_path(out) + shortcut
