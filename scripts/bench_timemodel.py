"""Benchmark: how well the training-time model (autocnn.search.timing) predicts seconds per epoch on CPU.

Real searches on digits with the local engine (`run_search`, real training, SQLite, no time budget so
that every sampled candidate trains), one per space: small conv nets at 16 px (the space of the
pruning benchmarks) and autocnn's default space, `efficientnet_compound`, at 32 px. The random
sampler spreads the candidates over each space's cost range. Before training, every trial records the
model's prediction, fitted on the epochs the study had finished by then (`predicted_epoch_s`,
`time_model_epochs`), and afterwards the seconds of each of its epochs: the figure is the median
absolute relative error |predicted - measured| / measured (measured: the mean of the trial's epochs)
over the trials predicted after at least 5 finished epochs. Goal (issue #14): under 25 %.

Baseline, from the same trials: seconds proportional to FLOPs (what pricing by FLOPs alone amounts
to), its factor the median seconds per FLOP of the same earlier epochs the model saw.

    python scripts/bench_timemodel.py --quick --threads 1
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import benchlib

GOAL = 0.25
MIN_EPOCHS = 5
SPACES = {"small conv nets, 16 px": "small", "efficientnet_compound, 32 px": "efficientnet_compound"}


def flops_only_errors(trials, min_epochs: int) -> list[float]:
    """The baseline's errors: seconds = k * FLOPs, k the median seconds per FLOP of the epochs finished
    before each trial started (trials in the order they ran, as the model saw them)."""
    from autocnn.search import records

    errors, seen = [], []
    for t in sorted(trials, key=lambda t: t.datetime_start):
        attrs = t.user_attrs
        seconds, flops = attrs.get(records.EPOCH_SECONDS), attrs.get(records.FLOPS)
        if not seconds or not flops:
            continue
        if len(seen) >= min_epochs:
            k = statistics.median(seen)
            measured = statistics.fmean(seconds)
            errors.append(abs(k * flops - measured) / measured)
        seen.extend(s / flops for s in seconds)
    return errors


def run(space: str, folder: Path, trials: int, epochs: int, limit: int | None) -> dict:
    import optuna

    from autocnn.search import timing
    from autocnn.search.config import SearchConfig
    from autocnn.search.driver import run_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = Path(space).stem
    config = SearchConfig(space=space, dataset="digits", trials=trials, epochs=epochs, sampler="random",
                          pruner="none", seed=0, study=name, limit=limit, device="cpu",
                          storage=f"sqlite:///{folder / f'{name}.db'}")
    started = time.perf_counter()
    study = run_search(config)
    seconds = time.perf_counter() - started
    done = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("epoch_seconds")]
    error, counted = timing.median_error(done, min_epochs=MIN_EPOCHS)
    baseline = flops_only_errors(done, MIN_EPOCHS)
    first = timing.relative_errors(sorted(done, key=lambda t: t.number)[:1])  # the prior alone
    measured = [statistics.fmean(t.user_attrs["epoch_seconds"]) for t in done]
    return {"space": name, "trials": len(done), "epochs": sum(len(t.user_attrs["epoch_seconds"]) for t in done),
            "error": error, "counted": counted, "baseline": statistics.median(baseline) if baseline else None,
            "prior": first[0] if first else None, "fastest": min(measured), "slowest": max(measured),
            "seconds": seconds}


def main(argv: list[str] | None = None) -> list[dict]:
    args = benchlib.parser(__doc__.splitlines()[0]).parse_args(argv)
    benchlib.setup_threads(args.threads)
    trials, epochs, limit = benchlib.by_mode(args.mode, smoke=(4, 2, 100), quick=(12, 2, 400), full=(24, 3, None))
    info, started = benchlib.machine(), time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "small.yaml").write_text(benchlib.small_conv_space("small"))
        for label, space in SPACES.items():  # one after the other: the figures are times
            if args.mode == "smoke" and space != "small":
                continue
            runs.append({"label": label, **run(str(folder / "small.yaml") if space == "small" else space,
                                                  folder, trials, epochs, limit)})

    rows, results, lines = [], [], []
    for r in runs:
        met = None if r["error"] is None else r["error"] < GOAL
        ratio = r["error"] / r["baseline"] if r["error"] is not None and r["baseline"] else None
        rows.append([r["label"], r["trials"], r["epochs"], f"{r['fastest']:.2f}-{r['slowest']:.2f}",
                     f"{r['prior']:.0%}" if r["prior"] is not None else "-",
                     f"**{r['error']:.1%}**" if r["error"] is not None else "-", r["counted"],
                     f"{r['baseline']:.1%}" if r["baseline"] is not None else "-",
                     f"{ratio:.2f}" if ratio is not None else "-", f"{r['seconds']:.0f}", benchlib.verdict(met)])
        results.append({"benchmark": "timemodel", "figure": f"time model median error after {MIN_EPOCHS} epochs, "
                                                            f"{r['space']}",
                        "value": "-" if r["error"] is None else f"{r['error']:.1%}", "goal": f"< {GOAL:.0%}",
                        "met": met, "raw": {k: r[k] for k in ("error", "baseline", "counted", "trials")}})
        if r["error"] is not None:
            lines.append(f"- {r['label']}: median error **{r['error']:.1%}** over {r['counted']} trials "
                         f"(FLOPs-proportional baseline {r['baseline']:.1%}, ratio {ratio:.2f}): "
                         f"{benchlib.verdict(met)}.")
    body = benchlib.header(
        "Training-time model: predicted vs measured seconds per epoch (digits, CPU)", info, started,
        f"{trials} random candidates × {epochs} epochs per space{f' on {limit} training images' if limit else ''}, "
        "local engine, no time budget (every candidate trains), one search after the other; shared machine: "
        "2 cores that other jobs use too, so epoch times carry their load (see the load averages)")
    body += "\n" + benchlib.table(["space", "trained trials", "epochs", "measured s/epoch", "prior's error (trial 0)",
                                   f"median error after {MIN_EPOCHS} epochs", "trials in it",
                                   "FLOPs-only baseline", "model ÷ baseline", "wall s", f"goal < {GOAL:.0%}"], rows)
    body += "\n\n" + "\n".join(lines) + "\n"
    if args.mode == "smoke":
        body += "\n(smoke run: the numbers mean nothing)\n"
    benchlib.write_section("timemodel", body, args.out)
    benchlib.emit(results, args.json)
    return results


if __name__ == "__main__":
    main()
