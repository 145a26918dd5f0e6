"""The cost model's FLOPs against torch's own FlopCounterMode on real (not meta) weights, and the meta
build it prices against a plain build."""
from __future__ import annotations

import optuna
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from autocnn.builder import build_model
from autocnn.costs import count_flops, count_meta_work, count_params, genotype_costs, materialize, meta_model
from autocnn.presets import PRESETS, get_preset
from autocnn.spaces import load_space


def _reference_flops(genotype) -> int:
    model = build_model(genotype).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, genotype.in_chans, genotype.resolution, genotype.resolution))
    return counter.get_total_flops()


def _covering_presets() -> list[str]:
    """Presets that together use every block, attention and conv kind any preset uses: each one that
    brings a kind the earlier ones (in registry order, small classic networks first) did not."""
    def kinds(g):
        stages = g.stem + g.stages
        return ({("block", s.block) for s in stages} | {("conv", s.conv) for s in stages}
                | {("attention", s.attention) for s in stages} | {("attention", g.head.attention)})

    chosen, seen = [], set()
    for name in PRESETS.names():
        new = kinds(get_preset(name)) - seen
        if new:
            chosen.append(name)
            seen |= new
    return chosen


@pytest.mark.parametrize("name", _covering_presets())
def test_flops_equal_torch_flop_counter_for_presets(name):
    genotype = get_preset(name)
    genotype = genotype.replace(resolution=max(32, genotype.resolution // 3))  # Inception-v3 needs >= 75 px
    assert count_flops(genotype) == _reference_flops(genotype) > 0


@pytest.mark.parametrize("space", ["efficientnet_compound", "cnn_families"])
def test_flops_and_params_equal_torch_for_sampled_candidates(space):
    """Every block, attention and conv kind the built-in spaces can produce (ECA's Conv1d included)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    checked = 0
    for _ in range(6):
        genotype = load_space(space).sample(study.ask()).replace(resolution=32, num_classes=10)
        costs = genotype_costs(genotype)
        assert costs["flops"] == _reference_flops(genotype)
        assert costs["params"] == count_params(build_model(genotype))
        checked += 1
    assert checked == 6


@pytest.mark.parametrize("name", _covering_presets())
def test_a_materialized_meta_build_is_the_plain_build(name):
    """Pricing builds on the meta device with the initialisers skipped; the weights a trial trains from
    (`materialize`) are still exactly those of `build_model` under the same seed."""
    genotype = get_preset(name)
    torch.manual_seed(7)
    plain = build_model(genotype).state_dict()
    torch.manual_seed(7)
    materialized = materialize(meta_model(genotype)).state_dict()
    assert plain.keys() == materialized.keys()
    assert all(torch.equal(plain[k], materialized[k]) for k in plain)


def _written_by_layers(genotype, kinds) -> int:
    """Elements the `kinds` layers of a real forward output, by forward hooks."""
    model = build_model(genotype).eval()
    total = []
    hooks = [m.register_forward_hook(lambda m, i, out: total.append(out.numel()))
             for m in model.modules() if isinstance(m, kinds)]
    with torch.no_grad():
        model(torch.zeros(1, genotype.in_chans, genotype.resolution, genotype.resolution))
    for h in hooks:
        h.remove()
    return sum(total)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_activation_elements_cover_every_layer_output_and_grow_with_the_image(name):
    """What the time model prices as memory traffic: at least every conv, norm and linear output (plus the
    activations, residual sums and attention products), four times as much at twice the resolution."""
    small = get_preset(name).replace(resolution=32)
    large = small.replace(resolution=64)
    flops, elements = count_meta_work(meta_model(small), small)
    assert flops == count_flops(small)
    layers = _written_by_layers(small, (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Linear))
    assert layers < elements < 4 * layers
    assert 3.5 < count_meta_work(meta_model(large), large)[1] / elements <= 4
