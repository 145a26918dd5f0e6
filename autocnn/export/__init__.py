"""Export a trained network as a folder anyone can load with PyTorch alone.

`export_model` writes a folder for a network in hand; `export_trial` for the best trial, a given
trial or every Pareto-optimal trial of a study (optionally retrained first); `export` is the one
call behind both, as the `autocnn export` command takes it. See `autocnn.export.writer` for the files.
"""
from __future__ import annotations

from autocnn.export.errors import ExportError
from autocnn.export.writer import FORMATS, ExportWarning, export_model

__all__ = ["FORMATS", "ExportError", "ExportWarning", "export", "export_model", "export_trial"]


def __getattr__(name: str):
    # the study side imports optuna; `import autocnn` must not
    if name in ("export_trial", "export"):
        from autocnn.export import trials

        return getattr(trials, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
