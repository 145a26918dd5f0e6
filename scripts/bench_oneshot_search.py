"""Search at equal wall time: one-shot, proxy-prescreened TPE, full-training TPE and random search on digits.

Every method is the real CLI in its own process at one torch thread, over the same space, given the same
wall-clock budget B:
- oneshot: `autocnn supernet train` (`--supernet-epochs`, the recipe below), then
  `autocnn search --strategy oneshot --supernet NAME --timeout (B - the supernet's time)`;
- prescreen: `autocnn search --timeout B --prescreen PROXY:K` (TPE; a proxy scores K candidates per training);
- tpe: `autocnn search --timeout B` (the defaults a user gets: TPE, successive halving under a time budget);
- random: the same with `--sampler random`.

Each method's winner (`autocnn best --json`: the best trial by its own evaluation, one-shot estimate or
trained validation) is then retrained from scratch with the same recipe and seeds (the search's standard
recipe, `engine.train_config_for`) and its test accuracy and parameters compared. A one-shot search values
accuracy alone, so its winner may be larger than TPE's; "oneshot_sized" asks the question of the acceptance
directly: the same supernet searched again (in the time the first search had) with `--max-params` at the
size of TPE's winner. Acceptance (issue 16): a one-shot winner's mean retrained test accuracy is within 0.5
point of full-training TPE's, with no more parameters.

    python scripts/bench_oneshot_search.py --quick --budget 300 --seeds 1
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

METHODS = ("oneshot", "prescreen", "tpe", "random")
GOAL_POINTS = 0.005
BIG = 1_000_000  # trials: the budget ends a search


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(benchlib.ROOT)}
    result = subprocess.run([sys.executable, "-m", "autocnn", *args], env=env, capture_output=True, text=True, cwd=cwd)
    if result.returncode != 0:
        raise RuntimeError(f"autocnn {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


def search(method: str, seed: int, budget: float, space: str, supernet: dict, prescreen: str, tmp: str) -> dict:
    """One method's search in its own storage; its winner as `autocnn best --json` gives it."""
    folder = Path(tmp) / f"{method}-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{folder / 'studies.db'}"
    common = ["--space", space, "--dataset", "digits", "--storage", storage, "--seed", str(seed), "--study", method]
    started = time.perf_counter()
    supernet_s = None
    if method == "oneshot":
        recipe = [f"--{k.replace('_', '-')}={v}" for k, v in supernet.items() if v is not None and k != "fixed"]
        recipe += [f"--fixed={pair}" for pair in supernet.get("fixed", ())]
        _cli("supernet", "train", "--space", space, "--name", "bench", "--dataset", "digits", "--storage", storage,
             "--seed", str(seed), *recipe, cwd=folder)
        supernet_s = time.perf_counter() - started
        left = max(1.0, budget - supernet_s)
        _cli("search", *common, "--strategy", "oneshot", "--supernet", "bench", "--trials", str(BIG),
             "--timeout", f"{left:.0f}s", cwd=folder)
    else:
        extra = {"prescreen": ["--prescreen", prescreen], "tpe": [], "random": ["--sampler", "random"]}[method]
        _cli("search", *common, "--trials", str(BIG), "--timeout", f"{budget:.0f}s", *extra, cwd=folder)
    wall = time.perf_counter() - started
    return _finish(method, seed, storage, folder, wall, supernet_s)


def _finish(method: str, seed: int, storage: str, folder: Path, wall: float, supernet_s: float | None) -> dict:
    import optuna

    best = json.loads(_cli("best", "--study", method, "--storage", storage, "--json", cwd=folder).stdout)
    trials = optuna.load_study(study_name=method, storage=storage).get_trials(deepcopy=False)
    return {"method": method, "seed": seed, "wall": wall, "supernet_s": supernet_s, "best": best,
            "trials": len(trials), "complete": sum(t.state.name == "COMPLETE" for t in trials)}


def sized_oneshot(seed: int, budget: float, space: str, supernet_s: float, max_params: int, tmp: str) -> dict:
    """The one-shot run's supernet searched again, in the time its search had, under TPE's winner's size."""
    folder = Path(tmp) / f"oneshot-{seed}"
    storage = f"sqlite:///{folder / 'studies.db'}"
    started = time.perf_counter()
    _cli("search", "--space", space, "--dataset", "digits", "--storage", storage, "--seed", str(seed), "--study",
         "oneshot_sized", "--strategy", "oneshot", "--supernet", "bench", "--trials", str(BIG), "--max-params",
         str(max_params), "--timeout", f"{max(1.0, budget - supernet_s):.0f}s", cwd=folder)
    return _finish("oneshot_sized", seed, storage, folder, supernet_s + time.perf_counter() - started, supernet_s)


def retrain(genotype: dict, seed: int) -> dict:
    """The winner trained from scratch with the search's standard recipe (trial `seed`'s seed)."""
    import torch

    from autocnn.builder import build_model
    from autocnn.data import load_dataset
    from autocnn.genotype import Genotype
    from autocnn.search.config import SearchConfig
    from autocnn.search.engine import train_config_for
    from autocnn.training import train

    benchlib.setup_threads(1)
    g = Genotype.from_dict(genotype)
    recipe = train_config_for(SearchConfig(space="bench", dataset="digits"), seed)
    torch.manual_seed(recipe.seed)  # initial weights of the seed, as a search's trial (not the worker's RNG state)
    model = build_model(g)
    data = load_dataset("digits", None, seed=0)
    started = time.perf_counter()
    result = train(model, data, recipe, resolution=g.resolution)
    return {"val": result.best_val, "test": result.test_metric, "params": sum(p.numel() for p in model.parameters()),
            "train_s": time.perf_counter() - started}


def _winner(best: dict) -> tuple[dict, float, str]:
    """(genotype, the search's own score of it, how the search valued it) from `autocnn best --json`."""
    (row, *_) = best["best"]
    return row["genotype"], float(row["values"][0]), row["evaluation"]


def main() -> None:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--space", default="efficientnet_compound")
    p.add_argument("--budget", type=float, default=None, help="seconds per search (default by mode: 60, 300, 900)")
    p.add_argument("--seeds", type=int, default=None, help="search seeds (default by mode: 1, 1, 3)")
    p.add_argument("--retrain-seeds", type=int, default=5, help="retrainings of each winner (their mean is compared)")
    p.add_argument("--runs", default=None, help="JSON file of the searches' results: read if it exists (the searches "
                   "are skipped, only the retraining runs), else written")
    p.add_argument("--supernet-epochs", type=int, default=None, help="default by mode: 1, 10, 20")
    p.add_argument("--prescreen", default="naswot:8", help="PROXY:K of the prescreened TPE search")
    p.add_argument("--jobs", type=int, default=2, help="processes at a time, each one torch thread")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--supernet-fixed", action="append", default=[], metavar="NAME=VALUE",
                   help="a dimension the supernet pins (`autocnn supernet train --fixed`), e.g. width_mult=0.25 for "
                        "the narrow slice measured before width became elastic; repeat per dimension")
    args = p.parse_args()
    budget = args.budget or benchlib.by_mode(args.mode, 60, 300, 900)
    seeds = range(args.seeds or benchlib.by_mode(args.mode, 1, 1, 3))
    supernet = {"epochs": args.supernet_epochs or benchlib.by_mode(args.mode, 1, 10, 20), "optimizer": "adamw",
                "lr": 0.005, "schedule": "cosine", "warmup_epochs": 1, "fixed": args.supernet_fixed}
    methods = [m for m in args.methods.split(",") if m]
    info, started = benchlib.machine(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, \
            ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        if args.runs and Path(args.runs).exists():
            runs = json.loads(Path(args.runs).read_text())
        else:
            jobs = [(m, s) for s in seeds for m in methods]
            runs = list(pool.map(search, *zip(*[(m, s, budget, args.space, supernet, args.prescreen, tmp)
                                                 for m, s in jobs])))
            if {"oneshot", "tpe"} <= set(methods):
                by = {(r["method"], r["seed"]): r for r in runs}
                sized = [(s, budget, args.space, by["oneshot", s]["supernet_s"],
                          by["tpe", s]["best"]["best"][0]["params"], tmp) for s in seeds]
                runs += list(pool.map(sized_oneshot, *zip(*sized)))
            if args.runs:
                Path(args.runs).write_text(json.dumps(runs))
        methods = list(dict.fromkeys(r["method"] for r in runs))
        found = [r for r in runs if r["best"]["best"]]  # a search that finished no trial has no winner
        winners = {id(r): _winner(r["best"]) for r in found}
        # an architecture several methods chose is retrained once per seed (seeded, so the result is the same)
        pairs = sorted({(r["best"]["best"][0]["arch"], k) for r in found for k in range(args.retrain_seeds)})
        genotypes = {r["best"]["best"][0]["arch"]: winners[id(r)][0] for r in found}
        trained = dict(zip(pairs, pool.map(retrain, [genotypes[a] for a, _ in pairs], [k for _, k in pairs])))
    nothing = {"val": 0.0, "test": 0.0, "params": 0, "train_s": 0.0}
    for run in runs:
        arch = run["best"]["best"][0]["arch"] if run["best"]["best"] else None
        run["arch"] = arch or "(no trial finished)"
        mine = [trained[arch, k] if arch else nothing for k in range(args.retrain_seeds)]
        score, evaluation = winners[id(run)][1:] if arch else (0.0, "-")
        run.update(score=score, evaluation=evaluation, params=mine[0]["params"],
                   test=statistics.mean(t["test"] for t in mine), val=statistics.mean(t["val"] for t in mine),
                   retrain_s=statistics.mean(t["train_s"] for t in mine))
        print(f"{run['method']} seed {run['seed']}: {run['trials']} trials in {run['wall']:.0f} s, winner "
              f"{run['params']:,} params, retrained test {run['test']:.4f}", flush=True)

    def mean(method: str, key: str) -> float:
        return statistics.mean(r[key] for r in runs if r["method"] == method)

    rows = ["| method | wall s (budget) | trials (complete) | winner's score in the search | winner's params "
            "| retrained val | retrained test |", "|---|---|---|---|---|---|---|"]
    for m in methods:
        supernet_s = [r["supernet_s"] for r in runs if r["method"] == m and r["supernet_s"] is not None]
        rows.append(f"| {m} | {mean(m, 'wall'):.0f} ({budget:.0f}{f'; supernet {statistics.mean(supernet_s):.0f}' if supernet_s else ''})"
                    f" | {mean(m, 'trials'):.0f} ({mean(m, 'complete'):.0f}) | {mean(m, 'score'):.4f} "
                    f"| {mean(m, 'params'):,.0f} | {mean(m, 'val'):.4f} | {mean(m, 'test'):.4f} |")
    every = ["| method | seed | winner's architecture | params | score in the search | retrained test |",
             "|---|---|---|---|---|---|"]
    for r in runs:
        every.append(f"| {r['method']} | {r['seed']} | `{r['arch']}` | {r['params']:,} | "
                     f"{r['score']:.4f} ({r['evaluation']}) | {r['test']:.4f} |")
    met = None
    if {"oneshot", "tpe"} <= set(methods):
        met = any(mean(m, "test") >= mean("tpe", "test") - GOAL_POINTS and mean(m, "params") <= mean("tpe", "params")
                  for m in ("oneshot", "oneshot_sized"))
    text = [benchlib.header("One-shot search at equal wall time (digits)", info, started,
                            f"space `{args.space}`, budget {budget:.0f} s per search, search seeds {list(seeds)}, "
                            f"{args.jobs} processes at a time (one torch thread each); supernet: "
                            f"{supernet['epochs']} epochs, adamw 0.005 cosine, 1 warm-up epoch, inside the budget; "
                            f"prescreen `{args.prescreen}`; each winner retrained {args.retrain_seeds} times from "
                            f"scratch with the search's recipe (means)"),
            *rows, "", *every, "",
            f"Acceptance (a one-shot winner's retrained test within {GOAL_POINTS * 100:.1f} point of full-training "
            f"TPE's, with no more parameters): {benchlib.verdict(met)}."]
    path = benchlib.write_section("oneshot_search", "\n".join(text), args.out)
    benchlib.emit([{"benchmark": "oneshot_search", "figure": f"{m}: retrained test of the winner",
                    "value": round(mean(m, "test"), 4)} for m in methods], args.json)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
