"""The torch-free catalog and the layer registries describe the same kinds, and every block's
declared facts (attention, residual, output width) are what its built module does."""
import importlib
import inspect
import pkgutil

import pytest
import torch

import autocnn.layers.blocks
from autocnn import StageSpec, catalog
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
