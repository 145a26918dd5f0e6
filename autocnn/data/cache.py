"""The decoded cache: image files decoded once into a memory-mapped uint8 array on disk, shared by every trial,
study and process of a node.

An entry is a folder `<cache dir>/<key>/` holding `images.u8` (N×C×S×S uint8, raw) and `meta.json` (shape, the
decode settings, per-channel pixel sums of the training rows). The key hashes the files (paths, sizes,
modification times, in row order) and the decode settings, so an edited, added or re-ordered file makes a
new entry and the old one is never read again. Entries are built in a private folder and renamed into place,
so a reader never sees half an entry and two processes building the same one both succeed.

The cache folder is `--cache-dir`, else `$AUTOCNN_CACHE_DIR`, else `$XDG_CACHE_HOME/autocnn` (default
`~/.cache/autocnn`): one per user and node, as pip's and torch hub's.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from autocnn.errors import first_line

from .splits import DataError
from .transforms import fit_square

CACHE_VERSION = 1
CACHE_ENV = "AUTOCNN_CACHE_DIR"
IMAGE_CAP = 256
"""Side length images are decoded at when their own (median shorter side) is larger and no --image-size is given."""

_CHANNELS = {"1": 1, "L": 1, "I": 1, "I;16": 1, "I;16B": 1, "I;16L": 1, "F": 1, "LA": 1,
             "RGB": 3, "RGBA": 3, "RGBX": 3, "P": 3, "PA": 3, "CMYK": 3, "YCbCr": 3, "LAB": 3, "HSV": 3}
_MODE = {1: "L", 3: "RGB"}


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "autocnn"


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser().resolve() if cache_dir is not None else default_cache_dir().resolve()


@dataclass(frozen=True)
class Decoded:
    """A cache entry opened for reading: `images` is a memory-mapped uint8 N×C×S×S tensor."""

    images: torch.Tensor
    folder: Path
    meta: dict

    @property
    def train_stats(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Per-channel sum and sum of squares of the first `train_rows` rows' pixels, and their count."""
        m = self.meta
        return np.asarray(m["train_sum"]), np.asarray(m["train_sumsq"]), int(m["train_rows"])


def _stat(path: Path) -> list:
    try:
        st = path.stat()
    except OSError as err:
        raise DataError(f"cannot read image {path} ({err.strerror or err}); restore it or remove it from the "
                        "dataset") from None
    return [str(path), st.st_size, st.st_mtime_ns]


def cache_key(paths: Sequence[Path], settings: dict) -> str:
    files = [_stat(p) for p in paths]
    blob = json.dumps({"version": CACHE_VERSION, "settings": settings, "files": files}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def open_entry(folder: Path) -> Decoded | None:
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    shape = tuple(meta["shape"])
    # copy-on-write mapping: pages are shared with every other reader until written, and nothing writes them
    array = np.memmap(folder / "images.u8", dtype=np.uint8, mode="c", shape=shape) if shape[0] else \
        np.zeros(shape, dtype=np.uint8)
    return Decoded(torch.from_numpy(array), folder, meta)


def _writable(cache_dir: Path) -> None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache_dir, prefix=".probe-"):
            pass
    except OSError as err:
        raise DataError(f"--cache-dir {cache_dir} is not writable ({err.strerror or type(err).__name__}); pass a "
                        f"writable folder with --cache-dir or set {CACHE_ENV}") from None


def _unreadable(path: Path, err: BaseException) -> DataError:
    return DataError(f"cannot read image {path} ({first_line(err)}); replace or remove the file")


def _headers(paths: Sequence[Path]) -> tuple[list[tuple[int, int]], list[int]]:
    """Sizes (w, h) and channel counts from the files' headers (no pixel is decoded)."""
    from PIL import Image, UnidentifiedImageError

    sizes, channels = [], []
    for p in paths:
        try:
            with Image.open(p) as im:
                sizes.append(im.size)
                channels.append(_CHANNELS.get(im.mode, 3))
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise _unreadable(p, err) from None
    return sizes, channels


def _channel_count(paths: Sequence[Path], counts: list[int], channels: int | None, root: Path) -> int:
    if channels is not None:
        return channels
    kinds = sorted(set(counts))
    if len(kinds) == 1:
        return kinds[0]
    grey, colour = (paths[counts.index(k)] for k in kinds)
    raise DataError(f"{root} mixes 1-channel images (e.g. {grey}) and 3-channel images (e.g. {colour}); "
                    "pass --channels 1 or --channels 3 to convert them all")


def decode(path: Path, channels: int, size: int) -> torch.Tensor:
    """One image file -> C×size×size uint8, exactly as the cache stores it: PIL decode, convert to L or RGB,
    then `fit_square` (also what an exported `preprocess` does to the decoded image)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert(_MODE[channels])
            array = np.asarray(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise _unreadable(path, err) from None
    x = torch.from_numpy(array.copy()).view(array.shape[0], array.shape[1], -1).permute(2, 0, 1)
    return fit_square(x.unsqueeze(0), size)[0]


def decoded_images(paths: Sequence[Path], *, root: Path, train_rows: int, image_size: int | None = None,
                   channels: int | None = None, cache_dir: str | os.PathLike | None = None) -> Decoded:
    """The files decoded (in this order) into a cache entry, built now unless one exists.

    The decode size is `image_size`, else the images' median shorter side capped at `IMAGE_CAP`; the channel
    count is `channels`, else the files' own (an error if they mix grey and colour). Pixel sums of the first
    `train_rows` rows are stored so the training statistics cost no pass over the data.
    """
    folder = resolve_cache_dir(cache_dir)
    settings = {"image_size": image_size, "channels": channels, "train_rows": train_rows}
    entry = folder / cache_key(paths, settings)
    found = open_entry(entry)
    if found is not None:
        return found
    _writable(folder)
    sizes, counts = _headers(paths)
    c = _channel_count(paths, counts, channels, root)
    size = image_size or min(IMAGE_CAP, int(statistics.median(min(w, h) for w, h in sizes)))
    shape = (len(paths), c, size, size)
    work = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=folder))
    try:
        total, squares = np.zeros(c), np.zeros(c)
        # written row by row, not through a memory map: every page of a map being filled counts in this process's
        # resident memory until the map closes (2.6 GB peak for 10,000 images at 256 px, the cache being 1.9 GB)
        with open(work / "images.u8", "wb") as out:
            for i, p in enumerate(paths):
                x = decode(p, c, size)
                out.write(x.numpy().tobytes())
                if i < train_rows:
                    flat = x.reshape(c, -1).double()
                    total += flat.sum(1).numpy()
                    squares += (flat * flat).sum(1).numpy()
        meta = {"version": CACHE_VERSION, "shape": list(shape), "root": str(root), "settings": settings,
                "train_rows": train_rows, "train_sum": total.tolist(), "train_sumsq": squares.tolist()}
        (work / "meta.json").write_text(json.dumps(meta))
        try:
            work.rename(entry)
        except OSError:  # another process built the same entry first: use theirs
            if open_entry(entry) is None:
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return open_entry(entry)
