"""Named reference architectures, each a function returning a Genotype over shared generators."""
from __future__ import annotations

from typing import Callable

from autocnn.genotype import Genotype
from autocnn.registry import Registry

PRESETS: Registry[Callable[[], Genotype]] = Registry("model")

from autocnn.presets import classic, resnet, densenet, efficientnet  # noqa: E402,F401  (registration)
from autocnn.presets import inception, xception  # noqa: E402,F401  (registration)


def get_preset(name: str) -> Genotype:
    return PRESETS.get(name)()


__all__ = ["PRESETS", "get_preset"]
