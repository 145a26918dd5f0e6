"""A one-point 'space' so a single architecture trains through exactly the search path (`autocnn train`)."""
from __future__ import annotations

from autocnn.genotype import Genotype

PREFIX = "model:"


class FixedSpace:
    """Always the same genotype, adapted to the dataset's classes and channels."""

    constraints: dict = {}

    def __init__(self, genotype: Genotype) -> None:
        self.genotype = genotype

    @classmethod
    def from_spec(cls, spec: str) -> "FixedSpace":
        return cls(Genotype.from_string(spec[len(PREFIX):]))

    @staticmethod
    def spec_for(genotype: Genotype) -> str:
        return PREFIX + genotype.to_string()

    def sample(self, trial, *, resolution=None, num_classes=None, in_chans=None, native_resolution=None) -> Genotype:
        """The genotype at its own resolution unless `resolution` is given (the data's native one changes nothing)."""
        g = self.genotype
        return g.replace(resolution=resolution or g.resolution, num_classes=num_classes or g.num_classes,
                         in_chans=in_chans or g.in_chans)

    def fixed_params(self, name: str) -> dict | None:
        return None
