"""The decoded uint8 cache, streaming batches past a memory budget, real-resolution folders and CSV datasets,
and the refusals of bad image data."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autocnn.data import DataError, DeviceBatches, load_dataset
from autocnn.data.batches import CPU_RESIDENT_CAP, StreamBatches, batches_for, choose_mode
from autocnn.data.cache import decode
from autocnn.data.transforms import fit_square
from autocnn.training import TrainConfig, train
from test_data import write_imagefolder


def noisy_folder(root: Path, n: int = 8, sizes=((20, 14), (14, 22), (16, 16)), classes=("ant", "bee")) -> None:
    """Random-pixel JPEGs and PNGs of several non-square sizes, `n` per class."""
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            w, h = sizes[i % len(sizes)]
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.{'jpg' if i % 2 else 'png'}")


# -- the cache -------------------------------------------------------------------------------------------

def test_folder_is_decoded_once_into_a_shared_uint8_memory_map(tmp_path):
    noisy_folder(tmp_path / "imgs")
    cache = tmp_path / "cache"
    a = load_dataset("imagefolder", tmp_path / "imgs", cache_dir=cache)
    entry = Path(a.cache)
    assert entry.parent == cache and sorted(p.name for p in entry.iterdir()) == ["images.u8", "meta.json"]
    stamp = (entry / "images.u8").stat().st_mtime_ns
    b = load_dataset("imagefolder", tmp_path / "imgs", cache_dir=cache, seed=3)
    assert b.cache == a.cache and (entry / "images.u8").stat().st_mtime_ns == stamp  # reused, not rebuilt
    for name in ("train", "val", "test"):
        split = getattr(b, name)
        assert split.images.dtype == torch.uint8 and torch.equal(split.images, getattr(a, name).images)
    # the splits are views of the one file: 16 images of 3×14×14 (median shorter side 14)
    assert (entry / "images.u8").stat().st_size == 16 * 3 * 14 * 14
    assert len(a.train) + len(a.val) + len(a.test) == 16 and a.native_resolution == 14

    # each row is its file, resized on the shorter side and centre-cropped
    for split in (a.train, a.test):
        for row, path in zip(split.images, split.files):
            with Image.open(path) as im:
                pixels = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
            assert torch.equal(row, fit_square(pixels[None], 14)[0]), path

    # a changed file (new modification time) is a new entry; the old one is left for whoever still maps it
    path = Path(a.train.files[0])
    os.utime(path, ns=(stamp, stamp + 10**9))
    c = load_dataset("imagefolder", tmp_path / "imgs", cache_dir=cache)
    assert c.cache != a.cache and len(list(cache.iterdir())) == 2


def test_resident_copy_is_uint8_a_quarter_of_float32():
    data = load_dataset("digits")
    batches = DeviceBatches(data.train, 64)
    assert batches.images.dtype == torch.uint8
    assert batches.images.nbytes * 4 == batches.images.numel() * torch.float32.itemsize
    x, _ = next(iter(batches))
    assert x.dtype == torch.float32  # normalised per batch on the device
    assert torch.allclose(x, data.train.inputs()[:64])


def test_split_pickles_as_numpy_for_ray(tmp_path):
    import pickle

    noisy_folder(tmp_path / "imgs", n=3)
    data = load_dataset("imagefolder", tmp_path / "imgs", cache_dir=tmp_path / "cache")
    back = pickle.loads(pickle.dumps(data))
    assert torch.equal(back.train.images, data.train.images) and back.train.files == data.train.files
    assert back.train.pixels == data.train.pixels


def test_fit_square_is_resize_shorter_side_then_centre_crop():
    torchvision = pytest.importorskip("torchvision")
    x = torch.randint(0, 256, (2, 3, 30, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = fit_square(x, 10)
    assert ours.shape == (2, 3, 10, 10) and ours.dtype == torch.uint8
    from torchvision.transforms import v2

    theirs = v2.CenterCrop(10)(v2.Resize(10, antialias=True)(x))
    assert (ours.int() - theirs.int()).abs().max() <= 1  # torchvision's uint8 kernel rounds its own way
    assert fit_square(ours, 10) is ours


# -- streaming -----------------------------------------------------------------------------------------

def test_tiny_memory_budget_streams_identical_batches(tmp_path):
    noisy_folder(tmp_path / "imgs", n=12)
    data = load_dataset("imagefolder", tmp_path / "imgs", cache_dir=tmp_path / "cache")
    mode, why = choose_mode(data.nbytes, "cpu", "auto", memory=1024)
    assert mode == "stream" and "exceeds the budget" in why
    assert choose_mode(data.nbytes, "cpu", "auto", memory=10**9)[0] == "resident"
    assert choose_mode(data.nbytes, "cpu", "stream", memory=10**9)[0] == "stream"
    # on the CPU a cache past the cap streams whatever the free memory (its pages would count in the trainer's RSS)
    mode, why = choose_mode(CPU_RESIDENT_CAP + 1, "cpu", "auto")
    assert mode == "stream" and "at most 1 GiB on the CPU" in why
    assert choose_mode(CPU_RESIDENT_CAP + 1, "cpu", "auto", memory=2 * CPU_RESIDENT_CAP)[0] == "resident"

    def epochs(mode: str, resolution: int, augment: str = "crop_flip") -> list:
        kwargs = dict(shuffle=True, generator=torch.Generator().manual_seed(5), augment=augment,
                      resolution=resolution, drop_last=True, cache=data.cache)
        batches = batches_for(data.train, 4, mode=mode, workers=0, **kwargs)
        return [[(x.clone(), y.clone()) for x, y in batches] for _ in range(2)]

    stored = data.train.images.shape[-1]
    streamed = batches_for(data.train, 4, mode="stream", workers=0, cache=data.cache, resolution=stored // 2)
    assert isinstance(streamed, StreamBatches) and streamed.file is not None  # rows read from the cache file
    assert streamed.shrink_to == stored // 2  # and shrunk where they are read
    joined = batches_for(data.train.join(data.val), 4, mode="stream", workers=0, cache=data.cache)
    assert joined.file is None  # a copy in memory, not the file's rows: read from memory
    # growing and shrinking batches, an augmentation of normalised batches and one of the stored pixels
    for resolution, augment in ((24, "crop_flip"), (stored // 2, "crop_flip"), (stored // 2, "trivial_augment")):
        streamed, resident = epochs("stream", resolution, augment), epochs("resident", resolution, augment)
        assert len(streamed[0]) == len(data.train) // 4 >= 3
        for s_epoch, r_epoch in zip(streamed, resident):
            for (xs, ys), (xr, yr) in zip(s_epoch, r_epoch):
                assert torch.equal(ys, yr) and torch.equal(xs, xr), (resolution, augment)
        assert not torch.equal(streamed[0][0][1], streamed[1][0][1]) or not torch.equal(streamed[0][0][0],
                                                                                        streamed[1][0][0])

    # with reader processes too, and through the trainer: a streamed run is the resident run
    with_workers = [(x, y) for x, y in batches_for(data.val, 3, mode="stream", workers=2, cache=data.cache,
                                                   resolution=stored // 2)]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(with_workers, DeviceBatches(data.val, 3, resolution=stored // 2)))
    config = TrainConfig(epochs=2, batch_size=4, device="cpu", data_workers=0)
    runs = []
    for settings in (dict(data_memory=1024), dict(data_mode="resident")):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                    torch.nn.Linear(4, 2))
        runs.append(train(model, data, TrainConfig(**{**config.__dict__, **settings})))
    assert runs[0].val_curve == runs[1].val_curve and runs[0].train_loss == runs[1].train_loss


# -- real resolution: CSV datasets, channels -----------------------------------------------------------

def write_csv(root: Path, rows, header=("path", "label")) -> Path:
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return root / "labels.csv"


def test_csv_labelled_folder_with_and_without_split_column(tmp_path):
    noisy_folder(tmp_path / "pics", n=10)
    files = sorted((tmp_path / "pics").rglob("*.*"))
    rows = [(str(p.relative_to(tmp_path)), p.parent.name) for p in files]
    write_csv(tmp_path, rows)
    d = load_dataset("csv", tmp_path, cache_dir=tmp_path / "cache")
    assert d.class_names == ("ant", "bee") and (len(d.train), len(d.val), len(d.test)) == (14, 3, 3)
    assert d.native_resolution == 14 and d.in_chans == 3
    same = load_dataset("csv", tmp_path / "labels.csv", cache_dir=tmp_path / "cache")  # the CSV file itself
    assert torch.equal(same.test.images, d.test.images)

    split = [(path, label, "test" if i < 4 else "train") for i, (path, label) in enumerate(rows)]
    write_csv(tmp_path, split, header=("path", "label", "split"))
    fixed = load_dataset("csv", tmp_path, cache_dir=tmp_path / "cache")
    assert len(fixed.test) == 4 and fixed.test.files == tuple(str(tmp_path / p) for p, _, _ in split[:4])


def test_channels_are_the_files_own_or_converted(tmp_path):
    root = tmp_path / "grey"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.new("L", (10, 10), 40 * i).save(root / c / f"{i}.png")
    grey = load_dataset("imagefolder", root, cache_dir=tmp_path / "cache")
    assert grey.in_chans == 1 and len(grey.mean) == 1
    rgb = load_dataset("imagefolder", root, channels=3, cache_dir=tmp_path / "cache")
    assert rgb.in_chans == 3 and torch.equal(rgb.train.images[:, 0], rgb.train.images[:, 2])
    Image.new("RGB", (10, 10), (1, 2, 3)).save(root / "a" / "colour.png")
    with pytest.raises(DataError, match="mixes 1-channel images .* and 3-channel images .*colour.png.*--channels"):
        load_dataset("imagefolder", root, cache_dir=tmp_path / "cache")
    assert load_dataset("imagefolder", root, channels=1, cache_dir=tmp_path / "cache").in_chans == 1


# -- refusals (the CLI's one-line errors are in tests/reliability/test_bad_input.py) --------------------

def test_bad_image_data_is_refused_naming_the_problem(tmp_path):
    write_imagefolder(tmp_path / "ok", plain=True, with_test=False)
    cache = tmp_path / "cache"

    (tmp_path / "ok" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match=r"cannot read image .*cat/broken.png"):
        load_dataset("imagefolder", tmp_path / "ok", cache_dir=cache)
    (tmp_path / "ok" / "cat" / "broken.png").unlink()

    good = Image.new("RGB", (30, 30), (9, 9, 9))
    good.save(tmp_path / "ok" / "cat" / "cut.jpg")
    data = (tmp_path / "ok" / "cat" / "cut.jpg").read_bytes()
    (tmp_path / "ok" / "cat" / "cut.jpg").write_bytes(data[: len(data) // 2])  # a truncated JPEG: header reads
    with pytest.raises(DataError, match=r"cannot read image .*cat/cut.jpg"):
        load_dataset("imagefolder", tmp_path / "ok", cache_dir=cache)
    (tmp_path / "ok" / "cat" / "cut.jpg").unlink()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no half-built entry left behind

    (tmp_path / "ok" / "fox").mkdir()
    with pytest.raises(DataError, match=r"class folder .*ok/fox has no images"):
        load_dataset("imagefolder", tmp_path / "ok", cache_dir=cache)
    (tmp_path / "ok" / "fox").rmdir()

    (tmp_path / "file").write_text("a file, not a folder\n")
    with pytest.raises(DataError, match=r"--cache-dir .*file/cache is not writable"):
        load_dataset("imagefolder", tmp_path / "ok", cache_dir=tmp_path / "file" / "cache")

    write_csv(tmp_path, [("ok/cat/0.png", "cat"), ("ok/cat/nope.png", "cat")])
    with pytest.raises(DataError, match=r"1 image\(s\) listed in .*labels.csv are missing, e.g. .*nope.png"):
        load_dataset("csv", tmp_path, cache_dir=cache)

    with pytest.raises(DataError, match="--image-size sets how image files are decoded"):
        load_dataset("digits", image_size=32)


def test_decode_matches_the_cache_row(tmp_path):
    noisy_folder(tmp_path / "imgs", n=4)
    data = load_dataset("imagefolder", tmp_path / "imgs", cache_dir=tmp_path / "cache")
    path = data.train.files[0]
    assert torch.equal(decode(Path(path), 3, data.native_resolution), data.train.images[0])
