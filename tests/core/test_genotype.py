"""Genotype validation and exact round-trips through dict, JSON, YAML and the compact string."""
import dataclasses
import json
import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autocnn import Genotype, GenotypeError, HeadSpec, StageSpec, catalog
from autocnn.presets import PRESETS, get_preset


@pytest.mark.parametrize("name", PRESETS.names())
def test_presets_round_trip(name):
    g = get_preset(name)
    assert Genotype.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    assert Genotype.from_json(g.to_json()) == g
    assert Genotype.from_yaml(g.to_yaml()) == g
    assert Genotype.from_string(g.to_string()) == g
    assert "\n" not in g.to_string()


def test_compact_string_reads_like_timm():
    s = get_preset("efficientnet_b0").to_string()
    assert "mbconv-c24-r2-s2-e6.0-cv:depthwise-at:se-rr4.0" in s


stage_fields = st.fixed_dictionaries(dict(
    block=st.sampled_from(catalog.BLOCKS.names()),
    out_chs=st.integers(1, 4096), repeats=st.integers(1, 12), stride=st.integers(1, 2),
    kernel=st.sampled_from([1, 3, 5, 7]), expansion=st.floats(0.01, 10, allow_nan=False),
    conv=st.sampled_from(catalog.CONVS.names()), dilation=st.integers(1, 3), groups=st.just(1),
    attention=st.sampled_from(catalog.ATTENTION.names()), ratio=st.floats(0.5, 64),
    act=st.none() | st.sampled_from(catalog.ACTIVATIONS.names()), padding=st.none() | st.integers(0, 3),
    widths=st.tuples() | st.tuples(st.integers(1, 64), st.integers(1, 64)), bias=st.booleans(),
))


def _buildable(fields: dict) -> StageSpec:
    """Every block kind: a value its kind refuses (a dense stride, an Inception width count) goes back
    to the field's default, so the round trips see every kind without a list of safe ones."""
    while True:
        try:
            return StageSpec(**fields)
        except GenotypeError as err:
            assert err.field in fields and err.field != "block", err
            del fields[err.field]


def _valid_genotype(**fields) -> Genotype:
    """A conv kind the widths refuse (a depthwise conv that changes the width) goes back to `standard`."""
    while True:
        try:
            return Genotype(**fields)
        except GenotypeError as err:
            section, index, name = re.fullmatch(r"(stem|stages)\[(\d+)\]\.(\w+)", err.field).groups()
            assert name == "conv", err
            specs = list(fields[section])
            specs[int(index)] = dataclasses.replace(specs[int(index)], conv="standard")
            fields[section] = tuple(specs)


stage_strategy = stage_fields.map(_buildable)
genotype_strategy = st.builds(
    _valid_genotype,
    stages=st.lists(stage_strategy, min_size=1, max_size=4).map(tuple),
    stem=st.lists(stage_strategy, max_size=2).map(tuple),
    head=st.builds(HeadSpec, pool=st.sampled_from(catalog.POOLS), pool_size=st.integers(1, 7),
                   hidden=st.lists(st.integers(1, 512), max_size=2).map(tuple), dropout=st.floats(0, 0.9),
                   multilabel=st.booleans()),
    resolution=st.integers(8, 600), in_chans=st.integers(1, 4), num_classes=st.integers(1, 1000),
    norm_eps=st.floats(1e-8, 1e-1), drop_path=st.floats(0, 0.5),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(genotype_strategy)
def test_random_genotypes_round_trip_exactly(g):
    assert Genotype.from_string(g.to_string()) == g
    assert Genotype.from_json(g.to_json()) == g
    assert Genotype.from_yaml(g.to_yaml()) == g
    assert Genotype.from_string(g.to_string()).arch_id == g.arch_id


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["stages", "stem", "head", "resolution", "act", "bogus", "norm_eps"]),
                       st.none() | st.integers(-3, 300) | st.text(max_size=5) | st.floats(allow_nan=True)
                       | st.lists(st.dictionaries(st.sampled_from(["block", "out_chs", "ratio", "kernel"]),
                                                  st.integers(-2, 64) | st.text(max_size=4) | st.floats()),
                                  max_size=3)))
def test_arbitrary_dicts_raise_only_genotype_error(data):
    try:
        Genotype.from_dict(data)
    except GenotypeError:
        pass


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["stages"][2].update(ratio=0), "stages[2].ratio"),
    (lambda d: d["stages"][0].update(block="nope"), "stages[0].block"),
    (lambda d: d["stages"][1].update(kernel=0), "stages[1].kernel"),
    (lambda d: d["stages"][1].update(attention="squeeze"), "stages[1].attention"),
    (lambda d: d["stages"][1].update(colour="red"), "stages[1].colour"),
    (lambda d: d["head"].update(dropout=1.5), "head.dropout"),
    (lambda d: d.update(resolution=0), "resolution"),
    (lambda d: d.update(stages=[]), "stages"),
    (lambda d: d["stages"][3].update(out_chs="wide"), "stages[3].out_chs"),
])
def test_invalid_values_name_the_field(mutate, field):
    data = get_preset("efficientnet_b0").to_dict()
    mutate(data)
    with pytest.raises(GenotypeError) as info:
        Genotype.from_dict(data)
    assert info.value.field == field
    assert str(info.value).startswith(field + ":")


def test_a_padding_wider_than_the_window_reaches_is_refused():
    """A conv's border beyond dilation x (kernel - 1) adds only zeros (and a typo there once asked for a
    600-million-pixel feature map); a pool's beyond kernel // 2 is what PyTorch refuses at run time."""
    lenet = get_preset("lenet5").to_dict()
    for stage, padding, accepted in ((0, 4, True), (0, 5, False), (1, 1, True), (1, 2, False)):
        data = get_preset("lenet5").to_dict()
        data["stages"][stage].update(padding=padding)  # stage 0: a 5x5 conv, stage 1: a 2x2 pool
        if accepted:
            assert Genotype.from_dict(data).stages[stage].padding == padding
            continue
        with pytest.raises(GenotypeError) as info:
            Genotype.from_dict(data)
        assert info.value.field == f"stages[{stage}].padding", str(info.value)
    dilated = dict(lenet["stages"][0], padding=8, dilation=2)
    assert Genotype.from_dict(dict(lenet, stages=[dilated, *lenet["stages"][1:]])).stages[0].padding == 8


def test_bad_strings_raise_genotype_error():
    for text in ["", "net | none", "net | none | mbconv-zz9 | head", "net | none | mbconv-c8 | head-pool:cube"]:
        with pytest.raises(GenotypeError):
            Genotype.from_string(text)


def test_genotype_and_package_import_without_torch():
    """Validation reads the torch-free catalog, and the package root loads its layers only on use."""
    code = ("import sys, autocnn.genotype, autocnn\n"
            "from autocnn.presets import get_preset\n"
            "from autocnn.scaling import compound_scale\n"
            "compound_scale(get_preset('efficientnet_b0'), 1.1, 1.2)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def _conv_refusal(**genotype) -> GenotypeError:
    with pytest.raises(GenotypeError) as err:
        Genotype(**genotype)
    return err.value


def test_depthwise_is_refused_where_a_kxk_conv_changes_the_width_to_no_multiple():
    """Depthwise means one filter group per input channel; 32 -> 48 would silently build 16 groups."""
    err = _conv_refusal(stem=(StageSpec("conv", out_chs=16),),
                        stages=(StageSpec("conv", out_chs=32), StageSpec("basic", out_chs=48, conv="depthwise")))
    assert err.field == "stages[1].conv"
    assert "basic block has a 32 -> 48 conv" in err.message and "use conv 'separable'" in err.message
    # the width the previous stage (here: the input's 3 channels) leaves decides
    err = _conv_refusal(stem=(StageSpec("conv", out_chs=16, conv="depthwise"),), stages=(StageSpec("mbconv"),))
    assert err.field == "stem[0].conv" and "3 -> 16" in err.message
    # a dense layer's kxk conv narrows bn_size * growth to the growth rate
    err = _conv_refusal(stages=(StageSpec("dense", out_chs=32, expansion=4.0, conv="depthwise"),), in_chans=64)
    assert err.field == "stages[0].conv" and "128 -> 32" in err.message
    # every repeat counts: the second xception block starts from the 64 channels the first leaves
    err = _conv_refusal(stages=(StageSpec("xception", out_chs=64, repeats=2, widths=(32, 64), conv="depthwise"),),
                        in_chans=16)
    assert err.field == "stages[0].conv" and "64 -> 32" in err.message


def test_depthwise_with_a_channel_multiplier_or_a_kept_width_is_accepted():
    g = Genotype(stem=(StageSpec("conv", out_chs=16),),
                 stages=(StageSpec("conv", out_chs=32, conv="depthwise"), StageSpec("basic", conv="depthwise"),
                         StageSpec("mbconv", out_chs=24, expansion=6.0, conv="depthwise"),
                         StageSpec("dense", out_chs=8, expansion=1.0, conv="depthwise")))
    assert [s.conv for s in g.stages] == ["depthwise"] * 4


def test_fused_mbconv_has_no_depthwise_form():
    with pytest.raises(GenotypeError) as err:
        StageSpec("fused_mbconv", out_chs=24, expansion=4.0, conv="depthwise")
    assert err.value.field == "conv" and "use block 'mbconv'" in err.value.message
    for conv in ("standard", "separable", "separable_pw"):
        assert StageSpec("fused_mbconv", out_chs=24, expansion=4.0, conv=conv).conv == conv
