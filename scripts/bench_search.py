"""Search efficiency: TPE vs random sampling at an equal trial budget, over several seeds, on digits.

Each (sampler, seed) pair runs a real `autocnn` search (real training, real sqlite study) with the
same space, budget and recipe; the table gives the best validation and test accuracy each reached
and the mean over seeds. TPE starts with 5 random trials, so small budgets favour neither much.

    python scripts/bench_search.py --quick
"""
from __future__ import annotations

import statistics
import tempfile
import time

import benchlib


def run(sampler: str, seed: int, trials: int, epochs: int, space: str, limit: int | None, max_flops: float) -> dict:
    from autocnn.search.config import SearchConfig
    from autocnn.search.driver import run_search

    with tempfile.TemporaryDirectory() as tmp:
        config = SearchConfig(space=space, dataset="digits", trials=trials, epochs=epochs, sampler=sampler,
                              pruner="none", seed=seed, storage=f"sqlite:///{tmp}/bench.db", limit=limit,
                              study=f"{sampler}-{seed}", device="cpu", constraints={"max_flops": max_flops})
        started = time.perf_counter()
        study = run_search(config)
        best = study.best_trial
        return {"sampler": sampler, "seed": seed, "val": best.values[0],
                "test": best.user_attrs.get("test_metric"), "seconds": time.perf_counter() - started}


def main() -> None:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--space", default="resnet_attention")
    p.add_argument("--max-flops", type=float, default=20e6, help="keeps CPU trials short (rejected ones cost nothing)")
    args = p.parse_args()
    benchlib.setup_threads(args.threads)
    info = benchlib.machine()
    started = time.perf_counter()
    seeds = benchlib.by_mode(args.mode, [0], [0, 1], [0, 1, 2, 3])
    trials = benchlib.by_mode(args.mode, 3, 10, 20)
    epochs = benchlib.by_mode(args.mode, 1, 6, 10)
    limit = benchlib.by_mode(args.mode, 200, 600, None)
    rows = [run(sampler, seed, trials, epochs, args.space, limit, args.max_flops)
            for seed in seeds for sampler in ("random", "tpe")]
    mean = {s: statistics.mean(r["val"] for r in rows if r["sampler"] == s) for s in ("random", "tpe")}
    mean_test = {s: statistics.mean(r["test"] for r in rows if r["sampler"] == s) for s in ("random", "tpe")}
    lines = [benchlib.header("Search efficiency: TPE vs random (digits)", info, started,
                             f"space `{args.space}` under max_flops {args.max_flops:.3g}, {trials} trials x {epochs} epochs, pruner none, "
                             f"training images {limit or 'all'}, seeds {seeds}"),
             "| sampler | seed | best val acc | its test acc | seconds |", "|---|---|---|---|---|"]
    lines += [f"| {r['sampler']} | {r['seed']} | {r['val']:.4f} | {r['test']:.4f} | {r['seconds']:.0f} |" for r in rows]
    lines += ["", f"Mean best validation accuracy: TPE {mean['tpe']:.4f} vs random {mean['random']:.4f} "
                  f"(ratio {mean['tpe'] / mean['random']:.3f}); test {mean_test['tpe']:.4f} vs {mean_test['random']:.4f}."]
    path = benchlib.write_section("search", "\n".join(lines), args.out)
    benchlib.emit([{"benchmark": "search", "figure": "TPE / random mean best val accuracy",
                    "value": mean["tpe"] / mean["random"], "goal": None, "met": None}], args.json)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
