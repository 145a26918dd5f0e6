"""Mini-batches of a split, prepared on the training device: uint8 pixels are normalised, augmented and
resized per batch there.

Two ways to get the pixels to the device. Resident (`DeviceBatches`): the split's uint8 images are copied
to the device once and batches are sliced from them, which beats worker processes and per-batch copies by
a wide margin while the data fits. Streamed (`StreamBatches`): batches are read from the (memory-mapped)
split by a `DataLoader`, in pinned memory, and copied to the device one batch ahead of the model, for data
that does not fit. Both draw the same order and augmentation from the same generator, so they give
identical batches; `choose_mode` picks one by the data's size and a memory budget (`batches_for`).

Why resize per batch rather than once: an upscaled copy costs N·C·R² floats (about 30 GB for
CIFAR-10 at 224 px) and a different copy for each resolution a search tries, while one bilinear
interpolate per batch is cheap next to the model's forward pass. Normalisation and augmentation run at
the smaller of the stored and the network's resolution, where they are cheapest (`network_input`): a
256-px cache searched at 32 px is shrunk first, CIFAR searched at 224 px is augmented at 32 px.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..registry import Registry
from .splits import DataError, TensorSplit
from .transforms import network_input, resize

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation")


def _shift_pad(size: int) -> int:
    """Translation range: 1/8 of the image size (4 px at 32 px, the CIFAR convention)."""
    return max(1, size // 8)


def _shifted(x: torch.Tensor, gen: torch.Generator, flip: bool) -> torch.Tensor:
    """Zero-pad (zero is the channel mean after normalisation), crop at a random offset per image and, with
    `flip`, mirror a random half of the images horizontally. Random draws: row offsets, column offsets, flips."""
    b, c, h, w = x.shape
    pad = _shift_pad(min(h, w))
    padded = F.pad(x, (pad, pad, pad, pad))
    dev = x.device
    oy = torch.randint(0, 2 * pad + 1, (b, 1), generator=gen, device=dev)
    ox = torch.randint(0, 2 * pad + 1, (b, 1), generator=gen, device=dev)
    flips = torch.rand(b, generator=gen, device=dev) < 0.5 if flip else None
    if dev.type == "cpu":  # one slice copy per image at memcpy speed, where a 4-D gather computes every index
        out = torch.empty_like(x)
        mirror = flips.tolist() if flips is not None else [False] * b
        for i, (top, left) in enumerate(zip(oy.view(-1).tolist(), ox.view(-1).tolist())):
            crop = padded[i, :, top:top + h, left:left + w]
            out[i] = crop.flip(-1) if mirror[i] else crop
        return out
    rows = (oy + torch.arange(h, device=dev)).view(b, 1, h, 1)
    cols = (ox + torch.arange(w, device=dev)).view(b, 1, 1, w)
    bi = torch.arange(b, device=dev).view(b, 1, 1, 1)
    ci = torch.arange(c, device=dev).view(1, c, 1, 1)
    out = padded[bi, ci, rows, cols]
    return torch.where(flips.view(-1, 1, 1, 1), out.flip(3), out) if flips is not None else out


def random_translate(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Translation by up to 1/8 of the image size, zero-padded, independently per image."""
    return _shifted(x, gen, flip=False)


def random_crop_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The CIFAR recipe: random translation plus a horizontal flip of half the images."""
    return _shifted(x, gen, flip=True)


class PixelPolicy:
    """A `torchvision.transforms.v2` policy applied image by image to the stored pixels, before normalisation:
    its colour operations (posterize, solarize, contrast ...) are defined on pixel values, not on normalised ones.

    torchvision draws from torch's global generator; the policy runs under a fork of it seeded from the
    batches' own generator, so a run's augmentation is reproducible and does not disturb anything else's draws.
    """

    on_pixels = True

    def __init__(self, make: Callable[[], Callable[[torch.Tensor], torch.Tensor]]) -> None:
        self.make = make
        self.policy = None

    def __call__(self, x: torch.Tensor, gen: torch.Generator, scale: float = 255.0) -> torch.Tensor:
        if self.policy is None:
            self.policy = self.make()
        seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())
        as_bytes = x.dtype == torch.uint8 and scale == 255.0
        images = x if as_bytes else (x.float() / scale).clamp(0.0, 1.0)  # float policies expect [0, 1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = torch.stack([self.policy(image) for image in images])
        return out if as_bytes else out * scale


def _policy(name: str) -> PixelPolicy:
    def make():
        from torchvision.transforms import v2  # only runs that ask for a policy pay for torchvision's import

        return getattr(v2, name)()

    return PixelPolicy(make)


AUGMENTATIONS.register("none", lambda x, gen: x)
AUGMENTATIONS.register("translate", random_translate)
AUGMENTATIONS.register("crop_flip", random_crop_flip)
AUGMENTATIONS.register("trivial_augment", _policy("TrivialAugmentWide"))  # Müller & Hutter 2021
AUGMENTATIONS.register("rand_augment", _policy("RandAugment"))  # Cubuk et al. 2020: 2 ops at magnitude 9


DATA_MODES = ("auto", "resident", "stream")
RESIDENT_SHARE = 0.5
"""Without --data-memory, data is held resident while it needs at most this share of the device's free memory
(of the host's available memory on a CPU device): the rest is the models'."""

CPU_RESIDENT_CAP = 2**30
"""On a CPU device a resident split is the memory-mapped cache itself: the training process touches every page of it
each epoch (its RSS grows by the whole cache) and resizes every batch itself. Past this size reader processes do
that work in parallel and each process holds a few batches (bench_data, 10,000 256-px JPEGs at 32 px: streamed 987
images/s vs resident 597, peak RSS 0.8 vs 2.6 GiB), so bigger data streams by default."""


class Batches:
    """Iterate `(images, labels)` mini-batches of a `TensorSplit`, ready for the model on `device`.

    Each iteration is one epoch: with `shuffle` it draws a fresh permutation from a device generator seeded
    from `generator`, so runs are reproducible. Each batch is normalised (uint8 splits), augmented and
    resized to `resolution` (bilinear, antialias=False; a shrinking batch before it is normalised and
    augmented, a growing one after) and, with `channels_last`, NHWC-strided.
    Subclasses say how a batch of rows reaches the device (`_rows`).
    """

    def __init__(
        self,
        split: TensorSplit,
        batch_size: int,
        *,
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        augment: str = "none",
        resolution: int | None = None,
        drop_last: bool = False,
        channels_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.pixels = split.pixels
        self.labels = split.labels.to(self.device)
        self.batch_size = min(batch_size, max(1, len(self.labels)))
        self.shuffle = shuffle
        self.augment = AUGMENTATIONS.get(augment)
        self.resolution = None if resolution == split.images.shape[-1] else resolution
        self.drop_last = drop_last
        self.channels_last = channels_last
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        self._gen = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _order(self) -> list[torch.Tensor | slice]:
        """This epoch's batches as row indices on the device (shuffled) or slices (in order)."""
        n, bs = len(self.labels), self.batch_size
        if not self.shuffle:
            return [slice(i * bs, (i + 1) * bs) for i in range(len(self))]
        order = torch.randperm(n, generator=self._gen, device=self.device)
        return [order[i * bs : (i + 1) * bs] for i in range(len(self))]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self._order()
        for rows, x in zip(batches, self._rows(batches)):
            y = self.labels[rows] if isinstance(rows, slice) else self.labels.index_select(0, rows)
            yield self.prepare(x), y

    def _rows(self, batches: list) -> Iterator[torch.Tensor]:
        raise NotImplementedError

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise, augment, resize and re-stride one batch already on the device (`network_input`)."""
        px = self.pixels
        mean, std, scale = (px.mean, px.std, px.scale) if px is not None else (None, None, 1.0)
        augment = lambda t: self.augment(t, self._gen)  # noqa: E731 - on the normalised batch
        if getattr(self.augment, "on_pixels", False):
            x, augment = self.augment(x, self._gen, scale), None
        x = network_input(x, mean, std, scale, self.resolution, augment)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


class DeviceBatches(Batches):
    """Batches sliced from the split's images, copied to `device` once (uint8: a quarter of float32's memory).

    >>> import torch
    >>> split = TensorSplit(torch.zeros(10, 1, 8, 8), torch.zeros(10, dtype=torch.long))
    >>> [x.shape[0] for x, _ in DeviceBatches(split, 4)]
    [4, 4, 2]
    """

    def __init__(self, split: TensorSplit, batch_size: int, **kwargs) -> None:
        super().__init__(split, batch_size, **kwargs)
        self.images = split.images.to(self.device)

    def _rows(self, batches: list) -> Iterator[torch.Tensor]:
        for rows in batches:
            yield self.images[rows] if isinstance(rows, slice) else self.images.index_select(0, rows)


def _pread_into(fd: int, buffer: np.ndarray, offset: int) -> None:
    view, done = memoryview(buffer).cast("B"), 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise DataError(f"the decoded cache ended early (read {done} of {len(view)} bytes at {offset}); "
                            "delete the cache folder and search again")
        done += got


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def _return_freed_memory(worker_id: int) -> None:
    """In a reader process: serve blocks of 64 KiB and more from their own mappings, which free() returns to the
    system. glibc raises that threshold as large blocks come and go and then keeps freed batch buffers in its heap:
    each reader grew to ~3 GB over one epoch of 10,000 256-px images, and stays at ~0.45 GB with this."""
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 64 * 1024)
    except (AttributeError, OSError):  # not glibc: its allocator has its own policy
        pass


class _CacheFileRows:
    """Rows of a split read from the decoded cache's file with `pread` rather than through its memory map: the
    bytes pass through the page cache (shared by the node, reclaimable) into one batch-sized buffer, so a reader
    process's memory stays a batch however much of the cache an epoch touches."""

    def __init__(self, path: str, images: torch.Tensor) -> None:
        self.path, self.offset, self.rows = path, images.storage_offset(), len(images)
        self.row_shape = tuple(images.shape[1:])
        self.row_bytes = math.prod(self.row_shape)
        self.fd: int | None = None

    @classmethod
    def of(cls, cache: str | None, images: torch.Tensor) -> "_CacheFileRows | None":
        """A reader of `images` from `cache`'s file when they are a view of it (else None: read them in memory)."""
        if cache is None or images.dtype != torch.uint8 or images.device.type != "cpu" or not images.is_contiguous():
            return None
        path = os.path.join(cache, "images.u8")
        try:
            size = os.path.getsize(path)
        except OSError:
            return None
        if images.untyped_storage().nbytes() != size:  # a subset or a join: a copy in memory, not the file's rows
            return None
        return cls(path, images)

    def read(self, rows: slice | torch.Tensor) -> torch.Tensor:
        if self.fd is None:  # opened in the process that reads (a DataLoader worker)
            self.fd = os.open(self.path, os.O_RDONLY)
        if isinstance(rows, slice):
            start, stop = rows.start, min(rows.stop, self.rows)
            out = np.empty((stop - start, *self.row_shape), dtype=np.uint8)
            _pread_into(self.fd, out, self.offset + start * self.row_bytes)
        else:
            index = rows.tolist()
            out = np.empty((len(index), *self.row_shape), dtype=np.uint8)
            for j, row in enumerate(index):
                _pread_into(self.fd, out[j], self.offset + row * self.row_bytes)
        return torch.from_numpy(out)


class _BatchReader(torch.utils.data.Dataset):
    """Item i is the i-th batch of this epoch: its rows of the host images, gathered in one copy (read from the
    cache file when there is one) and, with `shrink_to`, already shrunk to the network's resolution as float32:
    the reader processes do the costly resize in parallel and ship a batch a fraction of the stored size. The main
    process then only normalises and augments it; the arithmetic is `network_input`'s, in the same order."""

    def __init__(self, images: torch.Tensor, batches: list, file: _CacheFileRows | None = None,
                 shrink_to: int | None = None) -> None:
        self.images, self.file, self.shrink_to = images, file, shrink_to
        self.batches = [b if isinstance(b, slice) else b.cpu() for b in batches]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> torch.Tensor:
        rows = self.batches[i]
        if self.file is not None:
            x = self.file.read(rows)
        else:
            x = self.images[rows].clone() if isinstance(rows, slice) else self.images.index_select(0, rows)
        return resize(x.float(), self.shrink_to) if self.shrink_to is not None else x


class StreamBatches(Batches):
    """Batches read from the split's images by a `DataLoader` with `workers` processes (from the decoded
    cache's file, `cache`, when the split is its rows), shrunk to the network's resolution there, pinned on
    CUDA, and copied to `device` one batch ahead of the one the model is given (on a side stream on CUDA), so
    reading, resizing, copying and computing overlap. Same order, pixels and augmentation as `DeviceBatches`."""

    def __init__(self, split: TensorSplit, batch_size: int, *, workers: int = 0, cache: str | None = None,
                 **kwargs) -> None:
        super().__init__(split, batch_size, **kwargs)
        self.images = split.images if split.images.device.type == "cpu" else split.images.cpu()
        self.workers = workers
        self.file = _CacheFileRows.of(cache, self.images)
        shrinks = self.resolution is not None and self.resolution < self.images.shape[-1]
        self.shrink_to = self.resolution if shrinks and not getattr(self.augment, "on_pixels", False) else None

    def _rows(self, batches: list) -> Iterator[torch.Tensor]:
        cuda = self.device.type == "cuda"
        reader = _BatchReader(self.images, batches, self.file, self.shrink_to)
        loader = torch.utils.data.DataLoader(reader, batch_size=None, shuffle=False,
                                             num_workers=self.workers, pin_memory=cuda,
                                             prefetch_factor=2 if self.workers else None,
                                             worker_init_fn=_return_freed_memory if self.workers else None)
        stream = torch.cuda.Stream(self.device) if cuda else None

        def send(x: torch.Tensor) -> torch.Tensor:
            if stream is None:
                return x.to(self.device)
            with torch.cuda.stream(stream):
                return x.to(self.device, non_blocking=True)

        ahead = None
        for x in loader:
            sent = send(x)
            if ahead is not None:
                yield self._ready(ahead, stream)
            ahead = sent
        if ahead is not None:
            yield self._ready(ahead, stream)

    @staticmethod
    def _ready(x: torch.Tensor, stream) -> torch.Tensor:
        if stream is not None:
            current = torch.cuda.current_stream(x.device)
            current.wait_stream(stream)
            x.record_stream(current)
        return x


def memory_budget(device: torch.device) -> int:
    """Bytes data may take resident on `device` without --data-memory: a share of what is free there (on the CPU,
    at most `CPU_RESIDENT_CAP`)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(RESIDENT_SHARE * free)
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        available = info.get("MemAvailable", info.get("MemFree", 0))
    except (OSError, ValueError, IndexError):
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return min(int(RESIDENT_SHARE * available), CPU_RESIDENT_CAP)


def choose_mode(nbytes: int, device: torch.device | str, mode: str = "auto",
                memory: int | None = None) -> tuple[str, str]:
    """("resident" or "stream", why) for data of `nbytes` on `device`: `mode` when forced, else resident
    while it fits `memory` bytes (default: `memory_budget`)."""
    if mode not in DATA_MODES:
        raise DataError(f"--data-mode must be one of {', '.join(DATA_MODES)}, got {mode!r}")
    device = torch.device(device)
    if mode != "auto":
        return mode, f"{mode} on {device} (--data-mode {mode})"
    budget = memory if memory is not None else memory_budget(device)
    source = ("--data-memory" if memory is not None else f"{RESIDENT_SHARE:.0%} of free memory"
              + (f", at most {CPU_RESIDENT_CAP / 2**30:g} GiB on the CPU" if device.type == "cpu" else ""))
    fits = nbytes <= budget
    verb = "fits" if fits else "exceeds"
    return ("resident" if fits else "stream",
            f"{'resident on' if fits else 'streamed to'} {device}: {nbytes / 2**20:,.1f} MiB {verb} the budget of "
            f"{budget / 2**20:,.1f} MiB ({source})")


def batches_for(split: TensorSplit, batch_size: int, *, mode: str = "resident", workers: int | None = None,
                **kwargs) -> Batches:
    """`DeviceBatches` (mode "resident") or `StreamBatches` (mode "stream", `workers` reader processes,
    default: as many as this process's torch threads, at most 4: a Ray trial's CPUs; `cache`: the decoded cache
    folder the split's rows are read from) over `split`."""
    cache = kwargs.pop("cache", None)
    if mode == "stream":
        if workers is None:
            workers = min(4, torch.get_num_threads())
        return StreamBatches(split, batch_size, workers=workers, cache=cache, **kwargs)
    return DeviceBatches(split, batch_size, **kwargs)
