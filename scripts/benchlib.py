"""Shared helpers of the benchmark scripts: machine description, timing, profiles, BENCHMARKS.md sections.

Every benchmark writes ONE section of a markdown file, between `<!-- bench:NAME -->` and
`<!-- /bench:NAME -->`, and leaves everything else in the file alone (hand-written analysis lives
outside the markers). The file is `--out PATH`, else `$AUTOCNN_BENCH_FILE`, else the repository's
`BENCHMARKS.md`; it is created when missing.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "B.md"
>>> _ = write_section("demo", "first", path); _ = write_section("demo", "second", path)
>>> read_section("demo", path)
'second'
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FILE = ROOT / "BENCHMARKS.md"
FILE_ENV = "AUTOCNN_BENCH_FILE"
PARENT_ENV = "AUTOCNN_BENCH_PARENT"  # set by bench_all.py: the command that ran this benchmark
MODES = ("smoke", "quick", "full")
HEADER = """# autocnn benchmarks

Written by `scripts/bench_*.py` (all of them: `python scripts/bench_all.py --quick`). Each section
between `<!-- bench:NAME -->` markers is rewritten by its script; text outside the markers is kept.
Every figure is a ratio to a baseline measured side by side in the same run, raw numbers beside it.
"""

if str(ROOT) not in sys.path:  # scripts run as `python scripts/bench_x.py` from a checkout
    sys.path.insert(0, str(ROOT))


# -- shared workloads ---------------------------------------------------------------------------------

# Issue #9's search-efficiency goal, shared by the Optuna-pruner and Ray-ASHA benchmarks.
PRUNING_EPOCH_GOAL = 0.40     # at most this share of the unpruned run's epochs
PRUNING_ACCURACY_GOAL = 0.005  # for a best validation accuracy at most this far below it


def small_conv_space(name: str) -> str:
    """A five-dimension space of small conv nets over 16-pixel digits (seconds per trial on a CPU)."""
    return f"""\
name: {name}
description: small conv nets over 16-pixel digits - width, depth, block, kernel and attention searched
base_resolution: 16
params:
  width: {{int: [8, 32], step: 8}}
  depth: {{int: [1, 2]}}
  block: {{choices: [conv, basic]}}
  kernel: {{choices: [3, 5]}}
  attention: {{choices: [none, se, eca]}}
genotype:
  preset: lenet5
  stem: []
  stages:
    - {{block: "${{block}}", out_chs: "${{width}}", repeats: "${{depth}}", kernel: "${{kernel}}", attention: "${{attention}}", ratio: 4.0}}
    - {{block: maxpool, kernel: 2, stride: 2}}
    - {{block: "${{block}}", out_chs: "${{width * 2}}", repeats: "${{depth}}", kernel: 3, attention: "${{attention}}", ratio: 4.0}}
  head: {{pool: avg, hidden: []}}
  act: relu
  norm: batch
"""


# -- BENCHMARKS.md sections --------------------------------------------------------------------------

def bench_file(path: str | os.PathLike | None = None) -> Path:
    """The markdown file results go to: `path`, else $AUTOCNN_BENCH_FILE, else the repo's BENCHMARKS.md."""
    return Path(path or os.environ.get(FILE_ENV) or DEFAULT_FILE)


def _markers(name: str) -> tuple[str, str]:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"section name must be letters, digits, '_', '.' or '-', got {name!r}")
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def write_section(name: str, body: str, path: str | os.PathLike | None = None) -> Path:
    """Replace the text between the `name` markers (appending the section when absent); returns the file."""
    target = bench_file(path)
    start, end = _markers(name)
    text = target.read_text() if target.exists() else HEADER
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(target)  # atomic: a reader never sees half a file
    return target


def read_section(name: str, path: str | os.PathLike | None = None) -> str | None:
    """The body of section `name`, or None when the file or the section is missing."""
    target = bench_file(path)
    if not target.exists():
        return None
    start, end = _markers(name)
    match = re.search(re.escape(start) + r"\n?(.*?)\n?" + re.escape(end), target.read_text(), re.S)
    return match.group(1) if match else None


# -- the machine -------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the figures were measured on (CPU model, cores, threads, versions, GPU, load)."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    try:
        import optuna

        info["optuna"] = optuna.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    else:
        info["gpu"] = None
    return info


def machine_line(info: dict[str, Any] | None = None) -> str:
    m = info or machine()
    gpu = f"{m['gpu']} (CUDA {m.get('cuda')})" if m.get("gpu") else "no GPU"
    return (f"{m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), {gpu}; torch {m['torch']}, "
            f"optuna {m.get('optuna', '-')}, Python {m['python']}; load average at start {m['load_avg_1m']}")


def command_line() -> str:
    """How this script was invoked, relative to the repository root, without bench_all's plumbing
    (`--json PATH`, and `--out PATH` when PATH is the repository's BENCHMARKS.md)."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(ROOT))
    except ValueError:
        shown = str(script)
    args, kept = sys.argv[1:], []
    i = 0
    while i < len(args):
        value = args[i + 1] if i + 1 < len(args) else None
        if args[i] == "--json" or (args[i] == "--out" and value and Path(value).resolve() == DEFAULT_FILE.resolve()):
            i += 2
            continue
        kept.append(args[i])
        i += 1
    return " ".join(["python", shlex.quote(shown), *map(shlex.quote, kept)])


def header(title: str, info: dict[str, Any], started: float, note: str = "") -> str:
    """The first lines of every section: title, command, machine, date and duration."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    parent = os.environ.get(PARENT_ENV)
    command = f"- command: `{command_line()}`" + (f", run by `{parent}`" if parent else "")
    lines = [f"## {title}", "", command, f"- machine: {machine_line(info)}",
             f"- run: {when}, {time.perf_counter() - started:.0f} s; load average at end {os.getloadavg()[0]:.2f}"]
    if note:
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


# -- arguments ---------------------------------------------------------------------------------------

def parser(description: str) -> argparse.ArgumentParser:
    """The options every bench script takes: a mode, the output file and a JSON summary path."""
    p = argparse.ArgumentParser(description=description)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="the CPU sizes of `bench_all.py --quick` (all benchmarks < 10 min on 2 cores)")
    mode.add_argument("--smoke", dest="mode", action="store_const", const="smoke",
                      help="a few steps/trials: checks the script works, the numbers mean nothing")
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="the full sizes (default)")
    p.set_defaults(mode="full")
    p.add_argument("--out", default=None, help=f"markdown file to update (default ${FILE_ENV} or BENCHMARKS.md)")
    p.add_argument("--json", default=None, help="also write the headline figures to this JSON file")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    return p


def setup_threads(threads: int | None) -> None:
    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)


def by_mode(mode: str, smoke: Any, quick: Any, full: Any) -> Any:
    return {"smoke": smoke, "quick": quick, "full": full}[mode]


def emit(results: list[dict[str, Any]], json_path: str | None) -> None:
    """Print the headline figures and, when asked, write them as JSON (bench_all's summary reads it).

    Each result: {"benchmark", "figure", "value", "goal", "met"} (met: True, False or None = no goal).
    """
    for r in results:
        status = {True: "met", False: "NOT met", None: "-"}[r.get("met")]
        print(f"[{r['benchmark']}] {r['figure']}: {r['value']}  (goal {r.get('goal') or '-'}: {status})")
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1))


# -- timing ------------------------------------------------------------------------------------------

@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """`with stopwatch() as t: ...` then `t[0]` is the elapsed seconds."""
    out = [0.0]
    start = time.perf_counter()
    try:
        yield out
    finally:
        out[0] = time.perf_counter() - start


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def interleaved(variants: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[Any]]:
    """Run each variant `warmup` times untimed, then `repeats` rounds A, B, A, B... (rotating the order).

    Each call returns its own figure (e.g. samples/s, or a list of them); interleaving spreads slow
    phases of a shared machine over every variant instead of penalising whichever runs last.
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    results: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            results[name].append(variants[name]())
    return results


def rss_mb() -> float:
    """Current resident set size of this process (MiB)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- profiles ----------------------------------------------------------------------------------------

def cprofile_top(fn: Callable[[], Any], n: int = 12, sort: str = "tottime") -> str:
    """Run `fn` under cProfile; the top `n` functions as a markdown code block."""
    prof = cProfile.Profile()
    prof.enable()
    try:
        fn()
    finally:
        prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(sort)
    stats.print_stats(n)
    text = buf.getvalue()
    start = text.find("   ncalls")
    return "```\n" + (text[start:] if start >= 0 else text).rstrip() + "\n```"


def torch_profile_top(fn: Callable[[], Any], n: int = 12) -> str:
    """Run `fn` under torch.profiler (CPU, plus CUDA when present); top ops by self time, as a code block."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        fn()
    key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=n, max_name_column_width=48)
    return "```\n" + table.rstrip() + "\n```"


# -- markdown ----------------------------------------------------------------------------------------

def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(met: bool | None) -> str:
    return {True: "**met**", False: "**not met**", None: "n/a"}[met]
