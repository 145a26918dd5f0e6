"""Run every benchmark and rewrite their sections of BENCHMARKS.md, plus a summary section.

    python scripts/bench_all.py --quick            # the CPU run (< 10 minutes on 2 cores)
    python scripts/bench_all.py --full             # full sizes (5,000-trial studies, ...)
    python scripts/bench_all.py --smoke --out /tmp/B.md   # seconds: checks every script works

Each benchmark runs in its own process (so timings and peak memory are its own) with the same mode,
output file and thread count; `--inline` runs them in this process instead (the default for
`--smoke`, which then pays the imports once). Benchmarks by other scripts that follow the same
conventions run too when present: `bench_asha.py` (not in `--smoke`); `bench_search.py` only with
`--only search`.
A benchmark that crashes is reported in the summary and makes the exit status 1; a goal that is not
met is a figure, not an error.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import benchlib

CORE = ("trainer", "overhead", "pruning", "memory", "gpu_packing", "data")
EXTRAS = ("asha",)  # benchmark 3 on the Ray backend, another script with the same conventions (not in --smoke)
OPTIONAL = ("search",)  # TPE vs random (another issue's benchmark): only with --only search
ORDER = ("trainer", "overhead", "pruning", "asha", "memory", "gpu_packing", "data", "search")
SCRIPTS = Path(__file__).resolve().parent


def selected(mode: str, only: list[str] | None, skip: list[str]) -> list[str]:
    names = list(CORE) + ([e for e in EXTRAS if (SCRIPTS / f"bench_{e}.py").exists()] if mode != "smoke" else [])
    if only:
        known = CORE + EXTRAS + OPTIONAL
        unknown = [n for n in only if n not in known]
        if unknown:
            raise SystemExit(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(known)}")
        names = [n for n in only if (SCRIPTS / f"bench_{n}.py").exists()]
    return [n for n in ORDER if n in names and n not in skip]


def run_one(name: str, argv: list[str], inline: bool, log: Path) -> tuple[list[dict], str | None, float]:
    """Run bench_NAME with `argv`; returns (its headline results, error or None, seconds)."""
    json_path = log.with_suffix(".json")
    argv = [*argv, "--json", str(json_path)]
    started = time.perf_counter()
    error = None
    if inline:
        saved = sys.argv
        sys.argv = [str(SCRIPTS / f"bench_{name}.py"), *argv]
        try:
            importlib.import_module(f"bench_{name}").main()
        except BaseException as err:  # noqa: BLE001 - one benchmark's crash must not stop the others
            if isinstance(err, KeyboardInterrupt):
                raise
            error = f"{type(err).__name__}: {err}"
            log.write_text(traceback.format_exc())
        finally:
            sys.argv = saved
    else:
        with open(log, "w") as out:
            proc = subprocess.run([sys.executable, str(SCRIPTS / f"bench_{name}.py"), *argv], stdout=out,
                                  stderr=subprocess.STDOUT, cwd=benchlib.ROOT)
        if proc.returncode != 0:
            tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
            error = f"exit {proc.returncode}: {tail[0][:200]} (log {log})"
    results = json.loads(json_path.read_text()) if json_path.exists() else []
    return results, error, time.perf_counter() - started


def summary(info: dict, started: float, runs: dict[str, tuple[list[dict], str | None, float]], mode: str) -> str:
    body = benchlib.header("Summary", info, started, f"mode `{mode}`; benchmarks run in the order below")
    rows = [[name, f"{sec:.0f}", "crashed: " + err if err else "ok"] for name, (_, err, sec) in runs.items()]
    body += "\n" + benchlib.table(["benchmark", "seconds", "status"], rows) + "\n\n"
    figures = [[r["benchmark"], r["figure"], r["value"], r.get("goal") or "-", benchlib.verdict(r.get("met"))]
               for name, (results, _, _) in runs.items() for r in results]
    body += benchlib.table(["benchmark", "figure", "value", "goal", "met"], figures) + "\n"
    return body


def main(argv: list[str] | None = None) -> int:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--only", default=None, help="comma-separated benchmarks to run (default: all)")
    p.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    p.add_argument("--inline", action="store_true", default=None, help="run the benchmarks in this process")
    p.add_argument("--subprocess", dest="inline", action="store_false", help="one process per benchmark")
    args = p.parse_args(argv)
    inline = args.inline if args.inline is not None else args.mode == "smoke"
    out = benchlib.bench_file(args.out)
    os.environ[benchlib.FILE_ENV] = str(out)
    names = selected(args.mode, args.only.split(",") if args.only else None, [s for s in args.skip.split(",") if s])
    benchlib.setup_threads(args.threads)  # for the benchmarks run inline, and for the summary's machine line
    info, started = benchlib.machine(), time.perf_counter()
    os.environ[benchlib.PARENT_ENV] = benchlib.command_line()
    if benchlib.read_section("summary", out) is None:  # first run: keep the summary at the top
        benchlib.write_section("summary", "## Summary\n\n(running)", out)
    bench_argv = [f"--{args.mode}", "--out", str(out)] + (["--threads", str(args.threads)] if args.threads else [])
    logs = Path(tempfile.mkdtemp(prefix="autocnn-bench-"))
    runs: dict[str, tuple[list[dict], str | None, float]] = {}
    for name in names:
        print(f"== bench_{name} ({args.mode}) ...", flush=True)
        runs[name] = run_one(name, bench_argv, inline, logs / f"{name}.log")
        results, error, seconds = runs[name]
        print(f"== bench_{name}: {'CRASHED ' + error if error else 'ok'} in {seconds:.0f} s", flush=True)
    os.environ.pop(benchlib.PARENT_ENV, None)
    benchlib.write_section("summary", summary(info, started, runs, args.mode), out)
    total = time.perf_counter() - started
    print(f"wrote {out} in {total:.0f} s (logs in {logs})")
    return 1 if any(err for _, err, _ in runs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
