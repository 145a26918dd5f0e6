"""The stable public entry points: create_model and list_models."""
from __future__ import annotations

import dataclasses
import os
from contextlib import contextmanager
from typing import Any

from autocnn.builder import Network, build_model
from autocnn.errors import first_line
from autocnn.genotype import Genotype, GenotypeError, load_genotype
from autocnn.presets import PRESETS, get_preset
from autocnn.weights import load_reference_weights

_HEAD_OVERRIDES = {"dropout", "multilabel", "pool", "hidden"}


def resolve_genotype(name_or_genotype: str | os.PathLike | Genotype) -> Genotype:
    """A preset name, a genotype file (.json/.yaml/.txt), a one-line genotype string, or a Genotype."""
    if isinstance(name_or_genotype, Genotype):
        return name_or_genotype
    text = os.fspath(name_or_genotype)
    if text in PRESETS:
        return get_preset(text)
    if text.startswith("net"):
        return Genotype.from_string(text)
    if os.path.isfile(text):
        return load_genotype(text)
    PRESETS.get(text)  # raises with the list of known models
    raise AssertionError("unreachable")


def create_model(name_or_genotype: str | os.PathLike | Genotype, num_classes: int | None = None,
                 in_chans: int | None = None, weights: str | os.PathLike | None = None, *,
                 freeze: int = 0, **overrides: Any) -> Network:
    """Build a network; `None` keeps the genotype's class and channel counts (1000 and 3 for presets).

    `overrides` replace genotype fields (`resolution`, `act`, `drop_path`, ...) or head fields
    (`dropout`, `multilabel`, ...). `weights` is a torchvision/timm state_dict (or safetensors) file
    for the matching preset (RGB weights fit any `in_chans`: the stem is adapted as timm does);
    `freeze` stops gradients for the first N blocks (stem layers first) and keeps their BatchNorm
    layers in eval mode, through `model.train()` too.
    """
    g = resolve_genotype(name_or_genotype)
    head_changes = {k: overrides.pop(k) for k in list(overrides) if k in _HEAD_OVERRIDES}
    if head_changes:
        overrides["head"] = dataclasses.replace(g.head, **head_changes)
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    if in_chans is not None:
        overrides["in_chans"] = in_chans
    unknown = set(overrides) - {f.name for f in dataclasses.fields(Genotype)}
    if unknown:
        raise TypeError(f"create_model got unknown override(s): {', '.join(sorted(unknown))}")
    if overrides:
        g = g.replace(**overrides)
    with shape_errors(g):
        model = build_model(g)
    if weights is not None:
        load_reference_weights(model, weights)
    if freeze:
        from autocnn.weights import freeze_blocks

        freeze_blocks(model, freeze)
    return model


# how torch's convs and pools refuse an input smaller than their window
_SHRUNK = ("Output size is too small", "greater than actual input size")


@contextmanager
def shape_errors(g: Genotype):
    """A build or forward at the genotype's resolution that torch refuses is a GenotypeError: the layers are
    valid one by one, but together they shrink the image to nothing (or need sizes beyond int64). Kept out of
    the builder, whose source the standalone export copies and which must not raise autocnn's errors."""
    try:
        yield
    except RuntimeError as err:
        said = first_line(err)
        if "overflow" in said:
            raise GenotypeError("", f"the network is too large for a tensor at {g.resolution} px ({said}); check "
                                "the resolution and each stage's widths and padding") from None
        if any(words in said for words in _SHRUNK):
            raise GenotypeError("resolution", f"the feature maps shrink to nothing at {g.resolution} px ({said}); "
                                "use a larger resolution, smaller kernels or fewer downsampling stages") from None
        raise


def list_models() -> list[str]:
    return sorted(PRESETS.names())
