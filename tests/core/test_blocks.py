"""Registry-driven: every block kind x attention kind x conv kind builds and trains, and exports (every pair)."""
import pytest
import torch

from autocnn import Genotype, GenotypeError, HeadSpec, StageSpec
from autocnn.builder import build_model
from autocnn.layers import ATTENTION, BLOCKS, CONVS

ATTENTIVE_BLOCKS = [name for name in BLOCKS if BLOCKS.get(name).supports_attention]
CONV_KINDS = ["standard", "separable"]  # the full grid; every other conv kind builds on one block below


def tiny_genotype(block: str, attention: str = "none", conv: str = "standard", resolution: int = 32) -> Genotype:
    """A stem and one two-block stage of `block`, strided where the block kind allows it."""
    def stage(stride):
        return StageSpec(block, out_chs=8 if block == "dense" else 24, repeats=2, stride=stride,
                         expansion=4.0 if block in ("dense", "bottleneck") else 2.0,
                         conv=conv, attention=attention, ratio=4.0)
    try:
        body = stage(2)
    except GenotypeError:
        body = stage(1)
    return Genotype(stem=(StageSpec("conv", out_chs=16),), stages=(body,), head=HeadSpec(),
                    resolution=resolution, num_classes=10)


def _export_grid() -> list[tuple[str, str, str]]:
    """Half the grid, alternating the conv kind: every block x attention, block x conv and attention x
    conv pair is exported (torch.export costs ~0.5 s a model; a new block or attention joins by itself)."""
    attentions = ATTENTION.names()
    return [(block, attention, CONV_KINDS[(i + j) % len(CONV_KINDS)])
            for i, block in enumerate(ATTENTIVE_BLOCKS) for j, attention in enumerate(attentions)]


@pytest.mark.parametrize("conv", CONV_KINDS)
@pytest.mark.parametrize("attention", ATTENTION.names())
@pytest.mark.parametrize("block", ATTENTIVE_BLOCKS)
def test_block_builds_and_trains(block, attention, conv, seeded):
    g = tiny_genotype(block, attention, conv)
    model = build_model(g)
    for res in (32, 64):
        x = torch.randn(2, 3, res, res, generator=seeded)
        features = model.forward_features(x)
        assert features.shape[1] == model.num_features  # every block's out_channels is its real width
        out = model.head(features)
        assert out.shape == (2, 10)
        out.sum().backward()
        grads = [p.grad for p in model.stages.parameters() if p.requires_grad]
        assert all(gr is not None for gr in grads)
        model.zero_grad()


@pytest.mark.parametrize("block,attention,conv", _export_grid())
def test_block_exports(block, attention, conv, seeded):
    model = build_model(tiny_genotype(block, attention, conv)).eval()
    x = torch.randn(2, 3, 32, 32, generator=seeded)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), model(x))


@pytest.mark.parametrize("block", sorted(set(BLOCKS) - set(ATTENTIVE_BLOCKS)))
def test_blocks_without_attention_reject_it(block):
    with pytest.raises(GenotypeError, match="attention"):
        StageSpec(block, attention="se")


@pytest.mark.parametrize("conv", [name for name in CONVS if name not in CONV_KINDS])
def test_other_conv_kinds_build(conv):
    # mbconv: its kxk conv keeps the width, so every conv kind (depthwise too) has a meaning there
    model = build_model(tiny_genotype("mbconv", "se", conv))
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_compile_runs(seeded):
    model = build_model(tiny_genotype("mbconv", "se")).eval()
    x = torch.randn(2, 3, 32, 32, generator=seeded)
    compiled = torch.compile(model, backend="eager")
    torch.testing.assert_close(compiled(x), model(x))


def test_drop_path_spreads_linearly_over_residual_blocks():
    from autocnn.presets import get_preset

    model = build_model(get_preset("efficientnet_b0"))
    rates = [m.p for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates == sorted(rates) and rates[-1] < 0.2 and len(rates) > 5


def test_depthwise_is_one_group_per_input_channel_with_a_channel_multiplier():
    g = Genotype(stem=(StageSpec("conv", out_chs=16),), stages=(StageSpec("conv", out_chs=48, conv="depthwise"),),
                 resolution=32, num_classes=10)
    conv = build_model(g).stages[0][0].conv
    assert (conv.in_channels, conv.out_channels, conv.groups) == (16, 48, 16)  # 3 filters per channel
