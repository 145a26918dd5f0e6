"""autocnn: neural-architecture search for convolutional image classifiers.

Importing the package loads only the genotype (no torch); `create_model`, `list_models` and
`export` load the layers above it on first use (PEP 562), so the root depends on nothing but the
genotype.
"""
import sys
import types

from autocnn._version import __version__
from autocnn.genotype import Genotype, GenotypeError, HeadSpec, StageSpec

__all__ = ["Genotype", "GenotypeError", "HeadSpec", "StageSpec", "create_model", "export", "list_models"]


def __getattr__(name: str):
    if name in ("create_model", "list_models"):
        from autocnn import api

        value = getattr(api, name)
    elif name == "export":
        from autocnn.export.trials import export as value
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Root(types.ModuleType):
    """Keeps `autocnn.export` the function: importing the `autocnn.export` subpackage would otherwise
    bind the subpackage over it (the import system sets each submodule on its parent)."""

    def __setattr__(self, name: str, value) -> None:
        if name == "export" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Root
