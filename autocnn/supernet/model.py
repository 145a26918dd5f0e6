"""An elastic MBConv supernet: one set of weights for every genotype that differs from the largest
only in per-stage depth, kernel size, expansion ratio, width and SE attention (on or off, and its ratio).

The supernet *is* the largest genotype's network (`autocnn.builder.build_model(largest)`): same
modules, same parameter names, so its `state_dict()` loads into the largest genotype unchanged and a
sub-network's weights are slices of it (`extract`). What is elastic, per MBConv stage (OFA, Cai et al.
2020; BigNAS, Yu et al. 2020):

- depth: a sub-network runs the first `repeats` blocks of each stage (OFA's elastic depth).
- kernel: the largest kernel's weights hold each smaller kernel as their centre crop. OFA also learns
  a kernel transformation matrix per size; we skip it (BigNAS shows plain centre cropping trains well),
  so a 3x3 sub-kernel is exactly the centre of the 5x5.
- expansion: a sub-network uses the first `mid` channels of the expand conv, the depthwise conv, the
  attention's convs and the projection's input (OFA's elastic width without its channel sorting by
  importance: weights are shared by position, which sandwich training makes the important ones).
  An expansion whose mid width equals the input width has no expand conv (as `MBConv` builds it);
  its depthwise conv then takes the first input-width channels.
- width: a stage's output width (a width multiplier scales every stage, the stem and the 1x1 head conv
  alike) keeps the first `out_chs` filters of its projection, and every later layer reads the first
  channels of its input (BigNAS's elastic channel width). A block whose input and output widths become
  equal in a sub-network (and stride 1) gains the identity shortcut `MBConv` would build for it. Plain
  `conv` layers (a stem, EfficientNet's head conv) are width-elastic too; the classifier reads the first
  features.
- attention: an MBConv stage of the largest with SE runs in a sub-network with SE or without it (`none`),
  and SE's reduction ratio is elastic: a larger ratio uses the first `squeeze_width` channels of the
  squeeze (OFA's elastic SE width). A stage of the largest without attention has none in every sub-network.
- BatchNorm: a sub-network uses the first channels of each norm's affine parameters and running
  statistics; the statistics are only meaningful per sub-network after `recalibrate_bn`.
- input resolution: any; the network is fully convolutional up to its average-pooled head.

Fixed (a sub-network must match the largest exactly, and `check` says which field differs): the head,
every stage that is neither MBConv nor a plain conv (and its input width), and per MBConv stage its
block, conv kind (`depthwise` or `standard`), the attention kind it may switch on, stride, activation, norm
and dilation. Block family and conv kind change the weights' shapes and meaning, so they cannot share
weights; a space that searches them needs one supernet per choice. Attention is `none` or `se` (SE
reduces from the block's input width, so its weights slice along mid and the reduced width); ECA's
kernel size and GroupNorm's groups depend on the width and cannot be sliced, and CBAM's spatial gate
has no smaller version to slice to.

`drop_path` (stochastic depth) is not applied in the supernet: its per-block rate depends on the
sub-network's depth.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from autocnn.builder import Network, build_model
from autocnn.catalog import expanded_width
from autocnn.errors import AutocnnError
from autocnn.genotype import Genotype, StageSpec
from autocnn.layers.attention import SqueezeExcite
from autocnn.layers.blocks.mbconv import squeeze_width
from autocnn.layers.common import same_padding


class SupernetError(AutocnnError, ValueError):
    """A genotype or space a supernet cannot share weights over; one line naming the problem and the fix."""


ELASTIC_BLOCKS = ("mbconv",)
ELASTIC_CONVS = ("depthwise", "standard")
ELASTIC_ATTENTION = ("none", "se")
ELASTIC_NORMS = ("batch", "none")
ELASTIC_FIELDS = ("repeats", "kernel", "expansion", "out_chs", "attention", "ratio")
"""The StageSpec fields a sub-network may change in an MBConv stage; every other field is fixed."""
WIDTH_FIELDS = ("out_chs",)
"""The StageSpec fields a sub-network may change in a plain conv stage (`width_stage`)."""


def is_elastic_stage(spec: StageSpec) -> bool:
    return spec.block in ELASTIC_BLOCKS


def is_width_stage(spec: StageSpec) -> bool:
    """A plain conv layer whose output width slices: one full conv (no groups) without attention."""
    return spec.block == "conv" and spec.groups == 1 and spec.attention == "none" and spec.conv == "standard"


def check_shareable(g: Genotype, fix: str = "fix these fields in the supernet's space") -> None:
    """Raise SupernetError if an MBConv stage of `g` has a part the supernet cannot slice."""
    for i, s in enumerate(g.stages):
        if not is_elastic_stage(s):
            continue
        norm = s.norm or g.norm
        for name, value, allowed in (("conv", s.conv, ELASTIC_CONVS), ("attention", s.attention, ELASTIC_ATTENTION),
                                     ("norm", norm, ELASTIC_NORMS)):
            if value not in allowed:
                raise SupernetError(f"stages[{i}].{name} is {value!r}, which a supernet cannot share weights over "
                                    f"(it supports {', '.join(allowed)}); {fix}")


def _blocks_in(g: Genotype) -> list[list[int]]:
    """Input width of each block of each stem stage, then of each body stage, walked as the builder does."""
    from autocnn.layers import BLOCKS

    chs, out = g.in_chans, []
    for spec in (*g.stem, *g.stages):
        widths = []
        for _ in range(spec.repeats):
            widths.append(chs)
            chs = BLOCKS.get(spec.block).out_channels(chs, spec)
        out.append(widths)
    return out + [[chs]]  # and what the head gets


def _without(spec: StageSpec, fields: tuple[str, ...]) -> dict:
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name not in fields}


class Supernet(nn.Module):
    """The largest genotype's network, runnable as any of its sub-networks.

    >>> net = Supernet(largest)                    # doctest: +SKIP
    >>> net.set_active(genotype)(x)                # the sub-network `genotype` describes
    >>> build_model(genotype).load_state_dict(extract(net, genotype))   # the same network, standalone

    The active sub-network defaults to the largest. Parameter and buffer names are the largest
    genotype's (`stem.*`, `stages.i.j.*`, `head.*`).
    """

    def __init__(self, largest: Genotype) -> None:
        super().__init__()
        if not any(is_elastic_stage(s) for s in largest.stages):
            raise SupernetError("the genotype has no MBConv stage, so nothing in it is elastic; "
                                "a supernet shares weights over MBConv stages' depth, kernel, expansion and width")
        check_shareable(largest)
        net: Network = build_model(largest)
        self.largest = largest
        self.stem, self.stages, self.head = net.stem, net.stages, net.head
        self._in_widths = _blocks_in(largest)
        self.active = largest

    # -- which sub-network ------------------------------------------------------------------------
    def check(self, g: Genotype) -> None:
        """Raise SupernetError unless `g` is a sub-network of this supernet (its resolution may differ)."""
        big = self.largest
        fix = "sample sub-networks from the supernet's own space (ElasticSpace)"
        for name in ("in_chans", "num_classes", "act", "norm", "norm_eps", "head"):
            if getattr(g, name) != getattr(big, name):
                raise SupernetError(f"genotype {name} is {getattr(g, name)!r}, the supernet's is "
                                    f"{getattr(big, name)!r}; {fix}")
        if big.head.pool == "flatten" and g.resolution != big.resolution:
            raise SupernetError(f"genotype resolution is {g.resolution}, the supernet's flatten head needs "
                                f"{big.resolution}; {fix}")
        for part in ("stem", "stages"):
            if len(getattr(g, part)) != len(getattr(big, part)):
                raise SupernetError(f"genotype has {len(getattr(g, part))} {part}, the supernet "
                                    f"{len(getattr(big, part))}; {fix}")
        widths = _blocks_in(g)
        for part, i, s, b, ins, big_ins in _walk(g, big, widths, self._in_widths):
            where = f"{part}[{i}]"
            elastic = ELASTIC_FIELDS if is_elastic_stage(b) else WIDTH_FIELDS if is_width_stage(b) else ()
            fixed, want = _without(s, elastic), _without(b, elastic)
            for name in want:
                if fixed[name] != want[name]:
                    raise SupernetError(f"{where}.{name} is {fixed[name]!r}, fixed at {want[name]!r} in the "
                                        f"supernet; {fix}")
            if not elastic:
                if ins[:1] != big_ins[:1] and _has_weights(self._stage(part, i)):
                    raise SupernetError(f"{where} ({s.block}) gets {ins[0]} input channels, the supernet's "
                                        f"{big_ins[0]}; only MBConv and plain conv stages change width; {fix}")
                continue
            if s.repeats > b.repeats:
                raise SupernetError(f"{where}.repeats is {s.repeats}, the supernet has at most {b.repeats}; {fix}")
            if s.out_chs > b.out_chs:
                raise SupernetError(f"{where}.out_chs is {s.out_chs}, the supernet's is at most {b.out_chs}; {fix}")
            if not is_elastic_stage(b):
                continue
            if s.attention not in ("none", b.attention):
                raise SupernetError(f"{where}.attention is {s.attention!r}, the supernet's stage has "
                                    f"{b.attention!r} (a sub-network may only switch it off); {fix}")
            if s.kernel > b.kernel or (b.kernel - s.kernel) % 2:
                raise SupernetError(f"{where}.kernel is {s.kernel}, not the centre of the supernet's "
                                    f"{b.kernel}x{b.kernel} kernel; {fix}")
            for j, (in_chs, big_in) in enumerate(zip(ins[:s.repeats], big_ins)):
                mid, top = expanded_width(in_chs, s.expansion), expanded_width(big_in, b.expansion)
                has_expand = not isinstance(self._stage(part, i)[j].expand, nn.Identity)
                if mid > top or (mid != in_chs and not has_expand):
                    raise SupernetError(f"{where}.expansion {s.expansion} gives {mid} channels, which the "
                                        f"supernet's expansion {b.expansion} ({top} channels) does not hold; {fix}")
                if s.attention != "none" and squeeze_width(in_chs, s.ratio) > squeeze_width(big_in, b.ratio):
                    raise SupernetError(f"{where}.ratio {s.ratio} squeezes to {squeeze_width(in_chs, s.ratio)} "
                                        f"channels, more than the supernet's ratio {b.ratio} holds "
                                        f"({squeeze_width(big_in, b.ratio)}); {fix}")
        features, big_features = widths[-1][0], self._in_widths[-1][0]
        if features != big_features and (big.head.attention != "none" or big.head.hidden):
            raise SupernetError(f"the head gets {features} channels, the supernet's {big_features}; a head with "
                                f"attention or hidden layers takes the full width only; {fix}")

    def _stage(self, part: str, i: int) -> nn.Sequential:
        return getattr(self, part)[i]

    def set_active(self, g: Genotype) -> "Supernet":
        """Run as the sub-network `g` from now on (checked); returns self, so `net.set_active(g)(x)`."""
        self.check(g)
        self.active = g
        return self

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.active
        for part in ("stem", "stages"):
            for stage, spec in zip(getattr(self, part), getattr(g, part)):
                if is_elastic_stage(spec):
                    for j in range(spec.repeats):
                        x = _mbconv(stage[j], x, spec)
                elif is_width_stage(spec):
                    for block in stage:
                        x = _cna(block, x, _out_width(x, spec))
                else:
                    x = stage(x)
        return _head(self.head, x)


def _walk(g: Genotype, big: Genotype, widths: list[list[int]], big_widths: list[list[int]]):
    """(part, index, stage of g, stage of the largest, g's and the largest's block input widths) per stage."""
    specs = [("stem", i, s, b) for i, (s, b) in enumerate(zip(g.stem, big.stem))]
    specs += [("stages", i, s, b) for i, (s, b) in enumerate(zip(g.stages, big.stages))]
    for (part, i, s, b), ins, big_ins in zip(specs, widths, big_widths):
        yield part, i, s, b, ins, big_ins


def _has_weights(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _out_width(x: torch.Tensor, spec: StageSpec) -> int:
    from autocnn.layers import BLOCKS

    return BLOCKS.get(spec.block).out_channels(x.shape[1], spec)


# -- elastic layers: the same ops as the built modules, on slices of their weights --------------------

def _norm(bn: nn.Module, x: torch.Tensor, n: int) -> torch.Tensor:
    """`nn.BatchNorm2d.forward` on the first n channels (running statistics updated in place on the slice)."""
    if isinstance(bn, nn.Identity):
        return x
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch = bn.training or bn.running_mean is None
    mean = bn.running_mean[:n] if bn.running_mean is not None else None
    var = bn.running_var[:n] if bn.running_var is not None else None
    weight = bn.weight[:n] if bn.weight is not None else None
    bias = bn.bias[:n] if bn.bias is not None else None
    return F.batch_norm(x, mean, var, weight, bias, use_batch, momentum, bn.eps)


def _conv(conv: nn.Conv2d, x: torch.Tensor, out: int, kernel: int | None = None) -> torch.Tensor:
    """`conv` restricted to its first `out` filters, the input's width, and a centred kernel x kernel."""
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels
    w = conv.weight[:out, : 1 if depthwise else x.shape[1]]
    big = w.shape[-1]
    k = big if kernel is None else kernel
    if k != big:
        start = (big - k) // 2
        w = w[:, :, start:start + k, start:start + k]
    bias = conv.bias[:out] if conv.bias is not None else None
    padding = same_padding(k, conv.dilation[0]) if k != big else conv.padding
    return F.conv2d(x, w.contiguous(), bias, conv.stride, padding, conv.dilation, out if depthwise else 1)


def _cna(unit: nn.Module, x: torch.Tensor, out: int, kernel: int | None = None) -> torch.Tensor:
    return unit.act(_norm(unit.bn, _conv(unit.conv, x, out, kernel), out))


def _attention(attn: nn.Module, x: torch.Tensor, reduced: int | None) -> torch.Tensor:
    """The block's SE on the first `reduced` squeeze channels (None: the sub-network has no attention here)."""
    if reduced is None or isinstance(attn, nn.Identity):
        return x
    assert isinstance(attn, SqueezeExcite), type(attn)  # check_shareable refused every other kind
    n = x.shape[1]
    scale = x.mean((2, 3), keepdim=True)
    scale = F.conv2d(scale, attn.fc1.weight[:reduced, :n].contiguous(), attn.fc1.bias[:reduced])
    scale = F.conv2d(attn.act(scale), attn.fc2.weight[:n, :reduced].contiguous(), attn.fc2.bias[:n])
    return x * scale.sigmoid()


def _mbconv(block: nn.Module, x: torch.Tensor, spec: StageSpec) -> torch.Tensor:
    """`MBConv.forward` as the sub-network's block: its kernel, expanded width (no expand conv when that is the
    input width), squeeze width and output width; an identity shortcut where its widths match at stride 1."""
    in_chs = x.shape[1]
    mid, out_chs = expanded_width(in_chs, spec.expansion), _out_width(x, spec)
    out = x if mid == in_chs else _cna(block.expand, x, mid)
    out = _cna(block.conv, out, mid, spec.kernel)
    out = _attention(block.attn, out, None if spec.attention == "none" else squeeze_width(in_chs, spec.ratio))
    out = _cna(block.project, out, out_chs)
    return out + x if block.conv.conv.stride == (1, 1) and in_chs == out_chs else out


def _head(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`Head.forward` on the first features: the classifier reads as many inputs as the sub-network has."""
    x = head.flatten(head.pool(x))
    return F.linear(head.dropout(x), head.fc.weight[:, :x.shape[1]], head.fc.bias)


def extract(supernet: Supernet, g: Genotype) -> dict[str, torch.Tensor]:
    """The weights of sub-network `g`: exactly the keys and shapes of `build_model(g).state_dict()`.

    Each tensor is the supernet's of the same name cut to the sub-network's shape: the first entries
    along every dimension, except a conv kernel's spatial dimensions, which keep their centre (OFA).
    BatchNorm statistics are copied as they stand: recalibrate them for `g` first (`recalibrate_bn`).
    """
    supernet.check(g)
    with torch.device("meta"):
        target = build_model(g).state_dict()
    source = supernet.state_dict()
    out = {}
    for key, like in target.items():
        if key not in source or source[key].ndim != like.ndim:
            raise SupernetError(f"the supernet has no weight {key!r} of {tuple(like.shape)} for this genotype; "
                                "sample sub-networks from the supernet's own space")
        w = source[key]
        for dim, n in enumerate(like.shape):
            if n != w.shape[dim]:
                start = (w.shape[dim] - n) // 2 if w.ndim == 4 and dim >= 2 else 0
                w = w.narrow(dim, start, n)
        out[key] = w.detach().clone()
    return out
