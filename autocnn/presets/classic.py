"""LeNet-5, AlexNet and VGG: plain conv stacks with pooling and an MLP head."""
from __future__ import annotations

from functools import partial

from autocnn.genotype import Genotype, HeadSpec, StageSpec as S
from autocnn.presets import PRESETS


def _pool(kernel=2, stride=2, **kw) -> S:
    return S("maxpool", kernel=kernel, stride=stride, **kw)


@PRESETS.register("lenet5")
def lenet5() -> Genotype:
    """LeCun et al. 1998 as in the seeds: 28x28x1, valid 5x5 convs, tanh, pooling, 120-84 MLP."""
    conv = partial(S, "conv", kernel=5, padding=0, bias=True, norm="none")
    return Genotype(
        stages=(conv(out_chs=6), _pool(), conv(out_chs=16), _pool()),
        head=HeadSpec(pool="flatten", hidden=(120, 84)),
        resolution=28, in_chans=1, num_classes=10, act="tanh", norm="none",
    )


@PRESETS.register("alexnet")
def alexnet() -> Genotype:
    """Krizhevsky et al. 2012, single-tower form of torchvision (no LRN)."""
    conv = partial(S, "conv", bias=True)
    return Genotype(
        stem=(conv(out_chs=64, kernel=11, stride=4, padding=2), _pool(3)),
        stages=(conv(out_chs=192, kernel=5), _pool(3), conv(out_chs=384), conv(out_chs=256),
                conv(out_chs=256), _pool(3)),
        head=HeadSpec(pool="avg", pool_size=6, hidden=(4096, 4096), dropout=0.5),
        norm="none",
    )


VGG16_STAGES = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


def vgg(depths_widths=VGG16_STAGES, *, batch_norm=False, head: HeadSpec, **kwargs) -> Genotype:
    stages = []
    for repeats, width in depths_widths:
        stages += [S("conv", out_chs=width, repeats=repeats, bias=True), _pool()]
    return Genotype(stages=tuple(stages), head=head, norm="batch" if batch_norm else "none", **kwargs)


PRESETS.register("vgg16", partial(vgg, head=HeadSpec(pool_size=7, hidden=(4096, 4096), dropout=0.5)))
PRESETS.register("vgg16_bn", partial(vgg, batch_norm=True, head=HeadSpec(pool_size=7, hidden=(4096, 4096), dropout=0.5)))
PRESETS.register("vgg16_cifar", partial(
    vgg, head=HeadSpec(pool="flatten", hidden=(4096, 4096), dropout=0.5), resolution=32, num_classes=10))
