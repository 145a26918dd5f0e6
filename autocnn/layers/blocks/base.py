"""The block contract shared by every block kind, and how a catalog entry becomes its class."""
from __future__ import annotations

import importlib
from typing import ClassVar

from torch import nn

from autocnn.catalog import BlockKind
from autocnn.genotype import StageSpec


class Block(nn.Module):
    """One unit of a stage. Subclasses take `(in_chs, out_chs, stride, spec, *, layers, drop_path)`.

    `out_chs` is already resolved by the builder (`out_channels`). The torch-free facts come from the
    `autocnn.catalog` entry that names the class (`kind`): `residual` marks blocks whose identity path
    makes stochastic depth meaningful; they receive their share of the genotype's `drop_path` rate.
    """

    kind: ClassVar[BlockKind]
    supports_attention: ClassVar[bool]
    residual: ClassVar[bool]

    @classmethod
    def out_channels(cls, in_chs: int, spec: StageSpec) -> int:
        return cls.kind.out_channels(in_chs, spec)


def load_block(kind: BlockKind) -> type[Block]:
    """Import the class a catalog entry names (`module:Class`) and bind the entry's facts to it."""
    module, _, name = kind.impl.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, Block)):
        raise TypeError(f"block {kind.name!r}: {kind.impl} is not a Block subclass")
    if "kind" in vars(cls):
        raise ValueError(f"block {kind.name!r}: {kind.impl} already implements block {cls.kind.name!r}")
    cls.kind, cls.supports_attention, cls.residual = kind, kind.supports_attention, kind.residual
    return cls


__all__ = ["Block", "load_block"]
