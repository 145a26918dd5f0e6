"""Load reference (torchvision / timm) state_dicts into autocnn-built networks.

Presets register their submodules in the reference implementation's order, so tensors are matched
by position (by name when the keys are the network's own) and checked by shape: no per-family key
tables to keep in sync. Auxiliary heads (GoogLeNet aux1/aux2, Inception-v3 AuxLogits) are dropped;
a classifier of another class count is skipped and the stem of RGB weights is adapted to another input
channel count (timm's rule), so reference weights can seed fine-tuning on a new dataset; `freeze_blocks`
fixes the first blocks.
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict

import torch
from torch import nn

from autocnn.errors import AutocnnError

_AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")


class WeightsError(AutocnnError, ValueError):
    """Weights that cannot be read or do not match the architecture."""


def read_state_dict(path: str | os.PathLike) -> "OrderedDict[str, torch.Tensor]":
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"weights file {path} does not exist; pass the path of a saved state_dict")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any reader failure means the same thing to the user
        raise WeightsError(f"cannot read weights {path} ({type(err).__name__}); "
                           "save them with torch.save(model.state_dict()) or safetensors") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} holds no state_dict of tensors")
    return OrderedDict((k, v) for k, v in state.items() if not k.startswith(_AUX_PREFIXES))


def map_state_dict(model: nn.Module, source: "OrderedDict[str, torch.Tensor]", *, origin: str = "weights"):
    """Return (state_dict keyed for `model`, names of classifier tensors skipped)."""
    target = model.state_dict()
    if source.keys() == target.keys():  # autocnn's own (a trial's safetensors file keeps its keys sorted): by name
        source = OrderedDict((name, source[name]) for name in target)
    t_items, s_items = list(target.items()), list(source.items())
    skipped: list[str] = []
    if len(t_items) == len(s_items) and len(t_items) >= 2:
        # the classifier is last in both; a different class count is fine-tuning, not a mismatch
        for i in (-2, -1):
            (t_name, t_val), (_, s_val) = t_items[i], s_items[i]
            if t_val.shape != s_val.shape and t_name.startswith("head.fc."):
                skipped.append(t_name)
    if len(t_items) != len(s_items):
        raise WeightsError(f"{origin} have {len(s_items)} tensors but the architecture has {len(t_items)}; "
                           "use the preset these weights were trained for")
    mapped = OrderedDict()
    stem = next((name for name, val in t_items if val.ndim == 4), None)  # the first conv's weight
    for (t_name, t_val), (s_name, s_val) in zip(t_items, s_items):
        if t_name in skipped:
            mapped[t_name] = t_val
            continue
        if t_name == stem and s_val.ndim == 4 and s_val.shape[1] == 3 and t_val.shape[1] != 3 \
                and s_val.shape[:1] + s_val.shape[2:] == t_val.shape[:1] + t_val.shape[2:]:
            s_val = adapt_input_conv(s_val, t_val.shape[1])
        if t_val.shape != s_val.shape:
            raise WeightsError(f"{origin} do not match the architecture: {s_name} has shape "
                               f"{tuple(s_val.shape)} where {t_name} needs {tuple(t_val.shape)}; "
                               "use the preset these weights were trained for")
        mapped[t_name] = s_val.to(t_val.dtype)
    return mapped, skipped


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """RGB filters (O×3×k×k) for `in_chans` input channels, by timm's rule: one channel gets the sum of
    the three (on a grey image the summed filter gives exactly what the RGB filters give on that image
    copied into R, G and B); other counts repeat R, G, B cyclically, scaled by 3/in_chans so that
    activations keep their size."""
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeated = weight.repeat(1, math.ceil(in_chans / 3), 1, 1)[:, :in_chans]
    return repeated * (3 / in_chans)


def load_reference_weights(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """Load `path` into `model` in place; returns the classifier tensors left at their init."""
    mapped, skipped = map_state_dict(model, read_state_dict(path), origin=f"weights {os.fspath(path)}")
    model.load_state_dict(mapped)
    return skipped


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d of a frozen block: eval mode whatever `train()` asks, so fine-tuning normalises with
    the loaded running statistics and never updates them (timm's `freeze` swaps in a FrozenBatchNorm2d too).
    Same parameters and buffers as BatchNorm2d: state_dicts stay interchangeable."""

    def train(self, mode: bool = True) -> "FrozenBatchNorm2d":
        return super().train(False)


def freeze_blocks(model: nn.Module, count: int) -> None:
    """Stop gradients in the first `count` of `model.blocks` and keep their BatchNorm layers in eval mode."""
    for block in model.blocks[:count]:
        block.requires_grad_(False)
        for module in block.modules():
            if type(module) is nn.BatchNorm2d:
                module.__class__ = FrozenBatchNorm2d  # in place: no state to add, and references stay valid
                module.eval()
