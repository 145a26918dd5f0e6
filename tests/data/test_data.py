"""autocnn.data: splits, normalisation, the on-disk formats of every disk dataset, batching."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from autocnn.data import (
    AUGMENTATIONS,
    DataError,
    DeviceBatches,
    TensorSplit,
    dataset_names,
    load_dataset,
)
from autocnn.data.splits import stratified_split, stratified_subset
from disk_formats import write_cifar10, write_mnist, write_svhn

DISK_DATASETS = ["mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "imagefolder", "csv", "multilabel"]


# ---------------------------------------------------------------- fixture writers (real formats)

def _png(path: Path, color, size=(12, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def write_imagefolder(root: Path, sizes=((12, 12),), n_train: int = 10, with_test: bool = True,
                      plain: bool = False) -> None:
    """Solid-colour images per class under root/train/<class>/ (or root/<class>/ when `plain`)."""
    colors = {"cat": (255, 0, 0), "dog": (0, 255, 0), "eel": (0, 0, 255)}
    for c, color in colors.items():
        for i in range(n_train):
            _png((root if plain else root / "train") / c / f"{i}.png", color, sizes[i % len(sizes)])
        if with_test:
            for i in range(2):
                _png(root / "test" / c / f"{i}.png", color, sizes[0])


def write_multilabel(root: Path, n: int = 40) -> list[list[str]]:
    names = ["red", "green", "blue"]
    rng = np.random.default_rng(2)
    rows = []
    for i in range(n):
        on = rng.random(3) < 0.5
        _png(root / "images" / f"{i}.png", tuple(int(255 * v) for v in on), (10, 10))
        rows.append([c for c, v in zip(names, on) if v])
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "labels"])
        w.writerows([f"{i}.png", " ".join(labels)] for i, labels in enumerate(rows))
    return rows


# ---------------------------------------------------------------- split helpers

def test_stratified_split_partitions_and_keeps_class_mix():
    labels = np.repeat(np.arange(5), [40, 30, 20, 7, 3])
    parts = stratified_split(labels, [0.6, 0.2, 0.2], seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))
    assert [len(p) for p in parts] == [60, 20, 20]
    for c, n in enumerate([40, 30, 20, 7, 3]):
        for p, f in zip(parts, [0.6, 0.2, 0.2]):
            assert abs((labels[p] == c).sum() - f * n) <= 1


def test_stratified_subset_exact_size_and_balanced():
    labels = np.repeat(np.arange(4), 25)
    sub = stratified_subset(labels, 20, seed=0)
    assert len(sub) == 20 and len(set(sub)) == 20
    assert np.bincount(labels[sub]).tolist() == [5, 5, 5, 5]


# ---------------------------------------------------------------- digits

def test_digits_split_sizes_and_stratification():
    d = load_dataset("digits")
    sizes = [len(d.train), len(d.val), len(d.test)]
    assert sum(sizes) == 1797
    assert [abs(s - f * 1797) <= 1 for s, f in zip(sizes, (0.6, 0.2, 0.2))] == [True] * 3
    totals = np.bincount(load_digits().target)
    for split, f in ((d.train, 0.6), (d.val, 0.2), (d.test, 0.2)):
        counts = torch.bincount(split.labels, minlength=10).numpy()
        assert np.all(np.abs(counts - f * totals) <= 1.5)
    assert (d.num_classes, d.in_chans, d.native_resolution, d.multilabel) == (10, 1, 8, False)
    assert d.train.images.shape[1:] == (1, 8, 8) and d.train.images.dtype == torch.uint8
    assert d.train.labels.dtype == torch.int64


def test_digits_split_is_fixed_regardless_of_seed():
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=123)
    for s in ("train", "val", "test"):
        assert torch.equal(getattr(a, s).images, getattr(b, s).images)
        assert torch.equal(getattr(a, s).labels, getattr(b, s).labels)


def test_digits_normalised_with_train_statistics():
    d = load_dataset("digits")
    assert d.train.inputs().mean().item() == pytest.approx(0.0, abs=1e-5)
    assert d.train.inputs().std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    # undoing the normalisation recovers the 16-level source values in [0, 1]
    raw = d.test.inputs() * d.std[0] + d.mean[0]
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    assert torch.allclose(raw * 16, (raw * 16).round(), atol=1e-3)


def test_limit_caps_train_stratified_and_seed_picks_subset():
    a = load_dataset("digits", limit=100, seed=0)
    b = load_dataset("digits", limit=100, seed=1)
    assert len(a.train) == 100 and torch.bincount(a.train.labels).tolist() == [10] * 10
    assert len(a.val) == len(load_dataset("digits").val)
    assert not torch.equal(a.train.images, b.train.images)


def test_splits_repr_is_compact_and_to_keeps_metadata():
    d = load_dataset("digits", limit=50)
    assert repr(d.train) == "TensorSplit(images=uint8[50, 1, 8, 8], labels=int64[50], device=cpu)"
    moved = d.to("cpu")
    assert moved.name == "digits" and moved.mean == d.mean and torch.equal(moved.val.images, d.val.images)


def test_unknown_dataset_lists_known_names():
    with pytest.raises(DataError, match="choose one of: digits") as e:
        load_dataset("imagenet")
    assert "\n" not in str(e.value)
    assert set(DISK_DATASETS) | {"digits"} == set(dataset_names())


# ---------------------------------------------------------------- disk formats

def test_cifar10_pickle_layout(tmp_path):
    first = write_cifar10(tmp_path)
    d = load_dataset("cifar10", tmp_path)
    assert (len(d.train), len(d.val), len(d.test)) == (45, 5, 20)
    assert d.class_names[0] == "airplane" and d.num_classes == 10
    assert d.native_resolution == 32 and d.in_chans == 3 and d.augment == "crop_flip"
    assert len(set(d.val.labels.tolist())) == 5  # stratified: one each from 5 classes
    assert torch.equal(torch.bincount(d.test.labels), torch.full((10,), 2))
    # the first stored image comes back intact, so the rows were decoded as CHW (not HWC)
    mean, std = torch.tensor(d.mean).view(3, 1, 1), torch.tensor(d.std).view(3, 1, 1)
    restored = torch.cat([d.train.inputs(), d.val.inputs()]) * std + mean
    target = torch.from_numpy(first).float() / 255
    assert any(torch.allclose(r, target, atol=1e-4) for r in restored)


def test_cifar10_incomplete_folder_names_missing_file(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_idx_layout(tmp_path, name, folder):
    write_mnist(tmp_path, folder)
    d = load_dataset(name, tmp_path, limit=30)
    assert (len(d.train), len(d.val), len(d.test)) == (30, 5, 20)
    assert d.train.images.shape[1:] == (1, 28, 28) and d.native_resolution == 28
    assert d.num_classes == 10 and d.augment == "translate"


def test_svhn_mat_layout_maps_label_10_to_0(tmp_path):
    write_svhn(tmp_path)
    d = load_dataset("svhn", tmp_path)
    assert (len(d.train), len(d.val), len(d.test)) == (36, 4, 20)
    assert d.test.images.shape[1:] == (3, 32, 32)
    assert torch.equal(torch.bincount(d.test.labels, minlength=10), torch.full((10,), 2))


def test_imagefolder_layout_carves_val(tmp_path):
    write_imagefolder(tmp_path)
    d = load_dataset("imagefolder", tmp_path)
    assert d.class_names == ("cat", "dog", "eel")
    assert len(d.test) == 6 and len(d.train) + len(d.val) == 30 and len(d.val) >= 3
    assert d.native_resolution == 12 and d.in_chans == 3
    # solid colours: the class is readable off the un-normalised channel means
    raw = d.train.inputs() * torch.tensor(d.std).view(1, 3, 1, 1) + torch.tensor(d.mean).view(1, 3, 1, 1)
    assert torch.equal(raw.mean(dim=(2, 3)).argmax(1), d.train.labels)


def test_imagefolder_keeps_its_own_size_or_image_size(tmp_path):
    """Mixed sizes: the median shorter side (12 and 16 px -> 14); --image-size fixes it; always square."""
    write_imagefolder(tmp_path, sizes=((12, 12), (20, 16)), with_test=False)
    d = load_dataset("imagefolder", tmp_path)
    assert d.native_resolution == 14 and d.train.images.shape[-2:] == (14, 14)
    assert len(d.train) + len(d.val) + len(d.test) == 30
    fixed = load_dataset("imagefolder", tmp_path, image_size=40)
    assert fixed.native_resolution == 40 and fixed.test.images.shape[1:] == (3, 40, 40)
    assert fixed.cache != d.cache


def test_imagefolder_plain_layout_is_split_like_a_lone_train_folder(tmp_path):
    """torchvision's own layout, root/<class>/<image>: split 70/15/15, stratified, the same for every seed."""
    write_imagefolder(tmp_path / "plain", plain=True, with_test=False)
    (tmp_path / "plain" / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    write_imagefolder(tmp_path / "nested", with_test=False)
    plain = load_dataset("imagefolder", tmp_path / "plain")
    assert plain.class_names == ("cat", "dog", "eel") and plain.num_classes == 3
    assert (len(plain.train), len(plain.val), len(plain.test)) == (21, 5, 4)
    for split in (plain.train, plain.val, plain.test):
        assert set(split.labels.tolist()) == {0, 1, 2}  # stratified: every class in every split
    for other in (load_dataset("imagefolder", tmp_path / "nested"), load_dataset("imagefolder", tmp_path / "plain",
                                                                                 seed=7)):
        for name in ("train", "val", "test"):
            a, b = getattr(plain, name), getattr(other, name)
            assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels), name


def test_imagefolder_test_folder_without_train_is_refused(tmp_path):
    write_imagefolder(tmp_path, plain=True)  # cat/ dog/ eel/ and a test/ that would be taken for a class
    with pytest.raises(DataError) as e:
        load_dataset("imagefolder", tmp_path)
    assert "has test/ but no train/ folder" in str(e.value) and str(tmp_path / "train") in str(e.value)


def test_search_cli_accepts_a_plain_imagefolder_root(cli, tmp_path):
    write_imagefolder(tmp_path / "imgs", plain=True, with_test=False)
    space = Path(__file__).resolve().parents[1] / "search" / "tiny_space.yaml"
    result = cli("search", "--space", str(space), "--dataset", "imagefolder", "--data-root", "imgs",
                 "--trials", "1", "--epochs", "1", "--study", "plain", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    (best,) = json.loads(result.stdout)["best"]
    assert 0.0 <= best["values"][0] <= 1.0
    study = optuna.load_study(study_name="plain", storage=cli.storage)
    config = study.user_attrs["autocnn.config"]
    # stored absolute: a resume or export from another folder finds the data typed as a relative path
    assert (config["dataset"], config["data_root"]) == ("imagefolder", str((cli.path / "imgs").resolve()))
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE


def test_multilabel_folder_and_csv(tmp_path):
    rows = write_multilabel(tmp_path)
    d = load_dataset("multilabel", tmp_path)
    assert d.multilabel and d.class_names == ("blue", "green", "red")
    assert (len(d.train), len(d.val), len(d.test)) == (28, 6, 6)
    assert d.train.labels.dtype == torch.float32 and d.train.labels.shape == (28, 3)
    total = sum(len(r) for r in rows)
    assert sum(s.labels.sum().item() for s in (d.train, d.val, d.test)) == total


@pytest.mark.parametrize("name", DISK_DATASETS)
def test_disk_dataset_without_root_raises(name):
    with pytest.raises(DataError, match="--data-root"):
        load_dataset(name)


@pytest.mark.parametrize("name,expected", [
    ("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
    ("mnist", "MNIST/raw/train-images-idx3-ubyte"),
    ("fashion_mnist", "FashionMNIST/raw/train-images-idx3-ubyte"),
    ("svhn", "train_32x32.mat"), ("imagefolder", "train"), ("csv", "labels.csv"), ("multilabel", "labels.csv"),
])
def test_empty_root_names_expected_path(tmp_path, name, expected):
    with pytest.raises(DataError) as e:
        load_dataset(name, tmp_path)
    msg = str(e.value)
    assert str(tmp_path / expected) in msg and "\n" not in msg


def test_nonexistent_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("cifar10", tmp_path / "nope")


# ---------------------------------------------------------------- batching and augmentation

def _split(n=10, size=8, channels=1) -> TensorSplit:
    return TensorSplit(torch.arange(n * channels * size * size, dtype=torch.float32).view(n, channels, size, size),
                       torch.arange(n))


def test_batches_sequential_shapes_and_drop_last():
    split = _split(10)
    assert [len(y) for _, y in DeviceBatches(split, 4)] == [4, 4, 2]
    assert [len(y) for _, y in DeviceBatches(split, 4, drop_last=True)] == [4, 4]
    assert torch.equal(torch.cat([y for _, y in DeviceBatches(split, 3)]), split.labels)
    assert len(DeviceBatches(split, 64)) == 1


def test_batches_shuffle_reproducible_and_a_permutation():
    split = _split(50)
    def epochs(seed):
        b = DeviceBatches(split, 16, shuffle=True, generator=torch.Generator().manual_seed(seed))
        return [torch.cat([y for _, y in b]) for _ in range(2)]
    a1, a2 = epochs(0)
    assert sorted(a1.tolist()) == list(range(50)) and not torch.equal(a1, a2)
    assert all(torch.equal(x, y) for x, y in zip(epochs(0), (a1, a2)))
    # images travel with their labels
    for x, y in DeviceBatches(split, 16, shuffle=True):
        assert torch.equal(x, split.images[y])


def test_batches_resize_and_channels_last():
    split = _split(4, size=8, channels=3)
    x, _ = next(iter(DeviceBatches(split, 4, resolution=16, channels_last=True)))
    assert x.shape == (4, 3, 16, 16) and x.is_contiguous(memory_format=torch.channels_last)


def test_translate_moves_content_at_most_one_eighth():
    n, size = 64, 32
    images = torch.zeros(n, 1, size, size)
    images[:, :, 16, 16] = 1.0
    out = AUGMENTATIONS.get("translate")(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    pos = out.view(n, -1).argmax(1)
    rows, cols = pos // size, pos % size
    assert out.view(n, -1).sum(1).eq(1).all()
    assert (rows - 16).abs().max() <= 4 and (cols - 16).abs().max() <= 4
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10  # independent per image


def test_crop_flip_flips_about_half():
    n = 200
    images = torch.zeros(n, 1, 32, 32)
    images[:, :, :, :8] = 1.0  # left band, wider than the shift
    out = AUGMENTATIONS.get("crop_flip")(images, torch.Generator().manual_seed(0))
    flipped = (out[..., 16:].sum(dim=(1, 2, 3)) > out[..., :16].sum(dim=(1, 2, 3))).float().mean().item()
    assert 0.3 < flipped < 0.7
