"""Search spaces: every built-in space samples valid genotypes, contains its presets, and every bad
file is reported on one line with file, line and key path."""
import math
import re

import optuna
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st
from optuna.samplers import RandomSampler, TPESampler
from optuna.trial import FixedTrial

from autocnn.builder import build_model
from autocnn.presets import get_preset
from autocnn.spaces import (Expr, ExprError, SearchSpace, SpaceError, builtin_spaces, load_space,
                            load_space_text)

optuna.logging.set_verbosity(optuna.logging.WARNING)

BUILTIN = ["auto", "cnn_families", "densenet", "efficientnet_compound", "inception", "mobilenet", "plain_cnn",
           "resnet_attention", "vgg", "xception"]
UNIONS = {"auto", "cnn_families"}
ERROR_LINE = re.compile(r"^(?P<file>[^\n]+?):(?P<line>\d+): (?P<key>[^\n]+?): (?P<problem>[^\n]+); (?P<fix>[^\n]+)$")


def _study(seed=0, sampler=None):
    return optuna.create_study(sampler=sampler or RandomSampler(seed=seed))


def _forward(g):
    """Build with real weights and run a batch of one. (Twice as fast as the meta device at these sizes,
    where BatchNorm's meta kernel is a Python decomposition.)"""
    model = build_model(g).eval()
    with torch.no_grad():
        return model(torch.randn(1, g.in_chans, g.resolution, g.resolution))


def test_builtin_spaces_are_listed():
    assert builtin_spaces() == BUILTIN


@pytest.mark.parametrize("name", BUILTIN)
def test_random_trials_build_valid_networks(name):
    space = load_space(name)
    assert isinstance(space, SearchSpace) and space.constraints
    known = space.distributions()
    study = _study(seed=sorted(BUILTIN).index(name))
    for _ in range(20):
        trial = study.ask()
        g = space.sample(trial, num_classes=10, in_chans=1)
        assert set(trial.params) <= set(known)
        out = _forward(g)
        assert out.shape == (1, 10) and torch.isfinite(out).all()
        study.tell(trial, 0.0)


def test_cnn_families_covers_every_family():
    space = load_space("cnn_families")
    assert set(space.families) == set(BUILTIN) - UNIONS
    study = _study(seed=0)
    seen = set()
    for _ in range(60):
        trial = study.ask()
        space.sample(trial)
        seen.add(trial.params["family"])
        assert all(k == "family" or k.startswith(trial.params["family"] + ".") for k in trial.params)
        study.tell(trial, 0.0)
        if seen == set(space.families):
            break
    assert seen == set(space.families)


def test_a_space_may_train_at_the_datas_own_resolution():
    """plain_cnn reads `native_resolution` (capped at 64 px); the others scale from their base; --resolution wins."""
    plain, effnet = load_space("plain_cnn"), load_space("efficientnet_compound")
    deepest = {"stages": 4, "width": 32, "convs": 1, "kernel": 3, "conv": "standard", "act": "relu", "attention": "none"}
    for native, expected in ((8, 8), (28, 28), (224, 64)):
        g = plain.sample(FixedTrial(deepest), num_classes=10, in_chans=1, native_resolution=native)
        assert g.resolution == expected
        assert _forward(g).shape == (1, 10)  # four 2x2 pools on 8 px: ceil mode keeps a 1-px map
    assert plain.sample(FixedTrial(deepest), native_resolution=8, resolution=16).resolution == 16
    assert plain.sample(FixedTrial(deepest)).resolution == plain.base_resolution == 32
    b0 = effnet.fixed_params("efficientnet_b0")
    assert effnet.sample(FixedTrial(b0), native_resolution=8).resolution == effnet.base_resolution == 32


def test_auto_spans_plain_cnns_to_efficientnets():
    assert set(load_space("auto").families) == {"plain_cnn", "resnet_attention", "efficientnet_compound"}


def test_tpe_drives_the_conditional_union():
    space = load_space("cnn_families")
    study = _study(sampler=TPESampler(seed=0, n_startup_trials=5))
    for i in range(12):
        trial = study.ask()
        space.sample(trial)
        study.tell(trial, float(i % 3))
    assert len(study.trials) == 12


def test_efficientnet_samples_satisfy_the_compound_constraint():
    space = load_space("efficientnet_compound")
    study = _study(seed=3)
    for _ in range(30):
        trial = study.ask()
        g = space.sample(trial)
        p, attrs = trial.params, trial.user_attrs
        alpha, beta, gamma, phi = p["alpha"], p["beta"], attrs["gamma"], p["phi"]
        assert abs(alpha * beta ** 2 * gamma ** 2 - 2.0) <= 0.01
        assert attrs["width"] == pytest.approx(p["width_mult"] * beta ** phi) and attrs["depth"] == pytest.approx(alpha ** phi)
        assert g.resolution == round(32 * gamma ** phi)
        b0_repeats = [s.repeats for s in get_preset("efficientnet_b0").stages[:7]]
        assert [s.repeats for s in g.stages[:7]] == [math.ceil(n * alpha ** phi) for n in b0_repeats]


def _b0_params(alpha=1.2, beta=1.1):
    params = {"alpha": alpha, "beta": beta, "phi": 0, "width_mult": 1.0}
    for i, (e, k, *_rest) in enumerate(((1, 3), (6, 3), (6, 5), (6, 3), (6, 5), (6, 5), (6, 3))):
        params.update({f"stages.{i}.block": "mbconv", f"stages.{i}.attention": "se", f"stages.{i}.se.ratio": 4.0,
                       f"stages.{i}.mbconv.conv": "depthwise", f"stages.{i}.kernel": k, f"stages.{i}.expansion": float(e)})
    return params


@pytest.mark.parametrize("alpha,beta", [(1.2, 1.1), (1.1, 1.0), (1.35, 1.2)])
def test_phi_zero_with_b0_choices_is_efficientnet_b0(alpha, beta):
    space = load_space("efficientnet_compound")
    b0 = get_preset("efficientnet_b0")
    assert space.sample(FixedTrial(_b0_params(alpha, beta)), resolution=224) == b0
    assert space.sample(FixedTrial(_b0_params(alpha, beta))) == b0.replace(resolution=32)
    small = space.sample(FixedTrial(_b0_params(alpha, beta)), num_classes=10, in_chans=1)
    assert small == b0.replace(resolution=32, num_classes=10, in_chans=1)


def _presets():
    return [(name, preset) for name in BUILTIN for preset in load_space(name).known_presets()]


@pytest.mark.parametrize("space_name,preset", _presets())
def test_fixed_params_round_trip_through_enqueue(space_name, preset):
    space = load_space(space_name)
    target = get_preset(preset)
    params = space.fixed_params(preset)
    assert params is not None
    assert space.fixed_params(target) == params
    study = _study()
    study.enqueue_trial(params)
    trial = study.ask()
    g = space.sample(trial, resolution=target.resolution, num_classes=target.num_classes, in_chans=target.in_chans)
    assert g == target
    assert trial.params == params


def test_presets_outside_a_space_give_none():
    assert load_space("efficientnet_compound").fixed_params("efficientnet_b1") is None  # rounded multipliers
    assert load_space("resnet_attention").fixed_params("vgg16") is None
    assert load_space("cnn_families").fixed_params("alexnet") is None
    assert load_space("cnn_families").fixed_params("resnet18")["family"] == "resnet_attention"
    tweaked = get_preset("resnet18").replace(act="silu")
    assert load_space("resnet_attention").fixed_params(tweaked) is None


def test_load_space_takes_a_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("params:\n  w: {choices: [8, 16]}\n"
                    "genotype:\n  stages: [{block: conv, out_chs: '${w}'}, {block: maxpool}]\n")
    space = load_space(path)
    assert space.name == "mine" and space.base_resolution == 32 and space.constraints == {}
    g = space.sample(FixedTrial({"w": 16}))
    assert g.stages[0].out_chs == 16 and g.resolution == 32


# -- errors -------------------------------------------------------------------------------------------

BAD_FILES = {
    "unknown_key": ("params:\n  w: {choices: [8, 16]}\n  d: {int: [1, 4], stpe: 2}\ngenotype: {preset: resnet18}\n",
                    3, "params.d.stpe", "unknown key"),
    "unknown_top_key": ("parms: {}\ngenotype: {preset: resnet18}\n", 1, "parms", "unknown key"),
    "bad_type": ("params:\n  stages:\n    - kernel: {int: [1, three]}\ngenotype: {preset: resnet18}\n",
                 3, "params.stages.0.kernel.int.1", "expected an integer"),
    "bad_constraint": ("constraints:\n  max_params: lots\ngenotype: {preset: resnet18}\n",
                       2, "constraints.max_params", "expected a number"),
    "empty_choice": ("params:\n  stages:\n    - block: {choices: [mbconv]}\n    - attention: {choices: []}\n"
                     "genotype: {preset: resnet18}\n", 4, "params.stages.1.attention.choices", "empty choices"),
    "invalid_yaml": ("params:\n  w:\n    choices: [8, 16]\n   bad: 1\ngenotype: {preset: resnet18}\n",
                     4, "params.w.bad", "invalid YAML"),
    "tab": ("params:\n  w: {choices: [8, 16]}\n\td: 1\n", 3, "params.d", "invalid YAML"),
    "undefined_name": ("params:\n  a: {choices: [1, 2]}\n  b: '${a * c}'\ngenotype: {preset: resnet18}\n",
                       3, "params.b", "'c' is not defined"),
    "unsafe_expression": ("params:\n  a: \"${__import__('os').system('true')}\"\ngenotype: {preset: resnet18}\n",
                          2, "params.a", "only the functions"),
    "duplicate_key": ("params:\n  a: {choices: [1]}\n  a: {choices: [2]}\ngenotype: {preset: resnet18}\n",
                      3, "params.a", "duplicate key"),
    "unknown_preset": ("genotype:\n  preset: resnet19\n", 2, "genotype.preset", "unknown preset"),
    "generator_arg": ("genotype:\n  generator: resnet\n  args:\n    block: basic\n    depth: [2, 2]\n",
                      5, "genotype.args.depth", "takes no argument"),
    "when_choice": ("params:\n  a:\n    choices: [x, y]\n    when:\n      z: {b: {int: [1, 2]}}\n"
                    "genotype: {preset: resnet18}\n", 5, "params.a.when.z", "not one of the choices"),
    "include_missing": ("families:\n  a: {include: nowhere.yaml}\n", 2, "families.a.include", "cannot include"),
    "preset_values": ("params:\n  w: {choices: [8, 16]}\ngenotype: {preset: resnet18}\npresets:\n  resnet18: {w: 64}\n",
                      5, "presets.resnet18.w", "outside the dimension"),
    "start_values": ("params:\n  w: {choices: [8, 16]}\ngenotype: {preset: resnet18}\nstart:\n  - {w: 64}\n",
                     5, "start.0.w", "outside the dimension"),
    "start_not_a_list": ("params:\n  w: {choices: [8, 16]}\ngenotype: {preset: resnet18}\nstart: {w: 8}\n",
                         4, "start", "expected a list"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_are_reported_with_file_line_and_key(case, tmp_path):
    text, line, key, problem = BAD_FILES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError) as info:
        load_space(str(path))
    message = str(info.value)
    match = ERROR_LINE.match(message)
    assert match, message
    assert match["file"] == str(path) and int(match["line"]) == line and match["key"] == key, message
    assert problem in match["problem"], message
    assert (info.value.line, info.value.key) == (line, key)


def test_unknown_space_name_lists_the_builtins():
    with pytest.raises(SpaceError, match="efficientnet_compound"):
        load_space("no_such_space")


def test_invalid_sample_names_the_recipe():
    text = "params:\n  w: {choices: [8, -8]}\ngenotype:\n  stages: [{block: conv, out_chs: '${w}'}]\n"
    space = load_space_text(text, "neg.yaml")
    assert space.sample(FixedTrial({"w": 8})).stages[0].out_chs == 8
    with pytest.raises(SpaceError, match=r"^neg\.yaml:3: genotype: sampled an invalid genotype: stages\[0\]\.out_chs"):
        space.sample(FixedTrial({"w": -8}))


def test_failed_requirement_prunes_the_trial():
    text = "params:\n  a: {int: [0, 3]}\nrequire: ['a % 2 == 0']\ngenotype: {preset: resnet18}\n"
    space = load_space_text(text, "req.yaml")
    space.sample(FixedTrial({"a": 2}))
    with pytest.raises(optuna.TrialPruned):
        space.sample(FixedTrial({"a": 1}))


def test_include_cycles_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("families:\n  b: {include: b.yaml}\n")
    (tmp_path / "b.yaml").write_text("families:\n  a: {include: a.yaml}\n")
    with pytest.raises(SpaceError, match="cycle"):
        load_space(tmp_path / "a.yaml")


# -- the expression language ----------------------------------------------------------------------------

@pytest.mark.parametrize("source,value", [
    ("beta ** phi", 1.21), ("round(32 * 1.15 ** 2)", 42), ("[w, w * 2][1:]", [32]),
    ("4.0 if a == 'se' else 16.0", 4.0), ("make_divisible(728 * 0.25)", 184), ("clip(5, 1, 3)", 3),
    ("s.k + len([1, 2])", 5), ("a in ['se', 'cbam'] and not False", True),
])
def test_expressions_evaluate(source, value):
    scope = {"beta": 1.1, "phi": 2, "w": 16, "a": "se", "s": {"k": 3}}
    result = Expr(source).evaluate(scope)
    assert result == (pytest.approx(value) if isinstance(value, float) else value)


@pytest.mark.parametrize("source", [
    "__import__('os')", "(1).__class__", "[x for x in y]", "lambda: 1", "open('f')", "a.b()", "{1: 2}",
    "f'{a}'", "x := 1",
])
def test_unsafe_expressions_are_rejected(source):
    with pytest.raises(ExprError):
        Expr(source)


@pytest.mark.parametrize("source", ["10 ** 10 ** 10", "2 ** 4000", "[1] * 5", "'a' * 3", "1 / 0", "sqrt(-1)"])
def test_runaway_expressions_fail_cleanly(source):
    with pytest.raises(ExprError):
        Expr(source).evaluate({})


# -- fuzzing: nothing but SpaceError ------------------------------------------------------------------

_KEYS = ["name", "description", "base_resolution", "constraints", "max_params", "params", "genotype", "require",
         "record", "presets", "families", "include", "choices", "int", "float", "step", "log", "when", "preset",
         "generator", "args", "edit_stages", "scale", "width", "depth", "stages", "stem", "head", "block",
         "out_chs", "resolution", "a", "b", "resnet18", "resnet", "vgg", "se", "0"]
_WORDS = ["resnet18", "resnet", "densenet", "vgg", "inception", "xception", "efficientnet_b0", "conv", "mbconv",
          "maxpool", "se", "none", "${a}", "${a * 2}", "${b if a else 1}", "${[a, a]}", "${round(a)}", "${zz}",
          "${", "${)", "basic", "resnet_attention", "../x.yaml", ""]
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.floats(-5, 5, allow_nan=False),
                     st.sampled_from(_WORDS), st.text(max_size=8))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(_KEYS), inner, max_size=5)), max_leaves=25)
_documents = st.dictionaries(st.sampled_from(_KEYS), _values, max_size=6).map(
    lambda d: yaml.safe_dump(d, sort_keys=False))
_garbage = st.text(alphabet=st.sampled_from(list("abc:-[]{}#&*!|>'\"%@` \n\t,?$012.")), max_size=80)
_names = st.sampled_from(["a", "b", "w", "stages"])
_exprs = st.builds("${{{}}}".format, st.sampled_from([
    "a", "b * 2", "w", "[a, a, a, a]", "a if b else w", "round(base_resolution * a)", "stages", "stages[0]",
    "make_divisible(a * 8)", "a / b", "a ** b", "max(a, b)", "'basic' if a else 'bottleneck'", "[]", "nope"]))
_dims = st.one_of(
    st.fixed_dictionaries({"choices": st.lists(_scalars, max_size=4)},
                          optional={"when": st.dictionaries(st.sampled_from(["1", "basic", "se", "x", "true"]),
                                                            st.dictionaries(_names, _values, max_size=2), max_size=2)}),
    st.fixed_dictionaries({"int": st.lists(st.integers(-2, 12), min_size=2, max_size=2)},
                          optional={"step": st.integers(0, 3), "log": st.booleans()}),
    st.fixed_dictionaries({"float": st.lists(st.floats(-1, 4, allow_nan=False), min_size=2, max_size=2)},
                          optional={"step": st.floats(0, 1), "log": st.booleans()}),
)
_param_values = st.one_of(_dims, _exprs, _scalars, st.lists(st.one_of(_dims, st.dictionaries(
    st.sampled_from(["kernel", "expansion", "attention", "block", "out_chs"]), _dims, max_size=3)), max_size=4))
_stage = st.dictionaries(st.sampled_from(["block", "out_chs", "repeats", "stride", "kernel", "expansion", "widths"]),
                         st.one_of(_exprs, _scalars, st.sampled_from(["conv", "mbconv", "basic", "maxpool"])),
                         max_size=4)
_recipes = st.one_of(
    st.fixed_dictionaries({"preset": st.sampled_from(["resnet18", "efficientnet_b0", "mobilenet_v2", "xception",
                                                      "nope"])},
                          optional={"edit_stages": st.one_of(_exprs, st.lists(st.one_of(st.none(), _stage), max_size=3)),
                                    "scale": st.dictionaries(st.sampled_from(["width", "depth", "x"]),
                                                             st.one_of(_exprs, _scalars), max_size=2),
                                    "head": st.dictionaries(st.sampled_from(["dropout", "pool", "hidden"]),
                                                            st.one_of(_exprs, _scalars), max_size=2),
                                    "resolution": st.one_of(_exprs, _scalars), "act": st.one_of(_exprs, _scalars)}),
    st.fixed_dictionaries({"generator": st.sampled_from(["resnet", "densenet", "vgg", "inception", "xception"]),
                           "args": st.dictionaries(st.sampled_from(["block", "depths", "widths", "growth",
                                                                    "block_config", "variant", "width", "depth",
                                                                    "middle_repeats", "batch_norm", "foo"]),
                                                   st.one_of(_exprs, _scalars, st.lists(_scalars, max_size=4)),
                                                   max_size=4)}),
    st.fixed_dictionaries({"stages": st.lists(_stage, max_size=3)}),
)
_structured = st.fixed_dictionaries(
    {"params": st.dictionaries(_names, _param_values, max_size=4), "genotype": _recipes},
    optional={"base_resolution": st.one_of(st.integers(-1, 64), _scalars),
              "require": st.lists(st.one_of(_exprs, _scalars), max_size=2),
              "record": st.lists(st.one_of(_names, _scalars), max_size=2),
              "presets": st.dictionaries(st.sampled_from(["resnet18", "nope"]), _values, max_size=1),
              "constraints": st.dictionaries(st.sampled_from(["max_params", "max_flops", "x"]), _scalars, max_size=2)},
).map(lambda d: yaml.safe_dump(d, sort_keys=False))
_unions = st.dictionaries(st.sampled_from(["r", "v", "bad name"]), st.one_of(
    st.fixed_dictionaries({"include": st.sampled_from(["resnet_attention", "vgg", "nope", "../x.yaml", ""])}),
    _values), min_size=1, max_size=2).map(lambda f: yaml.safe_dump({"families": f}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_structured, _structured, _unions, _documents, _garbage,
                 st.one_of(_structured, _documents).map(lambda t: t[: len(t) // 2])))
def test_random_documents_raise_only_space_errors(text):
    try:
        space = load_space_text(text, "/tmp/fuzz.yaml")
    except SpaceError as err:
        assert "\n" not in str(err) and ERROR_LINE.match(str(err)), str(err)
        return
    try:
        space.sample(_study().ask())
    except (SpaceError, optuna.TrialPruned):
        pass
