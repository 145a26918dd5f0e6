"""Where a study keeps its files: `<artifact root>/<study>/trial-<number>/weights.safetensors`.

A study's artifact root is part of its stored configuration (`SearchConfig.artifacts`, `--artifacts`),
made absolute when the study is created, so that every reader (export, dashboard, report) in any folder
finds the weights the trainer wrote. Its default is the folder of the SQLite file for `sqlite:///`
storages (a study's database and its weights travel together), else `./studies` of the creating process.
Studies created before the root was stored fall back to that default. Trials record their weights path
relative to the root (trial user attr `weights_path`), so a moved folder keeps working. A new study claims
its folder (`.study`: its SQLite file), so that another file's study of the same name beside it is refused
instead of overwriting its weights.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

from torch import nn

from autocnn.errors import AutocnnError

WEIGHTS_FILE = "weights.safetensors"
OWNER_FILE = ".study"  # in a SQLite study's weights folder: the file and study the weights belong to (JSON)


def _storage_url(storage_url: str | None) -> str:
    from autocnn.storage import DEFAULT_STORAGE

    return storage_url or os.environ.get("AUTOCNN_STORAGE", DEFAULT_STORAGE)


def artifact_root(storage_url: str | None) -> Path:
    """The folder of the SQLite file for sqlite URLs, else `./studies` (absolute)."""
    url = _storage_url(storage_url)
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):]).expanduser().resolve().parent
    return Path("studies").resolve()


def resolve_artifacts(artifacts: str | None, storage_url: str | None) -> str:
    """The absolute artifact root for `--artifacts` (a path or a `file://` URI; None: `artifact_root`)."""
    if artifacts is None:
        return str(artifact_root(storage_url))
    if "://" in artifacts:
        scheme, _, rest = artifacts.partition("://")
        if scheme != "file":
            raise AutocnnError(f"--artifacts {artifacts!r}: only folders and file:// URIs are supported, not "
                               f"{scheme}://; mount the location and pass its path")
        artifacts = rest
    if not artifacts:
        raise AutocnnError("--artifacts is empty; pass a folder for the trials' weights")
    return str(Path(artifacts).expanduser().resolve())


def study_artifact_root(config, storage_url: str | None) -> Path:
    """Where the study of `config` (a `SearchConfig` or None) keeps its files: its stored root, else the default."""
    stored = getattr(config, "artifacts", None)
    return Path(stored) if stored else artifact_root(storage_url)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "_"


def _sqlite_file(storage_url: str | None) -> str | None:
    """The absolute path of a `sqlite:///` storage's file (None: another storage)."""
    url = _storage_url(storage_url)
    return str(Path(url[len("sqlite:///"):]).expanduser().resolve()) if url.startswith("sqlite:///") else None


def check_study_folder(root: str | Path, study_name: str, storage_url: str | None) -> None:
    """Refuse a new study whose weights folder (`<root>/<study>`) holds a study of the same name from another
    SQLite file (`claim_study_folder`): their trials would overwrite each other's weights, and a trial that
    continues an earlier one would load the other study's (two files in one folder, both searched as `--study
    run`). Server storages are not checked: their address may change while the study stays the same."""
    folder, database = Path(root) / _safe(study_name), _sqlite_file(storage_url)
    if database is None:
        return
    try:
        holder = json.loads((folder / OWNER_FILE).read_text())["storage"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # unclaimed (or written before folders were claimed)
    if holder != database:
        raise AutocnnError(f"{folder} holds the weights of study {study_name!r} of another database ({holder}); "
                           f"choose another --study name or --artifacts folder")


def claim_study_folder(root: str | Path, study_name: str, storage_url: str | None) -> None:
    """Record in a new SQLite study's weights folder which file the study lives in (`check_study_folder`)."""
    database = _sqlite_file(storage_url)
    if database is None:
        return
    folder = Path(root) / _safe(study_name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / OWNER_FILE).write_text(json.dumps({"storage": database, "study": study_name}))
    except OSError as err:  # the first weights saved will say the same more usefully
        warnings.warn(f"cannot write {folder / OWNER_FILE}: {err}", stacklevel=2)


def trial_weights_relpath(study_name: str, number: int) -> str:
    """`<study>/trial-<number>/weights.safetensors`, with the study name made safe for file systems."""
    return f"{_safe(study_name)}/trial-{number}/{WEIGHTS_FILE}"


def resolve_weights(storage_url: str | None, relpath: str, root: str | Path | None = None) -> Path:
    """The absolute path of a trial's recorded (relative) weights path under `root` (default: `artifact_root`)."""
    return (Path(root) if root else artifact_root(storage_url)) / relpath


def save_trial_weights(model: nn.Module, storage_url: str | None, study_name: str, number: int,
                       root: str | Path | None = None) -> str | None:
    """Save `model`'s state_dict as safetensors for a trial; returns the path relative to the artifact root
    (`root`, the study's stored one; default: `artifact_root(storage_url)`).

    A write failure (disk full, read-only folder) warns and returns None: the trial's result stands,
    only its export will need `--retrain-epochs`.
    """
    from safetensors.torch import save_file

    relpath = trial_weights_relpath(study_name, number)
    path = resolve_weights(storage_url, relpath, root)
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
