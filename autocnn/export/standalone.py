"""The loading half of an exported `model.py`: real code that `codegen` writes out from its source.

Everything here must run with torch and the standard library alone. The constants below are
placeholders: `codegen` writes the exported network's values in their place, and emits `Network` and
`Genotype` (as a read-only record) from autocnn's own source beside these functions.
"""
import json
import os
from collections import OrderedDict

import torch

from autocnn.builder import Network
from autocnn.data.transforms import fit_square, network_input
from autocnn.genotype import Genotype

# The architecture, as autocnn's genotype in plain data: stem and body stages (block kind plus the
# fields that differ from StageSpec's defaults), head, input and global defaults.
GENOTYPE: dict = {}

IN_CHANS = 3
RESOLUTION = 224
NUM_CLASSES = 1000
MEAN = None  # per-channel, of images scaled to [0, 1]
STD = None
IMAGE_SIZE = None  # the square size training stored images at (resize the shorter side, centre-crop); None: any
CLASS_NAMES = None
WEIGHTS = "weights.safetensors"  # looked up in the working directory, then beside this file

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors(path):
    """A .safetensors file as a state_dict, read with torch alone (8-byte header size, JSON header, data)."""
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(size))
        data = bytearray(fh.read())
    header.pop("__metadata__", None)
    state = OrderedDict()
    for name, info in header.items():
        start, end = info["data_offsets"]
        dtype = _SAFETENSORS_DTYPES[info["dtype"]]
        if end > start:
            tensor = torch.frombuffer(data, dtype=dtype, count=(end - start) // dtype.itemsize, offset=start)
        else:
            tensor = torch.empty(0, dtype=dtype)
        state[name] = tensor.reshape(info["shape"]).clone()
    return state


def find_file(path):
    """`path` as given if it exists (or is absolute), else the file of that name beside this model.py."""
    path = os.fspath(path)
    if os.path.isabs(path) or os.path.exists(path) or "__file__" not in globals():
        return path
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), path)


def read_weights(path):
    """The state_dict in a .safetensors (or torch.save'd) file."""
    path = find_file(path)
    if str(path).endswith(".safetensors"):
        return read_safetensors(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def as_record(record, value):
    """A value of GENOTYPE's plain form as the network code reads it: lists as tuples, mappings as
    `record` (the exported file's stand-in for a genotype dataclass, see its `from_dict`)."""
    if isinstance(value, list):
        return tuple(as_record(record, v) for v in value)
    return record.from_dict(value) if record is not None else value


def build(weights=WEIGHTS, device="cpu"):
    """The network with `weights` loaded (default: the weights file beside this one; None: untrained).

    Call `.eval()` for inference: dropout and batch-norm statistics change in training mode.
    """
    genotype = Genotype.from_dict(GENOTYPE)
    if weights is None:
        return Network(genotype).to(device)
    state = read_weights(weights)
    with torch.device("meta"):  # no random initialisation of tensors about to be replaced
        model = Network(genotype)
    model.load_state_dict(state, assign=True)  # every key must match
    return model.to(device)


def preprocess(images):
    """Decoded images -> the network's input, exactly as training evaluated them.

    `images`: uint8 (0-255) or float in [0, 1], C x H x W or N x C x H x W, of any size (decode files with
    PIL, `.convert("RGB")` or `"L"`). Each is resized on its shorter side and centre-cropped to IMAGE_SIZE (as
    the training data was stored; uint8 rounded as there), scaled to [0, 1] and normalised with MEAN / STD,
    then resized (bilinear) to RESOLUTION x RESOLUTION.
    """
    x = images.unsqueeze(0) if images.ndim == 3 else images
    if IMAGE_SIZE is not None:
        x = fit_square(x, IMAGE_SIZE)
    return network_input(x, MEAN, STD, 255.0 if x.dtype == torch.uint8 else 1.0, RESOLUTION)
