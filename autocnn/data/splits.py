"""Containers for in-memory datasets and the split/normalise helpers every loader shares.

Splits are computed with a fixed seed (`SPLIT_SEED`) so that every study, trial and rerun sees the
same validation and test images: metrics stay comparable across studies.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch

from ..errors import AutocnnError
from .transforms import normalize

SPLIT_SEED = 20240917


class DataError(AutocnnError, ValueError):
    """A user mistake about data; the message is one line naming the problem and the fix."""


@dataclass(frozen=True)
class Pixels:
    """How stored uint8 pixels become a network's input: divided by `scale` (into [0, 1]), then normalised per
    channel with `mean` and `std` (`autocnn.data.transforms.normalize`, on the training device per batch)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 255.0


@dataclass
class TensorSplit:
    """Images N×C×H×W and labels (int64 N, or float32 N×K multi-hot).

    Images are uint8 pixels with `pixels` saying how to normalise them (what every loader gives: a quarter
    of float32's memory, possibly a memory-mapped view of the decoded cache), or already normalised floats
    (`pixels` None). `files` names the image file of each row for data decoded from files.
    """

    images: torch.Tensor
    labels: torch.Tensor
    pixels: Pixels | None = None
    files: tuple[str, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or len(self.images) != len(self.labels):
            raise ValueError(
                f"images must be N×C×H×W with one label per image, got {tuple(self.images.shape)} "
                f"images and {len(self.labels)} labels"
            )
        if self.images.dtype == torch.uint8 and self.pixels is None:
            raise ValueError("uint8 images need `pixels` (their scale, mean and std)")

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        def shape(t: torch.Tensor) -> str:
            return f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}"

        return f"TensorSplit(images={shape(self.images)}, labels={shape(self.labels)}, device={self.images.device})"

    def __reduce__(self):
        """Pickled (for Ray's object store) with the images as a NumPy array: Ray hands a node's workers
        zero-copy read-only views of one shared-memory copy, where a tensor would be copied per worker."""
        images = self.images.numpy() if self.images.device.type == "cpu" else self.images
        return _restore_split, (images, self.labels, self.pixels, self.files)

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + self.labels.nbytes

    def to(self, device: torch.device | str) -> "TensorSplit":
        return replace(self, images=self.images.to(device), labels=self.labels.to(device))

    def inputs(self) -> torch.Tensor:
        """All images as the network sees them (float32, normalised), before any resizing; for checks and small data."""
        if self.pixels is None:
            return self.images
        return normalize(self.images, self.pixels.mean, self.pixels.std, self.pixels.scale)

    def join(self, other: "TensorSplit") -> "TensorSplit":
        """This split's rows, then `other`'s (same pixel format): e.g. train+val for a final retraining."""
        files = self.files + other.files if self.files is not None and other.files is not None else None
        return replace(self, images=torch.cat([self.images, other.images]),
                       labels=torch.cat([self.labels, other.labels]), files=files)

    def subset(self, rows: torch.Tensor) -> "TensorSplit":
        files = tuple(self.files[i] for i in rows.tolist()) if self.files is not None else None
        return replace(self, images=self.images[rows], labels=self.labels[rows], files=files)


def _restore_split(images, labels, pixels, files) -> TensorSplit:
    if isinstance(images, np.ndarray):
        with warnings.catch_warnings():  # a read-only shared-memory view; nothing writes to a split's images
            warnings.simplefilter("ignore", UserWarning)
            images = torch.from_numpy(images)
    return TensorSplit(images, labels, pixels, files)


@dataclass
class DataSplits:
    """A dataset as three splits plus what a model needs to know.

    `native_resolution` is the side length the images are stored (decoded) at; `cache` the decoded cache entry
    of data read from image files (None for array datasets, held in memory).
    """

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
    cache: str | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of all three splits (images and labels) as stored: what holding them resident costs."""
        return self.train.nbytes + self.val.nbytes + self.test.nbytes

    def to(self, device: torch.device | str) -> "DataSplits":
        """A copy with all three splits on `device`; lets a worker pay the host->device copy once for many trials."""
        return replace(self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device))

    def describe(self) -> str:
        """One line: images, their storage and size, where they are cached."""
        n = len(self.train) + len(self.val) + len(self.test)
        c, size = self.in_chans, self.native_resolution
        where = f", decoded cache {self.cache}" if self.cache else ""
        return (f"data: {self.name}, {n:,} images {c}×{size}×{size} {str(self.train.images.dtype).removeprefix('torch.')}"
                f" ({self.nbytes / 2**20:,.1f} MiB){where}")


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


def pixel_stats(total: np.ndarray, squares: np.ndarray, count: int, scale: float) -> tuple[tuple, tuple]:
    """Per-channel mean and std (of pixels / scale) from sums over `count` pixels per channel."""
    mean = total / count
    var = np.maximum(squares / count - mean * mean, 0.0)
    std = np.maximum(np.sqrt(var) / scale, 1e-6)
    return tuple(float(np.float32(v)) for v in mean / scale), tuple(float(np.float32(v)) for v in std)


def channel_sums(images: torch.Tensor, chunk: int = 256) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-channel sum and sum of squares of uint8 images, a chunk at a time (no float copy of the whole)."""
    c = images.shape[1]
    total, squares = np.zeros(c), np.zeros(c)
    for start in range(0, len(images), chunk):
        flat = images[start:start + chunk].transpose(0, 1).reshape(c, -1).double()
        total += flat.sum(1).numpy()
        squares += (flat * flat).sum(1).numpy()
    return total, squares, len(images) * images.shape[2] * images.shape[3]


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
    scale: float = 255.0,
    files: Sequence[Sequence[str] | None] = (None, None, None),
    train_sums: tuple[np.ndarray, np.ndarray, int] | None = None,
    cache: str | None = None,
) -> DataSplits:
    """Cap the train split at `limit`, take the normalisation statistics of the train split, wrap the splits.

    Images come in as uint8 N×C×H×W (pixel / `scale` in [0, 1]) and stay so; single-label labels as int64,
    multi-label as float32 multi-hot. `train_sums` (from the cache) spares a pass over an uncapped train split.
    """
    label_dtype = torch.float32 if multilabel else torch.int64
    splits = [TensorSplit(x, y.to(label_dtype), Pixels((0.0,), (1.0,), scale), tuple(f) if f is not None else None)
              for (x, y), f in zip((train, val, test), files)]
    if limit is not None:
        if limit < 1:
            raise DataError(f"limit must be a positive number of images, got {limit}; pass limit >= 1")
        labels = splits[0].labels
        keep = (
            np.sort(np.random.default_rng(seed).permutation(len(labels))[:limit])
            if multilabel
            else stratified_subset(labels.numpy(), limit, seed)
        )
        if len(keep) < len(labels):
            splits[0] = splits[0].subset(torch.from_numpy(keep))
            train_sums = None
    for split_name, split in zip(("train", "val", "test"), splits):
        if len(split) == 0:
            raise DataError(f"dataset {name!r} has no {split_name} images; add more images or check the data root")
    mean, std = pixel_stats(*(train_sums or channel_sums(splits[0].images)), scale)
    pixels = Pixels(mean, std, scale)
    splits = [replace(s, pixels=pixels) for s in splits]
    x = splits[0].images
    return DataSplits(
        train=splits[0],
        val=splits[1],
        test=splits[2],
        num_classes=len(class_names),
        in_chans=x.shape[1],
        class_names=tuple(str(c) for c in class_names),
        mean=mean,
        std=std,
        multilabel=multilabel,
        native_resolution=int(x.shape[-1]),
        name=name,
        augment=augment,
        cache=cache,
    )
