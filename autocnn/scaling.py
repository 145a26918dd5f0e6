"""Width/depth/resolution scaling rules, in one place (MobileNet, EfficientNet).

It sits below every other module and imports nothing from autocnn (the catalog rounds reference
widths with `make_divisible`), so genotypes are duck-typed here and each stage's kind facts are read
from `spec.kind`.
"""
from __future__ import annotations

import dataclasses
import math


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a width to a multiple of `divisor` without losing more than 10 % (MobileNetV2 rule)."""
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def scale_widths(spec, width: float):
    """The StageSpec `spec` with every channel width times `width`, through make_divisible; kinds that
    carry no width (pools, norm_act) are returned unchanged."""
    changes = {}
    if spec.kind.has_width:
        if spec.out_chs:
            changes["out_chs"] = make_divisible(spec.out_chs * width)
        if spec.widths:
            changes["widths"] = tuple(make_divisible(w * width) for w in spec.widths)
    return dataclasses.replace(spec, **changes) if changes else spec


def scale_stage(spec, width: float, depth: float, *, scale_depth: bool):
    """`scale_widths`, and with `scale_depth` the repeats -> ceil(n*d)."""
    spec = scale_widths(spec, width)
    if scale_depth:
        spec = dataclasses.replace(spec, repeats=int(math.ceil(spec.repeats * depth)))
    return spec


def compound_scale(g, width: float = 1.0, depth: float = 1.0, resolution: int | None = None, **changes):
    """The Genotype `g` under EfficientNet compound scaling (Tan & Le 2019): every width -> make_divisible(c*w, 8), the
    repeats of residual stages -> ceil(n*d) (plain layers such as the 1x1 head conv stay single),
    and a new input resolution."""
    stem = tuple(scale_stage(s, width, depth, scale_depth=False) for s in g.stem)
    stages = tuple(scale_stage(s, width, depth, scale_depth=s.kind.residual) for s in g.stages)
    return dataclasses.replace(g, stem=stem, stages=stages, resolution=resolution or g.resolution, **changes)
