"""Generate a standalone `model.py` for one genotype: torch-only code in dependency order.

The file holds the genotype as literals (`GENOTYPE`), the layer, attention and block classes this
network uses (from `autocnn.export.templates`, nothing else) and a small builder that walks the
genotype exactly as `autocnn.builder` does, so the module tree, parameter names and their order are
autocnn's own: a state_dict moves between the two unchanged.

>>> from autocnn.presets import get_preset
>>> source = generate_source(get_preset("lenet5"), name="lenet5")
>>> "import autocnn" in source, "class ConvBlock(Block)" in source, "class BasicBlock" in source
(False, True, False)
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Sequence

from autocnn.errors import AutocnnError
from autocnn.export import templates
from autocnn.genotype import Genotype, StageSpec

WIDTH = 100  # literals longer than this are split over lines


class CodegenError(AutocnnError):
    """A genotype with a layer kind that has no export template."""


# -- the parts every generated file has -------------------------------------------------------------

_LAYERS = templates._src('''
def same_padding(kernel, dilation=1):
    if isinstance(kernel, tuple):
        return tuple(((k - 1) // 2) * dilation for k in kernel)
    return ((kernel - 1) // 2) * dilation


class ConvNormAct(nn.Sequential):
    """conv -> norm -> act, with stable child names (`conv`, `bn`, `act`)."""

    def __init__(self, conv, norm, act):
        super().__init__(OrderedDict(conv=conv, bn=norm, act=act))


class Layers:
    """What a block needs to make its layers: one stage's choices of activation, norm, conv and attention."""

    def __init__(self, *, act, norm, eps, conv, attention, ratio, dilation=1, bias=False):
        self._act = ACTIVATIONS[act]
        self._norm = NORMS[norm]
        self._conv = CONVS[conv]
        self._attention = ATTENTION[attention]
        self.eps, self.ratio, self.dilation, self.bias = eps, ratio, dilation, bias

    def act(self):
        return self._act()

    def norm(self, channels):
        return self._norm(channels, self.eps)

    def conv(self, in_chs, out_chs, kernel=3, stride=1, *, padding=None, groups=1, kind=None, bias=None):
        """A conv of the stage's conv kind (or of `kind`, for convs whose kind is fixed, like 1x1)."""
        factory = CONVS[kind] if kind else self._conv
        dilation = self.dilation if kernel != 1 else 1
        if padding is None:
            padding = same_padding(kernel, dilation)
        return factory(in_chs, out_chs, kernel, stride, padding, dilation, groups,
                       self.bias if bias is None else bias)

    def cna(self, in_chs, out_chs, kernel=3, stride=1, *, padding=None, groups=1, kind=None, act=True):
        return ConvNormAct(self.conv(in_chs, out_chs, kernel, stride, padding=padding, groups=groups, kind=kind),
                           self.norm(out_chs), self.act() if act else nn.Identity())

    def attention(self, channels, rd_channels=None):
        return self._attention(channels, ratio=self.ratio, act_layer=self._act, rd_channels=rd_channels)
''')

_BLOCK_BASE = templates._src('''
Stage = namedtuple("Stage", ["block", *STAGE_DEFAULTS], defaults=list(STAGE_DEFAULTS.values()))


class Block(nn.Module):
    """One unit of a stage: `(in_chs, out_chs, stride, spec, *, layers, drop_path)`.

    `residual` blocks get their share of the stochastic-depth rate `GENOTYPE["drop_path"]`.
    """

    residual = False

    @classmethod
    def out_channels(cls, in_chs, spec):
        return spec.out_chs or in_chs
''')

_NETWORK = templates._src('''
def stage_layers(genotype, spec):
    return Layers(act=spec.act or genotype["act"], norm=spec.norm or genotype["norm"], eps=genotype["norm_eps"],
                  conv=spec.conv, attention=spec.attention, ratio=spec.ratio, dilation=spec.dilation,
                  bias=spec.bias)


def build_stages(genotype, specs, in_chs, drop_state):
    """One nn.Sequential of blocks per stage; `drop_state` = [residual blocks seen, residual total]."""
    stages, chs = [], in_chs
    for spec in specs:
        block_cls = BLOCKS[spec.block]
        layers = stage_layers(genotype, spec)
        blocks = []
        for i in range(spec.repeats):
            out = block_cls.out_channels(chs, spec)
            drop = 0.0
            if drop_state is not None and block_cls.residual and drop_state[1]:
                drop = genotype["drop_path"] * drop_state[0] / drop_state[1]
                drop_state[0] += 1
            blocks.append(block_cls(chs, out, spec.stride if i == 0 else 1, spec, layers=layers, drop_path=drop))
            chs = out
        stages.append(nn.Sequential(*blocks))
    return stages, chs


def build_features(genotype):
    stem_specs = [Stage(**spec) for spec in genotype["stem"]]
    body_specs = [Stage(**spec) for spec in genotype["stages"]]
    residual = sum(s.repeats for s in body_specs if BLOCKS[s.block].residual)
    stem, chs = build_stages(genotype, stem_specs, genotype["in_chans"], None)
    body, chs = build_stages(genotype, body_specs, chs, [0, residual])
    return nn.Sequential(*stem), nn.Sequential(*body), chs


def feature_shape(genotype):
    """(C, H, W) of the last feature map at the input resolution, computed on the meta device."""
    with torch.device("meta"):
        stem, body, _ = build_features(genotype)
        x = torch.empty(1, genotype["in_chans"], genotype["resolution"], genotype["resolution"])
        return tuple(body(stem(x)).shape[1:])


class Head(nn.Module):
    """[attention] -> pool -> flatten -> hidden MLP -> dropout -> classifier (logits)."""

    def __init__(self, in_chs, spec, num_classes, act, in_features):
        super().__init__()
        act_factory = ACTIVATIONS[spec["hidden_act"] or act]
        self.attn = ATTENTION[spec["attention"]](in_chs, ratio=spec["ratio"], act_layer=act_factory)
        pools = {"avg": nn.AdaptiveAvgPool2d, "max": nn.AdaptiveMaxPool2d}
        self.pool = pools[spec["pool"]](spec["pool_size"]) if spec["pool"] in pools else nn.Identity()
        self.flatten = nn.Flatten(1)
        hidden, features = [], in_features
        for width in spec["hidden"]:
            hidden += [nn.Linear(features, width), act_factory(), nn.Dropout(spec["dropout"])]
            features = width
        self.hidden = nn.Sequential(*hidden)
        self.dropout = nn.Dropout(spec["dropout"]) if not spec["hidden"] else nn.Identity()
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x):
        x = self.flatten(self.pool(self.attn(x)))
        return self.fc(self.dropout(self.hidden(x)))


class Network(nn.Module):
    """`stem` -> `stages` -> `head`; each stage is an nn.Sequential of blocks."""

    def __init__(self, genotype=GENOTYPE):
        super().__init__()
        self.genotype = genotype
        self.stem, self.stages, self.num_features = build_features(genotype)
        head = genotype["head"]
        if head["pool"] == "flatten":
            c, h, w = feature_shape(genotype)
            in_features = c * h * w
        else:
            in_features = self.num_features * head["pool_size"] ** 2
        self.head = Head(self.num_features, head, genotype["num_classes"], genotype["act"], in_features)

    def forward_features(self, x):
        return self.stages(self.stem(x))

    def forward(self, x):
        """Logits, N x num_classes, for normalised images N x C x H x W (see `preprocess`)."""
        return self.head(self.forward_features(x))

    @torch.no_grad()
    def predict(self, x):
        """Class probabilities: softmax, or independent sigmoids for a multi-label head."""
        logits = self(x)
        return logits.sigmoid() if self.genotype["head"]["multilabel"] else logits.softmax(-1)
''')

_LOADING = templates._src('''
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


def build(weights=WEIGHTS, device="cpu"):
    """The network with `weights` loaded (default: the weights file beside this one; None: untrained).

    Call `.eval()` for inference: dropout and batch-norm statistics change in training mode.
    """
    if weights is None:
        return Network().to(device)
    state = read_weights(weights)
    with torch.device("meta"):  # no random initialisation of tensors about to be replaced
        model = Network()
    model.load_state_dict(state, assign=True)  # every key must match
    return model.to(device)


def preprocess(images):
    """uint8 images (0-255) or float images in [0, 1], C x H x W or N x C x H x W -> the network's input:
    normalised with MEAN / STD and resized (bilinear) to RESOLUTION x RESOLUTION, as in training."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if MEAN is not None:
        mean = torch.tensor(MEAN, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) / torch.tensor(STD, device=x.device).view(1, -1, 1, 1)
    if tuple(x.shape[-2:]) != (RESOLUTION, RESOLUTION):
        x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False, antialias=False)
    return x
''')


# -- literals ---------------------------------------------------------------------------------------

def literal(value: Any, indent: int = 0) -> str:
    """`value` as Python source: one line when it fits in WIDTH, else one item per line."""
    flat = _flat(value)
    if len(flat) + indent <= WIDTH or not isinstance(value, (dict, list, tuple)) or not value:
        return flat
    pad = " " * (indent + 4)
    if isinstance(value, dict):
        items = [f"{pad}{_flat(k)}: {literal(v, indent + 4)}," for k, v in value.items()]
        return "{\n" + "\n".join(items) + "\n" + " " * indent + "}"
    items = [f"{pad}{_record(v, indent + 4) if _is_record(v) else literal(v, indent + 4)}," for v in value]
    brackets = "[]" if isinstance(value, list) else "()"
    return brackets[0] + "\n" + "\n".join(items) + "\n" + " " * indent + brackets[1]


def _is_record(value: Any) -> bool:
    return isinstance(value, dict) and not any(isinstance(v, dict) for v in value.values())


def _record(value: dict, indent: int) -> str:
    """A dict of plain values (one stage) on as few lines as fit, continuation lines under the first key."""
    lines, line = [], "{"
    for i, (k, v) in enumerate(value.items()):
        item = f"{_flat(k)}: {_flat(v)}" + (", " if i < len(value) - 1 else "}")
        if len(line) > 1 and indent + len(line) + len(item.rstrip()) > WIDTH:
            lines.append(line.rstrip())
            line = " "
        line += item
    lines.append(line)
    return ("\n" + " " * indent).join(lines)


def _flat(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise CodegenError(f"cannot write the non-finite number {value} into model.py")
        return repr(value)
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_flat(k)}: {_flat(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flat(v) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(_flat(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    raise TypeError(f"cannot write {type(value).__name__} into model.py")


def _docstring_safe(text: str) -> str:
    return str(text).replace("\\", "/").replace('"""', "'''")


# -- what a genotype uses ---------------------------------------------------------------------------

def _specs(g: Genotype) -> tuple[StageSpec, ...]:
    return g.stem + g.stages


def used_kinds(g: Genotype) -> dict[str, list[str]]:
    """The registry names this genotype needs, in registry order: blocks, attention, convs, activations, norms."""
    from autocnn.layers import ACTIVATIONS, ATTENTION, BLOCKS, CONVS, NORMS

    specs = _specs(g)
    wanted = {
        "blocks": {s.block for s in specs},
        "attention": {s.attention for s in specs} | {g.head.attention},
        "convs": {s.conv for s in specs} | {"standard"},  # 1x1 convs are standard in every block kind
        "activations": {s.act or g.act for s in specs} | {g.head.hidden_act or g.act},
        "norms": {s.norm or g.norm for s in specs},
    }
    registries = {"blocks": BLOCKS, "attention": ATTENTION, "convs": CONVS, "activations": ACTIVATIONS,
                  "norms": NORMS}
    return {key: [n for n in registries[key].names() if n in wanted[key]] for key in registries}


def missing_templates() -> dict[str, list[str]]:
    """Registered names with no export template (empty lists when every kind can be exported)."""
    from autocnn.layers import ACTIVATIONS, ATTENTION, BLOCKS, CONVS, NORMS

    pairs = {"blocks": (BLOCKS, templates.BLOCKS), "attention": (ATTENTION, templates.ATTENTION),
             "convs": (CONVS, templates.CONVS), "activations": (ACTIVATIONS, templates.ACTIVATIONS),
             "norms": (NORMS, templates.NORMS)}
    return {key: [n for n in registry.names() if n not in table] for key, (registry, table) in pairs.items()}


def _check_templates(used: dict[str, list[str]]) -> None:
    tables = {"blocks": templates.BLOCKS, "attention": templates.ATTENTION, "convs": templates.CONVS,
              "activations": templates.ACTIVATIONS, "norms": templates.NORMS}
    for key, names in used.items():
        for name in names:
            if name not in tables[key]:
                kind = {"blocks": "block", "convs": "conv", "activations": "activation", "norms": "norm"}.get(key, key)
                raise CodegenError(f"the {kind} kind {name!r} has no export template; add one to "
                                   "autocnn/export/templates.py (or export a genotype without it)")


# -- assembly ---------------------------------------------------------------------------------------

def _table(name: str, entries: Iterable[tuple[str, str]]) -> str:
    rows = "".join(f"    {_flat(key)}: {value},\n" for key, value in entries)
    return f"{name} = {{\n{rows}}}\n"


def _section(title: str) -> str:
    return f"# -- {title} " + "-" * max(3, WIDTH - len(title) - 6) + "\n"


def _header(g: Genotype, name: str, about: Sequence[str]) -> str:
    kind = "independent sigmoids (multi-label)" if g.head.multilabel else "softmax over the classes"
    lines = [
        f"{_docstring_safe(name)}: a standalone PyTorch image classifier, exported by autocnn.",
        "",
        "This file needs only PyTorch. It builds exactly the network autocnn trained, with the same module",
        "names, so the state_dict in weights.safetensors loads into it unchanged:",
        "",
        "    import torch",
        "    from model import build, preprocess",
        "    model = build().eval()                      # loads weights.safetensors beside this file",
        f"    images = torch.rand(2, {g.in_chans}, {g.resolution}, {g.resolution})           # float in [0, 1] or uint8",
        "    probs = model.predict(preprocess(images))   # N x num_classes",
        "",
        f"Input: {g.in_chans} x {g.resolution} x {g.resolution}, pixels in [0, 1] normalised with MEAN / STD "
        "(`preprocess` does it).",
        f"Output: {g.num_classes} logits; `predict` applies {kind}.",
        "",
        "Architecture (autocnn genotype string; GENOTYPE below is the same genotype as data):",
        "    " + _docstring_safe(g.to_string()),
    ]
    if about:
        lines += [""] + [_docstring_safe(line) for line in about]
    return '"""' + "\n".join(lines) + '\n"""\n'


def generate_source(g: Genotype, *, name: str, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None, class_names: Sequence[str] | None = None,
                    about: Sequence[str] = ()) -> str:
    """The text of a standalone model.py for `g`. `about` adds provenance lines to the docstring."""
    used = used_kinds(g)
    _check_templates(used)
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")

    # layers: activations, norms, convs, attention, then the factory that binds them per stage
    parts = [_table("ACTIVATIONS", ((n, templates.ACTIVATIONS[n]) for n in used["activations"]))]
    for n in used["norms"]:
        parts.append(templates.NORMS[n][1])
    parts.append(_table("NORMS", ((n, templates.NORMS[n][0]) for n in used["norms"])))
    for n in used["convs"]:
        parts.append(templates.CONVS[n][1])
    parts.append(_table("CONVS", ((n, templates.CONVS[n][0]) for n in used["convs"])))
    attention = [templates.ATTENTION[n] for n in used["attention"]]
    block_templates = [templates.BLOCKS[n] for n in used["blocks"]]
    needed = {req for _, t in attention + block_templates for req in t.requires}
    if "reduced_channels" in needed:
        parts.append(templates.SNIPPETS["reduced_channels"])
    for _, t in attention:
        parts.append(t.source)
    parts.append(_table("ATTENTION", ((n, templates.ATTENTION[n][0]) for n in used["attention"])))
    parts.append(_LAYERS)
    layers = "\n\n".join(parts)

    # blocks: the base class, the shared snippets they need, then every block kind used
    parts = [_BLOCK_BASE]
    parts += [src for key, src in templates.SNIPPETS.items() if key in needed and key != "reduced_channels"]
    parts += [t.source for _, t in block_templates]
    parts.append(_table("BLOCKS", ((n, templates.BLOCKS[n][0]) for n in used["blocks"])))
    blocks = "\n\n".join(parts)

    stage_defaults = {f.name: f.default for f in dataclasses.fields(StageSpec) if f.name != "block"}
    plain = g.to_dict()
    genotype_dict = {"stem": plain.pop("stem"), "stages": plain.pop("stages"), **plain}  # forward order
    constants = "\n".join([
        "# The architecture, as autocnn's genotype: stem and body stages (block kind plus the values that",
        "# differ from STAGE_DEFAULTS), head, input and global defaults.",
        f"GENOTYPE = {literal(genotype_dict)}",
        f"STAGE_DEFAULTS = {literal(stage_defaults)}",
        "",
        f"IN_CHANS = {g.in_chans}",
        f"RESOLUTION = {g.resolution}",
        f"NUM_CLASSES = {g.num_classes}",
        f"MEAN = {literal(tuple(float(v) for v in mean)) if mean is not None else None}  "
        "# per-channel, of images scaled to [0, 1]",
        f"STD = {literal(tuple(float(v) for v in std)) if std is not None else None}",
        f"CLASS_NAMES = {literal(list(map(str, class_names))) if class_names is not None else None}",
        'WEIGHTS = "weights.safetensors"  # looked up in the working directory, then beside this file',
    ]) + "\n"

    body = "\n\n".join([
        constants,
        _section("layers") + "\n" + layers,
        _section("blocks") + "\n" + blocks,
        _section("network") + "\n" + _NETWORK,
        _section("loading") + "\n" + _LOADING,
    ])
    imports = ["import json"] + (["import math"] if "math." in body else []) + ["import os",
               "from collections import OrderedDict, namedtuple", "", "import torch",
               "import torch.nn.functional as F", "from torch import nn"]
    source = _header(g, name, about) + "\n" + "\n".join(imports) + "\n\n" + body
    source = _tidy(source)
    compile(source, "model.py", "exec")  # a template mistake fails here, not in the user's hands
    return source


def _tidy(source: str) -> str:
    """Two blank lines between top-level definitions, none trailing."""
    out: list[str] = []
    blank = 0
    for line in source.splitlines():
        if not line.strip():
            blank += 1
            continue
        top_def = line.startswith(("def ", "class ", "@", "# -- "))
        if out:
            if top_def and not out[-1].startswith(("@", "# -- ")):
                out += [""] * 2
            else:
                out += [""] * min(blank, 1 if line.startswith(" ") else 2)
        out.append(line)
        blank = 0
    return "\n".join(out) + "\n"


def load_module(path: str | Path, name: str = "model") -> ModuleType:
    """Import a generated model.py from `path` (kept out of sys.modules)."""
    spec = importlib.util.spec_from_file_location(name, str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


__all__ = ["CodegenError", "generate_source", "literal", "load_module", "missing_templates", "used_kinds"]
