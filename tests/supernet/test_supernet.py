"""The supernet against the builder: sub-networks are ordinary genotypes whose inherited weights give the
supernet's own outputs exactly; sandwich training learns digits; training resumes from a checkpoint."""
from __future__ import annotations

import copy
import dataclasses
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import autocnn
from autocnn.builder import build_model
from autocnn.data import load_dataset
from autocnn.genotype import Genotype
from autocnn.spaces import load_space, load_space_text
from autocnn.supernet import (ElasticSpace, Supernet, SupernetError, extract, recalibrate_bn, sandwich_step,
                              train_supernet)

TINY = Path(__file__).with_name("tiny_supernet.yaml")


@pytest.fixture(scope="module")
def space() -> ElasticSpace:
    return ElasticSpace(load_space(TINY))


def _randomize(net: torch.nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm parameters and statistics everywhere, so a wrong slice cannot hide behind 1s and 0s."""
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.uniform_(-0.2, 0.2, generator=gen)
            m.running_mean.uniform_(-0.2, 0.2, generator=gen)
            m.running_var.uniform_(0.5, 1.5, generator=gen)


@pytest.fixture(scope="module")
def supernet(space) -> Supernet:
    torch.manual_seed(0)
    net = Supernet(space.largest()).double().eval()
    _randomize(net, 0)
    return net


def _pairs(space: ElasticSpace) -> list[tuple[str, Genotype]]:
    rng = random.Random(1)
    return [("largest", space.largest()), ("smallest", space.smallest())] + [
        (f"random{i}", space.sample(rng)) for i in range(3)]


@pytest.mark.parametrize("which", ["largest", "smallest", "random0", "random1", "random2"])
def test_inherited_weights_reproduce_the_supernet_exactly(space, supernet, which):
    g = dict(_pairs(space))[which]
    model = build_model(g).double().eval()
    model.load_state_dict(extract(supernet, g))  # strict: exactly the built network's keys and shapes
    x = torch.randn(4, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = supernet.set_active(g)(x)
        got = model(x)
    assert expected.std() > 1e-3  # not a comparison of near-constant logits
    assert (got - expected).abs().max().item() <= 1e-12
    supernet.set_active(space.largest())


def test_the_largest_is_the_supernet_itself(space, supernet):
    g = space.largest()
    sd = supernet.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in extract(supernet, g).items())
    assert set(sd) == set(build_model(g).state_dict())


def test_smaller_kernels_are_the_centre_of_the_largest(space, supernet):
    small = space.smallest()
    w = extract(supernet, small)["stages.0.0.conv.conv.weight"]
    assert w.shape == (8, 1, 3, 3)  # expansion 1: no expand conv, the depthwise conv at the input width
    assert torch.equal(w, supernet.stages[0][0].conv.conv.weight[:8, :, 1:4, 1:4])
    assert "stages.0.0.expand.conv.weight" not in extract(supernet, small)


def test_every_sub_network_is_a_valid_genotype_the_builder_builds(space, supernet):
    seen = set()
    for g in space:
        supernet.check(g)
        assert Genotype.from_string(g.to_string()) == g
        seen.add(g.arch_id)
    assert len(seen) == len(space) == 2 ** 3 * 3 ** 3 * 2 ** 3 * 2  # kernel, expansion, repeats per stage; width
    with torch.device("meta"):  # shapes only: building 3456 networks for real takes too long
        for g in list(space)[::97]:
            build_model(g)
    assert isinstance(autocnn.create_model(space.smallest()), torch.nn.Module)


def test_narrower_sub_networks_slice_every_width_and_gain_the_shortcuts_they_would_have():
    """At width 0.5 the first stage (16 channels from an 8-channel stem at width 1) maps 8 channels to 8 at stride
    1, so the built sub-network adds its input back: the supernet's block, which has no shortcut, must too."""
    text = TINY.read_text().replace("{block: mbconv, conv: depthwise, out_chs: 8}",
                                    "{block: mbconv, conv: depthwise, out_chs: 16}")
    es = ElasticSpace(load_space_text(text, "wide.yaml"))
    torch.manual_seed(0)
    net = Supernet(es.largest()).double().eval()
    _randomize(net, 3)
    assert not net.stages[0][0].use_residual
    narrow = es.genotype({**{n: v[-1] for n, v in es.choices.items()}, "width_mult": 0.5})
    model = build_model(narrow).double().eval()
    assert model.stages[0][0].use_residual
    model.load_state_dict(extract(net, narrow))
    sd = extract(net, narrow)
    assert sd["stem.0.0.conv.weight"].shape[0] == 8 and sd["head.fc.weight"].shape == (10, 16)
    assert torch.equal(sd["stages.2.0.project.conv.weight"], net.stages[2][0].project.conv.weight[:16, :sd[
        "stages.2.0.project.conv.weight"].shape[1]])
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = net.set_active(narrow)(x)
        assert (model(x) - expected).abs().max().item() <= 1e-12 and expected.std() > 1e-3


def test_se_switches_off_and_slices_its_squeeze_by_the_ratio():
    """A stage that offers SE or not (or ECA, which cannot be sliced) is elastic over none/SE, and SE's ratio
    (4 or 8) too: the largest sub-network squeezes least; every sub-network's inherited weights give the
    supernet's outputs exactly."""
    text = TINY.read_text().replace("      repeats: {choices: [1, 2]}\n", "      repeats: {choices: [1, 2]}\n"
                                    "      attention:\n        choices: [none, se, eca]\n"
                                    "        when:\n          se: {ratio: {choices: [4.0, 8.0]}}\n")
    es = ElasticSpace(load_space_text(text, "attention.yaml"))
    assert es.choices["stages.1.attention"] == ("none", "se") and es.choices["stages.1.se.ratio"] == (8.0, 4.0)
    assert len(es) == 2 * (2 * 3 * 2 * (1 + 2)) ** 3  # width; per stage kernel, expansion, repeats, (off | SE x 2)
    small = ElasticSpace(load_space_text(text, "attention.yaml"), fixed={
        **{f"stages.{i}.{k}": v for i in range(3) for k, v in (("kernel", 3), ("expansion", 4.0), ("repeats", 1))},
        "width_mult": 1.0, "stages.0.attention": "none", "stages.2.se.ratio": 4.0})
    # stage 1: off, SE r4 or SE r8; stage 2 (ratio fixed): off or SE; each once, though 8 choices combine
    assert len(small) == len({g.arch_id for g in small}) == len(list(small)) == (1 + 2) * 2
    big = es.largest()
    assert {(s.attention, s.ratio) for s in big.stages[:3]} == {("se", 4.0)}
    torch.manual_seed(0)
    net = Supernet(big).double().eval()
    _randomize(net, 5)
    top = {n: v[-1] for n, v in es.choices.items()}
    variants = {"off": {**top, "stages.1.attention": "none"}, "ratio 8": {**top, "stages.1.se.ratio": 8.0},
                "random": None}
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    for name, choice in variants.items():
        g = es.sample(random.Random(7)) if choice is None else es.genotype(choice)
        sd = extract(net, g)
        model = build_model(g).double().eval()
        model.load_state_dict(sd)
        with torch.no_grad():
            expected = net.set_active(g)(x)
            assert (model(x) - expected).abs().max().item() <= 1e-12 and expected.std() > 1e-3, name
        if name == "off":
            assert not any(k.startswith("stages.1.0.attn.") for k in sd)
        if name == "ratio 8":  # 8 input channels / 8: one squeeze channel of the supernet's two
            assert sd["stages.1.0.attn.fc1.weight"].shape[0] == 1 == net.stages[1][0].attn.fc1.weight.shape[0] // 2
    for field, value in (("attention", "eca"), ("ratio", 2.0)):
        outside = big.replace(stages=(dataclasses.replace(big.stages[0], **{field: value}), *big.stages[1:]))
        with pytest.raises(SupernetError, match=field):
            net.set_active(outside)


def test_create_model_loads_inherited_weights_from_a_file(space, supernet, tmp_path):
    g = space.sample(random.Random(5))
    net = copy.deepcopy(supernet).float()  # create_model builds float32: float64 weights would be rounded
    path = tmp_path / "sub.pth"
    torch.save(extract(net, g), path)
    model = autocnn.create_model(g, weights=path).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), net.set_active(g)(x))


def test_a_space_without_elastic_dimensions_is_refused():
    text = TINY.read_text().replace("kernel: {choices: [3, 5]}", "kernel: 3") \
        .replace("expansion: {choices: [1.0, 4.0, 6.0]}", "expansion: 4.0").replace("repeats: {choices: [1, 2]}", "repeats: 1") \
        .replace("width_mult: {choices: [0.5, 1.0]}", "width_mult: 1.0")
    with pytest.raises(SupernetError, match="has no elastic dimension") as err:
        ElasticSpace(load_space_text(text, "flat.yaml"))
    assert "\n" not in str(err.value) and "add one" in str(err.value)


def test_genotypes_outside_the_supernet_are_refused(space, supernet):
    big = space.largest()
    outside = {
        "kernel": big.replace(stages=(dataclasses.replace(big.stages[0], kernel=7), *big.stages[1:])),
        "attention": big.replace(stages=(dataclasses.replace(big.stages[0], attention="se"), *big.stages[1:])),
        "repeats": big.replace(stages=(dataclasses.replace(big.stages[0], repeats=3), *big.stages[1:])),
        "num_classes": big.replace(num_classes=3),
        "stages": big.replace(stages=big.stages[:-1]),
    }
    for name, g in outside.items():
        with pytest.raises(SupernetError, match=name) as err:
            supernet.set_active(g)
        assert "\n" not in str(err.value) and "ElasticSpace" in str(err.value)
        with pytest.raises(SupernetError):
            extract(supernet, g)
    assert supernet.active == big
    with pytest.raises(SupernetError, match="outside the supernet"):
        space.genotype({**{n: v[0] for n, v in space.choices.items()}, "stages.0.kernel": 7})


def test_parts_a_supernet_cannot_share_are_refused_or_fixed():
    es = ElasticSpace("efficientnet_compound", num_classes=10)
    assert set(es.choices) == {f"stages.{i}.{k}" for i in range(7) for k in ("kernel", "expansion", "attention",
                                                                            "se.ratio")} | {"width_mult"}
    assert es.choices["stages.0.attention"] == ("none", "se")  # CBAM and ECA cannot be sliced: not in the supernet
    assert {s.block for s in es.largest().stages[:7]} == {"mbconv"}  # block and conv kind fixed at their first choice
    with pytest.raises(SupernetError, match=r"stages\[2\]\.attention is 'eca'.*fixed="):
        ElasticSpace("efficientnet_compound", fixed={"stages.2.attention": "eca"})
    with pytest.raises(SupernetError, match="union of block families"):
        ElasticSpace("cnn_families")


def test_efficientnet_b0_supernet_sub_networks_match(tmp_path):
    es = ElasticSpace("efficientnet_compound", preset="efficientnet_b0", num_classes=10)
    torch.manual_seed(0)
    net = Supernet(es.largest()).eval()
    _randomize(net, 1)
    g = es.sample(random.Random(0))
    model = build_model(g).eval()
    model.load_state_dict(extract(net, g))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), net.set_active(g)(x), atol=1e-6, rtol=0)


def test_recalibration_gives_the_sub_network_its_own_statistics(space):
    torch.manual_seed(0)
    net = Supernet(space.largest()).double()
    g = space.sample(random.Random(3))
    batches = [torch.randn(8, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
               for i in range(3)]
    net.set_active(g)
    recalibrate_bn(net, batches)
    model = build_model(g).double()
    model.load_state_dict(extract(net, g))
    own = recalibrate_bn(build_model(g).double(), batches)
    own.load_state_dict({k: v for k, v in extract(net, g).items() if "running" not in k and "num_batches" not in k},
                        strict=False)
    recalibrate_bn(own, batches)
    x = batches[0][:2]
    with torch.no_grad():
        assert torch.equal(net.eval()(x), model.eval()(x))
        torch.testing.assert_close(own.eval()(x), model(x), atol=1e-12, rtol=0)
    assert net.training is False and own.training is False



def test_recalibration_runs_dropout_as_at_inference():
    """Statistics gathered with dropout active would depend on the RNG's state (what ran before) and differ
    from what the layer sees at inference."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
    batches = [torch.randn(8, 1, 12, 12, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    stats = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        recalibrate_bn(net, batches)
        stats.append([b.clone() for b in net[4].buffers()][:2])
    assert all(torch.equal(a, b) for a, b in zip(*stats))
    bn = net[1]
    with torch.no_grad():  # the mean of what the second norm sees with the first on batch statistics, no dropout
        seen = [net[3](F.batch_norm(net[0](x), None, None, bn.weight, bn.bias, training=True, eps=bn.eps))
                for x in batches]
    torch.testing.assert_close(net[4].running_mean, torch.stack([h.mean((0, 2, 3)) for h in seen]).mean(0),
                               atol=1e-6, rtol=1e-5)
    assert all(m.training for m in net.modules())  # every module left in the mode it had

# -- training -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    d = load_dataset("digits")

    def split(s):
        return F.interpolate(s.inputs(), size=16, mode="bilinear"), s.labels

    return split(d.train), split(d.val)


def _evaluate(net: Supernet, g: Genotype, calib: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
    net.set_active(g)
    recalibrate_bn(net, calib.split(256))
    net.eval()
    with torch.no_grad():
        out = net(x)
    net.train()
    return F.cross_entropy(out, y).item(), (out.argmax(1) == y).float().mean().item()


def test_an_elastic_resolution_trains_each_sub_network_at_its_own():
    """Given 12 and 16 px, the resolution is a choice of its own (the largest at 16): a sandwich step feeds the
    largest the 16-px batch and a 12-px sub-network that batch resized as the data pipeline resizes."""
    es = ElasticSpace(load_space(TINY), resolution=[16, 12])
    assert es.choices["resolution"] == (12, 16) and len(es) == 2 * len(ElasticSpace(load_space(TINY)))
    assert (es.largest().resolution, es.smallest().resolution) == (16, 12)
    torch.manual_seed(0)
    net = Supernet(es.largest())
    seen = []
    net.register_forward_pre_hook(lambda module, args: seen.append((net.active.resolution, args[0].shape[-1])))
    x = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    sandwich_step(net, es, x, torch.arange(8) % 10, torch.optim.SGD(net.parameters(), lr=0.01), random.Random(0))
    assert seen[:2] == [(16, 16), (12, 12)] and all(active == fed for active, fed in seen)  # largest, smallest, ...
    with pytest.raises(SupernetError, match="resolution 20 is not one"):
        es.genotype({**{n: v[0] for n, v in es.choices.items()}, "resolution": 20})
    flat = TINY.read_text() + "  head: {pool: flatten}\n"
    with pytest.raises(SupernetError, match="flatten head"):
        ElasticSpace(load_space_text(flat, "flat.yaml"), resolution=[12, 16])


STEPS = 30  # the smallest sub-network (width 0.5, one block per stage, no expansion) is still near chance at 20


def test_sandwich_training_learns_digits(space, digits):
    (x, y), (xv, yv) = digits
    torch.manual_seed(0)
    net = Supernet(space.largest())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    before, _ = _evaluate(net, space.largest(), x[:512], xv, yv)
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        rows = torch.randint(0, len(y), (64,), generator=gen)
        sandwich_step(net, space, x[rows], y[rows], optimizer, rng)
    after, acc_big = _evaluate(net, space.largest(), x[:512], xv, yv)
    _, acc_small = _evaluate(net, space.smallest(), x[:512], xv, yv)
    print(f"largest val loss {before:.3f} -> {after:.3f}; val accuracy largest {acc_big:.3f} smallest {acc_small:.3f}")
    assert after < 0.75 * before
    assert acc_big > 0.4 and acc_small > 0.15  # chance is 0.1


def test_training_resumes_from_its_checkpoint_as_if_never_stopped(space, digits, tmp_path):
    (x, y), _ = digits
    x, y = x[:192], y[:192]
    # a learning rate that changes every step and random shifts: the resumed run must pick the schedule up where it stopped
    recipe = dict(batch_size=64, seed=7, optimizer="adamw", schedule="cosine", warmup_epochs=0.5, weight_decay=0.01,
                  augment="crop_flip")

    def fresh(seed: int) -> Supernet:
        torch.manual_seed(seed)
        return Supernet(space.largest())

    straight = fresh(0)
    seen = []
    history = train_supernet(straight, space, x, y, epochs=2, on_epoch=lambda e, h, s: seen.append((e, list(h))),
                             **recipe)
    assert seen == [(1, history[:1]), (2, history)]
    path = tmp_path / "supernet.ckpt"
    killed = fresh(0)  # stopped after epoch 1 of 2: its checkpoint has the optimiser's state of that step
    with pytest.raises(KeyboardInterrupt):
        train_supernet(killed, space, x, y, epochs=2, checkpoint=path, **recipe,
                       on_epoch=lambda e, h, s: (_ for _ in ()).throw(KeyboardInterrupt))
    assert torch.load(path, weights_only=False)["epoch"] == 1
    resumed = fresh(1)  # other initial weights: everything must come from the checkpoint
    assert train_supernet(resumed, space, x, y, epochs=2, checkpoint=path, **recipe) == history
    expected = straight.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in resumed.state_dict().items())
    assert torch.load(path, weights_only=False)["epoch"] == 2

    other = Supernet(space.smallest())
    with pytest.raises(SupernetError, match="belongs to another supernet"):
        train_supernet(other, space, x, y, epochs=3, checkpoint=path)
