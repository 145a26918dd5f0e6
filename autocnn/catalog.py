"""Every kind a genotype may name, as plain data: no torch, so a genotype validates without it.

Each block kind is one `BlockKind` entry in `BLOCKS` below: its name, the torch-free facts the
genotype, the builder and the scaling rules need, and `impl`, the `module:Class` that builds it.
`autocnn.layers` loads the implementations from these entries. Adding a block kind is therefore one
new module under `autocnn/layers/blocks/` holding a `Block` subclass, plus its one entry here (with
its `rules`/`width` functions beside it when the defaults do not fit); the registry-driven tests
then build, train, export-trace and fact-check it. Activations, norms, conv kinds and attention
modules carry no facts beyond their names; their implementations register under these names in
`autocnn.layers`, which refuses a name missing here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from autocnn.registry import Registry
from autocnn.scaling import make_divisible

Problem = tuple[str, str]
"""(field, message): one value a block kind cannot build, reported by the genotype as a GenotypeError."""


def _names(kind: str, *names: str) -> Registry[str]:
    registry: Registry[str] = Registry(kind)
    for name in names:
        registry.register(name, name)
    return registry


ACTIVATIONS = _names("activation", "relu", "relu6", "silu", "swish", "hardswish", "gelu", "tanh", "sigmoid")
NORMS = _names("norm", "batch", "group", "none")
CONVS = _names("conv kind", "standard", "depthwise", "separable", "separable_pw")
ATTENTION = _names("attention", "none", "se", "se_fc", "cbam", "eca")
POOLS = ("avg", "max", "flatten")  # head pooling


def no_rules(spec) -> Iterator[Problem]:
    return iter(())


ConvWidths = tuple[tuple[int, int], ...]
"""(in, out) channels of each conv of a block that takes the stage's conv kind, in build order."""


def one_conv(in_chs: int, out_chs: int, stride: int, spec) -> ConvWidths:
    return ((in_chs, out_chs),)


def no_conv(in_chs: int, out_chs: int, stride: int, spec) -> ConvWidths:
    """Pools, norm-act, the 1x1 transition and ghost (its kxk convs are depthwise by design): nothing the
    stage's conv kind applies to."""
    return ()


def stage_width(in_chs: int, spec) -> int:
    """`out_chs`, or the input width when it is 0."""
    return spec.out_chs or in_chs


def input_width(in_chs: int, spec) -> int:
    return in_chs


@dataclass(frozen=True, kw_only=True)
class BlockKind:
    """The torch-free facts of one block kind.

    `supports_attention`: the block applies the stage's attention module. `residual`: an identity path
    makes stochastic depth meaningful (it gets a share of `drop_path`) and compound scaling multiplies
    its repeats. `has_width`: `out_chs`/`widths` are channel widths that compound scaling multiplies
    (not for pools). `rules(spec)` yields a (field, message) for each value the kind cannot build;
    `width(in_chs, spec)` is the block's output width. `convs(in_chs, out_chs, stride, spec)` lists
    the (in, out) widths of the block's spatial convs, the ones built of the stage's conv kind (1x1
    projections stay standard): what `conv_problems` checks the conv kind against.
    """

    name: str
    impl: str
    supports_attention: bool = True
    residual: bool = False
    has_width: bool = True
    rules: Callable[..., Iterator[Problem]] = no_rules
    width: Callable[[int, object], int] = stage_width
    convs: Callable[[int, int, int, object], ConvWidths] = one_conv

    def problems(self, spec) -> Iterator[Problem]:
        return self.rules(spec)

    def out_channels(self, in_chs: int, spec) -> int:
        return self.width(in_chs, spec)

    def spatial_convs(self, in_chs: int, stride: int, spec) -> ConvWidths:
        """(in, out) widths of the spatial convs of one block at input width `in_chs` and `stride`."""
        return self.convs(in_chs, self.out_channels(in_chs, spec), stride, spec)

    def conv_problems(self, in_chs: int, stride: int, spec) -> Iterator[Problem]:
        """What the stage's conv kind cannot mean in one block of this kind at input width `in_chs`.

        `depthwise` gives every input channel its own filters (groups = in), so each spatial conv's
        output width must be a multiple of its input (a channel multiplier, Keras' `depth_multiplier`);
        any other width would silently make it a grouped conv with fewer groups.
        """
        if spec.conv != "depthwise":
            return
        for cin, cout in self.spatial_convs(in_chs, stride, spec):
            if cout % cin:
                yield "conv", (f"'depthwise' needs each kxk conv's output width to be a multiple of its input "
                               f"(one filter group per input channel), but this {spec.block} block has a "
                               f"{cin} -> {cout} conv; use conv 'separable' (depthwise then 1x1) or 'standard'")
                return


# -- rules and widths of the block kinds that need their own ---------------------------------------

def bottleneck_width(out_chs: int, expansion: float, groups: int) -> int:
    """mid = out / expansion, rounded to a multiple of `groups` so grouped convs always divide."""
    return max(groups, round(out_chs / expansion / groups) * groups)


def expanded_width(in_chs: int, expansion: float) -> int:
    """MBConv's expanded (mid) width, rounded to a multiple of 8 as MobileNetV2/EfficientNet do."""
    return make_divisible(in_chs * expansion, 8)


def basic_convs(in_chs: int, out_chs: int, stride: int, spec) -> ConvWidths:
    return ((in_chs, out_chs), (out_chs, out_chs))


def conv_rules(spec) -> Iterator[Problem]:
    reach = spec.dilation * (spec.kernel - 1)
    if spec.padding is not None and spec.padding > reach:
        yield "padding", (f"must be <= dilation x (kernel - 1) = {reach}: a wider border only adds rows and "
                          "columns of zeros (leave it out for 'same' padding)")


def pool_rules(spec) -> Iterator[Problem]:
    if spec.padding is not None and spec.padding > spec.kernel // 2:
        yield "padding", f"must be <= kernel // 2 = {spec.kernel // 2} (a pooling window's limit in PyTorch)"


def bottleneck_rules(spec) -> Iterator[Problem]:
    if not (spec.out_chs == 0 or spec.out_chs >= spec.groups):
        yield "groups", "must not exceed out_chs"


def bottleneck_convs(in_chs: int, out_chs: int, stride: int, spec) -> ConvWidths:
    mid = bottleneck_width(out_chs, spec.expansion, spec.groups)
    return ((mid, mid),)


def mbconv_convs(in_chs: int, out_chs: int, stride: int, spec) -> ConvWidths:
    mid = expanded_width(in_chs, spec.expansion)
    return ((mid, mid),)


def fused_mbconv_rules(spec) -> Iterator[Problem]:
    if spec.conv == "depthwise":
        yield "conv", ("fused_mbconv fuses MBConv's 1x1 expand and depthwise conv into one full kxk conv, so "
                       "it has no depthwise form; use block 'mbconv' for a depthwise kxk conv, or conv "
                       "'standard' or 'separable'")


def fused_mbconv_convs(in_chs: int, out_chs: int, stride: int, spec) -> ConvWidths:
    """The kxk conv expands (in -> mid), or is the whole block at expansion 1 (in -> out)."""
    mid = expanded_width(in_chs, spec.expansion)
    return ((in_chs, mid),) if mid != in_chs else ((in_chs, out_chs),)


def dense_rules(spec) -> Iterator[Problem]:
    if spec.out_chs < 1:
        yield "out_chs", "is the growth rate of a dense stage and must be >= 1"
    if spec.stride != 1:
        yield "stride", "dense stages keep the resolution; downsample in a transition"


def dense_width(in_chs: int, spec) -> int:
    """A dense layer concatenates `out_chs` (the growth rate) new channels to its input."""
    return in_chs + spec.out_chs


def dense_mid(spec) -> int:
    """The bottleneck width bn_size * growth of a dense layer."""
    return max(1, int(spec.expansion * spec.out_chs))


def dense_convs(in_chs: int, out_chs: int, stride: int, spec) -> ConvWidths:
    return ((dense_mid(spec), spec.out_chs),)


def xception_rules(spec) -> Iterator[Problem]:
    if spec.widths and spec.out_chs not in (0, spec.widths[-1]):
        yield "out_chs", f"must be 0 or the last of widths ({spec.widths[-1]}), got {spec.out_chs}"


def xception_width(in_chs: int, spec) -> int:
    return spec.widths[-1] if spec.widths else (spec.out_chs or in_chs)


def xception_units(out_chs: int, stride: int, spec) -> tuple[int, ...]:
    """Each unit's width: `widths`, else 2 units (entry/exit flow, downsampling) or 3 (middle flow)."""
    return spec.widths or (out_chs,) * (2 if stride > 1 else 3)


def xception_convs(in_chs: int, out_chs: int, stride: int, spec) -> ConvWidths:
    widths = xception_units(out_chs, stride, spec)
    return tuple(zip((in_chs,) + widths[:-1], widths))


@dataclass(frozen=True, kw_only=True)
class InceptionKind(BlockKind):
    """An Inception module: parallel branches concatenated (see autocnn.layers.blocks.inception).

    `width_names` names every conv's output width in torchvision's registration order; `reference`
    holds torchvision's values for them and `reference_width` the module width (for reductions, the
    width added) they belong to; `outputs` indexes the convs that end a branch. A grid `reduction`
    also concatenates a max-pooled copy of its input, so it emits in_chs + its conv branches.
    `spatial` holds the (from, to) width indices of its kxk convs, -1 for the module input.
    """

    width_names: tuple[str, ...]
    reference: tuple[int, ...]
    reference_width: int
    outputs: tuple[int, ...]
    spatial: tuple[tuple[int, int], ...]
    reduction: bool = False

    def problems(self, spec) -> Iterator[Problem]:
        n = len(self.width_names)
        if spec.widths and len(spec.widths) != n:
            yield "widths", (f"{spec.block} takes {n} widths ({', '.join(self.width_names)}) or none, "
                             f"got {len(spec.widths)}")
        if not self.reduction and spec.stride != 1:
            yield "stride", (f"{spec.block} keeps the resolution; downsample with a maxpool stage or a "
                             "reduction module (inception_v3_b, inception_v3_d)")
        if spec.widths and spec.out_chs:
            added = self.branch_total(spec.widths)
            if spec.out_chs != added:
                meaning = "the width its conv branches add" if self.reduction else "the sum of its branch outputs"
                yield "out_chs", (f"is {meaning} for {spec.block}: {added} from widths {spec.widths}, "
                                  f"got {spec.out_chs}; give 0 or the matching value")

    def branch_total(self, widths: tuple[int, ...]) -> int:
        return sum(widths[i] for i in self.outputs)

    def widths_for(self, in_chs: int, spec) -> tuple[int, ...]:
        """`spec.widths`, or the reference widths scaled to `out_chs` (the input width when 0)."""
        if spec.widths:
            return spec.widths
        base = spec.out_chs or in_chs
        return tuple(make_divisible(base * w / self.reference_width, 8) for w in self.reference)

    def out_channels(self, in_chs: int, spec) -> int:
        added = self.branch_total(self.widths_for(in_chs, spec))
        return in_chs + added if self.reduction else added

    def spatial_convs(self, in_chs: int, stride: int, spec) -> ConvWidths:
        width = {-1: in_chs, **dict(enumerate(self.widths_for(in_chs, spec)))}
        return tuple((width[a], width[b]) for a, b in self.spatial)


# -- the block kinds ------------------------------------------------------------------------------

_LAYERS = "autocnn.layers.blocks."
BLOCKS: Registry[BlockKind] = Registry("block")
for _kind in (
    BlockKind(name="conv", impl=_LAYERS + "plain:ConvBlock", rules=conv_rules),
    BlockKind(name="maxpool", impl=_LAYERS + "plain:MaxPool", supports_attention=False, has_width=False,
              width=input_width, convs=no_conv, rules=pool_rules),
    BlockKind(name="avgpool", impl=_LAYERS + "plain:AvgPool", supports_attention=False, has_width=False,
              width=input_width, convs=no_conv, rules=pool_rules),
    BlockKind(name="norm_act", impl=_LAYERS + "plain:NormAct", supports_attention=False, has_width=False,
              width=input_width, convs=no_conv),
    BlockKind(name="basic", impl=_LAYERS + "resnet:BasicBlock", residual=True, convs=basic_convs),
    BlockKind(name="bottleneck", impl=_LAYERS + "resnet:Bottleneck", residual=True, rules=bottleneck_rules,
              convs=bottleneck_convs),
    BlockKind(name="dense", impl=_LAYERS + "dense:DenseLayer", rules=dense_rules, width=dense_width,
              convs=dense_convs),
    BlockKind(name="transition", impl=_LAYERS + "dense:Transition", convs=no_conv),
    BlockKind(name="mbconv", impl=_LAYERS + "mbconv:MBConv", residual=True, convs=mbconv_convs),
    BlockKind(name="fused_mbconv", impl=_LAYERS + "mbconv:FusedMBConv", residual=True, rules=fused_mbconv_rules,
              convs=fused_mbconv_convs),
    BlockKind(name="ghost", impl=_LAYERS + "ghost:GhostBottleneck", residual=True, convs=no_conv),
    InceptionKind(name="inception_v1", impl=_LAYERS + "inception:InceptionV1",
                  width_names=("c1x1", "c3x3red", "c3x3", "c5x5red", "c5x5", "pool_proj"),
                  reference=(64, 96, 128, 16, 32, 32), reference_width=256, outputs=(0, 2, 4, 5),
                  spatial=((1, 2), (3, 4))),  # inception3a
    InceptionKind(name="inception_v3_a", impl=_LAYERS + "inception:InceptionA",
                  width_names=("b1x1", "b5x5_1", "b5x5_2", "b3x3dbl_1", "b3x3dbl_2", "b3x3dbl_3", "pool_proj"),
                  reference=(64, 48, 64, 64, 96, 96, 32), reference_width=256, outputs=(0, 2, 5, 6),
                  spatial=((1, 2), (3, 4), (4, 5))),  # Mixed_5b
    InceptionKind(name="inception_v3_b", impl=_LAYERS + "inception:InceptionB", reduction=True,
                  width_names=("b3x3", "b3x3dbl_1", "b3x3dbl_2", "b3x3dbl_3"),
                  reference=(384, 64, 96, 96), reference_width=480, outputs=(0, 3),
                  spatial=((-1, 0), (1, 2), (2, 3))),  # Mixed_6a adds 480 to its 288
    InceptionKind(name="inception_v3_c", impl=_LAYERS + "inception:InceptionC",
                  width_names=("b1x1", "b7x7_1", "b7x7_2", "b7x7_3", "b7x7dbl_1", "b7x7dbl_2", "b7x7dbl_3",
                               "b7x7dbl_4", "b7x7dbl_5", "pool_proj"),
                  reference=(192, 128, 128, 192, 128, 128, 128, 128, 192, 192), reference_width=768,
                  outputs=(0, 3, 8, 9), spatial=((1, 2), (2, 3), (4, 5), (5, 6), (6, 7), (7, 8))),  # Mixed_6b
    InceptionKind(name="inception_v3_d", impl=_LAYERS + "inception:InceptionD", reduction=True,
                  width_names=("b3x3_1", "b3x3_2", "b7x7x3_1", "b7x7x3_2", "b7x7x3_3", "b7x7x3_4"),
                  reference=(192, 320, 192, 192, 192, 192), reference_width=512,  # Mixed_7a adds 512 to its 768
                  outputs=(1, 5), spatial=((0, 1), (2, 3), (3, 4), (4, 5))),
    InceptionKind(name="inception_v3_e", impl=_LAYERS + "inception:InceptionE",
                  width_names=("b1x1", "b3x3_1", "b3x3_2a", "b3x3_2b", "b3x3dbl_1", "b3x3dbl_2", "b3x3dbl_3a",
                               "b3x3dbl_3b", "pool_proj"),
                  reference=(320, 384, 384, 384, 448, 384, 384, 384, 192), reference_width=2048,
                  outputs=(0, 2, 3, 6, 7, 8), spatial=((1, 2), (1, 3), (4, 5), (5, 6), (5, 7))),  # Mixed_7b
    BlockKind(name="xception", impl=_LAYERS + "xception:XceptionBlock", residual=True, rules=xception_rules,
              width=xception_width, convs=xception_convs),
):
    BLOCKS.register(_kind.name, _kind)
del _kind
