"""Rank quality of one-shot estimates and zero-cost proxies: sub-networks of a supernet fully trained, and ranked.

Per dataset (digits, and the synthetic `shapes` folder of bench_anytime): a supernet over `--space` is trained
(`autocnn supernet train`'s code), then `--archs` distinct sub-networks are drawn at random from its elastic
dimensions. Each one is valued three ways: by the one-shot estimate a `--strategy oneshot` search records
(inherited weights, BatchNorm recalibrated, validated: `autocnn.search.oneshot.Oneshot`), by every zero-cost
proxy of `autocnn.proxies` at initialisation on one mini-batch (as `--prescreen` scores), and by its validation
accuracy after a full training with the search's standard recipe (`engine.train_config_for`). The figures are
Spearman's and Kendall's rank correlations of each estimate with the trained accuracy; `params` is the baseline
a proxy must beat on both datasets to be recommended. The spread of the trained accuracies is reported, since
on digits they may be too close to rank.

Full trainings dominate the cost (about a minute each on one CPU thread) and do not depend on the supernet, so
`--truth FILE` keeps them (by dataset, architecture, recipe epochs and seed) for the next run: a supernet recipe
(`--supernet-optimizer`, `--supernet-schedule`, ...) can then be compared against the same trained networks in
the time it takes to train the supernet.
"""
from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

DATASETS = ("digits", "shapes")
PROXY_BATCH = 64
ONESHOT_GOAL = 0.7
SEED_STRIDE = 1000  # a repeated full training of sub-network n is seeded as trial n + 1000 * repeat


def _truth_key(dataset: str, arch: str, epochs: int | None, seed: int) -> str:
    return f"{dataset}|{arch}|{epochs or 'default'}|{seed}"


def _read_truth(path: str | None) -> dict:
    return json.loads(Path(path).read_text()) if path and Path(path).exists() else {}


def _one_dataset(dataset: str, space: str, archs: int, supernet_epochs: int, epochs: int | None, root: str,
                 recipe: dict, truth_path: str | None, seeds: int = 1) -> dict:
    """Everything measured on one dataset, in this (worker) process; trained results are read from and added
    to the `truth_path` JSON (the worker writes its own dataset's file beside it, merged by the parent)."""
    import torch
    from scipy import stats

    from autocnn.builder import build_model
    from autocnn.data import load_dataset
    from autocnn.proxies import PROXIES
    from autocnn.search.config import SearchConfig
    from autocnn.search.engine import train_config_for
    from autocnn.search.oneshot import Oneshot, resolutions_of
    from autocnn.search.prescreen import proxy_batch
    from autocnn.spaces import load_space
    from autocnn.supernet.trainer import train_named
    from autocnn.training import train

    benchlib.setup_threads(1)
    tmp = Path(root) / f"run-{dataset}"
    tmp.mkdir(parents=True, exist_ok=True)
    data_args = {"dataset": "digits"} if dataset == "digits" else {"dataset": "imagefolder",
                                                                   "data_root": str(Path(root) / "shapes")}
    storage = f"sqlite:///{tmp / 'studies.db'}"
    started = time.perf_counter()
    record = train_named(space=space, name=f"bench-{dataset}", epochs=supernet_epochs, storage=storage, seed=0,
                         **recipe, **data_args)
    supernet_s = time.perf_counter() - started
    data = load_dataset(data_args["dataset"], data_args.get("data_root"), seed=0)
    config = SearchConfig(space=space, storage=storage, strategy="oneshot", supernet=f"bench-{dataset}",
                          **data_args, **({"epochs": epochs} if epochs else {}))
    shot = Oneshot(config, load_space(space), data)
    rng, chosen = random.Random(1234), {}
    while len(chosen) < archs:
        g = shot.elastic.sample(rng)
        chosen.setdefault(g.arch_id, g)
    x, y = proxy_batch(data, PROXY_BATCH, 0, record["resolution"])
    truth = _read_truth(truth_path)
    mine = Path(f"{truth_path}.{dataset}") if truth_path else None
    rows = []
    for number, g in enumerate(chosen.values()):
        t0 = time.perf_counter()
        estimate = shot.validate(shot.inherit(g), config.metric, data.multilabel, g.resolution)[config.metric]
        oneshot_s = time.perf_counter() - t0
        torch.manual_seed(number)
        fresh = build_model(g)
        scores = {name: PROXIES.get(name)(fresh, x, y) for name in PROXIES}
        runs = []
        for repeat in range(seeds):  # seeds of the full training: their mean is the truth, their spread its noise
            key = _truth_key(dataset, g.arch_id, epochs, config.seed + number + SEED_STRIDE * repeat)
            if key not in truth:
                t0 = time.perf_counter()
                result = train(build_model(g), data, train_config_for(config, number + SEED_STRIDE * repeat),
                               resolution=g.resolution)
                truth[key] = {"val": result.best_val, "test": result.test_metric, "train_s": time.perf_counter() - t0}
                if mine is not None:
                    mine.write_text(json.dumps({k: v for k, v in truth.items() if k.startswith(f"{dataset}|")}))
            runs.append(truth[key])
        trained = {"val": statistics.mean(r["val"] for r in runs), "test": statistics.mean(r["test"] for r in runs),
                   "train_s": statistics.mean(r["train_s"] for r in runs), "vals": [r["val"] for r in runs]}
        rows.append({"arch": g.arch_id, "oneshot": estimate, **scores, **trained, "oneshot_s": oneshot_s})
        print(f"{dataset} {number + 1}/{archs}: oneshot {estimate:.4f} trained {trained['val']:.4f} "
              f"({trained['train_s']:.0f} s)", flush=True)
    trained = [r["val"] for r in rows]
    # how well one full training ranks another of the same architectures (other seeds): the ceiling of any estimate
    ceiling = (float(stats.spearmanr([r["vals"][0] for r in rows], [r["vals"][1] for r in rows]).statistic)
               if seeds > 1 else None)
    correlations = {}
    for name in ("oneshot", *PROXIES):
        values = [r[name] for r in rows]
        rho = stats.spearmanr(values, trained).statistic
        tau = stats.kendalltau(values, trained).statistic
        correlations[name] = (float(rho), float(tau))
    return {"dataset": dataset, "rows": rows, "correlations": correlations, "ceiling": ceiling, "supernet_s": supernet_s,
            "supernet_epochs": supernet_epochs, "sub_networks": record["sub_networks"],
            "resolution": "/".join(str(r) for r in resolutions_of(record)),
            "fixed": record["fixed"]}


def _pairs(given: list[str]) -> dict | None:
    """`--supernet-fixed NAME=VALUE` options as the supernet CLI reads them (values as YAML scalars)."""
    from autocnn.cli.supernet import parse_fixed

    return parse_fixed(tuple(given)) or None


def _recommended(name: str, results: list[dict]) -> bool:
    """Worth its cost: ranks better than the parameter count on every dataset, and the right way round
    (where `params` itself ranks backwards, beating it alone says nothing)."""
    return all(r["correlations"][name][0] > max(r["correlations"]["params"][0], 0.0) for r in results)


def main() -> None:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--space", default="efficientnet_compound")
    p.add_argument("--archs", type=int, default=None, help="sub-networks per dataset (default by mode: 4, 50, 100)")
    p.add_argument("--supernet-epochs", type=int, default=None, help="default by mode: 1, 20, 40")
    p.add_argument("--epochs", type=int, default=None, help="full-training epochs (default: the search's recipe)")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--jobs", type=int, default=2, help="datasets at a time, each one torch thread")
    p.add_argument("--truth", default=None, help="JSON file of full-training results, read and extended")
    p.add_argument("--seeds", type=int, default=1, help="full trainings per sub-network (their mean is ranked; with "
                   "2 or more the seed-to-seed Spearman, the ceiling of any estimate, is reported)")
    p.add_argument("--supernet-optimizer", default="sgd")
    p.add_argument("--supernet-lr", type=float, default=None)
    p.add_argument("--supernet-schedule", default="constant")
    p.add_argument("--supernet-warmup", type=float, default=0.0, help="warm-up epochs of the supernet's schedule")
    p.add_argument("--supernet-weight-decay", type=float, default=0.0)
    p.add_argument("--supernet-augment", default=None, help="default: the dataset's, as its trials train")
    p.add_argument("--supernet-fixed", action="append", default=[], metavar="NAME=VALUE",
                   help="a dimension the supernet pins (`autocnn supernet train --fixed`), e.g. width_mult=0.25 for "
                        "the narrow slice measured before width became elastic; repeat per dimension")
    p.add_argument("--supernet-resolution", default=None, help="the supernet's resolution, or several comma-separated "
                   "(24,28,32: an elastic resolution, `autocnn supernet train --resolution`); default the space's")
    args = p.parse_args()
    from autocnn.cli.supernet import parse_resolutions

    recipe = {"optimizer": args.supernet_optimizer, "lr": args.supernet_lr, "schedule": args.supernet_schedule,
              "warmup_epochs": args.supernet_warmup, "weight_decay": args.supernet_weight_decay,
              "augment": args.supernet_augment, "fixed": _pairs(args.supernet_fixed),
              "resolution": parse_resolutions(args.supernet_resolution)}
    info = benchlib.machine()
    started = time.perf_counter()
    archs = args.archs or benchlib.by_mode(args.mode, 4, 50, 100)
    supernet_epochs = args.supernet_epochs or benchlib.by_mode(args.mode, 1, 20, 40)
    epochs = args.epochs or benchlib.by_mode(args.mode, 1, None, None)
    datasets = [d for d in args.datasets.split(",") if d]
    with tempfile.TemporaryDirectory() as root:
        if "shapes" in datasets:
            from bench_anytime import write_shapes

            write_shapes(Path(root) / "shapes")
        with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=get_context("spawn")) as pool:
            n = len(datasets)
            results = list(pool.map(_one_dataset, datasets, [args.space] * n, [archs] * n, [supernet_epochs] * n,
                                    [epochs] * n, [root] * n, [recipe] * n, [args.truth] * n, [args.seeds] * n))
    if args.truth:
        merged = _read_truth(args.truth)
        for d in datasets:
            part = Path(f"{args.truth}.{d}")
            if part.exists():
                merged.update(json.loads(part.read_text()))
                part.unlink()
        Path(args.truth).write_text(json.dumps(merged, indent=0))
    from autocnn.proxies import PROXIES

    lines = ["| estimator | " + " | ".join(f"{r['dataset']} Spearman | {r['dataset']} Kendall" for r in results)
             + " | beats `params` (and 0) on every dataset |",
             "|---|" + "---|---|" * len(results) + "---|"]
    figures = []
    for name in ("oneshot", *PROXIES):
        beats = name != "params" and _recommended(name, results)
        lines.append(f"| {name} | " + " | ".join(f"{r['correlations'][name][0]:+.3f} | {r['correlations'][name][1]:+.3f}"
                                              for r in results) + f" | {'yes' if beats else 'no' if name != 'params' else '(baseline)'} |")
        for r in results:
            figures.append({"benchmark": "oneshot", "figure": f"{r['dataset']}: Spearman of {name} vs trained val",
                            "value": round(r["correlations"][name][0], 3),
                            **({"goal": f">= {ONESHOT_GOAL}", "met": r["correlations"][name][0] >= ONESHOT_GOAL}
                               if name == "oneshot" else {})})
    spread = ["| dataset | sub-networks (of) | trained val: min / median / max | one-shot val: min / median / max "
              "| supernet training | one-shot estimate, mean | full training, mean | seed-to-seed Spearman (ceiling) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results:
        val, shot = [x["val"] for x in r["rows"]], [x["oneshot"] for x in r["rows"]]
        spread.append(f"| {r['dataset']} | {len(r['rows'])} ({r['sub_networks']:,}) | {min(val):.4f} / "
                      f"{statistics.median(val):.4f} / {max(val):.4f} | {min(shot):.4f} / {statistics.median(shot):.4f}"
                      f" / {max(shot):.4f} | {r['supernet_epochs']} epochs, {r['supernet_s']:.0f} s | "
                      f"{statistics.mean(x['oneshot_s'] for x in r['rows']):.2f} s | "
                      f"{statistics.mean(x['train_s'] for x in r['rows']):.1f} s | "
                      f"{'-' if r['ceiling'] is None else format(r['ceiling'], '+.3f')} |")
    met = any(r["correlations"]["oneshot"][0] >= ONESHOT_GOAL for r in results)
    recommended = [n for n in PROXIES if n != "params" and _recommended(n, results)]
    fixed = results[0]["fixed"] if results else {}
    text = [benchlib.header("One-shot and zero-cost rank quality", info, started,
                            f"space `{args.space}` (supernet at {results[0]['resolution'] if results else '?'} px, "
                            f"fixed: {', '.join(f'{k}={v}' for k, v in fixed.items() if not k.startswith('stages'))}; "
                            f"trained with {args.supernet_optimizer} at lr {args.supernet_lr or 'default'}, "
                            f"{args.supernet_schedule} schedule, {args.supernet_warmup:g} warm-up epochs, weight decay "
                            f"{args.supernet_weight_decay:g}, augmentation {args.supernet_augment or 'as the dataset'}); "
                            f"{archs} random sub-networks per dataset, each fully trained with the search's recipe "
                            f"({'epochs ' + str(epochs) if epochs else 'default epochs'}); proxies on one "
                            f"{PROXY_BATCH}-image batch at initialisation; one torch thread per dataset"),
            f"Rank correlation with the fully trained validation accuracy ({'mean of ' + str(args.seeds) + ' seeds' if args.seeds > 1 else 'one seed'}):", "", *lines, "", *spread, "",
            f"Acceptance (one-shot Spearman >= {ONESHOT_GOAL} on some dataset): {benchlib.verdict(met)}. "
            f"Proxies that beat `params` (and 0) on every dataset: {', '.join(recommended) or 'none'}."]
    path = benchlib.write_section("oneshot", "\n".join(text), args.out)
    benchlib.emit(figures, args.json)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
