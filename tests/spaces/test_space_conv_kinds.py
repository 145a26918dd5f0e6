"""Every built-in space only samples blocks whose spatial convs are the conv kind their stage names
(a `depthwise` stage never builds a grouped conv with fewer groups than input channels)."""
import optuna
import pytest
import torch
from optuna.samplers import RandomSampler
from torch import nn

from autocnn.layers import BLOCKS, LayerFactory
from autocnn.spaces import builtin_spaces, load_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

SAMPLES = 200


def spatial_convs(block: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """(name, conv) of every conv with a kernel larger than 1x1 in `block`, in build order, outside its
    attention module (CBAM's 7x7 spatial gate is no conv of the stage's kind)."""
    return [(name, m) for name, m in block.named_modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1) and "attn" not in name.split(".")]


def conv_kind_mismatch(spec, block: nn.Module) -> str | None:
    """The first spatial conv of `block` that is not of the conv kind `spec` names, or None."""
    for name, conv in spatial_convs(block):
        cin, cout, groups = conv.in_channels, conv.out_channels, conv.groups
        if spec.conv == "standard":
            ok = groups == spec.groups
        elif spec.conv == "depthwise":
            ok = groups == cin and cout % cin == 0
        else:  # separable kinds: a depthwise conv of one width beside its 1x1 pointwise conv
            parent = block.get_submodule(name.rpartition(".")[0])
            pointwise = getattr(parent, "pw", None)
            ok = groups == cin == cout and name.endswith("dw") and pointwise.kernel_size == (1, 1)
        if not ok:
            return f"{name} ({spec.block}, conv {spec.conv}): {conv}"
    return None


def blocks(g):
    """(where, spec, block) for every block of `g`, built on the meta device as the builder builds them.

    Repeated blocks of one width are built once across calls (`_BUILT`). Of a stage's repeats, the first two
    and the last are built: the middle ones differ from those only in their input width (a DenseNet stage's
    grows by its growth rate each layer, which made thousands of distinct blocks per test)."""
    chs = g.in_chans
    for section, specs in (("stem", g.stem), ("stages", g.stages)):
        for i, spec in enumerate(specs):
            cls = BLOCKS.get(spec.block)
            for r in range(spec.repeats):
                stride = spec.stride if r == 0 else 1
                out = cls.out_channels(chs, spec)
                if 1 < r < spec.repeats - 1:
                    chs = out
                    continue
                key = (chs, stride, spec)
                if key not in _BUILT:
                    layers = LayerFactory(act="relu", norm="batch", eps=1e-5, conv=spec.conv, attention="none",
                                          ratio=spec.ratio, dilation=spec.dilation, bias=spec.bias)
                    with torch.device("meta"):
                        _BUILT[key] = cls(chs, out, stride, spec, layers=layers)
                yield f"{section}[{i}] block {r}", spec, _BUILT[key]
                chs = out


_BUILT: dict = {}


@pytest.mark.parametrize("name", builtin_spaces())
def test_sampled_blocks_are_the_conv_kind_their_stage_names(name):
    space = load_space(name)
    study = optuna.create_study(sampler=RandomSampler(seed=0))
    kinds, sampled = set(), 0
    for _ in range(SAMPLES):
        trial = study.ask()
        try:
            g = space.sample(trial, num_classes=10)  # a refused combination raises GenotypeError here
        except optuna.TrialPruned:
            continue
        sampled += 1
        for where, spec, block in blocks(g):
            wrong = conv_kind_mismatch(spec, block)
            assert wrong is None, f"{where} {wrong} in {g.to_string()}"
        kinds |= {(s.block, s.conv) for s in g.stem + g.stages}
    assert sampled >= SAMPLES // 2
    if name in ("efficientnet_compound", "cnn_families"):
        assert ("mbconv", "depthwise") in kinds and ("fused_mbconv", "standard") in kinds
        assert ("fused_mbconv", "depthwise") not in kinds
