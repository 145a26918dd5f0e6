"""Containers for in-memory datasets and the split/normalise helpers every loader shares.

Splits are computed with a fixed seed (`SPLIT_SEED`) so that every study, trial and rerun sees the
same validation and test images: metrics stay comparable across studies.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch

from ..errors import AutocnnError

SPLIT_SEED = 20240917


class DataError(AutocnnError, ValueError):
    """A user mistake about data; the message is one line naming the problem and the fix."""


@dataclass
class TensorSplit:
    """Normalised float32 images N×C×H×W and labels (int64 N, or float32 N×K multi-hot)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or len(self.images) != len(self.labels):
            raise ValueError(
                f"images must be N×C×H×W with one label per image, got {tuple(self.images.shape)} "
                f"images and {len(self.labels)} labels"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        def shape(t: torch.Tensor) -> str:
            return f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}"

        return f"TensorSplit(images={shape(self.images)}, labels={shape(self.labels)}, device={self.images.device})"

    def to(self, device: torch.device | str) -> "TensorSplit":
        return TensorSplit(self.images.to(device), self.labels.to(device))


@dataclass
class DataSplits:
    """A dataset held in memory as three normalised splits plus what a model needs to know."""

    train: TensorSplit
    val: TensorSplit
    test: TensorSplit
    num_classes: int
    in_chans: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    multilabel: bool
    native_resolution: int
    name: str
    augment: str = field(default="none")
    """Name of the train-time augmentation (see `autocnn.data.batches.AUGMENTATIONS`)."""

    def to(self, device: torch.device | str) -> "DataSplits":
        """A copy with all three splits on `device`; lets a worker pay the host->device copy once for many trials."""
        return replace(self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device))


def stratified_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split indices into parts of the given fractions (summing to 1) with the same class mix.

    Each image gets a key = its random rank within its class as a fraction of the class size; the
    keys, sorted, are cut at the global fractions. Part sizes are exact (round(f·N)) even when a
    class has fewer images than there are parts, and every part holds ≈ f of every class.
    Returned index arrays are sorted.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    key = np.empty(len(labels))
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        key[idx] = (rng.permutation(len(idx)) + 0.5) / len(idx)
    order = np.lexsort((rng.random(len(labels)), key))
    return _cut(order, fractions)


def random_split(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split range(n) at random into parts of the given fractions; for multi-label data."""
    return _cut(np.random.default_rng(seed).permutation(n), fractions)


def _cut(order: np.ndarray, fractions: Sequence[float]) -> list[np.ndarray]:
    cuts = np.round(np.cumsum(fractions) * len(order)).astype(int)
    cuts[-1] = len(order)
    return [np.sort(p) for p in np.split(order, cuts[:-1])]


def stratified_subset(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Exactly min(k, N) sorted indices with the class mix of `labels`."""
    n = len(labels)
    return np.arange(n) if k >= n else stratified_split(labels, [k / n, 1 - k / n], seed)[0]


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0,255] -> float32 [0,1]; float input is assumed to be in [0,1] already."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def assemble(
    name: str,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    class_names: Sequence[str],
    augment: str,
    multilabel: bool = False,
    limit: int | None = None,
    seed: int = 0,
) -> DataSplits:
    """Cap the train split at `limit`, normalise all splits with train statistics, wrap them.

    Images come in as N×C×H×W, uint8 or float in [0,1]; single-label labels as int64, multi-label
    as float32 multi-hot.
    """
    if limit is not None:
        if limit < 1:
            raise DataError(f"limit must be a positive number of images, got {limit}; pass limit >= 1")
        labels = train[1]
        keep = (
            np.sort(np.random.default_rng(seed).permutation(len(labels))[:limit])
            if multilabel
            else stratified_subset(labels.numpy(), limit, seed)
        )
        keep_t = torch.from_numpy(keep)
        train = (train[0][keep_t], labels[keep_t])
    for split_name, (x, _) in (("train", train), ("val", val), ("test", test)):
        if len(x) == 0:
            raise DataError(f"dataset {name!r} has no {split_name} images; add more images or check the data root")
    xs = [to_unit_float(x) for x, _ in (train, val, test)]
    var, mean = torch.var_mean(xs[0], dim=(0, 2, 3))
    std = var.sqrt().clamp_min(1e-6)
    for x in xs:
        x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
    label_dtype = torch.float32 if multilabel else torch.int64
    splits = [TensorSplit(x.contiguous(), y.to(label_dtype)) for x, (_, y) in zip(xs, (train, val, test))]
    return DataSplits(
        train=splits[0],
        val=splits[1],
        test=splits[2],
        num_classes=len(class_names),
        in_chans=xs[0].shape[1],
        class_names=tuple(str(c) for c in class_names),
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
        multilabel=multilabel,
        native_resolution=int(xs[0].shape[-1]),
        name=name,
        augment=augment,
    )
