"""autocnn: neural-architecture search for convolutional image classifiers."""
from autocnn._version import __version__
from autocnn.api import create_model, list_models
from autocnn.export.trials import export  # autocnn.export(...); its parts: from autocnn.export import ...
from autocnn.genotype import Genotype, GenotypeError, HeadSpec, StageSpec

__all__ = ["Genotype", "GenotypeError", "HeadSpec", "StageSpec", "create_model", "export", "list_models"]
