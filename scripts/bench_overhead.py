"""Benchmark 2: autocnn's per-trial framework overhead ÷ bare Optuna, as a study grows.

autocnn: the real engine (`create_study` + `TrialContext` + `drive`) on the digits defaults
(efficientnet_compound space, TPE, median pruner, SQLite through `autocnn.storage.open_storage`)
with a zero-epoch budget (`evaluate_trial(train=False)`): sample, genotype, cost model (params and
FLOPs on the meta device; latency is measured only for a latency objective or limit, which the
defaults have not), storage writes, engine callbacks. A candidate gets its weights when training
starts (`engine.weights_for`), which a zero-epoch budget never reaches: initialising a network is
part of training it, under any framework.
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
import shutil
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
    """Per trial: the objective's start time and the meter's totals then; chunks are runs of the study loop.

    A trial's time is the interval to the next trial's start in the same chunk (ask + objective +
    tell + callbacks + the loop); the last trial of a chunk has none, so chunk boundaries (and what
    the engine does once per `drive` call) never count.
    """

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.ticks: list[tuple[float, dict[str, float]]] = []
        self.chunk_of: list[int] = []
        self.chunk = 0
        self.seconds = 0.0  # wall time spent in the study loop, all chunks

    @property
    def trials(self) -> int:
        return len(self.ticks)

    def tick(self) -> None:
        self.ticks.append((time.perf_counter(), self.meter.snapshot()))
        self.chunk_of.append(self.chunk)

    def run_chunk(self, fn: Callable[[], None]) -> None:
        start = time.perf_counter()
        fn()
        self.seconds += time.perf_counter() - start
        self.chunk += 1

    def window(self, lo: int, hi: int) -> dict[str, float]:
        """Mean ms per trial over the measurable trials in [lo, hi): total and per meter key."""
        sums: dict[str, float] = defaultdict(float)
        n = 0
        for i in range(lo, min(hi, self.trials - 1)):
            if self.chunk_of[i] != self.chunk_of[i + 1]:
                continue
            (t0, a), (t1, b) = self.ticks[i], self.ticks[i + 1]
            sums["total"] += t1 - t0
            for key in b:
                sums[key] += b[key] - a.get(key, 0.0)
            n += 1
        if not n:
            return {"total": float("nan")}
        return {key: 1e3 * value / n for key, value in sums.items()}


def split(w: dict[str, float]) -> dict[str, float]:
    """total, sampler, storage (all storage calls outside the sampler), own (the rest), own.* pieces."""
    sampler = w.get("sampler", 0.0)
    storage = sum(v for k, v in w.items() if k.startswith("storage."))
    out = {"total": w["total"], "sampler": sampler, "storage": storage, "own": w["total"] - sampler - storage}
    out.update({k: v for k, v in w.items() if k.startswith("own.")})
    return out


# -- the two sides ----------------------------------------------------------------------------------

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


class BareSide:
    """Bare Optuna: the same TPE settings and storage kind, the space's dimensions, a constant objective."""

    label = "bare"

    def __init__(self, url: str, space, seed: int, name: str) -> None:
        import optuna

        from autocnn.search.engine import SAMPLERS
        from autocnn.storage import open_storage

        storage = open_storage(url, heartbeat=False)  # the same SQLite settings (WAL, busy timeout); no heartbeat
        self.study = optuna.create_study(study_name=name, storage=storage, sampler=SAMPLERS.get("tpe")(seed, False),
                                         direction="maximize")
        self.meter = Meter()
        instrument(self.study, self.meter)
        self.clock = TrialClock(self.meter)
        self.objective = bare_objective(space)

    def _timed(self, trial) -> float:
        self.clock.tick()
        return self.objective(trial)

    def run(self, n: int) -> None:
        self.clock.run_chunk(lambda: self.study.optimize(self._timed, n_trials=n))

    def dims(self) -> float:
        trials = self.study.get_trials(deepcopy=False)
        return sum(len(t.params) for t in trials) / max(1, len(trials))


OWN_PIECES = {"meta_model": "own.build model (meta)", "count_meta_work": "own.cost model (meta FLOPs, activations)",
              "materialize": "own.materialize weights", "measure_latency_ms": "own.latency (real forwards)"}


class AutocnnSide:
    """autocnn's engine on the digits defaults, `drive` with a zero-epoch budget, `n` more trials per chunk."""

    label = "autocnn"

    def __init__(self, url: str, seed: int, name: str) -> None:
        from autocnn.search import driver, engine
        from autocnn.search.config import SearchConfig

        self.engine, self.driver = engine, driver
        config = SearchConfig(trials=1, storage=url, study=name, seed=seed)  # the digits defaults otherwise
        self.study, config = engine.create_study(config)
        self.ctx = engine.TrialContext.create(config)
        self.meter = Meter()
        instrument(self.study, self.meter)
        self.ctx.space.sample = self.meter.timed(self.ctx.space.sample, "own.space sample")
        self.clock = TrialClock(self.meter)
        self.finished = 0

    def run(self, n: int) -> None:
        engine, original = self.engine, self.engine.evaluate_trial

        def zero_epochs(trial, ctx, **kwargs):
            self.clock.tick()
            return original(trial, ctx, train=False, **kwargs)

        self.finished += n
        self.ctx.config = self.ctx.config.replace(trials=self.finished)  # drive runs to this many finished trials
        with contextlib.ExitStack() as stack:
            stack.enter_context(mock.patch.object(engine, "evaluate_trial", zero_epochs))
            for fn, key in OWN_PIECES.items():
                stack.enter_context(mock.patch.object(engine, fn, self.meter.timed(getattr(engine, fn), key)))
            stack.enter_context(mock.patch.object(gc, "collect", self.meter.timed(gc.collect, "own.gc after trial")))
            self.clock.run_chunk(lambda: self.driver.drive(self.study, self.ctx))

    def dims(self) -> float:
        trials = self.study.get_trials(deepcopy=False)
        return sum(len(t.params) for t in trials) / max(1, len(trials))

    def rejected(self) -> int:
        from autocnn.search import records

        return sum(records.REJECTED in t.user_attrs for t in self.study.get_trials(deepcopy=False))


def profile_autocnn(url: str, n_trials: int, seed: int) -> str:
    """cProfile of a short zero-epoch autocnn run (what the own share is made of)."""
    def go() -> None:
        side = AutocnnSide(url, seed, "profile")
        side.run(n_trials)

    return benchlib.cprofile_top(go, n=15, sort="tottime")


# -- report ------------------------------------------------------------------------------------------

def compare(backend: str, url_for: Callable[[str], str], space, sizes: list[int], seed: int,
            cap: float, chunk: int, tag: str = "") -> tuple[list, list, dict]:
    """Grow both studies in alternating chunks until max(sizes) trials, or until either has run `cap` seconds."""
    bare = BareSide(url_for("bare"), space, seed, f"bare{tag}")
    ours = AutocnnSide(url_for("autocnn"), seed, f"autocnn{tag}")
    target = max(sizes)
    while min(bare.clock.trials, ours.clock.trials) < target and max(bare.clock.seconds, ours.clock.seconds) < cap:
        for side in (bare, ours):
            side.run(min(chunk, target - side.clock.trials) if side is bare else chunk)
    reached = min(bare.clock.trials, ours.clock.trials)
    shown = [s for s in sizes if s <= reached]
    if reached < target and reached not in shown:
        shown.append(reached)
    rows, results, growth = [], [], []
    for size in shown:
        lo = max(0, size - max(10, size // 10))
        b, a = split(bare.clock.window(lo, size)), split(ours.clock.window(lo, size))
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
    info = dict(bare_dims=bare.dims(), our_dims=ours.dims(), whole_b=split(bare.clock.window(0, reached)),
                whole_a=split(ours.clock.window(0, reached)), growth=growth, reached=reached,
                first_b=split(bare.clock.window(0, min(reached, 10))), rejected=ours.rejected(),
                storage_b=bare.clock.window(0, reached), storage_a=ours.clock.window(0, reached))
    return rows, results, info


def top_storage(window: dict[str, float], n: int = 4) -> str:
    items = sorted(((k[len("storage."):], v) for k, v in window.items() if k.startswith("storage.")),
                   key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} {v:.1f}" for k, v in items)


def sizes_for(mode: str) -> list[int]:
    return benchlib.by_mode(mode, [5, 10], [100, 1000], [100, 1000, 5000])


def main(argv: list[str] | None = None) -> list[dict]:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default=None, help="comma-separated study sizes (default by mode)")
    p.add_argument("--cap", type=float, default=None,
                   help="seconds each study may run before it stops short of the largest size (default by mode)")
    p.add_argument("--chunk", type=int, default=None, help="trials per alternation between the two studies")
    p.add_argument("--section", default="overhead", help="BENCHMARKS.md section to write (keep a long run beside "
                                                          "the quick one, e.g. overhead-1000)")
    args = p.parse_args(argv)
    benchlib.setup_threads(args.threads)
    import optuna

    from autocnn.spaces import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    info = benchlib.machine()
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else sizes_for(args.mode)
    cap = args.cap if args.cap is not None else benchlib.by_mode(args.mode, 60.0, 55.0, 3600.0)
    chunk = args.chunk or benchlib.by_mode(args.mode, 5, 25, 100)
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
        rows, res, extra = compare(backend, url_for, space, sizes, seed, cap, chunk, tag)
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
            f"autocnn {extra['our_dims']:.1f}; {extra['rejected']} of autocnn's trials were rejected by the space's "
            f"max_params before any weight was built.")
        notes.append(f"- {backend}, largest storage calls (ms/trial): bare {top_storage(extra['storage_b'])}; "
                     f"autocnn {top_storage(extra['storage_a'])}.")
        notes.append(f"- {backend}, TPE sampling time per trial (incl. the trials it reads): first 10 trials "
                     f"{extra['first_b']['sampler']:.1f} ms (bare); {growth}.")
    if not pg:
        notes.append(f"- PostgreSQL: skipped, no server reachable here (set {PG_ENV}=postgresql://... to include it).")

    missed = [r for r in results if r["met"] is False]
    profile = ""
    if missed and args.mode != "smoke":
        n_prof = benchlib.by_mode(args.mode, 3, 8, 40)
        profile = (f"\nGoal missed — cProfile of {n_prof} zero-epoch autocnn trials (top 15 by own time):\n\n"
                   + profile_autocnn(f"sqlite:///{tmp / 'profile'}.db", n_prof, seed + 1) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)  # the studies' databases: only their figures are kept

    headers = ["storage", "trials", "window", "bare ms/trial", "autocnn ms/trial", f"ratio (goal ≤ {RATIO_GOAL})",
               "bare TPE ms", "autocnn TPE ms", "bare storage ms", "autocnn storage ms",
               f"autocnn own ms (goal < {OWN_GOAL_MS:.0f})"]
    body = benchlib.header(
        "2. Per-trial framework overhead vs bare Optuna", info, started,
        f"one study per side grown in alternating chunks of {chunk} trials (bare, autocnn, bare, ...) so both see the "
        f"same machine load; digits defaults, zero-epoch budget; per-trial figures are means over the window of "
        f"trials ending at each size; sizes {', '.join(f'{s:,}' for s in sizes)}, cap {cap:.0f} s of study time "
        f"per side")
    body += "\n" + benchlib.table(headers, all_rows) + "\n\n" + "\n".join(notes) + "\n" + profile
    benchlib.write_section(args.section, body, args.out)
    benchlib.emit(results, args.json)
    return results


if __name__ == "__main__":
    main()
