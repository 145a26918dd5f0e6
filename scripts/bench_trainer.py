"""Benchmark 1: samples/s of autocnn's trainer ÷ a minimal hand-written PyTorch loop.

Same model (a resnet18-style network at 32×32 and an efficientnet_compound sample), same
synthetic CIFAR-shaped data (3×32×32, 10 classes; the machines have no dataset downloads), same
batch size and optimizer (SGD, Nesterov momentum 0.9, lr 0.05, weight decay 5e-4). Both do one
validation pass per epoch. The trainer runs with its defaults otherwise (cosine schedule stepped per
batch, gradient clipping at 5, on-device loss accumulation); the loop has none of that. On CUDA the
reference loop uses bf16 autocast + channels_last (the trainer's CUDA defaults), and a plain fp32
loop is timed beside it to report the gain. Runs alternate (loop, trainer, loop, ...) and the
median of each is compared.

    python scripts/bench_trainer.py --quick
"""
from __future__ import annotations

import copy
import time

import benchlib

GOAL = 0.95


def synthetic_data(n_train: int, n_val: int, seed: int = 0):
    import torch

    from autocnn.data import DataSplits, TensorSplit

    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> TensorSplit:
        return TensorSplit(torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen))

    return DataSplits(train=split(n_train), val=split(n_val), test=split(n_val), num_classes=10, in_chans=3,
                      class_names=tuple(map(str, range(10))), mean=(0.0,) * 3, std=(1.0,) * 3, multilabel=False,
                      native_resolution=32, name="synthetic-cifar", augment="none")


def resnet18_32(tiny: bool = False):
    """resnet18 at 32 px, 10 classes; `tiny` (smoke runs): one block per stage at 1/8 width."""
    from autocnn.presets import get_preset
    from autocnn.presets.resnet import resnet

    g = resnet("basic", (1, 1, 1, 1), widths=(8, 16, 32, 64)) if tiny else get_preset("resnet18")
    return g.replace(resolution=32, num_classes=10, in_chans=3)


def efficientnet_sample(max_params: int, seed: int = 3):
    """The first seeded efficientnet_compound sample under `max_params` (CPU-sized)."""
    import optuna

    from autocnn.costs import genotype_costs
    from autocnn.spaces import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space("efficientnet_compound")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(200):
        trial = study.ask()
        g = space.sample(trial, num_classes=10, in_chans=3)
        study.tell(trial, 0.0)
        if g.resolution <= 40 and genotype_costs(g)["params"] <= max_params:
            return g
    raise RuntimeError("no efficientnet_compound sample under the size cap")


def hand_loop(model, data, *, epochs: int, batch_size: int, device, amp: bool, channels_last: bool) -> list[float]:
    """The reference: what one writes by hand with the data already in memory. Returns samples/s per epoch."""
    import torch
    import torch.nn.functional as F

    cuda = device.type == "cuda"
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    xs, ys = data.train.images.to(device), data.train.labels.to(device)
    xv, yv = data.val.images.to(device), data.val.labels.to(device)
    n = len(ys)
    steps = n // batch_size
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        perm = torch.randperm(n, device=device)
        for i in range(steps):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            x = xs[idx].contiguous(memory_format=fmt)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(x), ys[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        correct = torch.zeros((), device=device, dtype=torch.long)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            for i in range(0, len(yv), 2 * batch_size):
                correct += (model(xv[i:i + 2 * batch_size].contiguous(memory_format=fmt)).argmax(1)
                            == yv[i:i + 2 * batch_size]).sum()
        int(correct)  # the accuracy is read once per epoch, as the trainer does
        if cuda:
            torch.cuda.synchronize()
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return rates


def autocnn_train(model, data, *, epochs: int, batch_size: int, device, grad_clip: float | None = 5.0) -> list[float]:
    """autocnn's trainer with its defaults; returns samples/s per epoch (from its epoch reports)."""
    from autocnn.training import TrainConfig, train

    config = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer="sgd", lr=0.05, device=str(device),
                         grad_clip=grad_clip)
    steps = len(data.train) // batch_size
    rates: list[float] = []
    train(model, data, config, evaluate_test=False,
          on_epoch=lambda report: rates.append(steps * batch_size / report.seconds))
    return rates


def measure(genotype, data, *, epochs: int, batch_size: int, repeats: int, device) -> dict[str, list[list[float]]]:
    """Per run, per-epoch samples/s of each variant, the first epoch of every run left out (warm-up).

    Runs are interleaved (loop, trainer, loop, ... rotating the order), so run r of each variant saw
    about the same machine load.
    """
    import torch

    from autocnn.builder import build_model

    torch.manual_seed(0)
    init = build_model(genotype)
    cuda = device.type == "cuda"

    def run(fn, **kw):
        return lambda: fn(copy.deepcopy(init), data, epochs=epochs, batch_size=batch_size, device=device, **kw)[1:]

    variants = {"loop": run(hand_loop, amp=cuda, channels_last=cuda), "trainer": run(autocnn_train)}
    if cuda:
        variants["loop_fp32"] = run(hand_loop, amp=False, channels_last=False)
    return benchlib.interleaved(variants, repeats=repeats, warmup=0)


def paired_ratio(runs: dict[str, list[list[float]]], variant: str, reference: str) -> float:
    """Median over rounds of (median epoch rate of `variant` ÷ that of `reference`) in the same round."""
    return benchlib.median(benchlib.median(a) / benchlib.median(b) for a, b in zip(runs[variant], runs[reference]))


def profile_section(genotype, data, batch_size: int, device) -> str:
    from autocnn.builder import build_model

    loop = benchlib.torch_profile_top(lambda: hand_loop(build_model(genotype), data, epochs=2, batch_size=batch_size,
                                                        device=device, amp=device.type == "cuda",
                                                        channels_last=device.type == "cuda"), n=10)
    trainer = benchlib.torch_profile_top(lambda: autocnn_train(build_model(genotype), data, epochs=2,
                                                               batch_size=batch_size, device=device), n=10)
    return f"torch.profiler, two epochs, hand-written loop:\n\n{loop}\n\nautocnn trainer:\n\n{trainer}\n"


def main(argv: list[str] | None = None) -> list[dict]:
    args = benchlib.parser(__doc__.splitlines()[0]).parse_args(argv)
    benchlib.setup_threads(args.threads)
    import torch

    from autocnn.costs import count_params
    from autocnn.builder import build_model

    started = time.perf_counter()
    info = benchlib.machine()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    mode = args.mode
    cuda = device.type == "cuda"
    batch = benchlib.by_mode(mode, 32, 64, 128) * (2 if cuda else 1)
    n_train = batch * benchlib.by_mode(mode, 2, 4, 8) * (16 if cuda else 1)
    epochs = benchlib.by_mode(mode, 2, 3, 4)  # the first epoch of each run is a warm-up, not counted
    repeats = benchlib.by_mode(mode, 1, 4, 6)
    data = synthetic_data(n_train, batch)
    models = {"resnet18 @32 px" + (" (tiny)" if mode == "smoke" else ""): resnet18_32(tiny=mode == "smoke"),
              "efficientnet_compound sample": efficientnet_sample(benchlib.by_mode(mode, 300_000, 600_000, 1_500_000))}

    rows, results, profiles = [], [], []
    for label, genotype in models.items():
        per_run = measure(genotype, data, epochs=epochs, batch_size=batch, repeats=repeats, device=device)
        runs = {name: [rate for run in rates for rate in run] for name, rates in per_run.items()}
        loop, trainer = benchlib.median(runs["loop"]), benchlib.median(runs["trainer"])
        ratio = paired_ratio(per_run, "trainer", "loop")
        met = ratio >= GOAL
        params = count_params(build_model(genotype))
        name = f"{label} ({params / 1e6:.2f} M params, {genotype.resolution} px)"
        row = [name, f"{loop:,.0f}", f"{trainer:,.0f}", f"**{ratio:.3f}**", benchlib.verdict(met)]
        if "loop_fp32" in runs:
            fp32 = benchlib.median(runs["loop_fp32"])
            row += [f"{fp32:,.0f}", f"{paired_ratio(per_run, 'loop', 'loop_fp32'):.2f}×"]
        rows.append(row)
        spread = ", ".join(f"{k}: " + " / ".join(f"{v:,.0f}" for v in vs) for k, vs in runs.items())
        profiles.append(f"- {label}: every measured epoch (samples/s) — {spread}")
        results.append({"benchmark": "trainer", "figure": f"trainer ÷ hand loop, {label}", "value": round(ratio, 3),
                        "goal": f">= {GOAL}", "met": met, "raw": {k: benchlib.median(v) for k, v in runs.items()}})
        if not met and mode != "smoke":
            profiles.append(f"\nProfile of {label} (goal missed):\n\n" + profile_section(genotype, data, batch, device))

    headers = ["model", "hand loop samples/s", "autocnn trainer samples/s", "ratio", f"goal ≥ {GOAL}"]
    if device.type == "cuda":
        headers[1] = "hand loop (AMP + channels_last) samples/s"
        headers += ["plain fp32 loop samples/s", "AMP+CL gain over fp32"]
    body = benchlib.header(
        "1. Trainer vs hand-written loop", info, started,
        f"device {device}; {n_train} synthetic 3×32×32 training images + {batch} validation images, batch {batch}; "
        f"{repeats} runs per variant, interleaved, {epochs} epochs each; samples/s = median over every epoch but each "
        f"run's first (warm-up), an epoch being its training steps plus its validation pass; ratio = median over the "
        f"rounds of trainer ÷ loop within the round (adjacent runs, same machine load)")
    body += "\n" + benchlib.table(headers, rows) + "\n\n" + "\n".join(profiles) + "\n"
    if device.type != "cuda":
        body += "\nNo GPU on this machine: the AMP + channels_last comparison runs unchanged when CUDA is present.\n"
    benchlib.write_section("trainer", body, args.out)
    benchlib.emit(results, args.json)
    return results


if __name__ == "__main__":
    main()
