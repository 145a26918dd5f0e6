"""One loader per dataset, registered by name; `load_dataset` is the only entry point users need.

Disk datasets read the layouts torchvision's `download=True` leaves behind, and never download.
CIFAR and SVHN are read directly from their (trivial) pickle / .mat formats rather than through
torchvision's classes, because those verify the MD5 of the full official files: the same reader
then also serves subsets and the tiny fixtures the tests write.
"""
from __future__ import annotations

import csv
import os
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..registry import Registry, UnknownNameError
from .splits import (
    SPLIT_SEED,
    DataError,
    DataSplits,
    assemble,
    random_split,
    stratified_split,
)

Loader = Callable[[Path | None, int, "int | None"], DataSplits]
DATASETS: Registry[Loader] = Registry("dataset")

VAL_FRACTION = 0.1
IMAGE_SIZE = 64
"""Side length folder datasets are resized to unless all their images already share one square size."""

Pair = tuple[torch.Tensor, torch.Tensor]


def dataset_names() -> list[str]:
    return DATASETS.names()


def load_dataset(
    name: str,
    data_root: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    limit: int | None = None,
) -> DataSplits:
    """Load a registered dataset into memory as normalised train/val/test tensors.

    `seed` only picks which training images survive `limit` (a stratified cap on the train
    split); the train/val/test split itself is fixed so that all studies see the same one.

    >>> d = load_dataset("digits")
    >>> (d.num_classes, d.in_chans, d.native_resolution, len(d.train) + len(d.val) + len(d.test))
    (10, 1, 8, 1797)
    """
    try:
        loader = DATASETS.get(name)
    except UnknownNameError:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(dataset_names())}") from None
    root = Path(data_root).expanduser() if data_root is not None else None
    return loader(root, seed, limit)


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


def _carve_val(name: str, train: Pair, test: Pair, *, class_names, augment, seed, limit) -> DataSplits:
    """Official test split stays the test split; val is a fixed stratified 10% of official train."""
    tr, va = stratified_split(train[1].numpy(), [1 - VAL_FRACTION, VAL_FRACTION], SPLIT_SEED)
    x, y = train
    return assemble(name, (x[tr], y[tr]), (x[va], y[va]), test,
                    class_names=class_names, augment=augment, seed=seed, limit=limit)


@DATASETS.register("digits")
def load_digits(root: Path | None, seed: int, limit: int | None) -> DataSplits:
    """sklearn's embedded 8×8 digits (16 grey levels), split 60/20/20; needs no files."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    parts = stratified_split(bunch.target, [0.6, 0.2, 0.2], SPLIT_SEED)
    tr, va, te = ((x[p], y[p]) for p in map(torch.from_numpy, parts))
    return assemble("digits", tr, va, te, class_names=[str(i) for i in range(10)],
                    augment="translate", seed=seed, limit=limit)


def _torchvision_mnist(cls_name: str, name: str) -> Loader:
    def load(root: Path | None, seed: int, limit: int | None) -> DataSplits:
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
        return _carve_val(name, tr, te, class_names=sets[0].classes, augment="translate",
                          seed=seed, limit=limit)

    load.__doc__ = f"torchvision's {cls_name} idx files under DATA_ROOT/{cls_name}/raw."
    return load


DATASETS.register("mnist", _torchvision_mnist("MNIST", "mnist"))
DATASETS.register("fashion_mnist", _torchvision_mnist("FashionMNIST", "fashion_mnist"))


def _read_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _cifar(name: str, folder: str, title: str, train_files, test_files, meta_file, names_key, label_key) -> Loader:
    def load(root: Path | None, seed: int, limit: int | None) -> DataSplits:
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
                          augment="crop_flip", seed=seed, limit=limit)

    load.__doc__ = f"{title} in torchvision's python-pickle layout, DATA_ROOT/{folder}."
    return load


DATASETS.register("cifar10", _cifar(
    "cifar10", "cifar-10-batches-py", "CIFAR-10", [f"data_batch_{i}" for i in range(1, 6)],
    ["test_batch"], "batches.meta", "label_names", "labels"))
DATASETS.register("cifar100", _cifar(
    "cifar100", "cifar-100-python", "CIFAR-100", ["train"], ["test"], "meta", "fine_label_names",
    "fine_labels"))


@DATASETS.register("svhn")
def load_svhn(root: Path | None, seed: int, limit: int | None) -> DataSplits:
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
                      augment="translate", seed=seed, limit=limit)


def _image_files(folder: Path) -> list[Path]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)


def _read_images(paths: list[Path]) -> torch.Tensor:
    """Decode to RGB uint8 N×3×S×S; S is the images' own size if all share one square size, else IMAGE_SIZE."""
    from PIL import Image

    sizes = set()
    for p in paths:
        with Image.open(p) as im:
            sizes.add(im.size)
    size = next(iter(sizes)) if len(sizes) == 1 and len(set(next(iter(sizes)))) == 1 else (IMAGE_SIZE, IMAGE_SIZE)
    out = np.empty((len(paths), size[1], size[0], 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            im = im.convert("RGB")
            out[i] = np.asarray(im if im.size == size else im.resize(size, Image.BILINEAR))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _class_dirs(folder: Path) -> list[Path]:
    """Sub-folders in name order; hidden ones (.ipynb_checkpoints, .cache) are never classes."""
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


@DATASETS.register("imagefolder")
def load_imagefolder(root: Path | None, seed: int, limit: int | None) -> DataSplits:
    """torchvision's ImageFolder layout, DATA_ROOT/<class>/<image>, or DATA_ROOT/train/<class>/<image>
    with optional val/ and test/ beside it. Splits that are absent are carved out of the training
    images (fixed and stratified, 15% each), so a plain root is split 70/15/15 exactly as train/ alone."""
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

    def scan(split_dir: Path) -> tuple[list[Path], list[int]]:
        paths, labels = [], []
        for d in _class_dirs(split_dir):
            if d.name not in index:
                raise DataError(f"class folder {d} is not in {train_dir}; add {train_dir / d.name} or remove it")
            files = _image_files(d)
            paths += files
            labels += [index[d.name]] * len(files)
        return paths, labels

    scanned = {s: scan(folder) for s, folder in split_dirs.items()}
    all_paths = [p for paths, _ in scanned.values() for p in paths]
    if not all_paths:
        raise DataError(f"{class_root} contains no images; add PNG/JPEG files under {class_root}/<class>/")
    images = _read_images(all_paths)
    pairs, start = {}, 0
    for s, (paths, labels) in scanned.items():
        pairs[s] = (images[start : start + len(paths)], torch.tensor(labels, dtype=torch.int64))
        start += len(paths)
    missing = [s for s in ("val", "test") if s not in pairs]
    if missing:
        x, y = pairs["train"]
        fractions = [1 - 0.15 * len(missing)] + [0.15] * len(missing)
        parts = stratified_split(y.numpy(), fractions, SPLIT_SEED)
        pairs["train"] = (x[parts[0]], y[parts[0]])
        for s, p in zip(missing, parts[1:]):
            pairs[s] = (x[p], y[p])
    return assemble("imagefolder", pairs["train"], pairs["val"], pairs["test"], class_names=classes,
                    augment="crop_flip", seed=seed, limit=limit)


@DATASETS.register("multilabel")
def load_multilabel(root: Path | None, seed: int, limit: int | None) -> DataSplits:
    """DATA_ROOT/images/ plus labels.csv (`file,labels`, labels space-separated); random 70/15/15.

    Augmentation is translation only: a horizontal flip can contradict labels such as "left".
    """
    root = _require_root(root, "multilabel", "images/ and labels.csv")
    csv_path, img_dir = root / "labels.csv", root / "images"
    if not csv_path.is_file() or not img_dir.is_dir():
        raise DataError(f"--data-root {root} needs {img_dir}/ and {csv_path} (columns file,labels); create them there")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"file", "labels"} <= set(reader.fieldnames):
            raise DataError(f"{csv_path} must have a header with columns file,labels; got {reader.fieldnames}")
        rows = [(r["file"].strip(), (r["labels"] or "").split()) for r in reader]
    if not rows:
        raise DataError(f"{csv_path} lists no images; add one row per image (file,labels)")
    paths = [img_dir / file for file, _ in rows]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise DataError(f"{len(absent)} image(s) listed in {csv_path} are missing, e.g. {absent[0]}; add them or fix the CSV")
    classes = sorted({c for _, labels in rows for c in labels})
    index = {c: i for i, c in enumerate(classes)}
    y = torch.zeros(len(rows), len(classes), dtype=torch.float32)
    for i, (_, labels) in enumerate(rows):
        y[i, [index[c] for c in labels]] = 1.0
    x = _read_images(paths)
    tr, va, te = (torch.from_numpy(p) for p in random_split(len(rows), [0.7, 0.15, 0.15], SPLIT_SEED))
    return assemble("multilabel", (x[tr], y[tr]), (x[va], y[va]), (x[te], y[te]), class_names=classes,
                    augment="translate", multilabel=True, seed=seed, limit=limit)
