"""Width/depth/resolution scaling rules, in one place (MobileNet, EfficientNet)."""
from __future__ import annotations

import dataclasses
import math

from autocnn.genotype import Genotype, StageSpec

#: Blocks whose width is not `out_chs` (dense growth) or that carry no width (pools) are scaled by
#: their own rule or left alone.
_WIDTHLESS = {"maxpool", "avgpool", "norm_act"}


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a width to a multiple of `divisor` without losing more than 10 % (MobileNetV2 rule)."""
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def scale_stage(spec: StageSpec, width: float, depth: float, *, scale_depth: bool) -> StageSpec:
    changes = {}
    if spec.block not in _WIDTHLESS:
        if spec.out_chs:
            changes["out_chs"] = make_divisible(spec.out_chs * width)
        if spec.widths:
            changes["widths"] = tuple(make_divisible(w * width) for w in spec.widths)
    if scale_depth:
        changes["repeats"] = int(math.ceil(spec.repeats * depth))
    return dataclasses.replace(spec, **changes)


def compound_scale(g: Genotype, width: float = 1.0, depth: float = 1.0, resolution: int | None = None,
                   **changes) -> Genotype:
    """EfficientNet compound scaling (Tan & Le 2019): every width -> make_divisible(c*w, 8), the
    repeats of residual stages -> ceil(n*d) (plain layers such as the 1x1 head conv stay single),
    and a new input resolution."""
    from autocnn.layers import BLOCKS

    stem = tuple(scale_stage(s, width, depth, scale_depth=False) for s in g.stem)
    stages = tuple(scale_stage(s, width, depth, scale_depth=BLOCKS.get(s.block).residual) for s in g.stages)
    return dataclasses.replace(g, stem=stem, stages=stages, resolution=resolution or g.resolution, **changes)
