"""Benchmark 4: memory across a search — resident set size (and CUDA memory) per trial must stay flat.

A 100-trial search with real training (small space on digits, local engine, SQLite) records this
process's RSS (and, on a GPU, the allocated and peak CUDA memory) after every trial. The baseline is
the same process after the first trials (allocator pools, kernels and caches warmed up); the figure
is RSS at the last trial ÷ RSS at that warm-up point, plus the least-squares growth per trial over
the rest. Bare Optuna's growth for the same number of trials (same storage kind, trivial objective)
is measured first in the same process as a reference: Optuna keeps every finished trial in memory,
so some growth per trial is the floor.

    python scripts/bench_memory.py --quick
"""
from __future__ import annotations

import ctypes
import sys
import tempfile
import time
from pathlib import Path

import benchlib
from bench_pruning import SPACE

GOAL_RATIO = 1.05  # RSS at the last trial within 5 % of RSS after the warm-up trials


class RssProbe:
    """A `drive` progress reporter that samples memory after every trial."""

    def __init__(self) -> None:
        self.rss: list[float] = []
        self.blocks: list[int] = []  # Python objects' memory blocks (pymalloc), a cheap view of the Python heap
        self.cuda: list[tuple[float, float]] = []

    def start(self, study, config) -> None:
        pass

    def on_epoch(self, number: int, report) -> None:
        pass

    def on_trial_end(self, study, trial) -> None:
        self.rss.append(benchlib.rss_mb())
        self.blocks.append(sys.getallocatedblocks())
        import torch

        if torch.cuda.is_available():
            self.cuda.append((torch.cuda.memory_allocated() / 2**20, torch.cuda.max_memory_allocated() / 2**20))

    def stop(self, study) -> None:
        pass


def slope(values: list[float]) -> float:
    """Least-squares growth per step (same unit as `values`)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    return num / sum((i - mean_x) ** 2 for i in range(n))


def malloc_trim_rss() -> float | None:
    """RSS after glibc hands its free heap pages back (None where there is no glibc)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return None
    return benchlib.rss_mb()


def bare_growth(folder: Path, trials: int) -> list[float]:
    import optuna

    from autocnn.storage import open_storage

    study = optuna.create_study(study_name="bare", storage=open_storage(f"sqlite:///{folder / 'bare.db'}",
                                                                          heartbeat=False),
                                sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    rss: list[float] = []

    def objective(trial) -> float:
        for name in ("width", "depth", "block", "kernel", "attention"):
            trial.suggest_categorical(name, [1, 2, 3])
        return 0.0

    study.optimize(objective, n_trials=trials, callbacks=[lambda s, t: rss.append(benchlib.rss_mb())])
    return rss


def main(argv: list[str] | None = None) -> list[dict]:
    args = benchlib.parser(__doc__.splitlines()[0]).parse_args(argv)
    benchlib.setup_threads(args.threads)
    import optuna
    import torch

    from autocnn.search.config import SearchConfig
    from autocnn.search.driver import drive
    from autocnn.search.engine import create_study, TrialContext

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials, epochs, limit = benchlib.by_mode(args.mode, smoke=(4, 1, 100), quick=(100, 1, 300), full=(100, 3, None))
    warm = max(1, trials // 10)
    info, started = benchlib.machine(), time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "space.yaml").write_text(SPACE)
        bare = bare_growth(folder, trials)
        config = SearchConfig(space=str(folder / "space.yaml"), dataset="digits", trials=trials, epochs=epochs,
                              sampler="tpe", pruner="none", seed=0, study="memory", limit=limit, device=device,
                              storage=f"sqlite:///{folder / 'studies.db'}")
        study, config = create_study(config)
        probe = RssProbe()
        drive(study, TrialContext.create(config), progress=probe)
        n_done = len(probe.rss)
        trimmed = malloc_trim_rss()

    rss = probe.rss
    base, last = rss[warm - 1], rss[-1]
    ratio = last / base
    growth_kb = 1024 * slope(rss[warm - 1:])
    bare_kb = 1024 * slope(bare[warm - 1:])
    met = ratio <= GOAL_RATIO
    checkpoints = sorted({warm, max(warm, n_done // 2), n_done})
    rows = [[f"after trial {i}", f"{rss[i - 1]:.1f}", f"{rss[i - 1] / base:.3f}"] for i in checkpoints]
    results = [
        {"benchmark": "memory", "figure": f"RSS after trial {n_done} ÷ after trial {warm}", "value": round(ratio, 3),
         "goal": f"<= {GOAL_RATIO}", "met": met, "raw": {"rss_mb_warm": round(base, 1), "rss_mb_last": round(last, 1)}},
        {"benchmark": "memory", "figure": "RSS growth per trial after warm-up (KiB), bare Optuna beside it",
         "value": f"{growth_kb:.0f} vs {bare_kb:.0f}", "goal": None, "met": None},
    ]
    notes = [f"- peak RSS of the whole run (VmHWM, including the bare Optuna study and imports): "
             f"{benchlib.peak_rss_mb():.0f} MiB",
             f"- growth per trial after trial {warm} (least squares): autocnn {growth_kb:.0f} KiB; bare Optuna with the "
             f"same number of trials and storage kind: {bare_kb:.0f} KiB (Optuna caches every finished trial)",
             f"- Python heap: {slope(probe.blocks[warm - 1:]):.0f} allocated blocks per trial after trial {warm} "
             f"({probe.blocks[warm - 1]:,} → {probe.blocks[-1]:,}); the rest of the RSS growth is native memory "
             f"(allocator, oneDNN's primitive cache, fragmentation)"]
    if trimmed is not None:
        notes.append(f"- RSS after `malloc_trim(0)` at the end: {trimmed:.1f} MiB, i.e. {last - trimmed:.1f} MiB of the "
                     f"last trial's RSS was freed heap glibc had kept, not live memory")
    if probe.cuda:
        alloc = [a for a, _ in probe.cuda]
        peak = [p for _, p in probe.cuda]
        notes.append(f"- CUDA memory allocated after trials {warm} / {n_done}: {alloc[warm - 1]:.1f} / {alloc[-1]:.1f} "
                     f"MiB; peak allocated {max(peak):.1f} MiB")
        results.append({"benchmark": "memory", "figure": "CUDA allocated after last trial ÷ after warm-up",
                        "value": round(alloc[-1] / max(alloc[warm - 1], 1e-9), 3), "goal": f"<= {GOAL_RATIO}",
                        "met": alloc[-1] <= GOAL_RATIO * max(alloc[warm - 1], 1e-9)})
    else:
        notes.append("- no GPU on this machine: peak CUDA memory is recorded when CUDA is present")
    body = benchlib.header(
        "4. Memory across a search", info, started,
        f"{n_done}-trial search with training ({epochs} epoch(s) each, digits{f' limited to {limit} images' if limit else ''}, "
        f"TPE, device {device}), RSS sampled after every trial; baseline = after trial {warm}")
    body += "\n" + benchlib.table(["point", "RSS MiB", f"÷ trial {warm} (goal last ≤ {GOAL_RATIO})"], rows)
    body += f"\n\nRSS after the last trial ÷ after trial {warm}: **{ratio:.3f}** — {benchlib.verdict(met)}\n\n"
    body += "\n".join(notes) + "\n"
    benchlib.write_section("memory", body, args.out)
    benchlib.emit(results, args.json)
    return results


if __name__ == "__main__":
    main()
