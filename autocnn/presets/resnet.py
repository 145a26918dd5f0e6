"""ResNet, ResNeXt and SE/CBAM-ResNet: a block kind plus depths over one generator."""
from __future__ import annotations

from functools import partial

from autocnn.genotype import Genotype, HeadSpec, StageSpec as S
from autocnn.presets import PRESETS

RESNET_STEM = (S("conv", out_chs=64, kernel=7, stride=2), S("maxpool", kernel=3, stride=2, padding=1))


def resnet(block: str, depths: tuple[int, ...], *, widths=(64, 128, 256, 512), expansion=1.0,
           groups=1, attention="none", ratio=16.0) -> Genotype:
    mult = 4 if block == "bottleneck" else 1
    stages = tuple(
        S(block, out_chs=w * mult, repeats=n, stride=1 if i == 0 else 2, expansion=expansion,
          groups=groups, attention=attention, ratio=ratio)
        for i, (n, w) in enumerate(zip(depths, widths))
    )
    return Genotype(stem=RESNET_STEM, stages=stages, head=HeadSpec())


PRESETS.register("resnet18", partial(resnet, "basic", (2, 2, 2, 2)))
PRESETS.register("resnet34", partial(resnet, "basic", (3, 4, 6, 3)))
PRESETS.register("resnet50", partial(resnet, "bottleneck", (3, 4, 6, 3), expansion=4.0))
PRESETS.register("resnext50_32x4d", partial(resnet, "bottleneck", (3, 4, 6, 3), expansion=2.0, groups=32))
PRESETS.register("se_resnet50", partial(resnet, "bottleneck", (3, 4, 6, 3), expansion=4.0, attention="se"))
PRESETS.register("cbam_resnet50", partial(resnet, "bottleneck", (3, 4, 6, 3), expansion=4.0, attention="cbam"))
