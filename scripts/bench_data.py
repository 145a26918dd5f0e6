"""Benchmark 6: the data path — device-resident batches with on-device augmentation vs a DataLoader.

autocnn: `DeviceBatches` over a split preloaded on the training device (GPU memory when there is
one), shuffled by a device permutation, augmented on the device (`crop_flip`: 4-pixel translation
plus horizontal flip) and, for the second row, resized per batch to 64 px.
Baseline: what torchvision's CIFAR-10 recipe does — a Dataset of uint8 HWC images turned into PIL
images and transformed per sample (`RandomCrop(32, padding=4)`, `RandomHorizontalFlip`, `ToTensor`,
`Normalize`, plus `Resize(64)` for the second row) — through a `DataLoader` with 0 and with
`cores` workers (`pin_memory` and non-blocking copies on CUDA). Worker start-up is part of each
epoch. Data: synthetic CIFAR-shaped images (no downloads on these machines). Every batch is moved
to the device and reduced (`x.sum()`) so each path delivers the same thing.

    python scripts/bench_data.py --quick
"""
from __future__ import annotations

import os
import time

import benchlib

GOAL = 1.0  # device batches at least as fast as the best DataLoader


class PilDataset:
    """torchvision.datasets.CIFAR10's __getitem__: uint8 HWC array -> PIL image -> transforms."""

    def __init__(self, images, labels, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def epoch_dataloader(images, labels, batch: int, workers: int, device, resolution: int | None) -> float:
    """Images/s of one epoch through a torchvision-transform DataLoader."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision import transforms as T

    steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    if resolution:
        steps.append(T.Resize(resolution))  # PIL resizes with antialiasing; DeviceBatches without
    steps += [T.ToTensor(), T.Normalize((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))]
    cuda = device.type == "cuda"
    loader = DataLoader(PilDataset(images, labels, T.Compose(steps)), batch_size=batch, shuffle=True,
                        num_workers=workers, pin_memory=cuda, drop_last=False)
    start = time.perf_counter()
    total = torch.zeros((), device=device)
    n = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=cuda), y.to(device, non_blocking=cuda)
        total += x.sum()
        n += len(y)
    float(total)  # sync
    return n / (time.perf_counter() - start)


def epoch_device(split, batch: int, device, resolution: int | None) -> float:
    """Images/s of one epoch of DeviceBatches (split already resident on the device)."""
    import torch

    from autocnn.data import DeviceBatches

    batches = DeviceBatches(split, batch, device=device, shuffle=True, generator=torch.Generator().manual_seed(0),
                            augment="crop_flip", resolution=resolution)
    start = time.perf_counter()
    total = torch.zeros((), device=device)
    n = 0
    for x, y in batches:
        total += x.sum()
        n += len(y)
    float(total)
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> list[dict]:
    args = benchlib.parser(__doc__.splitlines()[0]).parse_args(argv)
    benchlib.setup_threads(args.threads)
    import numpy as np
    import torch

    from autocnn.data import TensorSplit

    info, started = benchlib.machine(), time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n = benchlib.by_mode(args.mode, 512, 10_000, 50_000)
    repeats = benchlib.by_mode(args.mode, 1, 2, 3)
    batch = 128
    cores = os.cpu_count() or 1
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n)
    mean = torch.tensor((0.49, 0.48, 0.45)).view(1, 3, 1, 1)
    std = torch.tensor((0.25, 0.24, 0.26)).view(1, 3, 1, 1)
    tensor = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
    split = TensorSplit(tensor.to(device), torch.from_numpy(labels).long().to(device))  # preloaded once, like train()

    rows, results = [], []
    worker_counts = [0, cores] if cores > 0 else [0]
    for resolution in (None, 64):
        variants = {"device": lambda r=resolution: epoch_device(split, batch, device, r)}
        for w in worker_counts:
            variants[f"loader{w}"] = lambda w=w, r=resolution: epoch_dataloader(images, labels, batch, w, device, r)
        runs = benchlib.interleaved(variants, repeats=repeats, warmup=0)
        med = {k: benchlib.median(v) for k, v in runs.items()}
        best_loader = max((k for k in med if k.startswith("loader")), key=med.get)
        ratio = med["device"] / med[best_loader]
        label = "32 px (native)" if resolution is None else f"resized to {resolution} px"
        rows.append([label, *(f"{med[f'loader{w}']:,.0f}" for w in worker_counts), f"{med['device']:,.0f}",
                     f"**{ratio:.1f}×**", benchlib.verdict(ratio >= GOAL)])
        results.append({"benchmark": "data", "figure": f"DeviceBatches ÷ best DataLoader, {label}",
                        "value": round(ratio, 2), "goal": f">= {GOAL}", "met": ratio >= GOAL,
                        "raw": {k: round(v) for k, v in med.items()}})
    headers = ["batches", *(f"DataLoader, {w} workers (img/s)" for w in worker_counts),
               f"DeviceBatches on {device.type} (img/s)", "ratio to best DataLoader", f"goal ≥ {GOAL}"]
    body = benchlib.header(
        "6. Data path: device-resident batches vs torchvision DataLoader", info, started,
        f"{n:,} synthetic 3×32×32 images, batch {batch}, one epoch per run, crop + flip augmentation on both sides, "
        f"median of {repeats} interleaved runs; DataLoader worker start-up counted in its epoch")
    body += "\n" + benchlib.table(headers, rows) + "\n"
    if device.type != "cuda":
        body += ("\nNo GPU on this machine: on CUDA the same script compares GPU-resident batches with a pinned-memory "
                 "DataLoader.\n")
    benchlib.write_section("data", body, args.out)
    benchlib.emit(results, args.json)
    return results


if __name__ == "__main__":
    main()
