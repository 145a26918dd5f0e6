"""Benchmark 5: GPU packing — 1, 2 and 4 concurrent fractional trials on one GPU, total images/s.

Each trial is a process (as a Ray trial actor with a fractional GPU is) that trains the same small
efficientnet_compound sample with autocnn's trainer (its CUDA defaults: bf16 autocast and
channels_last) on synthetic CIFAR-shaped data resident on the GPU. After a warm-up, all trials of a
round start together at a barrier; total throughput = all images trained ÷ (last end − first
start). Goal: ≥ 2.5× the single trial's throughput with 4 trials packed.

Runs only where CUDA is present; elsewhere it records "no GPU on this machine".
`--device cpu` exercises the same code on CPU processes (to test the script, not to measure).

    python scripts/bench_gpu_packing.py --quick
"""
from __future__ import annotations

import time

import benchlib

GOAL = 2.5
COUNTS = (1, 2, 4)


def _trial(rank: int, device: str, genotype: dict, n_train: int, batch: int, epochs: int, threads: int,
           barrier, queue) -> None:
    """One packed trial: build, warm up, wait for the others, train, report (samples, start, end)."""
    import sys

    sys.path.insert(0, benchlib.ROOT.as_posix() + "/scripts")
    import torch

    torch.set_num_threads(threads)
    from autocnn.builder import build_model
    from autocnn.genotype import Genotype
    from autocnn.training import TrainConfig, train
    from bench_trainer import synthetic_data

    try:
        g = Genotype.from_dict(genotype)
        data = synthetic_data(n_train, 2 * batch, seed=rank).to(device)
        warm = synthetic_data(2 * batch, batch, seed=rank).to(device)
        train(build_model(g), warm, TrainConfig(epochs=1, batch_size=batch, device=device), evaluate_test=False)
        model = build_model(g)
        config = TrainConfig(epochs=epochs, batch_size=batch, device=device)
        barrier.wait()
        start = time.monotonic()
        train(model, data, config, evaluate_test=False)
        end = time.monotonic()
        queue.put((rank, epochs * (n_train // batch) * batch, start, end, None))
    except Exception as err:  # reported to the parent instead of hanging the barrier
        barrier.abort()
        queue.put((rank, 0, 0.0, 0.0, f"{type(err).__name__}: {err}"))


def packed_round(count: int, device: str, genotype: dict, n_train: int, batch: int, epochs: int,
                 threads: int) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # CUDA cannot be re-initialised in a forked child
    barrier, queue = ctx.Barrier(count), ctx.Queue()
    procs = [ctx.Process(target=_trial, args=(r, device, genotype, n_train, batch, epochs, threads, barrier, queue))
             for r in range(count)]
    for p in procs:
        p.start()
    reports = [queue.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    errors = [r[4] for r in reports if r[4]]
    if errors:
        raise RuntimeError(f"a packed trial failed: {errors[0]}")
    samples = sum(r[1] for r in reports)
    span = max(r[3] for r in reports) - min(r[2] for r in reports)
    return {"count": count, "images_per_s": samples / span, "per_trial": [r[1] / (r[3] - r[2]) for r in reports],
            "seconds": span}


def main(argv: list[str] | None = None) -> list[dict]:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="cuda (default when present) or cpu to test the script")
    args = p.parse_args(argv)
    benchlib.setup_threads(args.threads)
    import torch

    info, started = benchlib.machine(), time.perf_counter()
    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        body = benchlib.header("5. GPU packing: concurrent fractional trials on one GPU", info, started)
        body += ("\nno GPU on this machine — nothing measured. The script runs unchanged where CUDA is present "
                 "(1, 2 and 4 concurrent trials; goal ≥ 2.5× one trial's images/s at 4).\n")
        benchlib.write_section("gpu_packing", body, args.out)
        results = [{"benchmark": "gpu_packing", "figure": "4 packed trials ÷ 1 trial (images/s)",
                    "value": "no GPU on this machine", "goal": f">= {GOAL}", "met": None}]
        benchlib.emit(results, args.json)
        return results

    from bench_trainer import efficientnet_sample

    genotype = efficientnet_sample(1_500_000).to_dict()
    cuda = device == "cuda"
    n_train = benchlib.by_mode(args.mode, 256, 16_384 if cuda else 512, 50_000 if cuda else 1024)
    epochs = benchlib.by_mode(args.mode, 1, 3, 5)
    batch = 128 if cuda else 32
    threads = 1 if not cuda else max(1, (torch.get_num_threads() // 4))
    rounds = {c: packed_round(c, device, genotype, n_train, batch, epochs, threads) for c in COUNTS}
    one = rounds[1]["images_per_s"]
    rows, results = [], []
    for c, r in rounds.items():
        ratio = r["images_per_s"] / one
        met = None if c == 1 else (ratio >= GOAL if c == 4 else None)
        rows.append([c, f"{r['images_per_s']:,.0f}", f"**{ratio:.2f}×**",
                     " / ".join(f"{v:,.0f}" for v in r["per_trial"]), f"{r['seconds']:.1f}",
                     benchlib.verdict(met) if c == 4 else ""])
        if c > 1:
            results.append({"benchmark": "gpu_packing", "figure": f"{c} packed trials ÷ 1 trial (images/s, {device})",
                            "value": round(ratio, 2), "goal": f">= {GOAL}" if c == 4 else None,
                            "met": met, "raw": {"one": round(one), "packed": round(r["images_per_s"])}})
    body = benchlib.header(
        "5. GPU packing: concurrent fractional trials on one GPU", info, started,
        f"device {device}; each trial trains an efficientnet_compound sample on {n_train:,} synthetic 3×32×32 images, "
        f"batch {batch}, {epochs} epochs, after a warm-up; trials of a round start at a barrier")
    body += "\n" + benchlib.table(["trials at once", "total images/s", "÷ one trial", "per trial images/s",
                                   "round s", f"goal ≥ {GOAL}× at 4"], rows) + "\n"
    if not cuda:
        body += "\n(CPU processes: this tests the script; the figures say nothing about GPU packing.)\n"
    benchlib.write_section("gpu_packing", body, args.out)
    benchlib.emit(results, args.json)
    return results


if __name__ == "__main__":
    main()
