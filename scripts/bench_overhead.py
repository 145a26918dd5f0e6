"""Benchmark 2: autocnn's per-trial framework overhead ÷ bare Optuna, as a study grows.

autocnn: the real engine (`create_study` + `TrialContext` + `drive`) on the digits defaults
(efficientnet_compound space, TPE, median pruner, SQLite through `autocnn.storage.open_storage`)
with a zero-epoch budget (`evaluate_trial(train=False)`): sample, genotype, cost model (params and
FLOPs on the meta device, measured latency of the built model), storage writes, engine callbacks.
Bare Optuna: the same TPE settings on the same kind of storage (`open_storage` without the
heartbeat autocnn adds: same WAL journal and busy timeout), the same dimensions define-by-run
(each trial suggests the space's dimensions, the conditional ones only under their branch), and an
objective that returns a constant. Both run in this process one after the other.

Per-trial time is the interval between consecutive objective calls (ask + objective + tell +
callbacks, everything the study loop does). Optuna's own cost is measured by wrapping the sampler
and the storage of each study; "autocnn's own share" is what remains (space, genotype, build, cost
model, engine bookkeeping). Time per trial is reported over a window ending at each size (the last
10 % of trials before it), so it shows how the cost grows with the study.

    python scripts/bench_overhead.py --quick           # 100 and 1,000 trials
    AUTOCNN_BENCH_PG_URL=postgresql://... python scripts/bench_overhead.py --quick   # plus PostgreSQL
"""
from __future__ import annotations

import contextlib
import gc
import os
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable
from unittest import mock

import benchlib

RATIO_GOAL = 1.2
OWN_GOAL_MS = 50.0
PG_ENV = "AUTOCNN_BENCH_PG_URL"
SAMPLER_METHODS = ("infer_relative_search_space", "sample_relative", "sample_independent", "before_trial",
                   "after_trial")
HEARTBEAT_METHODS = ("record_heartbeat", "get_stale_trial_ids", "get_heartbeat_interval", "get_failed_trial_callback")


class Meter:
    """Exclusive main-thread time of wrapped calls, by key.

    A call's time excludes the wrapped calls nested in it (so storage writes made while the space
    samples count as storage), except under an `absorb` key: the sampler keeps the trials it reads.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._local = threading.local()

    def wrap(self, obj: Any, names, category: Callable[[str], str], absorb: bool = False) -> None:
        for name in names:
            original = getattr(obj, name, None)
            if callable(original):
                setattr(obj, name, self.timed(original, category(name), absorb))

    def timed(self, fn: Callable, key: str, absorb: bool = False) -> Callable:
        local, main = self._local, threading.main_thread()

        def wrapper(*args, **kwargs):
            stack = getattr(local, "stack", None)
            if stack is None:
                stack = local.stack = []
            if threading.current_thread() is not main or (stack and stack[-1][2]):
                return fn(*args, **kwargs)
            frame = [key, 0.0, absorb]  # key, time in nested wrapped calls, absorb
            stack.append(frame)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                stack.pop()
                self.seconds[key] += elapsed - frame[1]
                if stack:
                    stack[-1][1] += elapsed

        return wrapper

    def snapshot(self) -> dict[str, float]:
        return dict(self.seconds)


def instrument(study, meter: Meter) -> None:
    """Time the study's sampler (including the trials it reads) and its storage calls."""
    meter.wrap(study.sampler, SAMPLER_METHODS, lambda name: "sampler", absorb=True)
    storage = study._storage
    names = [n for n in dir(storage) if not n.startswith("_")] + list(HEARTBEAT_METHODS)
    meter.wrap(storage, sorted(set(names)), lambda name: f"storage.{name}")


class TrialClock:
    """Records, per trial, the objective's start time and the meter's totals at that moment."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.starts: list[float] = []
        self.marks: list[dict[str, float]] = []

    @property
    def trials(self) -> int:
        return max(0, len(self.starts) - 1)

    def tick(self) -> None:
        self.starts.append(time.perf_counter())
        self.marks.append(self.meter.snapshot())

    def window(self, lo: int, hi: int) -> dict[str, float]:
        """Mean ms per trial over trials [lo, hi): total and per meter key."""
        hi = min(hi, self.trials)
        n = hi - lo
        if n <= 0:
            return {"total": float("nan")}
        out = {"total": 1e3 * (self.starts[hi] - self.starts[lo]) / n}
        a, b = self.marks[lo], self.marks[hi]
        for key in b:
            out[key] = 1e3 * (b[key] - a.get(key, 0.0)) / n
        return out


def split(w: dict[str, float]) -> dict[str, float]:
    """total, sampler, storage (all storage calls outside the sampler), own (the rest), own.* pieces."""
    sampler = w.get("sampler", 0.0)
    storage = sum(v for k, v in w.items() if k.startswith("storage."))
    out = {"total": w["total"], "sampler": sampler, "storage": storage, "own": w["total"] - sampler - storage}
    out.update({k: v for k, v in w.items() if k.startswith("own.")})
    return out


# -- the two runs ------------------------------------------------------------------------------------

def bare_objective(space) -> Callable:
    """Suggest the space's dimensions define-by-run; `a.V.x` only when categorical `a.K` took value V."""
    dims = space.dimensions()
    names = list(dims)
    conditions: dict[str, tuple[str, str]] = {}
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) - 1):
            prefix, value = ".".join(parts[:i]), parts[i]
            for parent in names:
                if parent != name and parent.rpartition(".")[0] == prefix and any(
                        str(c) == value for c in getattr(dims[parent], "choices", ())):
                    conditions[name] = (parent, value)
    order = sorted(names, key=lambda n: (n in conditions, names.index(n)))  # parents before their branches

    def objective(trial) -> float:
        values: dict[str, Any] = {}
        for name in order:
            cond = conditions.get(name)
            if cond is not None and str(values.get(cond[0])) != cond[1]:
                continue
            values[name] = dims[name].suggest(trial, name)
        return 0.0

    return objective


def run_bare(url: str, space, n_trials: int, seed: int, name: str, timeout: float | None) -> tuple[TrialClock, float]:
    import optuna

    from autocnn.search.engine import SAMPLERS
    from autocnn.storage import open_storage

    storage = open_storage(url, heartbeat=False)  # the same SQLite settings (WAL, busy timeout); no heartbeat
    study = optuna.create_study(study_name=name, storage=storage, sampler=SAMPLERS.get("tpe")(seed, False),
                                direction="maximize")
    meter = Meter()
    instrument(study, meter)
    clock = TrialClock(meter)
    objective = bare_objective(space)

    def timed(trial):
        clock.tick()
        return objective(trial)

    study.optimize(timed, n_trials=n_trials, timeout=timeout)
    clock.tick()
    trials = study.get_trials(deepcopy=False)
    return clock, sum(len(t.params) for t in trials) / max(1, len(trials))


OWN_PIECES = {"genotype_costs": "own.cost model (meta)", "build_model": "own.build model",
              "measure_latency": "own.latency"}


def run_autocnn(url: str, n_trials: int, seed: int, name: str, timeout: float | None) -> tuple[TrialClock, float]:
    from autocnn.search import engine
    from autocnn.search.config import SearchConfig

    config = SearchConfig(trials=n_trials, storage=url, study=name, seed=seed, timeout=timeout)  # digits defaults
    study, config = engine.create_study(config)
    ctx = engine.TrialContext.create(config)
    meter = Meter()
    instrument(study, meter)
    ctx.space.sample = meter.timed(ctx.space.sample, "own.space sample")
    clock = TrialClock(meter)
    original = engine.evaluate_trial

    def zero_epochs(trial, ctx, **kwargs):
        clock.tick()
        return original(trial, ctx, train=False, **kwargs)

    patches = [mock.patch.object(engine, "evaluate_trial", zero_epochs)]
    patches += [mock.patch.object(engine, fn, meter.timed(getattr(engine, fn), key)) for fn, key in OWN_PIECES.items()]
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        engine.drive(study, ctx)
    clock.tick()
    trials = study.get_trials(deepcopy=False)
    return clock, sum(len(t.params) for t in trials) / max(1, len(trials))


def profile_autocnn(url: str, n_trials: int, seed: int) -> str:
    """cProfile of a short zero-epoch autocnn run (what the own share is made of)."""
    return benchlib.cprofile_top(lambda: run_autocnn(url, n_trials, seed, "profile", None), n=15, sort="tottime")


# -- report ------------------------------------------------------------------------------------------

def compare(backend: str, url_for: Callable[[str], str], space, sizes: list[int], seed: int,
            cap: float | None, tag: str = "") -> tuple[list, list, dict]:
    """Bare Optuna then autocnn, each up to max(sizes) trials or `cap` seconds; autocnn runs as many as bare did."""
    gc.collect()
    bare, bare_dims = run_bare(url_for("bare"), space, max(sizes), seed, f"bare{tag}", cap)
    gc.collect()
    ours, our_dims = run_autocnn(url_for("autocnn"), max(1, bare.trials), seed, f"autocnn{tag}", cap)
    reached = min(bare.trials, ours.trials)
    shown = [s for s in sizes if s <= reached]
    if reached < max(sizes) and reached not in shown:
        shown.append(reached)
    rows, results, growth = [], [], []
    for size in shown:
        lo = max(0, size - max(1, size // 10))
        b, a = split(bare.window(lo, size)), split(ours.window(lo, size))
        ratio = a["total"] / b["total"]
        label = f"{size:,}" + ("" if size in sizes else " (cap)")
        rows.append([backend, label, f"{lo + 1}–{size}", f"{b['total']:.1f}", f"{a['total']:.1f}",
                     f"**{ratio:.2f}×**", f"{b['sampler']:.1f}", f"{a['sampler']:.1f}", f"{b['storage']:.1f}",
                     f"{a['storage']:.1f}", f"{a['own']:.1f}"])
        results.append({"benchmark": "overhead", "figure": f"autocnn ÷ bare Optuna per trial at {size:,} ({backend})",
                        "value": round(ratio, 2), "goal": f"<= {RATIO_GOAL}", "met": ratio <= RATIO_GOAL,
                        "raw": {"bare_ms": round(b["total"], 1), "autocnn_ms": round(a["total"], 1)}})
        results.append({"benchmark": "overhead", "figure": f"autocnn own share per trial at {size:,} ({backend})",
                        "value": f"{a['own']:.1f} ms", "goal": f"< {OWN_GOAL_MS:.0f} ms",
                        "met": a["own"] < OWN_GOAL_MS})
        growth.append((size, b["sampler"], a["sampler"]))
    info = dict(bare_dims=bare_dims, our_dims=our_dims, whole_b=split(bare.window(0, reached)),
                whole_a=split(ours.window(0, reached)), growth=growth, reached=reached,
                first_b=split(bare.window(0, min(reached, 10))))
    return rows, results, info


def sizes_for(mode: str) -> list[int]:
    return benchlib.by_mode(mode, [5, 10], [100, 1000], [100, 1000, 5000])


def main(argv: list[str] | None = None) -> list[dict]:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default=None, help="comma-separated study sizes (default by mode)")
    p.add_argument("--cap", type=float, default=None,
                   help="seconds each study may run before it stops short of the largest size (default by mode)")
    args = p.parse_args(argv)
    benchlib.setup_threads(args.threads)
    import optuna

    from autocnn.spaces import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    info = benchlib.machine()
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else sizes_for(args.mode)
    cap = args.cap if args.cap is not None else benchlib.by_mode(args.mode, 60.0, 120.0, 3600.0)
    space = load_space("efficientnet_compound")
    seed = 0
    tmp = Path(tempfile.mkdtemp(prefix="autocnn-bench-overhead-"))
    backends: list[tuple[str, Callable[[str], str]]] = [("sqlite", lambda name: f"sqlite:///{tmp / name}.db")]
    pg = os.environ.get(PG_ENV)
    if pg:
        backends.append(("postgresql", lambda name: pg))
    all_rows, results, notes = [], [], []
    for backend, url_for in backends:
        tag = f"-{int(time.time())}" if backend == "postgresql" else ""  # a server keeps old studies
        rows, res, extra = compare(backend, url_for, space, sizes, seed, cap, tag)
        all_rows += rows
        results += res
        b, a, n = extra["whole_b"], extra["whole_a"], extra["reached"]
        pieces = ", ".join(f"{k[4:]} {v:.1f}" for k, v in a.items() if k.startswith("own."))
        rest = a["own"] - sum(v for k, v in a.items() if k.startswith("own."))
        growth = "; ".join(f"at {s:,}: bare {bs:.1f} ms, autocnn {as_:.1f} ms" for s, bs, as_ in extra["growth"])
        if n < max(sizes):
            notes.append(f"- **Scaled down ({backend})**: the studies stopped at {n:,} trials, short of {max(sizes):,}, "
                         f"because each may run only {cap:.0f} s (`--cap`) to keep `bench_all.py --quick` under 10 "
                         f"minutes at this machine's load; `--full` (or `--cap 3600`) runs every size.")
        notes.append(
            f"- {backend}, whole study ({n:,} trials): bare {b['total']:.1f} ms/trial (TPE {b['sampler']:.1f}, "
            f"storage {b['storage']:.1f}, objective + study loop {b['own']:.1f}); autocnn {a['total']:.1f} ms/trial "
            f"(TPE {a['sampler']:.1f}, storage {a['storage']:.1f}, own {a['own']:.1f} = {pieces}, "
            f"engine loop, callbacks and gc {rest:.1f}). Dimensions per trial: bare {extra['bare_dims']:.1f}, "
            f"autocnn {extra['our_dims']:.1f}.")
        notes.append(f"- {backend}, TPE sampling time per trial (incl. the trials it reads): first 10 trials "
                     f"{extra['first_b']['sampler']:.1f} ms (bare); {growth}.")
    if not pg:
        notes.append(f"- PostgreSQL: skipped, no server reachable here (set {PG_ENV}=postgresql://... to include it).")

    missed = [r for r in results if r["met"] is False]
    profile = ""
    if missed and args.mode != "smoke":
        n_prof = benchlib.by_mode(args.mode, 3, 10, 40)
        profile = (f"\nGoal missed — cProfile of {n_prof} zero-epoch autocnn trials (top 15 by own time):\n\n"
                   + profile_autocnn(f"sqlite:///{tmp / 'profile'}.db", n_prof, seed + 1) + "\n")

    headers = ["storage", "trials", "window", "bare ms/trial", "autocnn ms/trial", f"ratio (goal ≤ {RATIO_GOAL})",
               "bare TPE ms", "autocnn TPE ms", "bare storage ms", "autocnn storage ms",
               f"autocnn own ms (goal < {OWN_GOAL_MS:.0f})"]
    body = benchlib.header(
        "2. Per-trial framework overhead vs bare Optuna", info, started,
        f"one study per side (bare first, then autocnn), digits defaults, zero-epoch budget; per-trial figures are "
        f"means over the window of trials ending at each size; sizes {', '.join(f'{s:,}' for s in sizes)}, "
        f"cap {cap:.0f} s per study")
    body += "\n" + benchlib.table(headers, all_rows) + "\n\n" + "\n".join(notes) + "\n" + profile
    benchlib.write_section("overhead", body, args.out)
    benchlib.emit(results, args.json)
    return results


if __name__ == "__main__":
    main()
