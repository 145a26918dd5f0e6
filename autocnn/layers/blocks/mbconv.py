"""Inverted residuals: MBConv (MobileNetV2, EfficientNet) and fused-MBConv (EfficientNetV2)."""
from __future__ import annotations

from torch import nn

from autocnn.catalog import expanded_width
from autocnn.layers.blocks.base import Block
from autocnn.layers.common import DropPath


def squeeze_width(in_chs: int, ratio: float) -> int:
    """EfficientNet squeezes from the block's input width, not the expanded one (SE ratio 0.25 = r 4)."""
    return max(1, int(in_chs / ratio))


class _InvertedResidual(Block):
    def _finish(self, in_chs, out_chs, stride, drop_path):
        self.use_residual = stride == 1 and in_chs == out_chs
        self.drop_path = DropPath(drop_path) if drop_path and self.use_residual else nn.Identity()

    def forward(self, x):
        out = self.project(self.attn(self.conv(self.expand(x))))
        return self.drop_path(out) + x if self.use_residual else out


class MBConv(_InvertedResidual):
    """1x1 expand -> kxk spatial conv -> attention -> 1x1 linear projection, identity when shapes allow.

    The canonical spatial conv is depthwise (conv kind `depthwise`); other kinds are ablations.
    """

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        mid = expanded_width(in_chs, spec.expansion)
        self.expand = layers.cna(in_chs, mid, 1, kind="standard") if mid != in_chs else nn.Identity()
        self.conv = layers.cna(mid, mid, spec.kernel, stride)
        self.attn = layers.attention(mid, rd_channels=squeeze_width(in_chs, spec.ratio))
        self.project = layers.cna(mid, out_chs, 1, kind="standard", act=False)
        self._finish(in_chs, out_chs, stride, drop_path)


class FusedMBConv(_InvertedResidual):
    """kxk expand (fused expand + spatial conv) -> attention -> 1x1 projection; a single kxk conv at expansion 1.

    The kxk conv changes the width, so it is a full (`standard`) or `separable` conv; the genotype
    refuses `depthwise` here (a depthwise spatial conv after a 1x1 expand is `mbconv`).
    """

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        mid = expanded_width(in_chs, spec.expansion)
        self.expand = nn.Identity()
        if mid != in_chs:
            self.conv = layers.cna(in_chs, mid, spec.kernel, stride)
            self.attn = layers.attention(mid, rd_channels=squeeze_width(in_chs, spec.ratio))
            self.project = layers.cna(mid, out_chs, 1, kind="standard", act=False)
        else:
            self.conv = layers.cna(in_chs, out_chs, spec.kernel, stride)
            self.attn = layers.attention(out_chs, rd_channels=squeeze_width(in_chs, spec.ratio))
            self.project = nn.Identity()
        self._finish(in_chs, out_chs, stride, drop_path)
