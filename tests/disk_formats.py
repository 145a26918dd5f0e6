"""Tiny datasets written in the real on-disk formats that torchvision's downloads leave (no download in tests)."""
from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np


def write_cifar10(root: Path, per_batch: int = 10, n_test: int = 20) -> np.ndarray:
    """The pickled dicts of cifar-10-python.tar.gz; returns the first train image (3×32×32)."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    first = None
    for i, n in [(f"data_batch_{b}", per_batch) for b in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [j % 10 for j in range(n)]
        first = data[0].reshape(3, 32, 32) if first is None else first
        entry = {"batch_label": f"{i} of 5", "labels": labels, "data": data,
                 "filenames": [f"img_{i}_{j}.png" for j in range(n)]}
        with open(base / i, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    meta = {"num_cases_per_batch": per_batch, "num_vis": 3072,
            "label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                            "ship", "truck"]}
    with open(base / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return first


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: 0x0000, type 0x08 (ubyte), ndim; big-endian int32 dims; raw bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 50, n_test: int = 20) -> None:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def write_svhn(root: Path, n_train: int = 40, n_test: int = 20) -> None:
    """The `.mat` files of SVHN's cropped digits: X is 32x32x3xN, y holds 1..10 with 10 meaning digit 0."""
    from scipy import io as sio

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for split, n in (("train", n_train), ("test", n_test)):
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)
        sio.savemat(root / f"{split}_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), "y": y})
