"""autocnn: neural-architecture search for convolutional image classifiers."""
from autocnn.api import create_model, list_models
from autocnn.genotype import Genotype, GenotypeError, HeadSpec, StageSpec

__all__ = ["Genotype", "GenotypeError", "HeadSpec", "StageSpec", "create_model", "list_models"]
__version__ = "0.1.0"
