"""autocnn.weights against timm: output parity of timm's own state_dicts, the stem adapted to other
channel counts by timm's rule, and `freeze` keeping BatchNorm statistics fixed.

timm is a test dependency (the dev extra); its models are built with random weights, nothing is downloaded.
"""
from __future__ import annotations

import copy
import pickle

import pytest
import timm
import torch
from timm.models import adapt_input_conv

import autocnn
from test_presets import _randomize_bn

TIMM = {"se_resnet50": ("seresnet50", 64), "xception": ("legacy_xception", 71)}


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory):
    """name -> (timm reference in eval mode, its saved state_dict), with non-trivial BatchNorm statistics."""
    folder, made = tmp_path_factory.mktemp("timm"), {}

    def get(name: str):
        if name not in made:
            timm_name, res = TIMM[name]
            torch.manual_seed(0)
            reference = timm.create_model(timm_name, pretrained=False)
            _randomize_bn(reference, res, torch.Generator().manual_seed(0))
            path = folder / f"{timm_name}.pth"
            torch.save(reference.state_dict(), path)
            made[name] = reference.eval(), path
        return made[name]

    return get


def _input(chans: int, res: int) -> torch.Tensor:
    return torch.randn(2, chans, res, res, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", sorted(TIMM))
def test_timm_weights_give_timm_outputs(name, timm_weights):
    reference, path = timm_weights(name)
    model = autocnn.create_model(name, weights=path, num_classes=1000).eval()
    x = _input(3, TIMM[name][1])
    with torch.no_grad():
        expected = reference(x)
        assert expected.std() > 1e-2  # not a comparison of near-zero logits
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,in_chans", [("se_resnet50", 1), ("xception", 1), ("se_resnet50", 4)])
def test_rgb_weights_fit_other_channel_counts_as_in_timm(name, in_chans, timm_weights):
    """timm's own loader adapts the first conv (`adapt_input_conv`); autocnn must give the same network."""
    _, path = timm_weights(name)
    timm_name, res = TIMM[name]
    state = torch.load(path, weights_only=True)
    stem = next(k for k, v in state.items() if v.ndim == 4)
    state[stem] = adapt_input_conv(in_chans, state[stem])
    reference = timm.create_model(timm_name, pretrained=False, in_chans=in_chans)
    reference.load_state_dict(state)
    model = autocnn.create_model(name, weights=path, num_classes=1000, in_chans=in_chans).eval()
    x = _input(in_chans, res)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference.eval()(x), atol=1e-5, rtol=0)
        if in_chans == 1:  # the stem sees a grey image as the RGB stem sees its three copies
            rgb = autocnn.create_model(name, weights=path, num_classes=1000).eval()
            torch.testing.assert_close(model.stem(x), rgb.stem(x.expand(-1, 3, -1, -1)), atol=1e-4, rtol=1e-5)


def _norms(module: torch.nn.Module) -> list[torch.nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_frozen_blocks_keep_batchnorm_in_eval_mode_through_training(seeded):
    model = autocnn.create_model("resnet18", num_classes=10, freeze=3)  # stem, max-pool, first basic block
    plain = autocnn.create_model("resnet18", num_classes=10)
    assert model.state_dict().keys() == plain.state_dict().keys()  # interchangeable checkpoints
    frozen = [m for b in model.blocks[:3] for m in _norms(b)]
    free = [m for b in model.blocks[3:] for m in _norms(b)]
    assert len(frozen) == 3 and free

    model.train()
    assert not any(m.training for m in frozen) and all(m.training for m in free)
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(8, 3, 32, 32, generator=seeded)
    y = torch.randint(0, 10, (8,), generator=seeded)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    after = model.state_dict()
    for name, tensor in before.items():
        if name.startswith(("stem.", "stages.0.0.")):  # the frozen blocks: weights and statistics alike
            assert torch.equal(tensor, after[name]), name
        elif name.endswith(("weight", "running_mean", "running_var")):  # the rest trains
            assert not torch.equal(tensor, after[name]), name
    plain.load_state_dict(after)
    with torch.no_grad():  # frozen changes the training mode only, not the network
        torch.testing.assert_close(model.eval()(x), plain.eval()(x), atol=0, rtol=0)
    model.train()

    # frozen survives eval()/train() round trips and copies, and a frozen BatchNorm is still a BatchNorm
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        clone.eval().train()
        assert [m.training for m in _norms(clone)] == [False] * len(frozen) + [True] * len(free)


def test_a_trained_networks_own_safetensors_load_back_by_name(tmp_path, seeded):
    """safetensors stores keys sorted (`blocks.10` before `blocks.2`), not in the network's order: weights
    saved from the network itself (a trial's, which a design point's full training starts from) load by name."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from autocnn.weights import load_reference_weights

    trained = autocnn.create_model("resnet18", num_classes=10)
    _randomize_bn(trained, 32, seeded)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    with safe_open(str(path), "pt") as stored:  # the file's order is not the network's
        assert list(stored.keys()) != list(trained.state_dict())
    fresh = autocnn.create_model("resnet18", num_classes=10)
    assert load_reference_weights(fresh, path) == []
    for name, tensor in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
