"""Mini-batches cut from a split that lives on the training device, with on-device augmentation.

Why no DataLoader: the datasets fit in device memory, so slicing a resident tensor beats worker
processes and per-batch host->device copies by a wide margin for small images.

Why resize per batch rather than once: an upscaled copy costs N·C·R² floats (about 30 GB for
CIFAR-10 at 224 px) and a different copy for each resolution a search tries, while one bilinear
interpolate per batch is cheap next to the model's forward pass. Augmentation runs first, at native
resolution, where it is cheapest and where the "pixels of padding" are defined.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from ..registry import Registry
from .splits import TensorSplit

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation")


def _shift_pad(size: int) -> int:
    """Translation range: 1/8 of the image size (4 px at 32 px, the CIFAR convention)."""
    return max(1, size // 8)


def random_translate(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad (zero is the channel mean after normalisation), then crop at a random offset per image."""
    b, c, h, w = x.shape
    pad = _shift_pad(min(h, w))
    padded = F.pad(x, (pad, pad, pad, pad))
    dev = x.device
    oy = torch.randint(0, 2 * pad + 1, (b, 1), generator=gen, device=dev)
    ox = torch.randint(0, 2 * pad + 1, (b, 1), generator=gen, device=dev)
    rows = (oy + torch.arange(h, device=dev)).view(b, 1, h, 1)
    cols = (ox + torch.arange(w, device=dev)).view(b, 1, 1, w)
    bi = torch.arange(b, device=dev).view(b, 1, 1, 1)
    ci = torch.arange(c, device=dev).view(1, c, 1, 1)
    return padded[bi, ci, rows, cols]


def random_crop_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The CIFAR recipe: random translation plus a horizontal flip of half the images."""
    x = random_translate(x, gen)
    flip = torch.rand(x.shape[0], generator=gen, device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


AUGMENTATIONS.register("none", lambda x, gen: x)
AUGMENTATIONS.register("translate", random_translate)
AUGMENTATIONS.register("crop_flip", random_crop_flip)


class DeviceBatches:
    """Iterate `(images, labels)` mini-batches from a `TensorSplit` kept on `device`.

    The split is moved to the device once, at construction. Each iteration is one epoch: with
    `shuffle` it draws a fresh permutation from a device generator seeded from `generator`, so runs
    are reproducible. `resolution` resizes each batch (bilinear, antialias=False);
    `channels_last` returns NHWC-strided batches for CUDA convolutions.

    >>> import torch
    >>> split = TensorSplit(torch.zeros(10, 1, 8, 8), torch.zeros(10, dtype=torch.long))
    >>> [x.shape[0] for x, _ in DeviceBatches(split, 4)]
    [4, 4, 2]
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
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size = min(batch_size, max(1, len(self.labels)))
        self.shuffle = shuffle
        self.augment = AUGMENTATIONS.get(augment)
        self.resolution = None if resolution == self.images.shape[-1] else resolution
        self.drop_last = drop_last
        self.channels_last = channels_last
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        self._gen = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, bs = len(self.labels), self.batch_size
        order = torch.randperm(n, generator=self._gen, device=self.device) if self.shuffle else None
        for i in range(len(self)):
            if order is None:
                x, y = self.images[i * bs : (i + 1) * bs], self.labels[i * bs : (i + 1) * bs]
            else:
                idx = order[i * bs : (i + 1) * bs]
                x, y = self.images.index_select(0, idx), self.labels.index_select(0, idx)
            yield self.prepare(x), y

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Augment, resize and re-stride one batch already on the device."""
        x = self.augment(x, self._gen)
        if self.resolution is not None:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear",
                              align_corners=False, antialias=False)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
