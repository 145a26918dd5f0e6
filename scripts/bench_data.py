"""Benchmark 6: the data path on a folder of real JPEGs — the uint8 cache resident on the device, streamed
from the memory-mapped cache, and a plain torchvision ImageFolder + DataLoader.

A folder of RGB JPEGs at 256 px (10 classes; smooth random content) is generated, then decoded once into
autocnn's cache (`autocnn.data.cache`; build time and peak RSS measured). Per resolution, one epoch of the
training split is drawn by:

- resident: `DeviceBatches` over the uint8 cache copied to the device (`crop_flip` augmentation, resized to
  the resolution per batch on the device);
- stream: `StreamBatches`, the same batches read from the memory-mapped cache by a `DataLoader` with
  `workers` processes (pinned memory and a side-stream copy one batch ahead on CUDA);
- float32 (before): `DeviceBatches` over the split converted to normalised float32 first and each batch
  augmented at the stored size, then resized, as autocnn did before the cache (the reference for
  "resident throughput ≥ today's" and for memory);
- torchvision: `ImageFolder` + `DataLoader` (`workers` processes, pinned on CUDA) with the usual training
  transform (`RandomResizedCrop(res)`, `RandomHorizontalFlip`, `ToTensor`, `Normalize`): every epoch decodes
  every JPEG again.

Then a real `autocnn search` on the folder (the smallest candidates of `efficientnet_compound`, one epoch each, at
the first resolution; `--data-mode auto` and `stream`) in a process of its own: its peak RSS and its DataLoader
workers' are the "searches under 2 GB per process" figure.

Every variant runs in its own process (so its peak RSS is its own; a DataLoader worker's is reported
apart; `--smoke` runs them all in one), moves each batch to the device and reduces it (`x.sum()`).
Median of `repeats` epochs after one warm-up epoch (worker start-up counted in each epoch).

    python scripts/bench_data.py --quick
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib

STREAM_GOAL = 0.9  # streaming at least 0.9x the torchvision DataLoader
RESIDENT_GOAL = 1.0  # resident uint8 at least as fast as float32 resident (today's)
CLASSES = 10
BATCH = 128


def generate(folder: Path, n: int, size: int = 256) -> float:
    """`n` JPEGs (quality 90) of `size` px in `folder/<class>/`: smooth colour fields, as photos compress."""
    import numpy as np
    from PIL import Image

    started = time.perf_counter()
    rng = np.random.default_rng(0)
    for i in range(n):
        c = folder / f"class{i % CLASSES}"
        c.mkdir(parents=True, exist_ok=True)
        low = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        low.resize((size, size), Image.BICUBIC).save(c / f"{i:05d}.jpg", quality=90)
    return time.perf_counter() - started


def _peaks() -> dict:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out = {"peak_rss_mb": round(own), "worker_peak_rss_mb": round(workers)}
    import torch

    if torch.cuda.is_available():
        out["device_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return out


def _epoch(batches, device) -> float:
    import torch

    start = time.perf_counter()
    total = torch.zeros((), device=device)
    n = 0
    for x, y in batches:
        x = x.to(device, non_blocking=True)
        total += x.float().sum()
        n += len(y)
    float(total)  # sync
    return n / (time.perf_counter() - start)


def _before(batches_class):
    """The batches of the data path before the cache: a split normalised to float32 up front, each batch
    augmented at the stored size and then resized (today's augmentation kernels)."""
    from autocnn.data.transforms import resize

    class Before(batches_class):
        def prepare(self, x):
            x = self.augment(x, self._gen)
            return resize(x, self.resolution) if self.resolution is not None else x

    return Before


def child(variant: str, folder: str, cache: str, resolution: int, workers: int, repeats: int) -> dict:
    """One variant in this (fresh) process: images/s of `repeats` epochs after a warm-up one, and peaks."""
    import torch

    from autocnn.data import DeviceBatches, StreamBatches, TensorSplit, load_dataset

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if variant == "build":
        started = time.perf_counter()
        data = load_dataset("imagefolder", folder, cache_dir=cache)
        seconds = time.perf_counter() - started
        n = len(data.train) + len(data.val) + len(data.test)
        return {"seconds": seconds, "images": n, "size": data.native_resolution, "cache_bytes": data.nbytes, **_peaks()}
    if variant == "torchvision":
        from torch.utils.data import DataLoader
        from torchvision import datasets
        from torchvision import transforms as T

        transform = T.Compose([T.RandomResizedCrop(resolution), T.RandomHorizontalFlip(), T.ToTensor(),
                               T.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))])
        dataset = datasets.ImageFolder(folder, transform=transform)
        batches = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                             pin_memory=device.type == "cuda", drop_last=False)
    else:
        data = load_dataset("imagefolder", folder, cache_dir=cache)
        split = data.train
        kwargs = dict(device=device, shuffle=True, generator=torch.Generator().manual_seed(0), augment="crop_flip",
                      resolution=resolution)
        if variant == "stream":  # rows read from the cache file, as the trainer streams them
            batches = StreamBatches(split, BATCH, workers=workers, cache=data.cache, **kwargs)
        elif variant == "resident":
            batches = DeviceBatches(split, BATCH, **kwargs)
        else:
            batches = _before(DeviceBatches)(TensorSplit(split.inputs(), split.labels), BATCH, **kwargs)
    _epoch(batches, device)
    rates = [_epoch(batches, device) for _ in range(repeats)]
    return {"images_per_s": benchlib.median(rates), **_peaks()}


RSS_GOAL_MB = 2048  # a search over the folder stays under 2 GB per process


def search_peaks(folder: Path, cache: Path, resolution: int, mode: str, threads: str) -> dict:
    """Peak RSS of a real `autocnn search` over `folder` (process and largest descendant), and its wall time."""
    import tempfile as _tempfile

    with _tempfile.TemporaryDirectory(prefix="bench-data-search-") as work:
        script = ("import resource, subprocess, sys, json, time; t = time.perf_counter(); "
                  "rc = subprocess.run(sys.argv[1:]).returncode; "
                  "print(json.dumps({'rc': rc, 'seconds': time.perf_counter() - t, "
                  "'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}))")
        command = [sys.executable, "-c", script, sys.executable, "-m", "autocnn", "search",
                   "--space", "efficientnet_compound", "--dataset", "imagefolder", "--data-root", str(folder),
                   "--cache-dir", str(cache), "--trials", "2", "--epochs", "1", "--resolution", str(resolution),
                   "--data-mode", mode, "--storage", f"sqlite:///{work}/s.db", "--artifacts", work]
        env = {**os.environ, "OMP_NUM_THREADS": threads if threads != "0" else str(os.cpu_count() or 1),
               "PYTHONPATH": os.pathsep.join([str(benchlib.ROOT), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise RuntimeError(f"bench_data search ({mode}) failed:\n{done.stderr[-3000:]}")
    return result


def run_child(args: list[str], inline: bool = False) -> dict:
    """A variant in a fresh process, so its peak memory is its own; `inline` (smoke runs, whose numbers
    mean nothing) runs it here instead and saves the process's start-up."""
    if inline:
        variant, folder, cache, resolution, workers, repeats, _ = args
        return child(variant, folder, cache, int(resolution), int(workers), int(repeats))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(benchlib.ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env,
                          timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"bench_data child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        variant, folder, cache, resolution, workers, repeats, threads = argv[1:8]
        benchlib.setup_threads(int(threads) or None)
        print(json.dumps(child(variant, folder, cache, int(resolution), int(workers), int(repeats))))
        return []
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=None, help="JPEGs to generate (default by mode: 64, 2,000, 10,000)")
    p.add_argument("--resolutions", default=None, help="comma-separated (default by mode: 32 | 32,128 | 32,128,224)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader processes (default: the cores, at most 8)")
    args = p.parse_args(argv)
    import torch

    info, started = benchlib.machine(), time.perf_counter()
    n = args.images or benchlib.by_mode(args.mode, 64, 2_000, 10_000)
    resolutions = [int(r) for r in (args.resolutions or benchlib.by_mode(args.mode, "32", "32,128", "32,128,224"))
                   .split(",")]
    repeats = benchlib.by_mode(args.mode, 1, 2, 3)
    workers = args.workers if args.workers is not None else min(8, os.cpu_count() or 1)
    threads = str(args.threads or 0)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        folder, cache = Path(tmp) / "jpegs", Path(tmp) / "cache"
        generated = generate(folder, n)
        inline = args.mode == "smoke"
        build = run_child(["build", str(folder), str(cache), "0", "0", "0", threads], inline)
        variants = ("resident", "stream", "float32", "torchvision")
        runs: dict[tuple[str, int], dict] = {}
        for resolution in resolutions:
            for variant in variants:  # each in a fresh process; rounds interleave variants, not repeats
                runs[variant, resolution] = run_child([variant, str(folder), str(cache), str(resolution),
                                                       str(workers), str(repeats), threads], inline)
        modes = ("stream",) if args.mode == "smoke" else ("auto", "stream")  # smoke: that the search step works
        searches = {mode: search_peaks(folder, cache, resolutions[0], mode, threads) for mode in modes}

    rows, results = [], []
    for resolution in resolutions:
        rate = {v: runs[v, resolution]["images_per_s"] for v in variants}
        stream_ratio = rate["stream"] / rate["torchvision"]
        resident_ratio = rate["resident"] / rate["float32"]
        rows.append([f"{resolution} px", f"{rate['torchvision']:,.0f}", f"{rate['float32']:,.0f}",
                     f"{rate['resident']:,.0f}", f"{rate['stream']:,.0f}", f"**{stream_ratio:.2f}×**",
                     benchlib.verdict(stream_ratio >= STREAM_GOAL), f"**{resident_ratio:.2f}×**",
                     benchlib.verdict(resident_ratio >= RESIDENT_GOAL)])
        results.append({"benchmark": "data", "figure": f"streamed ÷ torchvision DataLoader, {resolution} px",
                        "value": round(stream_ratio, 2), "goal": f">= {STREAM_GOAL}",
                        "met": stream_ratio >= STREAM_GOAL, "raw": {k: round(v) for k, v in rate.items()}})
        results.append({"benchmark": "data", "figure": f"resident uint8 ÷ float32 resident, {resolution} px",
                        "value": round(resident_ratio, 2), "goal": f">= {RESIDENT_GOAL}",
                        "met": resident_ratio >= RESIDENT_GOAL})
    headers = ["resolution", f"torchvision ImageFolder, {workers} workers (img/s)", "float32 resident, before (img/s)",
               "uint8 resident (img/s)", f"streamed, {workers} workers (img/s)", "stream ÷ torchvision",
               f"goal ≥ {STREAM_GOAL}", "resident ÷ float32", f"goal ≥ {RESIDENT_GOAL}"]
    memory_rows = [["cache build", "-", f"{build['peak_rss_mb']:,}", "-", "-"]]
    first = resolutions[0]
    for variant in variants:
        r = runs[variant, first]
        memory_rows.append([variant, f"{first} px", f"{r['peak_rss_mb']:,}",
                            f"{r['worker_peak_rss_mb']:,}" if variant in ("stream", "torchvision") and workers else "-",
                            f"{r['device_peak_mb']:,}" if "device_peak_mb" in r else "-"])
    train_images = round(build["images"] * 0.7)
    body = benchlib.header(
        "6. Data path: uint8 cache resident or streamed vs torchvision ImageFolder", info, started,
        f"{n:,} generated RGB JPEGs of 256 px in {CLASSES} classes (generated in {generated:.0f} s); one epoch = the "
        f"~{train_images:,}-image training split (torchvision: all {n:,} files), batch {BATCH}, median of {repeats} "
        f"epochs after a warm-up one, device {device}, every variant in its own process")
    body += (f"\nDecoded cache: built in **{build['seconds']:.1f} s** ({build['images'] / build['seconds']:,.0f} "
             f"images/s, one process), {build['cache_bytes'] / 2**20:,.0f} MiB of uint8 at "
             f"{build['size']} px (float32 would be {4 * build['cache_bytes'] / 2**20:,.0f} MiB).\n\n")
    body += benchlib.table(headers, rows) + "\n\n"
    body += ("Peak memory per process (MiB; RSS counts the memory-mapped cache pages a process touched, which the "
             "page cache shares between processes):\n\n")
    body += benchlib.table(["process", "resolution", "peak RSS (MiB)", "largest DataLoader worker RSS (MiB)",
                            "peak device memory (MiB)"], memory_rows) + "\n"
    if device != "cuda":
        body += ("\nNo GPU on this machine: resident batches live in host memory (the memory-mapped cache itself), "
                 "so resident and streamed differ only by the DataLoader; on CUDA the same script measures "
                 "device-resident uint8 against pinned, double-buffered streaming.\n")
    body += (f"\nA real search over the folder (`autocnn search --space efficientnet_compound --dataset imagefolder "
             f"--trials 2 --epochs 1 --resolution {first}`), peak RSS of its largest process (RSS includes the "
             f"memory-mapped cache pages it touched):\n\n")
    search_rows = []
    for mode, r in searches.items():
        met = r["peak_rss_mb"] < RSS_GOAL_MB
        search_rows.append([f"--data-mode {mode}", f"{r['seconds']:.0f} s", f"{r['peak_rss_mb']:,}",
                            benchlib.verdict(met)])
        results.append({"benchmark": "data", "figure": f"search peak RSS MiB, --data-mode {mode}",
                        "value": r["peak_rss_mb"], "goal": f"< {RSS_GOAL_MB}", "met": met})
    body += benchlib.table(["search", "wall time", "peak RSS (MiB)", f"goal < {RSS_GOAL_MB:,} MiB"], search_rows) + "\n"
    benchlib.write_section("data", body, args.out)
    benchlib.emit(results, args.json)
    return results


if __name__ == "__main__":
    main()
