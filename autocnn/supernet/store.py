"""Where a trained supernet lives: `<artifact root>/supernets/<NAME>/`, next to the studies that search it.

The folder holds `supernet.json` (the record: space, dataset, fixed values, elastic choices, the largest
genotype, the training settings, epochs done, losses, seconds and each run), `weights.safetensors` (the
supernet's state_dict after its last finished epoch) and `checkpoint.pt` (`train_supernet`'s resumable
state). The artifact root is the one studies use (`autocnn.artifacts`): a supernet trained with a
storage is found by every study of that storage, by name alone, so a study stores only the name.
Every file is replaced atomically: a killed run leaves the last finished epoch's files.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from autocnn.supernet.model import SupernetError

RECORD_FILE = "supernet.json"
WEIGHTS_FILE = "weights.safetensors"
CHECKPOINT_FILE = "checkpoint.pt"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_name(name: str) -> str:
    """A supernet name is a folder name: refuse one that would escape or need quoting."""
    if not name or not _NAME.fullmatch(name):
        raise SupernetError(f"supernet name {name!r} is not a plain name; use letters, digits, '.', '_' and '-', "
                            "e.g. --name tiny-digits")
    return name


def supernet_dir(root: str | os.PathLike, name: str) -> Path:
    return Path(root) / "supernets" / check_name(name)


def read_record(root: str | os.PathLike, name: str) -> dict[str, Any] | None:
    """The record of supernet `name` under artifact root `root`, or None when there is none."""
    path = supernet_dir(root, name) / RECORD_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise SupernetError(f"the record of supernet {name!r} ({path}) cannot be read ({err}); "
                            "train it again with 'autocnn supernet train' or restore the file") from None


def find_record(root: str | os.PathLike, name: str) -> dict[str, Any]:
    """The record of a supernet a search uses: one line naming what is missing otherwise."""
    record = read_record(root, name)
    if record is None:
        known = sorted(p.name for p in (Path(root) / "supernets").glob("*/") if (p / RECORD_FILE).is_file()) \
            if (Path(root) / "supernets").is_dir() else []
        raise SupernetError(f"no supernet named {name!r} under {Path(root) / 'supernets'} (known: "
                            f"{', '.join(known) or 'none'}); train one with 'autocnn supernet train --space SPACE "
                            f"--name {name}' using the same --storage")
    if not record.get("epochs_done"):
        raise SupernetError(f"supernet {name!r} has no finished epoch yet; rerun its 'autocnn supernet train' "
                            "command to finish training")
    return record


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def save_weights(path: Path, state: dict) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def load_weights(root: str | os.PathLike, name: str) -> dict:
    from safetensors.torch import load_file

    path = supernet_dir(root, name) / WEIGHTS_FILE
    if not path.is_file():
        raise SupernetError(f"the weights of supernet {name!r} are missing ({path}); rerun its "
                            "'autocnn supernet train' command")
    return load_file(str(path))
