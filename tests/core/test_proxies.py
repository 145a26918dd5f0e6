"""The zero-cost proxies (`autocnn.proxies`): registry-driven over every proxy, on every block kind, activation
and norm the builder has and on the smallest candidate of every built-in space; each proxy checked against
its definition on a network small enough to work it out by hand."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autocnn import Genotype, GenotypeError, HeadSpec, StageSpec
from autocnn.catalog import ACTIVATIONS, NORMS
from autocnn.costs import count_params, materialize, meta_model
from autocnn.layers import ATTENTION, BLOCKS
from autocnn.proxies import PROXIES
from autocnn.spaces import load_space
from autocnn.spaces.compiler import builtin_spaces
from autocnn.spaces.space import AnsweringTrial

ATTENTIONS = ATTENTION.names()


def block_genotype(block: str, i: int = 0, act: str = "relu", norm: str = "batch") -> Genotype:
    """A conv stem and a two-block stage of `block` (strided where it allows), attention cycling with `i`,
    then a conv: every block kind between layers that have weights."""
    spec = BLOCKS.get(block)
    attention = ATTENTIONS[i % len(ATTENTIONS)] if spec.supports_attention else "none"
    stage = None
    for stride in (2, 1):
        try:
            stage = StageSpec(block, out_chs=8 if block == "dense" else 24, repeats=2, stride=stride,
                              expansion=4.0 if block in ("dense", "bottleneck") else 2.0, attention=attention,
                              ratio=4.0)
            break
        except GenotypeError:
            continue
    stage = stage or StageSpec(block)
    return Genotype(stem=(StageSpec("conv", out_chs=16),), stages=(stage, StageSpec("conv", out_chs=16)),
                    head=HeadSpec(), resolution=16, num_classes=10, in_chans=1, act=act, norm=norm)


class _Smallest(AnsweringTrial):
    """Every dimension of a space at its low end: the space's smallest candidate."""

    def answer(self, name, dim):
        return dim.at(0.0)


def _smallest(space: str) -> Genotype:
    return load_space(space).sample(_Smallest(), num_classes=10, in_chans=1)


def _built(g: Genotype, seed: int = 0) -> nn.Module:
    """As the search builds a candidate: on the meta device, then weights from the seeded initialisers."""
    torch.manual_seed(seed)
    return materialize(meta_model(g))


def _batch(g: Genotype, n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, g.in_chans, g.resolution, g.resolution, generator=gen),
            torch.randint(0, g.num_classes, (n,), generator=gen))


def _state(model: nn.Module) -> dict:
    return {"tensors": {k: v.clone() for k, v in model.state_dict().items()},
            "grads": [p.grad for p in model.parameters()], "modes": [m.training for m in model.modules()]}


def _assert_untouched(model: nn.Module, before: dict) -> None:
    after = _state(model)
    assert before["tensors"].keys() == after["tensors"].keys()
    for key, value in before["tensors"].items():
        assert torch.equal(value, after["tensors"][key]), key
    assert all(g is None for g in after["grads"]) and before["modes"] == after["modes"]


GENOTYPES = {**{f"block-{name}": (lambda name=name, i=i: block_genotype(name, i)) for i, name in enumerate(BLOCKS)},
             **{f"act-{act}": (lambda act=act: block_genotype("basic", act=act)) for act in ACTIVATIONS},
             **{f"norm-{norm}": (lambda norm=norm: block_genotype("mbconv", 1, norm=norm)) for norm in NORMS},
             **{f"space-{space}": (lambda space=space: _smallest(space)) for space in builtin_spaces()}}


@pytest.mark.parametrize("name", list(GENOTYPES))
def test_every_proxy_scores_every_kind_of_network_finite_and_leaves_it_untouched(name):
    g = GENOTYPES[name]()
    model = _built(g)
    model.train()
    x, y = _batch(g)
    before = _state(model)
    for proxy in PROXIES:
        score = PROXIES.get(proxy)(model, x, y)
        assert isinstance(score, float) and math.isfinite(score), (proxy, score)
        _assert_untouched(model, before)  # weights, BatchNorm statistics, gradients and modes


def test_proxies_are_deterministic_for_a_seed_and_see_the_weights():
    g = block_genotype("mbconv", 1)
    x, y = _batch(g)
    first = {p: PROXIES.get(p)(_built(g, seed=3), x, y) for p in PROXIES}
    again = {p: PROXIES.get(p)(_built(g, seed=3), x, y) for p in PROXIES}
    other = {p: PROXIES.get(p)(_built(g, seed=4), x, y) for p in PROXIES}
    assert first == again
    # every proxy but the two cost counts depends on the initial weights
    assert {p for p in PROXIES if first[p] != other[p]} == set(PROXIES) - {"params", "flops"}


def test_params_is_the_parameter_count_and_flops_the_costs_count():
    from autocnn.costs import count_flops

    g = block_genotype("bottleneck", 2)
    model = _built(g)
    x, y = _batch(g)
    assert PROXIES.get("params")(model, x, y) == count_params(model) == count_params(meta_model(g))
    assert PROXIES.get("flops")(model, x, y) == count_flops(g)


def test_synflow_leaves_the_weights_and_sums_the_absolute_path_products():
    """One bias-free linear layer: R = Σ|W|·1, so dR/d|W| = 1 and synflow = Σ|W|; two layers: Σ |W2| |W1| paths ×2."""
    torch.manual_seed(0)
    one = nn.Sequential(nn.Flatten(), nn.Linear(6, 3, bias=False))
    before = one[1].weight.detach().clone()
    x = torch.randn(4, 1, 2, 3)
    assert PROXIES.get("synflow")(one, x, None) == pytest.approx(before.double().abs().sum().item(), rel=1e-12)
    assert torch.equal(one[1].weight, before) and one[1].weight.grad is None
    two = nn.Sequential(nn.Flatten(), nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 3, bias=False))
    w1, w2 = two[1].weight.detach().double().abs(), two[3].weight.detach().double().abs()
    paths = (w2.sum(0) @ w1).sum()  # every input-to-output path's product, each input 1
    assert PROXIES.get("synflow")(two, x, None) == pytest.approx(2 * paths.item(), rel=1e-12)


def _linear_net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))


def test_grad_norm_snip_and_zico_follow_their_definitions():
    net = _linear_net()
    x, y = torch.randn(8, 1, 2, 3), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    weights = [net[1].weight, net[3].weight]

    def grads(xs, ys):
        return torch.autograd.grad(F.cross_entropy(net(xs), ys), weights)

    g = grads(x, y)
    assert PROXIES.get("grad_norm")(net, x, y) == pytest.approx(sum(gi.norm().item() for gi in g), rel=1e-6)
    assert PROXIES.get("snip")(net, x, y) == pytest.approx(sum((w * gi).abs().sum().item() for w, gi in zip(weights, g)),
                                                           rel=1e-6)
    halves = [grads(x[:4], y[:4]), grads(x[4:], y[4:])]
    expected = 0.0
    for a, b in zip(*halves):
        std, mean = (a - b).abs() / 2, (a.abs() + b.abs()) / 2
        expected += math.log((mean[std > 0] / std[std > 0]).sum().item())
    assert PROXIES.get("zico")(net, x, y) == pytest.approx(expected, rel=1e-5)
    assert all(w.grad is None for w in weights)


def test_naswot_is_the_log_determinant_of_the_activation_pattern_kernel():
    net = _linear_net()
    x = torch.randn(5, 1, 2, 3)
    codes = (net[1](x.flatten(1)) > 0).double()  # the ReLU's inputs
    kernel = codes @ codes.T + (1 - codes) @ (1 - codes).T
    assert PROXIES.get("naswot")(net, x, None) == pytest.approx(torch.linalg.slogdet(kernel).logabsdet.item())
    twins = torch.cat([x[:1], x[:1]])  # two images alike on every unit: a singular kernel
    assert PROXIES.get("naswot")(net, twins, None) == -math.inf


def test_multilabel_targets_take_the_binary_loss():
    net = _linear_net()
    x, y = torch.randn(4, 1, 2, 3), torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    loss = F.binary_cross_entropy_with_logits(net(x), y)
    expected = sum(g.norm().item() for g in torch.autograd.grad(loss, [net[1].weight, net[3].weight]))
    assert PROXIES.get("grad_norm")(net, x, y) == pytest.approx(expected, rel=1e-6)


def test_every_proxy_cites_its_source():
    for name, proxy in PROXIES.items():
        doc = proxy.__doc__ or ""
        assert name in ("params", "flops") or ("et al." in doc and "20" in doc), name
