"""Presets reproduce the reference networks to the last parameter and output."""
from functools import partial

import pytest
import torch
import torchvision

import autocnn
from autocnn.costs import count_params, genotype_costs
from autocnn.presets import get_preset
from autocnn.weights import WeightsError

REFERENCE_PARAMS = {
    "resnet18": 11_689_512, "resnet50": 25_557_032, "resnext50_32x4d": 25_028_904, "vgg16": 138_357_544,
    "alexnet": 61_100_840, "densenet121": 7_978_856, "densenet169": 14_149_480, "mobilenet_v2": 3_504_872,
    "efficientnet_b0": 5_288_548, "efficientnet_b1": 7_794_184, "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232, "efficientnet_b4": 19_341_616, "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704, "efficientnet_b7": 66_347_960, "se_resnet50": 28_088_024,
    "lenet5": 44_426, "vgg16_cifar": 33_638_218, "googlenet": 6_624_904, "inception_v3": 23_834_568,
    "xception": 22_855_952,
}


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_param_count_matches_reference(name):
    assert genotype_costs(get_preset(name))["params"] == REFERENCE_PARAMS[name]


def test_real_build_matches_meta_count():
    assert count_params(autocnn.create_model("resnet18")) == REFERENCE_PARAMS["resnet18"]


def test_efficientnet_variants_are_scaled_from_b0():
    b0, b3 = get_preset("efficientnet_b0"), get_preset("efficientnet_b3")
    assert [s.block for s in b0.stages] == [s.block for s in b3.stages]
    assert b3.resolution == 300 and b3.stages[0].out_chs == 24  # make_divisible(16 * 1.2, 8)
    assert [s.repeats for s in b3.stages][:7] == [2, 3, 3, 5, 5, 6, 2]  # ceil(n * 1.4)


def _randomize_bn(model: torch.nn.Module, res: int, gen: torch.Generator) -> None:
    """Non-trivial eval statistics that keep activations finite: one batch's statistics
    (momentum 1), then the statistics and affine parameters perturbed at random."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, res, res, generator=gen))
    for m in norms:
        m.momentum = 0.1
        std = m.running_var.sqrt()
        m.running_mean.add_(std * torch.empty(std.shape).uniform_(-0.2, 0.2, generator=gen))
        m.running_var.mul_(torch.empty(std.shape).uniform_(0.5, 1.5, generator=gen))
        m.weight.data.uniform_(0.5, 1.5, generator=gen)
        m.bias.data.uniform_(-0.2, 0.2, generator=gen)


PARITY = {
    "resnet50": (torchvision.models.resnet50, 64),
    "mobilenet_v2": (torchvision.models.mobilenet_v2, 64),
    "efficientnet_b0": (torchvision.models.efficientnet_b0, 64),
    "densenet121": (torchvision.models.densenet121, 64),
    "vgg16": (torchvision.models.vgg16, 64),
    "googlenet": (partial(torchvision.models.googlenet, aux_logits=False, init_weights=True), 224),
    "inception_v3": (partial(torchvision.models.inception_v3, aux_logits=False, init_weights=True), 299),
}


@pytest.mark.parametrize("name", sorted(PARITY))
def test_torchvision_weights_give_identical_outputs(name, tmp_path, seeded):
    ctor, res = PARITY[name]
    reference = ctor(weights=None)
    _randomize_bn(reference, res, seeded)
    reference.eval()
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    model = autocnn.create_model(name, weights=path).eval()
    x = torch.randn(1, 3, res, res, generator=seeded)
    with torch.no_grad():
        expected = reference(x)
        assert expected.std() > 1e-2  # not a comparison of near-zero logits
        torch.testing.assert_close(model(x), expected, atol=1e-4, rtol=0)
        if name == "googlenet":  # sharp enough to see the reference's BatchNorm eps (1e-3, not 1e-5)
            other = autocnn.create_model(name, weights=path, norm_eps=1e-5).eval()
            assert (other(x) - expected).abs().max() > 1e-3


def test_weights_for_new_class_count_keep_backbone_and_freeze(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    model = autocnn.create_model("resnet18", num_classes=7, weights=path, freeze=3)
    assert model.head.fc.out_features == 7
    torch.testing.assert_close(model.stem[0][0].conv.weight, reference.conv1.weight)
    frozen = [p.requires_grad for b in model.blocks[:3] for p in b.parameters()]
    assert frozen and not any(frozen)
    assert all(p.requires_grad for p in model.blocks[3].parameters())


def test_weights_of_another_architecture_are_rejected(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(WeightsError, match="tensors but the architecture has"):
        autocnn.create_model("resnet50", weights=path)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read weights"):
        autocnn.create_model("resnet18", weights=bad)


def test_create_model_overrides():
    model = autocnn.create_model("resnet18", num_classes=10, in_chans=1, resolution=32, dropout=0.3)
    assert model.genotype.in_chans == 1 and model.genotype.head.dropout == 0.3
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(TypeError, match="unknown override"):
        autocnn.create_model("resnet18", widht=2)


def test_list_models_contains_every_family():
    names = set(autocnn.list_models())
    assert {"lenet5", "alexnet", "vgg16", "resnet50", "densenet121", "mobilenet_v2", "efficientnet_b7"} <= names


def test_a_preset_too_small_for_its_resolution_is_a_genotype_error():
    """LeNet-5's valid 5x5 convs and two pools need 28 px; at 12 px its flatten head's shape probe (and any
    forward) finds an empty map, which is the genotype's fault, not a torch traceback's."""
    with pytest.raises(autocnn.GenotypeError) as info:
        autocnn.create_model("lenet5", resolution=12)
    assert info.value.field == "resolution" and "shrink to nothing at 12 px" in str(info.value)
    assert autocnn.create_model("lenet5", resolution=28)(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
