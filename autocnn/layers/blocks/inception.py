"""Inception modules: GoogLeNet's (Szegedy et al. 2015) and Inception-v3's A-E (Szegedy et al. 2016).

Each module runs parallel branches and concatenates them; any attention of the stage is applied to
the concatenation, as SE-Inception does. `spec.widths` lists the output width of every conv in the
module, in torchvision's registration order (the order reference weights are matched in); when it is
empty the widths are scaled from the torchvision module named in its catalog entry, each rounded to a
multiple of 8, so a search space may give `out_chs` alone. `out_channels` reports the real width.

The grid reductions (`inception_v3_b`, `inception_v3_d`) concatenate a max-pooled copy of their input,
so they always emit in_chs + (conv branch widths); for them `out_chs` is the width the conv branches
add (0: as many as the input has, doubling the width), like a dense stage's growth rate.
"""
from __future__ import annotations

import torch
from torch import nn

from autocnn.layers.blocks.base import Block

STANDARD = "standard"  # 1x1 convs stay standard convs whatever the stage's conv kind (as in MBConv)


class _Inception(Block):
    """Shared width bookkeeping; subclasses build their branches from `self.widths_for(...)`.

    The width tables (names, torchvision's reference values, which convs end a branch) are the
    torch-free facts of each kind's `autocnn.catalog.InceptionKind` entry.
    """

    @classmethod
    def widths_for(cls, in_chs: int, spec) -> tuple[int, ...]:
        return cls.kind.widths_for(in_chs, spec)

    def forward(self, x):
        return self.attn(torch.cat(self.branches(x), 1))


class InceptionV1(_Inception):
    """GoogLeNet's module: 1x1 | 1x1-3x3 | 1x1-kxk | maxpool-1x1 ("inception (3a)" ... "(5b)").

    The third branch's conv uses `spec.kernel`: 5 in the paper, 3 in torchvision's googlenet (a
    known quirk kept for weight compatibility, pytorch/vision#906), so the googlenet preset sets 3.
    """

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        c1, c3r, c3, c5r, c5, cp = self.widths_for(in_chs, spec)
        self.branch1 = layers.cna(in_chs, c1, 1, kind=STANDARD)
        self.branch2 = nn.Sequential(layers.cna(in_chs, c3r, 1, kind=STANDARD), layers.cna(c3r, c3, 3))
        self.branch3 = nn.Sequential(layers.cna(in_chs, c5r, 1, kind=STANDARD), layers.cna(c5r, c5, spec.kernel))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), layers.cna(in_chs, cp, 1, kind=STANDARD))
        self.attn = layers.attention(out_chs)

    def branches(self, x):
        return [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]


class InceptionA(_Inception):
    """Inception-v3 35x35 module (Mixed_5b-d): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        w = self.widths_for(in_chs, spec)
        self.branch1x1 = layers.cna(in_chs, w[0], 1, kind=STANDARD)
        self.branch5x5_1 = layers.cna(in_chs, w[1], 1, kind=STANDARD)
        self.branch5x5_2 = layers.cna(w[1], w[2], 5)
        self.branch3x3dbl_1 = layers.cna(in_chs, w[3], 1, kind=STANDARD)
        self.branch3x3dbl_2 = layers.cna(w[3], w[4], 3)
        self.branch3x3dbl_3 = layers.cna(w[4], w[5], 3)
        self.pool = nn.AvgPool2d(3, 1, 1)
        self.branch_pool = layers.cna(in_chs, w[6], 1, kind=STANDARD)
        self.attn = layers.attention(out_chs)

    def branches(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch1x1(x), b5, b3, self.branch_pool(self.pool(x))]


def _reduction_padding(stride: int, layers):
    """Padding of the strided 3x3 convs of a grid reduction, matched to the unpadded 3x3 max-pool.

    torchvision's modules use no padding at stride 2 (dilation - 1 keeps the sizes equal when the
    stage is dilated); at stride 1 every branch keeps the grid ("same" padding, pool padding 1).
    """
    if stride == 1:
        return None, 1
    return layers.dilation - 1, 0


class _Reduction(_Inception):
    def forward(self, x):
        return self.attn(torch.cat(self.branches(x) + [self.branch_pool(x)], 1))


class InceptionB(_Reduction):
    """Inception-v3 35->17 grid reduction (Mixed_6a): 3x3/s2 | 1x1-3x3-3x3/s2 | maxpool/s2."""

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        w = self.widths_for(in_chs, spec)
        pad, pool_pad = _reduction_padding(stride, layers)
        self.branch3x3 = layers.cna(in_chs, w[0], 3, stride, padding=pad)
        self.branch3x3dbl_1 = layers.cna(in_chs, w[1], 1, kind=STANDARD)
        self.branch3x3dbl_2 = layers.cna(w[1], w[2], 3)
        self.branch3x3dbl_3 = layers.cna(w[2], w[3], 3, stride, padding=pad)
        self.branch_pool = nn.MaxPool2d(3, stride, pool_pad)
        self.attn = layers.attention(out_chs)

    def branches(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch3x3(x), b3]


class InceptionC(_Inception):
    """Inception-v3 17x17 module (Mixed_6b-e): 7x7 factorized into (1,7) and (7,1) convs of width c7."""

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        w = self.widths_for(in_chs, spec)
        row, col = (1, 7), (7, 1)
        self.branch1x1 = layers.cna(in_chs, w[0], 1, kind=STANDARD)
        self.branch7x7_1 = layers.cna(in_chs, w[1], 1, kind=STANDARD)
        self.branch7x7_2 = layers.cna(w[1], w[2], row)
        self.branch7x7_3 = layers.cna(w[2], w[3], col)
        self.branch7x7dbl_1 = layers.cna(in_chs, w[4], 1, kind=STANDARD)
        self.branch7x7dbl_2 = layers.cna(w[4], w[5], col)
        self.branch7x7dbl_3 = layers.cna(w[5], w[6], row)
        self.branch7x7dbl_4 = layers.cna(w[6], w[7], col)
        self.branch7x7dbl_5 = layers.cna(w[7], w[8], row)
        self.pool = nn.AvgPool2d(3, 1, 1)
        self.branch_pool = layers.cna(in_chs, w[9], 1, kind=STANDARD)
        self.attn = layers.attention(out_chs)

    def branches(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        d = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(self.branch7x7dbl_2(d))))
        return [self.branch1x1(x), b7, d, self.branch_pool(self.pool(x))]


class InceptionD(_Reduction):
    """Inception-v3 17->8 grid reduction (Mixed_7a): 1x1-3x3/s2 | 1x1-(1,7)-(7,1)-3x3/s2 | maxpool/s2."""

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        w = self.widths_for(in_chs, spec)
        pad, pool_pad = _reduction_padding(stride, layers)
        self.branch3x3_1 = layers.cna(in_chs, w[0], 1, kind=STANDARD)
        self.branch3x3_2 = layers.cna(w[0], w[1], 3, stride, padding=pad)
        self.branch7x7x3_1 = layers.cna(in_chs, w[2], 1, kind=STANDARD)
        self.branch7x7x3_2 = layers.cna(w[2], w[3], (1, 7))
        self.branch7x7x3_3 = layers.cna(w[3], w[4], (7, 1))
        self.branch7x7x3_4 = layers.cna(w[4], w[5], 3, stride, padding=pad)
        self.branch_pool = nn.MaxPool2d(3, stride, pool_pad)
        self.attn = layers.attention(out_chs)

    def branches(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return [b3, b7]


class InceptionE(_Inception):
    """Inception-v3 8x8 expanded filter bank (Mixed_7b-c): 3x3s split into parallel (1,3) and (3,1)."""

    def __init__(self, in_chs, out_chs, stride, spec, *, layers, drop_path=0.0):
        super().__init__()
        w = self.widths_for(in_chs, spec)
        row, col = (1, 3), (3, 1)
        self.branch1x1 = layers.cna(in_chs, w[0], 1, kind=STANDARD)
        self.branch3x3_1 = layers.cna(in_chs, w[1], 1, kind=STANDARD)
        self.branch3x3_2a = layers.cna(w[1], w[2], row)
        self.branch3x3_2b = layers.cna(w[1], w[3], col)
        self.branch3x3dbl_1 = layers.cna(in_chs, w[4], 1, kind=STANDARD)
        self.branch3x3dbl_2 = layers.cna(w[4], w[5], 3)
        self.branch3x3dbl_3a = layers.cna(w[5], w[6], row)
        self.branch3x3dbl_3b = layers.cna(w[5], w[7], col)
        self.pool = nn.AvgPool2d(3, 1, 1)
        self.branch_pool = layers.cna(in_chs, w[8], 1, kind=STANDARD)
        self.attn = layers.attention(out_chs)

    def branches(self, x):
        b3 = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return [self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), self.branch_pool(self.pool(x))]
