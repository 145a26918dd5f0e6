"""Datasets as uint8 splits (image files decoded once into a memory-mapped cache), and mini-batches
normalised, augmented and resized on the training device, resident there or streamed to it.

>>> from autocnn.data import load_dataset, DeviceBatches
>>> data = load_dataset("digits")
>>> x, y = next(iter(DeviceBatches(data.train, 32, shuffle=True, augment=data.augment)))
>>> tuple(x.shape), x.dtype, y.dtype, data.train.images.dtype
((32, 1, 8, 8), torch.float32, torch.int64, torch.uint8)
"""
from .batches import AUGMENTATIONS, DATA_MODES, Batches, DeviceBatches, StreamBatches, batches_for, choose_mode
from .loaders import DATASETS, dataset_names, load_dataset
from .splits import DataError, DataSplits, Pixels, TensorSplit

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "DATA_MODES",
    "Batches",
    "DataError",
    "DataSplits",
    "DeviceBatches",
    "Pixels",
    "StreamBatches",
    "TensorSplit",
    "batches_for",
    "choose_mode",
    "dataset_names",
    "load_dataset",
]
