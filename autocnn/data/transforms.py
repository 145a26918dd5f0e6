"""The evaluation transform, in torch alone: the cache builder, the trainer and an exported `model.py` all run
these functions, so a model sees the same pixels in training, in evaluation and in the user's hands.

Decoded images are stored at one square size (`fit_square`: resize the shorter side, then centre-crop, as
torchvision's `Resize(size)` + `CenterCrop(size)`), as uint8; each batch is then scaled to [0, 1] and normalised
(`normalize`) and resized to the candidate's resolution (`resize`) on the training device.
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


def normalize(images: torch.Tensor, mean, std, scale: float = 255.0) -> torch.Tensor:
    """uint8 pixels (divided by `scale`) or floats in [0, 1] -> float32 normalised per channel with `mean`/`std`
    (sequences, or None for no normalisation), in one fused multiply-add over the batch."""
    x = images.float()
    divisor = scale if images.dtype == torch.uint8 else 1.0
    if mean is None:
        return x / divisor if divisor != 1.0 else x
    shape = (1, -1, 1, 1)
    gain = torch.tensor([1.0 / (divisor * s) for s in std], device=x.device).view(shape)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=x.device).view(shape)
    return torch.addcmul(shift, x, gain)


def resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """A batch resized to resolution × resolution (bilinear, no antialiasing), unless it is already that size."""
    if tuple(images.shape[-2:]) == (resolution, resolution):
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=False)
