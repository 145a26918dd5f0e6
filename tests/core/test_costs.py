"""The cost model's FLOPs against torch's own FlopCounterMode on real (not meta) weights."""
from __future__ import annotations

import optuna
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from autocnn.builder import build_model
from autocnn.costs import count_flops, count_params, genotype_costs
from autocnn.presets import get_preset
from autocnn.spaces import load_space


def _reference_flops(genotype) -> int:
    model = build_model(genotype).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, genotype.in_chans, genotype.resolution, genotype.resolution))
    return counter.get_total_flops()


@pytest.mark.parametrize("name", ["lenet5", "resnet18", "mobilenet_v2", "densenet121", "googlenet",
                                  "se_resnet50", "cbam_resnet50", "xception"])
def test_flops_equal_torch_flop_counter_for_presets(name):
    genotype = get_preset(name).replace(resolution=64 if name != "lenet5" else 32)
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
