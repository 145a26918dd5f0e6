"""GoogLeNet (Inception v1), Inception-v3 and SE-Inception-v3, in torchvision's layout without aux heads.

Stems are plain `conv`/`maxpool` stages; every Inception module is a stage whose `widths` are the
torchvision module's conv widths in registration order, so torchvision state_dicts load by position.
Both reference networks use BatchNorm eps 1e-3 (the TF ports'), carried by `Genotype.norm_eps`.
"""
from __future__ import annotations

from autocnn.genotype import Genotype, HeadSpec, StageSpec as S
from autocnn.presets import PRESETS

INCEPTION_EPS = 1e-3

# GoogLeNet modules (c1x1, c3x3red, c3x3, c5x5red, c5x5, pool_proj), Szegedy et al. 2015 table 1;
# None marks torchvision's max-pools between them (3x3/2, then 2x2/2 before 5a).
GOOGLENET_MODULES = (
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), None,                        # 3a 3b
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),  # 4a-c
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), None,                    # 4d 4e
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),                        # 5a 5b
)


def googlenet(*, kernel: int = 3, attention: str = "none", ratio: float = 16.0) -> Genotype:
    """`kernel` is the "5x5" branch's kernel: torchvision (and its weights) use 3, the paper 5."""
    stem = (S("conv", out_chs=64, kernel=7, stride=2), S("maxpool", kernel=3, stride=2, ceil_mode=True),
            S("conv", out_chs=64, kernel=1), S("conv", out_chs=192),
            S("maxpool", kernel=3, stride=2, ceil_mode=True))
    stages, pools = [], iter((3, 2))
    for widths in GOOGLENET_MODULES:
        if widths is None:
            size = next(pools)
            stages.append(S("maxpool", kernel=size, stride=2, ceil_mode=True))
        else:
            stages.append(S("inception_v1", widths=widths, kernel=kernel, attention=attention, ratio=ratio))
    return Genotype(stem=stem, stages=tuple(stages), head=HeadSpec(dropout=0.2), norm_eps=INCEPTION_EPS)


PRESETS.register("googlenet", googlenet)


def _c7(c7: int) -> tuple[int, ...]:
    """InceptionC widths from its one free parameter, channels_7x7 (torchvision's Mixed_6b-e)."""
    return (192, c7, c7, 192, c7, c7, c7, c7, 192, 192)


INCEPTION_V3_STEM = (
    S("conv", out_chs=32, stride=2, padding=0), S("conv", out_chs=32, padding=0), S("conv", out_chs=64),
    S("maxpool", kernel=3, stride=2), S("conv", out_chs=80, kernel=1), S("conv", out_chs=192, padding=0),
    S("maxpool", kernel=3, stride=2),
)

# (block, widths, repeats, stride): Mixed_5b, 5c-d, 6a, 6b, 6c-d, 6e, 7a, 7b-c (Szegedy et al. 2016)
INCEPTION_V3_MODULES = (
    ("inception_v3_a", (64, 48, 64, 64, 96, 96, 32), 1, 1),
    ("inception_v3_a", (64, 48, 64, 64, 96, 96, 64), 2, 1),
    ("inception_v3_b", (384, 64, 96, 96), 1, 2),
    ("inception_v3_c", _c7(128), 1, 1),
    ("inception_v3_c", _c7(160), 2, 1),
    ("inception_v3_c", _c7(192), 1, 1),
    ("inception_v3_d", (192, 320, 192, 192, 192, 192), 1, 2),
    ("inception_v3_e", (320, 384, 384, 384, 448, 384, 384, 384, 192), 2, 1),
)


def inception_v3(*, attention: str = "none", ratio: float = 16.0, head: HeadSpec = HeadSpec(dropout=0.5)) -> Genotype:
    stages = tuple(S(block, widths=widths, repeats=n, stride=stride, attention=attention, ratio=ratio)
                   for block, widths, n, stride in INCEPTION_V3_MODULES)
    return Genotype(stem=INCEPTION_V3_STEM, stages=stages, head=head, resolution=299, norm_eps=INCEPTION_EPS)


PRESETS.register("inception_v3", inception_v3)


@PRESETS.register("se_inception_v3")
def se_inception_v3() -> Genotype:
    """SE (r = 16) on the output of every Inception module (Hu et al. 2018), plus the seed's head:
    an FC squeeze-excite of 2048 -> 2048 // 11 = 186 -> 2048 on the last features, global average
    pooling, dropout 0.6 and the classifier (shared/seeds/000)."""
    return inception_v3(attention="se", ratio=16.0, head=HeadSpec(attention="se_fc", ratio=11.0, dropout=0.6))
