"""One loader per dataset, registered by name; `load_dataset` is the only entry point users need.

Disk datasets read the layouts torchvision's `download=True` leaves behind, and never download.
CIFAR and SVHN are read directly from their (trivial) pickle / .mat formats rather than through
torchvision's classes, because those verify the MD5 of the full official files: the same reader
then also serves subsets and the tiny fixtures the tests write.
"""
from __future__ import annotations

import csv
import importlib.util
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..registry import Registry, UnknownNameError
from .cache import decoded_images
from .splits import (
    SPLIT_SEED,
    DataError,
    DataSplits,
    assemble,
    random_split,
    stratified_split,
)

@dataclass(frozen=True)
class LoadOptions:
    """How to load: `seed` and `limit` cap the train split; `image_size`, `channels` and `cache_dir` say how
    image files are decoded (see `autocnn.data.cache`)."""

    seed: int = 0
    limit: int | None = None
    image_size: int | None = None
    channels: int | None = None
    cache_dir: str | os.PathLike | None = None


Loader = Callable[["Path | None", LoadOptions], DataSplits]
DATASETS: Registry[Loader] = Registry("dataset")

VAL_FRACTION = 0.1
FILE_DATASETS = ("imagefolder", "csv", "multilabel")
"""Datasets of image files: decoded once into the cache, at their own size or --image-size."""

Pair = tuple[torch.Tensor, torch.Tensor]


def dataset_names() -> list[str]:
    return DATASETS.names()


def load_dataset(
    name: str,
    data_root: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    limit: int | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> DataSplits:
    """Load a registered dataset as uint8 train/val/test splits with the train split's normalisation.

    `seed` only picks which training images survive `limit` (a stratified cap on the train
    split); the train/val/test split itself is fixed so that all studies see the same one.
    Image files are decoded once into a memory-mapped cache (`cache_dir`, see `autocnn.data.cache`) at
    `image_size` (default: their own, capped) with `channels` (default: their own).

    >>> d = load_dataset("digits")
    >>> (d.num_classes, d.in_chans, d.native_resolution, len(d.train) + len(d.val) + len(d.test))
    (10, 1, 8, 1797)
    """
    try:
        loader = DATASETS.get(name)
    except UnknownNameError:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(dataset_names())}") from None
    if image_size is not None and image_size < 4:
        raise DataError(f"--image-size must be >= 4 pixels, got {image_size}")
    if channels not in (None, 1, 3):
        raise DataError(f"--channels must be 1 (grey) or 3 (RGB), got {channels}")
    if name not in FILE_DATASETS and (image_size, channels) != (None, None):
        flag = "--image-size" if image_size is not None else "--channels"
        raise DataError(f"{flag} sets how image files are decoded ({', '.join(FILE_DATASETS)}); dataset {name!r} "
                        "is stored decoded: drop it (--resolution resizes its batches)")
    root = Path(data_root).expanduser() if data_root is not None else None
    return loader(root, LoadOptions(seed, limit, image_size, channels, cache_dir))


def _require_root(root: Path | None, name: str, expected: str) -> Path:
    if root is None:
        raise DataError(f"dataset {name!r} is read from disk; pass --data-root DIR where DIR contains {expected}")
    if root.exists() and not root.is_dir():
        raise DataError(f"--data-root {root} is a file, not a folder; pass the folder that contains {expected}")
    if not root.is_dir():
        raise DataError(f"--data-root {root} does not exist; create it with {expected} inside or fix the path")
    return root


def _missing(root: Path, title: str, expected: Path) -> DataError:
    return DataError(
        f"--data-root {root} does not contain {title} (expected {expected}); "
        f"download it there or point --data-root at it"
    )


def _carve_val(name: str, train: Pair, test: Pair, *, class_names, augment, opts: LoadOptions) -> DataSplits:
    """Official test split stays the test split; val is a fixed stratified 10% of official train."""
    tr, va = stratified_split(train[1].numpy(), [1 - VAL_FRACTION, VAL_FRACTION], SPLIT_SEED)
    x, y = train
    return assemble(name, (x[tr], y[tr]), (x[va], y[va]), test,
                    class_names=class_names, augment=augment, seed=opts.seed, limit=opts.limit)


def _sklearn_data(name: str) -> Path:
    """A data file scikit-learn ships in its wheel, found without importing scikit-learn (2-5 s of start-up
    in every search process; `sklearn.datasets.load_digits` reads the same file with the same `np.loadtxt`)."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / name if spec and spec.origin else None
    if path is None or not path.is_file():
        raise DataError(f"the embedded dataset needs scikit-learn's {name}; install scikit-learn "
                        "(pip install scikit-learn)")
    return path


@DATASETS.register("digits")
def load_digits(root: Path | None, opts: LoadOptions) -> DataSplits:
    """sklearn's embedded 8×8 digits (17 grey levels, 0-16), split 60/20/20; needs no files.

    Stored as the levels themselves with scale 16, so a pixel is level / 16 exactly as sklearn's own floats.
    No augmentation by default: a one-pixel shift is an eighth of an 8-px digit, and over the short schedules a
    search gives each candidate it cost 1-2 points of accuracy (12 epochs, 4 plain CNNs x 3 seeds)."""
    rows = np.loadtxt(_sklearn_data("digits.csv.gz"), delimiter=",")  # 64 pixel levels, then the label
    images, target = rows[:, :-1].reshape(-1, 8, 8), rows[:, -1].astype(np.int64)
    x = torch.from_numpy(images.astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(target)
    parts = stratified_split(target, [0.6, 0.2, 0.2], SPLIT_SEED)
    tr, va, te = ((x[p], y[p]) for p in map(torch.from_numpy, parts))
    return assemble("digits", tr, va, te, class_names=[str(i) for i in range(10)],
                    augment="none", seed=opts.seed, limit=opts.limit, scale=16.0)


def _torchvision_mnist(cls_name: str, name: str) -> Loader:
    def load(root: Path | None, opts: LoadOptions) -> DataSplits:
        import torchvision.datasets as tvd

        expected = f"{cls_name}/raw/train-images-idx3-ubyte"
        root = _require_root(root, name, expected)
        cls = getattr(tvd, cls_name)
        try:
            sets = [cls(str(root), train=t, download=False) for t in (True, False)]
        except RuntimeError:
            raw = root / cls_name / "raw"
            if any(raw.glob("*.gz")):
                raise DataError(f"{raw} holds only .gz idx files; gunzip them there (torchvision reads "
                                f"the uncompressed files)") from None
            raise _missing(root, cls_name, raw / "train-images-idx3-ubyte") from None
        tr, te = ((s.data.unsqueeze(1), s.targets.long()) for s in sets)
        return _carve_val(name, tr, te, class_names=sets[0].classes, augment="translate", opts=opts)

    load.__doc__ = f"torchvision's {cls_name} idx files under DATA_ROOT/{cls_name}/raw."
    return load


DATASETS.register("mnist", _torchvision_mnist("MNIST", "mnist"))
DATASETS.register("fashion_mnist", _torchvision_mnist("FashionMNIST", "fashion_mnist"))


def _read_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _cifar(name: str, folder: str, title: str, train_files, test_files, meta_file, names_key, label_key) -> Loader:
    def load(root: Path | None, opts: LoadOptions) -> DataSplits:
        root = _require_root(root, name, folder)
        base = root / folder
        if not base.is_dir():
            raise _missing(root, title, base)
        for f in (*train_files, *test_files, meta_file):
            if not (base / f).is_file():
                raise DataError(f"{base} is incomplete: {f} is missing; re-extract the {title} archive there")

        def read(files) -> Pair:
            entries = [_read_pickle(base / f) for f in files]
            x = np.concatenate([e["data"] for e in entries]).reshape(-1, 3, 32, 32)
            y = np.concatenate([np.asarray(e[label_key], dtype=np.int64) for e in entries])
            return torch.from_numpy(x), torch.from_numpy(y)

        class_names = _read_pickle(base / meta_file)[names_key]
        return _carve_val(name, read(train_files), read(test_files), class_names=class_names,
                          augment="crop_flip", opts=opts)

    load.__doc__ = f"{title} in torchvision's python-pickle layout, DATA_ROOT/{folder}."
    return load


DATASETS.register("cifar10", _cifar(
    "cifar10", "cifar-10-batches-py", "CIFAR-10", [f"data_batch_{i}" for i in range(1, 6)],
    ["test_batch"], "batches.meta", "label_names", "labels"))
DATASETS.register("cifar100", _cifar(
    "cifar100", "cifar-100-python", "CIFAR-100", ["train"], ["test"], "meta", "fine_label_names",
    "fine_labels"))


@DATASETS.register("svhn")
def load_svhn(root: Path | None, opts: LoadOptions) -> DataSplits:
    """SVHN cropped digits, DATA_ROOT/train_32x32.mat and test_32x32.mat (label 10 means digit 0)."""
    root = _require_root(root, "svhn", "train_32x32.mat and test_32x32.mat")
    import scipy.io as sio

    def read(split: str) -> Pair:
        path = root / f"{split}_32x32.mat"
        if not path.is_file():
            raise _missing(root, "SVHN", path)
        mat = sio.loadmat(str(path))
        x = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)))
        y = mat["y"].astype(np.int64).reshape(-1) % 10
        return torch.from_numpy(x), torch.from_numpy(y)

    return _carve_val("svhn", read("train"), read("test"), class_names=[str(i) for i in range(10)],
                      augment="translate", opts=opts)


def _image_files(folder: Path) -> list[Path]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)


def _class_dirs(folder: Path) -> list[Path]:
    """Sub-folders in name order; hidden ones (.ipynb_checkpoints, .cache) are never classes."""
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


Files = tuple[list[Path], torch.Tensor]
"""Image files and their labels (int64, or float32 multi-hot)."""


def _carve(files: dict[str, Files], multilabel: bool) -> dict[str, Files]:
    """Splits that are absent (val, test) carved out of train: fixed, 15% each, stratified unless multi-label."""
    missing = [s for s in ("val", "test") if s not in files]
    if not missing:
        return files
    paths, y = files["train"]
    fractions = [1 - 0.15 * len(missing)] + [0.15] * len(missing)
    parts = (random_split(len(paths), fractions, SPLIT_SEED) if multilabel
             else stratified_split(y.numpy(), fractions, SPLIT_SEED))
    out = dict(files)
    for s, p in zip(["train", *missing], parts):
        out[s] = ([paths[i] for i in p], y[torch.from_numpy(p)])
    return out


def _decode_splits(name: str, root: Path, files: dict[str, Files], opts: LoadOptions, *, class_names,
                   augment: str, multilabel: bool = False) -> DataSplits:
    """Decode train, val and test files, in that order, into one cache entry; the splits are views of it."""
    files = _carve(files, multilabel)
    order = [files[s] for s in ("train", "val", "test")]
    paths = [p for ps, _ in order for p in ps]
    decoded = decoded_images(paths, root=root, train_rows=len(order[0][0]), image_size=opts.image_size,
                             channels=opts.channels, cache_dir=opts.cache_dir)
    total, squares, rows = decoded.train_stats
    size = decoded.images.shape[-1]
    pairs, names, start = [], [], 0
    for ps, y in order:
        pairs.append((decoded.images[start:start + len(ps)], y))
        names.append([str(p) for p in ps])
        start += len(ps)
    return assemble(name, *pairs, class_names=class_names, augment=augment, multilabel=multilabel,
                    seed=opts.seed, limit=opts.limit, files=names, train_sums=(total, squares, rows * size * size),
                    cache=str(decoded.folder))


@DATASETS.register("imagefolder")
def load_imagefolder(root: Path | None, opts: LoadOptions) -> DataSplits:
    """torchvision's ImageFolder layout, DATA_ROOT/<class>/<image>, or DATA_ROOT/train/<class>/<image>
    with optional val/ and test/ beside it. Splits that are absent are carved out of the training
    images (fixed and stratified, 15% each), so a plain root is split 70/15/15 exactly as train/ alone.
    Images keep their own size (the median shorter side, capped; `--image-size` fixes it): each is resized
    on its shorter side and centre-cropped to a square of that size."""
    root = _require_root(root, "imagefolder", "<class>/<image> or train/<class>/<image> folders")
    train_dir = root / "train"
    if train_dir.is_dir():
        class_root, split_dirs = train_dir, {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    else:
        stray = next((s for s in ("val", "test") if (root / s).is_dir()), None)
        if stray is not None:
            raise DataError(f"--data-root {root} has {stray}/ but no train/ folder; add {train_dir}/<class>/<image> "
                            f"beside it, or put every image in {root}/<class>/ to have them split")
        class_root, split_dirs = root, {"train": root}
    classes = [d.name for d in _class_dirs(class_root)]
    if not classes:
        if class_root == root:
            raise DataError(f"--data-root {root} has no train/ folder and no class folders (expected "
                            f"{root}/<class>/<image> or {train_dir}/<class>/<image>); arrange the images in "
                            f"ImageFolder layout there")
        raise DataError(f"{train_dir} has no class sub-folders; put each class's images in {train_dir}/<class>/")
    index = {c: i for i, c in enumerate(classes)}

    def scan(split_dir: Path) -> tuple[list[Path], list[int], list[Path]]:
        paths, labels, empty = [], [], []
        for d in _class_dirs(split_dir):
            if d.name not in index:
                raise DataError(f"class folder {d} is not in {train_dir}; add {train_dir / d.name} or remove it")
            found = _image_files(d)
            if not found:
                empty.append(d)
            paths += found
            labels += [index[d.name]] * len(found)
        return paths, labels, empty

    scanned = {s: scan(folder) for s, folder in split_dirs.items()}
    if not any(paths for paths, _, _ in scanned.values()):
        raise DataError(f"{class_root} contains no images; add PNG/JPEG files under {class_root}/<class>/")
    empty = next((d for _, _, e in scanned.values() for d in e), None)
    if empty is not None:
        raise DataError(f"class folder {empty} has no images; add images to it or remove it")
    files = {s: (paths, torch.tensor(labels, dtype=torch.int64)) for s, (paths, labels, _) in scanned.items()}
    return _decode_splits("imagefolder", root, files, opts, class_names=classes, augment="crop_flip")


def _read_csv(path: Path, columns: tuple[str, ...], fix: str) -> list[dict]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not set(columns) <= set(reader.fieldnames):
            raise DataError(f"{path} must have a header with columns {','.join(columns)}; got {reader.fieldnames}")
        rows = [{k: (v or "").strip() for k, v in r.items() if k is not None} for r in reader]
    if not rows:
        raise DataError(f"{path} lists no images; add one row per image ({fix})")
    return rows


def _present(paths: list[Path], csv_path: Path) -> None:
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise DataError(f"{len(absent)} image(s) listed in {csv_path} are missing, e.g. {absent[0]}; add them or fix "
                        "the CSV")


CSV_FILE = "labels.csv"


@DATASETS.register("csv")
def load_csv(root: Path | None, opts: LoadOptions) -> DataSplits:
    """A CSV of `path,label` rows (DATA_ROOT/labels.csv, or DATA_ROOT naming the CSV file), paths relative to
    the CSV's folder; an optional `split` column (train, val or test) fixes the splits, else they are carved
    as for an ImageFolder (70/15/15, stratified). Images are decoded as an ImageFolder's."""
    if root is not None and root.suffix.lower() == ".csv" and root.is_file():
        csv_path = root
    else:
        csv_path = _require_root(root, "csv", f"{CSV_FILE} (columns path,label)") / CSV_FILE
        if not csv_path.is_file():
            raise DataError(f"{csv_path} does not exist; write it with columns path,label (paths relative to "
                            f"{root}) or pass the CSV file itself as --data-root")
    base = csv_path.parent
    rows = _read_csv(csv_path, ("path", "label"), "path,label")
    paths = [base / r["path"] for r in rows]
    _present(paths, csv_path)
    classes = sorted({r["label"] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    splits = [r.get("split") or "train" for r in rows]
    unknown = next((s for s in splits if s not in ("train", "val", "test")), None)
    if unknown is not None:
        raise DataError(f"{csv_path} has split {unknown!r}; the split column takes train, val or test")
    if "train" not in splits:
        raise DataError(f"{csv_path} marks no row as train; leave the split column empty to have the rows split")
    files = {}
    for s in ("train", "val", "test"):
        chosen = [i for i, v in enumerate(splits) if v == s]
        if chosen:
            files[s] = ([paths[i] for i in chosen], torch.tensor([index[rows[i]["label"]] for i in chosen]))
    return _decode_splits("csv", base, files, opts, class_names=classes, augment="crop_flip")


@DATASETS.register("multilabel")
def load_multilabel(root: Path | None, opts: LoadOptions) -> DataSplits:
    """DATA_ROOT/images/ plus labels.csv (`file,labels`, labels space-separated); random 70/15/15.

    Augmentation is translation only: a horizontal flip can contradict labels such as "left".
    """
    root = _require_root(root, "multilabel", "images/ and labels.csv")
    csv_path, img_dir = root / CSV_FILE, root / "images"
    if not csv_path.is_file() or not img_dir.is_dir():
        raise DataError(f"--data-root {root} needs {img_dir}/ and {csv_path} (columns file,labels); create them there")
    rows = [(r["file"], r["labels"].split()) for r in _read_csv(csv_path, ("file", "labels"), "file,labels")]
    paths = [img_dir / file for file, _ in rows]
    _present(paths, csv_path)
    classes = sorted({c for _, labels in rows for c in labels})
    index = {c: i for i, c in enumerate(classes)}
    y = torch.zeros(len(rows), len(classes), dtype=torch.float32)
    for i, (_, labels) in enumerate(rows):
        y[i, [index[c] for c in labels]] = 1.0
    return _decode_splits("multilabel", root, {"train": (paths, y)}, opts, class_names=classes, augment="translate",
                          multilabel=True)
