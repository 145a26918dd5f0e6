"""Block kinds; importing this package registers every one of them in BLOCKS."""
from autocnn.layers.blocks.base import BLOCKS, Block
from autocnn.layers.blocks import plain, resnet, dense, mbconv  # noqa: F401  (registration)
from autocnn.layers.blocks import inception, xception  # noqa: F401  (registration)

__all__ = ["BLOCKS", "Block"]
