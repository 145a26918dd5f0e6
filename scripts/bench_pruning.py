"""Benchmark 3: Optuna pruners (median, successive halving) vs none at an equal trial count on digits.

Three searches of the same small space run one after the other with the local engine
(`run_search`, real training, SQLite): pruner `none`, `median` and `sha` (autocnn's registered
settings: no trial is judged before epoch 4). All use the random sampler with the same seed, so
trial k is the same architecture trained with the same seed in every run: the only difference is
the pruner. (ASHA on the Ray backend is `scripts/bench_asha.py`.)

Figures: epochs consumed (sum of `epochs_run` over the trials that count toward the budget), the
best validation accuracy of a fully trained trial and its test accuracy. Goal: the pruned search's
best within 0.5 point of the unpruned one's at <= 40 % of its epochs.

    python scripts/bench_pruning.py --quick
"""
from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import benchlib

EPOCH_GOAL, ACCURACY_GOAL = benchlib.PRUNING_EPOCH_GOAL, benchlib.PRUNING_ACCURACY_GOAL
PRUNERS = ("none", "median", "sha")
SPACE = benchlib.small_conv_space("bench_pruning")


def run(pruner: str, folder: Path, trials: int, epochs: int, limit: int | None, threads: int = 1) -> dict:
    """One search (in a worker process: its own sqlite file, `threads` torch threads)."""
    import optuna
    import torch
    from optuna.trial import TrialState

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    from autocnn.search import records
    from autocnn.search.config import SearchConfig
    from autocnn.search.budget import counts_toward_budget
    from autocnn.search.driver import run_search

    config = SearchConfig(space=str(folder / "space.yaml"), dataset="digits", trials=trials, epochs=epochs,
                          sampler="random", pruner=pruner, seed=0, study=pruner, limit=limit, device="cpu",
                          storage=f"sqlite:///{folder / f'{pruner}.db'}")
    started = time.perf_counter()
    study = run_search(config)
    seconds = time.perf_counter() - started
    counted = [t for t in study.get_trials(deepcopy=False) if counts_toward_budget(t)]
    complete = [t for t in counted if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.values[0])
    return {"pruner": pruner, "trials": len(counted), "complete": len(complete), "pruned": len(counted) - len(complete),
            "epochs": sum(t.user_attrs.get(records.EPOCHS_RUN, 0) for t in counted), "best_val": best.values[0],
            "best_test": best.user_attrs.get(records.TEST_METRIC), "best_trial": best.number, "seconds": seconds}


def main(argv: list[str] | None = None) -> list[dict]:
    args = benchlib.parser(__doc__.splitlines()[0]).parse_args(argv)
    benchlib.setup_threads(args.threads)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials, epochs, limit = benchlib.by_mode(args.mode, smoke=(3, 2, 100), quick=(12, 12, 400), full=(48, 12, None))
    info, started = benchlib.machine(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "space.yaml").write_text(SPACE)
        # The figures are epochs and accuracies, not times, so the three searches run side by side.
        workers = max(1, min(len(PRUNERS), os.cpu_count() or 1))
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {p: pool.submit(run, p, folder, trials, epochs, limit) for p in PRUNERS}
            runs = {p: f.result() for p, f in futures.items()}

    base = runs["none"]
    rows, results, lines = [], [], []
    for name in PRUNERS:
        r = runs[name]
        share = r["epochs"] / base["epochs"]
        gap = base["best_val"] - r["best_val"]
        met = None if name == "none" else (share <= EPOCH_GOAL and gap <= ACCURACY_GOAL)
        rows.append([name, r["trials"], r["complete"], r["pruned"], r["epochs"], f"**{share:.0%}**",
                     f"{r['best_val']:.4f}", f"{-gap * 100:+.2f}", f"{r['best_test']:.4f}", r["best_trial"],
                     f"{r['seconds']:.0f}", benchlib.verdict(met)])
        if name != "none":
            results += [
                {"benchmark": "pruning", "figure": f"{name} epochs ÷ no-pruning epochs", "value": f"{share:.0%}",
                 "goal": f"<= {EPOCH_GOAL:.0%}", "met": share <= EPOCH_GOAL,
                 "raw": {"epochs": r["epochs"], "baseline_epochs": base["epochs"]}},
                {"benchmark": "pruning", "figure": f"no-pruning best - {name} best (val accuracy, points)",
                 "value": f"{gap * 100:.2f}", "goal": f"<= {ACCURACY_GOAL * 100:.1f}", "met": gap <= ACCURACY_GOAL},
            ]
            lines.append(f"- {name}: {share:.0%} of the epochs ({r['epochs']} / {base['epochs']}), best validation "
                         f"accuracy {r['best_val']:.4f} vs {base['best_val']:.4f} ({-gap * 100:+.2f} points): "
                         f"{benchlib.verdict(met)}.")
    body = benchlib.header(
        "3. Search efficiency: Optuna pruning vs none (digits)", info, started,
        f"{trials} trials × {epochs} epochs per run{f' on {limit} training images' if limit else ''}, the runs side by side "
        f"in worker processes (1 torch thread each; wall times overlap), random sampler seed 0 (trial k is the same architecture in every "
        f"run), local engine on CPU; space: 5 dimensions over small conv nets at 16 px (in the script); pruners as "
        f"registered in autocnn.search.engine.PRUNERS (median: 3 startup trials, 3 warm-up epochs; sha: min resource 3, "
        f"reduction factor 4)")
    body += "\n" + benchlib.table(["pruner", "trials", "complete", "pruned", "epochs consumed", "share of epochs",
                                   "best val acc", "vs none (points)", "its test acc", "best trial", "wall s",
                                   f"goal ≤ {EPOCH_GOAL:.0%} epochs, ≤ {ACCURACY_GOAL * 100:.1f} pt"], rows)
    body += "\n\n" + "\n".join(lines) + "\n"
    if args.mode == "smoke":
        body += "\n(smoke run: the numbers mean nothing)\n"
    benchlib.write_section("pruning", body, args.out)
    benchlib.emit(results, args.json)
    return results


if __name__ == "__main__":
    main()
