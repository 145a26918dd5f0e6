"""Layer registries: activations, norms, conv kinds, attention and blocks.

Adding a member is one class (or factory) plus its registration; the builder, validation and the
registry-driven tests pick it up from here.
"""
from autocnn.layers.common import ACTIVATIONS, CONVS, NORMS, ConvNormAct, DropPath, LayerFactory, make_divisible
from autocnn.layers.attention import ATTENTION
from autocnn.layers.blocks import BLOCKS, Block

__all__ = ["ACTIVATIONS", "ATTENTION", "BLOCKS", "Block", "CONVS", "ConvNormAct", "DropPath",
           "LayerFactory", "NORMS", "make_divisible"]
