"""The torch-free catalog and the layer registries describe the same kinds, and every block's
declared facts (attention, residual, output width) are what its built module does."""
import importlib
import dataclasses
import inspect
import pkgutil

import pytest
import torch

import autocnn.layers.blocks
from autocnn import GenotypeError, StageSpec, catalog
from autocnn.layers import ACTIVATIONS, ATTENTION, BLOCKS, CONVS, NORMS, Block, DropPath, LayerFactory
from autocnn.layers.attention import SqueezeExcite

PAIRS = {"blocks": (catalog.BLOCKS, BLOCKS), "attention": (catalog.ATTENTION, ATTENTION),
         "convs": (catalog.CONVS, CONVS), "activations": (catalog.ACTIVATIONS, ACTIVATIONS),
         "norms": (catalog.NORMS, NORMS)}


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_every_catalog_name_is_implemented_and_nothing_else(kind):
    names, registry = PAIRS[kind]
    assert registry.names() == names.names() and registry.kind == names.kind


def _block_classes() -> set[type]:
    """Every public Block subclass defined in a module under autocnn/layers/blocks."""
    found = set()
    for info in pkgutil.iter_modules(autocnn.layers.blocks.__path__, "autocnn.layers.blocks."):
        module = importlib.import_module(info.name)
        found |= {cls for name, cls in vars(module).items()
                  if inspect.isclass(cls) and issubclass(cls, Block) and cls is not Block and cls.__module__ == info.name
                  and not name.startswith("_")}
    return found


def test_every_block_class_is_named_by_one_catalog_entry():
    unlisted = _block_classes() - {BLOCKS.get(name) for name in BLOCKS}
    assert not unlisted, f"add a BlockKind entry naming each of {unlisted} to autocnn/catalog.py"
    for name, kind in catalog.BLOCKS.items():
        cls = BLOCKS.get(name)
        assert cls.kind is kind and kind.impl == f"{cls.__module__}:{cls.__qualname__}"


def test_a_name_missing_from_the_catalog_cannot_register():
    with pytest.raises(ValueError, match="not in autocnn.catalog"):
        ATTENTION.register("made_up", lambda *a, **k: torch.nn.Identity())
    assert "made_up" not in ATTENTION


@pytest.mark.parametrize("name", catalog.BLOCKS.names())
def test_declared_facts_match_the_built_block(name):
    kind, cls = catalog.BLOCKS.get(name), BLOCKS.get(name)
    spec = StageSpec(name, out_chs=16, ratio=4.0)
    layers = LayerFactory(act="relu", norm="batch", eps=1e-5, conv="standard", attention="se", ratio=4.0)
    block = cls(16, cls.out_channels(16, spec), 1, spec, layers=layers, drop_path=0.5).eval()
    with torch.no_grad():
        out = block(torch.randn(2, 16, 9, 9))
    assert out.shape[1] == kind.out_channels(16, spec)
    modules = list(block.modules())
    assert any(isinstance(m, SqueezeExcite) for m in modules) == kind.supports_attention
    # a residual block's identity path gets its share of stochastic depth; other blocks ignore it
    assert any(isinstance(m, DropPath) and m.p == 0.5 for m in modules) == kind.residual
    assert (cls.supports_attention, cls.residual) == (kind.supports_attention, kind.residual)


def _kxk_convs(block: torch.nn.Module) -> list[torch.nn.Conv2d]:
    """The convs of `block` wider than 1x1, in build order, outside its attention module."""
    return [m for name, m in block.named_modules()
            if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1) and "attn" not in name.split(".")]


def _conv_cases(name: str) -> list[tuple[int, StageSpec]]:
    """(input width, stage) pairs that change and keep the width, strided where the kind allows it."""
    cases = []
    for in_chs, out_chs, expansion in ((16, 24, 4.0), (24, 24, 1.0), (16, 0, 2.0)):
        for stride in (1, 2):
            try:
                cases.append((in_chs, StageSpec(name, out_chs=out_chs or (8 if name == "dense" else 0),
                                                stride=stride, expansion=expansion)))
            except GenotypeError:
                pass
    return cases


@pytest.mark.parametrize("name", catalog.BLOCKS.names())
def test_declared_spatial_convs_are_the_convs_built_of_the_stage_kind(name):
    """`convs` is what `depthwise` is checked against: built with conv kind `separable`, exactly the listed
    convs become depthwise-pointwise pairs, with the listed widths (a block's own fixed convs stay as they are)."""
    kind, cls = catalog.BLOCKS.get(name), BLOCKS.get(name)
    for in_chs, spec in _conv_cases(name):
        for stride in sorted({spec.stride, 1}):  # a stage's later blocks run at stride 1
            layers = LayerFactory(act="relu", norm="batch", eps=1e-5, conv="separable", attention="cbam", ratio=4.0)
            with torch.device("meta"):
                block = cls(in_chs, cls.out_channels(in_chs, spec), stride, spec, layers=layers)
            built = [(m.dw.in_channels, m.pw.out_channels) for m in block.modules()
                     if isinstance(m, torch.nn.Sequential) and [n for n, _ in m.named_children()] == ["dw", "pw"]]
            assert built == list(kind.spatial_convs(in_chs, stride, spec)), (in_chs, stride, spec)


@pytest.mark.parametrize("name", catalog.BLOCKS.names())
def test_an_accepted_depthwise_block_is_depthwise_and_a_refused_one_names_the_conv(name):
    kind, cls = catalog.BLOCKS.get(name), BLOCKS.get(name)
    for in_chs, spec in _conv_cases(name):
        try:
            spec = dataclasses.replace(spec, conv="depthwise")
        except GenotypeError as err:  # fused_mbconv: refused whatever the widths
            assert name == "fused_mbconv" and err.field == "conv" and "use block 'mbconv'" in err.message
            continue
        problems = list(kind.conv_problems(in_chs, spec.stride, spec))
        widths = kind.spatial_convs(in_chs, spec.stride, spec)
        assert bool(problems) == any(cout % cin for cin, cout in widths)
        if problems:
            assert problems[0][0] == "conv" and "separable" in problems[0][1]
            continue
        layers = LayerFactory(act="relu", norm="batch", eps=1e-5, conv="depthwise", attention="none", ratio=4.0)
        with torch.device("meta"):
            block = cls(in_chs, cls.out_channels(in_chs, spec), spec.stride, spec, layers=layers)
        assert all(c.groups == c.in_channels for c in _kxk_convs(block))
