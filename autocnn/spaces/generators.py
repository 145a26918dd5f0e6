"""Genotype generators a space's `genotype: {generator: NAME, args: {...}}` can call.

A generator is a function of plain keyword arguments (numbers, strings, tuples) returning a
Genotype; the presets are calls of the same functions with fixed arguments, so a space over a
generator's arguments contains those presets. Lists in a space's arguments arrive as tuples.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

from autocnn.genotype import Genotype, HeadSpec, StageSpec as S
from autocnn.presets import classic, densenet, inception as inception_presets, resnet, xception
from autocnn.registry import Registry
from autocnn.scaling import make_divisible

GENERATORS: Registry[Callable[..., Genotype]] = Registry("genotype generator")

GENERATORS.register("resnet", resnet.resnet)
GENERATORS.register("densenet", densenet.densenet)
GENERATORS.register("xception", xception.xception)


@GENERATORS.register("vgg")
def vgg(depths: tuple[int, ...], widths: tuple[int, ...], batch_norm: bool = False) -> Genotype:
    """VGG stages: `depths[i]` 3x3 convs of `widths[i]` channels, each stage closed by a 2x2 max-pool.
    The head is the default one; a space sets it with the genotype's `head` key."""
    if len(depths) != len(widths):
        raise ValueError(f"depths {depths} and widths {widths} differ in length")
    return classic.vgg(tuple(zip(depths, widths)), batch_norm=batch_norm, head=HeadSpec())


@GENERATORS.register("plain")
def plain(widths: tuple[int, ...], convs: int = 1, kernel: int = 3, conv: str = "standard", act: str = "relu",
          attention: str = "none", ratio: float = 16.0, pool: str = "max") -> Genotype:
    """LeNet/VGG-style stages for small images: per stage `convs` kxk conv-BN-act layers of `widths[i]`
    channels and a 2x2 pool. The pools round up (ceil mode), so a stage past a 1-px map keeps it rather
    than failing, and an 8-px image can take four stages; the head is global average pooling."""
    stages = []
    for width in widths:
        stages += [S("conv", out_chs=width, repeats=convs, kernel=kernel, conv=conv, attention=attention, ratio=ratio),
                   S(f"{pool}pool", kernel=2, stride=2, ceil_mode=True)]
    return Genotype(stages=tuple(stages), head=HeadSpec(), act=act)


# Stems for small inputs: stride 1 then one 3x3/2 max-pool, instead of the reference stems' /8
# (GoogLeNet) and unpadded /8 (Inception-v3, which needs >= 75 px); the module stack is unchanged.
COMPACT_STEMS = {
    "v1": (S("conv", out_chs=64), S("conv", out_chs=64, kernel=1), S("conv", out_chs=192),
           S("maxpool", kernel=3, stride=2, ceil_mode=True)),
    "v3": (S("conv", out_chs=32), S("conv", out_chs=64), S("conv", out_chs=80, kernel=1),
           S("conv", out_chs=192), S("maxpool", kernel=3, stride=2)),
}


def _scale_widths(spec: S, width: float) -> S:
    """Every width of a stage times `width`, rounded to a multiple of 8 (Inception modules carry
    theirs in `widths` with `out_chs` 0)."""
    changes = {}
    if spec.out_chs:
        changes["out_chs"] = make_divisible(spec.out_chs * width)
    if spec.widths:
        changes["widths"] = tuple(make_divisible(w * width) for w in spec.widths)
    return dataclasses.replace(spec, **changes)


@GENERATORS.register("inception")
def inception(variant: str = "v3", *, width: float = 1.0, depth: float = 1.0, stem: str = "reference",
              conv: str = "standard", kernel: int = 3, attention: str = "none", ratio: float = 16.0) -> Genotype:
    """GoogLeNet (`v1`) or Inception-v3 (`v3`) with every width scaled by `width`, the repeats of the
    resolution-keeping modules by ceil(n * depth), the kxk convs of the modules of conv kind `conv`,
    and a `compact` stem for small images. `kernel` is GoogLeNet's "5x5" branch kernel."""
    if variant == "v1":
        g = inception_presets.googlenet(kernel=kernel, attention=attention, ratio=ratio)
    elif variant == "v3":
        g = inception_presets.inception_v3(attention=attention, ratio=ratio)
    else:
        raise ValueError(f"unknown Inception variant {variant!r}; choose v1 or v3")
    if stem not in ("reference", "compact"):
        raise ValueError(f"unknown stem {stem!r}; choose reference or compact")
    stem_specs = COMPACT_STEMS[variant] if stem == "compact" else g.stem
    stages = []
    for spec in g.stages:
        if spec.block.startswith("inception"):
            spec = dataclasses.replace(spec, conv=conv)
            if spec.stride == 1:
                spec = dataclasses.replace(spec, repeats=int(math.ceil(spec.repeats * depth)))
        stages.append(spec)
    if width != 1.0:
        stem_specs = tuple(_scale_widths(s, width) for s in stem_specs)
        stages = [_scale_widths(s, width) for s in stages]
    return dataclasses.replace(g, stem=tuple(stem_specs), stages=tuple(stages))


__all__ = ["COMPACT_STEMS", "GENERATORS"]
