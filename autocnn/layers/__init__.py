"""Layer registries: activations, norms, conv kinds, attention and blocks.

They implement the names listed in `autocnn.catalog` (torch-free); the builder and the
registry-driven tests pick every member up from here.
"""
from autocnn.layers.attention import ATTENTION
from autocnn.layers.blocks import BLOCKS, Block
from autocnn.layers.common import ACTIVATIONS, CONVS, NORMS, ConvNormAct, DropPath, LayerFactory
from autocnn.scaling import make_divisible

__all__ = ["ACTIVATIONS", "ATTENTION", "BLOCKS", "Block", "CONVS", "ConvNormAct", "DropPath",
           "LayerFactory", "NORMS", "make_divisible"]
