"""The evaluation transform, in torch alone: the cache builder, the trainer and an exported `model.py` all run
these functions, so a model sees the same pixels in training, in evaluation and in the user's hands.

Decoded images are stored at one square size (`fit_square`: resize the shorter side, then centre-crop, as
torchvision's `Resize(size)` + `CenterCrop(size)`), as uint8; each batch is then scaled to [0, 1], normalised
and resized to the candidate's resolution on the training device (`network_input`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """N×C×H×W images -> N×C×size×size: the shorter side resized to `size` (bilinear, antialiased), the longer
    one centre-cropped. uint8 stays uint8 (rounded), as the decoded cache stores it; a square of `size` is
    returned as it is."""
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    short = min(height, width)
    new_h, new_w = (size, max(size, int(size * width / height))) if height == short else \
        (max(size, int(size * height / width)), size)
    x = images.float() if images.dtype == torch.uint8 else images
    if (new_h, new_w) != (height, width):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    x = x[..., top:top + size, left:left + size]
    if images.dtype == torch.uint8:
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x.contiguous()


def normalize(images: torch.Tensor, mean, std, scale: float = 1.0) -> torch.Tensor:
    """Pixels divided by `scale` (255 for uint8 values, 1 for floats in [0, 1]) -> float32 normalised per channel
    with `mean`/`std` (sequences, or None for no normalisation), in one fused multiply-add over the batch."""
    x = images.float()
    if mean is None:
        return x / scale if scale != 1.0 else x
    shape = (1, -1, 1, 1)
    gain = torch.tensor([1.0 / (scale * s) for s in std], device=x.device).view(shape)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=x.device).view(shape)
    return torch.addcmul(shift, x, gain)


def resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """A batch resized to resolution × resolution (bilinear, no antialiasing), unless it is already that size."""
    if tuple(images.shape[-2:]) == (resolution, resolution):
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=False)


def network_input(images: torch.Tensor, mean, std, scale: float, resolution: int | None = None,
                  augment=None) -> torch.Tensor:
    """Stored pixels (pixel / `scale` in [0, 1]) -> the network's input at `resolution` (None: as stored).

    A batch that shrinks is resized first and one that grows last, so normalising (and `augment`, a function
    of the normalised batch, in training) always runs on the smaller of the two; the two orders are the same
    arithmetic (a bilinear resize is a per-pixel weighted mean, normalising affine per channel)."""
    x = images.float()
    if resolution is not None and resolution < x.shape[-1]:
        x = resize(x, resolution)
    x = normalize(x, mean, std, scale)
    if augment is not None:
        x = augment(x)
    return resize(x, resolution) if resolution is not None else x
