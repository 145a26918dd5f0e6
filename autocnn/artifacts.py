"""Where a study keeps its files: `<artifact root>/<study>/trial-<number>/weights.safetensors`.

The artifact root is the folder of the SQLite file for `sqlite:///` storages (so a study's database and
its weights travel together), else `./studies`. Trials record their weights path relative to the
root (trial user attr `weights_path`), so a moved folder keeps working.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from torch import nn

WEIGHTS_FILE = "weights.safetensors"


def _storage_url(storage_url: str | None) -> str:
    from autocnn.storage import DEFAULT_STORAGE

    return storage_url or os.environ.get("AUTOCNN_STORAGE", DEFAULT_STORAGE)


def artifact_root(storage_url: str | None) -> Path:
    """The folder of the SQLite file for sqlite URLs, else `./studies` (absolute)."""
    url = _storage_url(storage_url)
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):]).expanduser().resolve().parent
    return Path("studies").resolve()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "_"


def trial_weights_relpath(study_name: str, number: int) -> str:
    """`<study>/trial-<number>/weights.safetensors`, with the study name made safe for file systems."""
    return f"{_safe(study_name)}/trial-{number}/{WEIGHTS_FILE}"


def resolve_weights(storage_url: str | None, relpath: str) -> Path:
    """The absolute path of a trial's recorded (relative) weights path."""
    return artifact_root(storage_url) / relpath


def save_trial_weights(model: nn.Module, storage_url: str | None, study_name: str, number: int) -> str | None:
    """Save `model`'s state_dict as safetensors for a trial; returns the path relative to the artifact root.

    A write failure (disk full, read-only folder) warns and returns None: the trial's result stands,
    only its export will need `--retrain-epochs`.
    """
    from safetensors.torch import save_file

    relpath = trial_weights_relpath(study_name, number)
    path = resolve_weights(storage_url, relpath)
    partial = path.with_name(path.name + ".part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(partial), metadata={"format": "pt"})
        os.replace(partial, path)
    except OSError as err:
        warnings.warn(f"could not save the weights of trial {number} to {path} ({err.strerror or err}); "
                      "exporting it will need --retrain-epochs", RuntimeWarning, stacklevel=2)
        partial.unlink(missing_ok=True)
        return None
    return relpath
