"""Xception (Chollet 2017) as timm's `legacy_xception`: entry flow, 8 middle blocks, exit flow."""
from __future__ import annotations

from functools import partial

from autocnn.genotype import Genotype, HeadSpec, StageSpec as S
from autocnn.presets import PRESETS


def xception(*, middle_repeats: int = 8, conv: str = "separable", attention: str = "none",
             ratio: float = 16.0) -> Genotype:
    """`conv="separable"` is depthwise then pointwise as in Keras/timm; "separable_pw" is the paper's
    pointwise-first "extreme Inception" order. timm's first block skips its leading ReLU; the stem
    already ends in one and ReLU is idempotent, so the outputs are the same."""
    block = partial(S, "xception", conv=conv, attention=attention, ratio=ratio)
    stem = (S("conv", out_chs=32, stride=2, padding=0), S("conv", out_chs=64, padding=0))
    stages = (
        block(out_chs=128, stride=2), block(out_chs=256, stride=2), block(out_chs=728, stride=2),  # entry
        block(out_chs=728, repeats=middle_repeats),                                               # middle
        block(widths=(728, 1024), stride=2),                                                      # exit
        S("conv", out_chs=1536, conv=conv), S("conv", out_chs=2048, conv=conv),
    )
    return Genotype(stem=stem, stages=stages, head=HeadSpec(), resolution=299)


PRESETS.register("xception", xception)
