"""Inception (v1, v3 A-E) and Xception specifics; sizes, parity and the block grid live beside the
other presets and blocks (test_presets.py, test_blocks.py)."""
import pytest

from autocnn import GenotypeError, StageSpec, catalog
from autocnn.builder import build_model
from autocnn.layers import BLOCKS
from autocnn.presets import get_preset


def test_se_inception_v3_carries_se_in_every_module_and_the_seed_head():
    g = get_preset("se_inception_v3")
    assert all(s.attention == "se" and s.ratio == 16.0 for s in g.stages)
    assert (g.head.attention, g.head.dropout) == ("se_fc", 0.6)
    model = build_model(g.replace(resolution=75))
    assert model.head.attn.fc1.out_features == 186  # 2048 // 11, as in the seed's Keras code
    modules = [b for stage in model.stages for b in stage]
    assert len(modules) == 11 and all(type(b.attn).__name__ == "SqueezeExcite" for b in modules)


def test_googlenet_derived_widths_follow_inception3a():
    spec = StageSpec("inception_v1", out_chs=256)
    assert BLOCKS.get("inception_v1").widths_for(192, spec) == (64, 96, 128, 16, 32, 32)
    assert BLOCKS.get("inception_v1").out_channels(192, spec) == 256


INCEPTION = [name for name, kind in catalog.BLOCKS.items() if isinstance(kind, catalog.InceptionKind)]


@pytest.mark.parametrize("block", INCEPTION)
def test_wrong_number_of_widths_is_rejected(block):
    n = len(catalog.BLOCKS.get(block).width_names)
    for count in (1, n - 1, n + 1):
        with pytest.raises(GenotypeError, match="widths"):
            StageSpec(block, widths=(8,) * count)
    assert StageSpec(block, widths=(8,) * n).widths == (8,) * n


def test_inconsistent_specs_are_rejected():
    with pytest.raises(GenotypeError, match="stride"):
        StageSpec("inception_v3_a", stride=2)
    with pytest.raises(GenotypeError, match="out_chs"):
        StageSpec("inception_v1", out_chs=100, widths=(8, 8, 8, 8, 8, 8))
    with pytest.raises(GenotypeError, match="out_chs"):
        StageSpec("xception", out_chs=64, widths=(16, 32))
