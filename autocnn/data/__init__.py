"""Datasets held in memory as normalised tensors, and device-resident mini-batching.

>>> from autocnn.data import load_dataset, DeviceBatches
>>> data = load_dataset("digits")
>>> x, y = next(iter(DeviceBatches(data.train, 32, shuffle=True, augment=data.augment)))
>>> tuple(x.shape), y.dtype
((32, 1, 8, 8), torch.int64)
"""
from .batches import AUGMENTATIONS, DeviceBatches
from .loaders import DATASETS, dataset_names, load_dataset
from .splits import DataError, DataSplits, TensorSplit

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "DataError",
    "DataSplits",
    "DeviceBatches",
    "TensorSplit",
    "dataset_names",
    "load_dataset",
]
