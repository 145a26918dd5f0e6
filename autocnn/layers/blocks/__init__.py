"""Block kinds: one class per `autocnn.catalog.BLOCKS` entry, imported from the module it names."""
from autocnn import catalog
from autocnn.layers.blocks.base import Block, load_block
from autocnn.registry import Registry

BLOCKS: Registry[type[Block]] = Registry.implementing(catalog.BLOCKS)
for _name, _kind in catalog.BLOCKS.items():
    BLOCKS.register(_name, load_block(_kind))
del _name, _kind

__all__ = ["BLOCKS", "Block"]
