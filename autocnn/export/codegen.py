"""Generate a standalone `model.py` for one genotype from autocnn's own source.

The file holds the genotype as literals (`GENOTYPE`), then the code that builds it, taken from the
real definitions by `autocnn.export.source`: the loader in `autocnn.export.standalone` and everything
it reaches (the builder's `Network`, the layer factory, the genotype and catalog dataclasses as
read-only records, and of every registry the members whose names the genotype or the collected code
holds: the norms, conv kinds, activations, attention modules and block kinds it uses, with their
helpers). The module tree, parameter names and their order are therefore autocnn's own: a
state_dict moves between the two unchanged, and a block kind added to `autocnn.layers` exports with
no change here.

>>> from autocnn.presets import get_preset
>>> source = generate_source(get_preset("lenet5"), name="lenet5")
>>> "import autocnn" in source, "class ConvBlock(Block)" in source, "class BasicBlock" in source
(False, True, False)
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

from autocnn.export import source as collect
from autocnn.export import standalone
from autocnn.export.errors import CodegenError
from autocnn.genotype import Genotype

WIDTH = 100  # literals longer than this are split over lines


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

def _strings(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(set(), *map(_strings, value.values()))
    if isinstance(value, (list, tuple)):
        return set().union(set(), *map(_strings, value))
    return set()


def _collect(overrides: dict[str, str], strings: set[str]) -> collect.Collector:
    """Everything `standalone` reaches, keeping the registry members named in `strings` or in the
    collected code itself."""
    return collect.gather(lambda c: c.add_module(standalone.__name__), strings, overrides=overrides,
                          override_module=standalone.__name__, reader=(standalone.__name__, "as_record"))


#: the layer registries, by the keys `unexportable_kinds` reports them under
LAYER_REGISTRIES = {"blocks": "BLOCKS", "attention": "ATTENTION", "convs": "CONVS", "activations": "ACTIVATIONS",
                    "norms": "NORMS"}


def unexportable_kinds() -> dict[str, list[str]]:
    """Registered layer kinds whose source cannot be written into a model.py, each with the reason
    (empty lists when every kind exports): every member is collected on its own, as an export would."""
    out: dict[str, list[str]] = {}
    for key, attr in LAYER_REGISTRIES.items():
        ref = collect.resolve("autocnn.layers", attr)
        out[key] = []
        for name in getattr(importlib.import_module("autocnn.layers"), attr).names():
            try:
                collect.gather(lambda c: c.add(ref), {name})
            except CodegenError as exc:
                out[key].append(f"{name}: {exc}")
    return out


missing_templates = unexportable_kinds  # its name from before model.py was generated from the source


# -- assembly ---------------------------------------------------------------------------------------

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


def _rank(unit: collect.Unit) -> int:
    """Constants first, then the network code, and the loader last."""
    if unit.module == standalone.__name__:
        return 2 if unit.definition or unit.name.startswith("_") else 0
    return 1


def _imports(units: list[collect.Unit]) -> str:
    """The import lines: standard library, then torch; plain imports before from-imports."""
    plain: dict[bool, set[str]] = {False: set(), True: set()}
    froms: dict[str, set[str]] = {}
    for unit in units:
        words = unit.text.split()
        if words[0] == "import":
            plain[words[1].split(".")[0] in collect.STANDALONE_ROOTS].add(unit.text)
        else:
            froms.setdefault(words[1], set()).add(" ".join(words[3:]))
    groups = []
    for third_party in (False, True):
        lines = sorted(plain[third_party])
        lines += [f"from {m} import {', '.join(sorted(names))}" for m, names in sorted(froms.items())
                  if (m.split(".")[0] in collect.STANDALONE_ROOTS) == third_party]
        if lines:
            groups.append("\n".join(lines))
    return "\n\n".join(groups) + "\n"


def generate_source(g: Genotype, *, name: str, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None, class_names: Sequence[str] | None = None,
                    about: Sequence[str] = (), image_size: int | None = None) -> str:
    """The text of a standalone model.py for `g`. `about` adds provenance lines to the docstring."""
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    plain = g.to_dict()
    genotype_dict = {"stem": plain.pop("stem"), "stages": plain.pop("stages"), **plain}  # forward order
    overrides = {
        "GENOTYPE": literal(genotype_dict),
        "IN_CHANS": literal(g.in_chans),
        "RESOLUTION": literal(g.resolution),
        "NUM_CLASSES": literal(g.num_classes),
        "MEAN": literal(tuple(float(v) for v in mean)) if mean is not None else "None",
        "STD": literal(tuple(float(v) for v in std)) if std is not None else "None",
        "CLASS_NAMES": literal(list(map(str, class_names))) if class_names is not None else "None",
        "IMAGE_SIZE": literal(int(image_size)) if image_size is not None else "None",
    }
    collector = _collect(overrides, _strings(dataclasses.asdict(g)))
    units = collect.ordered(collector, _rank)
    parts, section, simple = [], None, False
    for unit in units:
        title = section if unit.kind == "registry" else _section_title(unit)
        if title != section and title:
            parts.append(_section(title))
        one_line = len([line for line in unit.text.splitlines() if not line.startswith("#")]) == 1
        if simple and one_line and title == section:
            parts[-1] += unit.text  # one-line constants stay together
        else:
            parts.append(unit.text)
        section, simple = title, one_line
    body = "\n\n".join(parts)
    imports = _imports([u for u in collector.units.values() if u.kind == "import"])
    source = _tidy(_header(g, name, about) + "\n" + imports + "\n\n" + body)
    try:
        compile(source, "model.py", "exec")
    except SyntaxError as exc:  # a rewrite the collector got wrong: fail here, not in the user's hands
        raise CodegenError(f"the generated model.py does not compile ({exc}); this is an autocnn bug") from exc
    return source


def _section_title(unit: collect.Unit) -> str | None:
    rank = _rank(unit)
    if rank == 0:
        return None
    if rank == 2:
        return "loading"
    return "from " + unit.module


def _tidy(source: str) -> str:
    """Two blank lines between top-level definitions, none trailing, none opening a body."""
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
            elif not out[-1].lstrip().startswith(("def ", "class ")) or not out[-1].endswith(":"):
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


__all__ = ["CodegenError", "generate_source", "literal", "load_module", "missing_templates", "unexportable_kinds"]
