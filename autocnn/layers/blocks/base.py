"""The block contract shared by every registered block kind."""
from __future__ import annotations

from typing import ClassVar

from torch import nn

from autocnn.genotype import GenotypeError, StageSpec
from autocnn.layers.common import LayerFactory
from autocnn.registry import Registry


class Block(nn.Module):
    """One unit of a stage. Subclasses take `(in_chs, out_chs, stride, spec, *, layers, drop_path)`.

    `out_chs` is already resolved by the builder (`out_channels`). `residual` marks blocks whose
    identity path makes stochastic depth meaningful; they receive their share of the genotype's
    `drop_path` rate.
    """

    supports_attention: ClassVar[bool] = True
    residual: ClassVar[bool] = False

    @classmethod
    def validate(cls, spec: StageSpec) -> None:
        """Raise GenotypeError(field, message) for values this block kind cannot build."""

    @classmethod
    def out_channels(cls, in_chs: int, spec: StageSpec) -> int:
        return spec.out_chs or in_chs


BLOCKS: Registry[type[Block]] = Registry("block")


def require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise GenotypeError(field, message)


__all__ = ["Block", "BLOCKS", "LayerFactory", "require"]
