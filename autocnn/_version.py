"""The package version, in a module of its own so that any part of autocnn can read it without
importing the package root (which imports nearly everything)."""

__version__ = "0.1.0"
