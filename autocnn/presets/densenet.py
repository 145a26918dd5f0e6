"""DenseNet-BC: dense stages of growth k separated by compressing transitions."""
from __future__ import annotations

from functools import partial

from autocnn.genotype import Genotype, HeadSpec, StageSpec as S
from autocnn.presets import PRESETS


def densenet(block_config: tuple[int, ...], growth: int = 32, init_chs: int = 64,
             compression: float = 0.5, bn_size: float = 4.0) -> Genotype:
    stem = (S("conv", out_chs=init_chs, kernel=7, stride=2), S("maxpool", kernel=3, stride=2, padding=1))
    stages, chs = [], init_chs
    for i, layers in enumerate(block_config):
        stages.append(S("dense", out_chs=growth, repeats=layers, expansion=bn_size))
        chs += layers * growth
        if i != len(block_config) - 1:
            chs = int(chs * compression)
            stages.append(S("transition", out_chs=chs, stride=2))
    stages.append(S("norm_act"))
    return Genotype(stem=stem, stages=tuple(stages), head=HeadSpec())


PRESETS.register("densenet121", partial(densenet, (6, 12, 24, 16)))
PRESETS.register("densenet169", partial(densenet, (6, 12, 32, 32)))
