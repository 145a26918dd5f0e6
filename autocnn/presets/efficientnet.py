"""MobileNetV2 and EfficientNet-B0..B7; B1..B7 are compound-scaled from the one B0 stage table."""
from __future__ import annotations

from functools import partial

from autocnn.genotype import Genotype, HeadSpec, StageSpec as S
from autocnn.presets import PRESETS
from autocnn.scaling import compound_scale

# (expansion, kernel, stride, out_chs, repeats) of EfficientNet-B0 (Tan & Le 2019, table 1)
B0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
             (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))

# (width, depth, resolution, dropout) of the released B0..B7; the paper's phi grid rounded.
EFFICIENTNET_SCALES = {
    "b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2), "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3), "b4": (1.4, 1.8, 380, 0.4), "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5), "b7": (2.0, 3.1, 600, 0.5),
}


def efficientnet_b0_base(*, block: str = "mbconv", attention: str = "se", ratio: float = 4.0) -> Genotype:
    stages = tuple(
        S(block, out_chs=c, repeats=n, stride=s, kernel=k, expansion=float(e), conv="depthwise",
          attention=attention, ratio=ratio)
        for e, k, s, c, n in B0_STAGES
    ) + (S("conv", out_chs=1280, kernel=1),)
    return Genotype(stem=(S("conv", out_chs=32, stride=2),), stages=stages,
                    head=HeadSpec(dropout=0.2), act="silu", drop_path=0.2)


def efficientnet(variant: str) -> Genotype:
    width, depth, resolution, dropout = EFFICIENTNET_SCALES[variant]
    g = efficientnet_b0_base()
    # torchvision's B5-B7 carry the TF ports' BatchNorm epsilon
    eps = 1e-3 if variant in ("b5", "b6", "b7") else 1e-5
    return compound_scale(g, width, depth, resolution, head=HeadSpec(dropout=dropout), norm_eps=eps)


for _variant in EFFICIENTNET_SCALES:
    PRESETS.register(f"efficientnet_{_variant}", partial(efficientnet, _variant))


@PRESETS.register("mobilenet_v2")
def mobilenet_v2() -> Genotype:
    """Sandler et al. 2018: (t, c, n, s) table, ReLU6, linear bottlenecks, 1280-wide last conv."""
    table = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
    stages = tuple(S("mbconv", out_chs=c, repeats=n, stride=s, expansion=float(t), conv="depthwise")
                   for t, c, n, s in table) + (S("conv", out_chs=1280, kernel=1),)
    return Genotype(stem=(S("conv", out_chs=32, stride=2),), stages=stages,
                    head=HeadSpec(dropout=0.2), act="relu6")
