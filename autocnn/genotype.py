"""The genotype: frozen data that describes one whole network.

Everything autocnn searches, trains and exports is a `Genotype`; the builder turns it into an
`nn.Module`. It round-trips exactly through dicts, JSON, YAML and a compact one-line string, and it
validates itself on construction so an impossible architecture never reaches the builder, against
the torch-free `autocnn.catalog`. It imports no search library and no torch.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any, ClassVar

import yaml

from autocnn import catalog
from autocnn.errors import AutocnnError


class GenotypeError(AutocnnError, ValueError):
    """An impossible value; `field` is the dotted path of the offending entry (e.g. `stages[2].ratio`)."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}" if field_path else message)
        self.field = field_path
        self.message = message


def _fail(path: str, message: str) -> None:
    raise GenotypeError(path, message)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


@dataclass(frozen=True)
class StageSpec:
    """A run of `repeats` identical blocks; the first block applies `stride`.

    Fields a block kind does not use keep their defaults. Block-specific meanings:
    `expansion` is MBConv's mid/in width ratio, the bottleneck's out/mid ratio (4 for ResNet) and
    DenseNet's bn_size; for `dense` stages `out_chs` is the growth rate. `ratio` is the attention
    reduction divisor r (hidden = channels / r; SE paper r = 16). `widths` lists explicit internal
    widths (Inception branch widths, Xception separable-conv widths) where the canonical ones do not fit.
    `act` and `norm` default to the genotype's; `out_chs` 0 keeps the input width. `conv` is the kind
    of the block's spatial convs (`autocnn.catalog.BlockKind.convs`); `depthwise` only where each of
    them maps its input width to a multiple of it, and never in `fused_mbconv`.
    """

    block: str
    out_chs: int = 0
    repeats: int = 1
    stride: int = 1
    kernel: int = 3
    expansion: float = 1.0
    conv: str = "standard"
    dilation: int = 1
    groups: int = 1
    attention: str = "none"
    ratio: float = 16.0
    act: str | None = None
    norm: str | None = None
    padding: int | None = None
    widths: tuple[int, ...] = ()
    bias: bool = False
    ceil_mode: bool = False

    CODES: ClassVar[dict[str, str]] = {
        "repeats": "r", "out_chs": "c", "stride": "s", "kernel": "k", "expansion": "e",
        "conv": "cv", "dilation": "d", "groups": "g", "attention": "at", "ratio": "rr",
        "act": "act", "norm": "nm", "padding": "p", "widths": "w", "bias": "bias",
        "ceil_mode": "ceil",
    }

    def __post_init__(self) -> None:
        _check_types(self, "")
        _validate_stage(self, "")

    @property
    def kind(self) -> catalog.BlockKind:
        """The catalog facts of this stage's block kind (attention, residual, output width)."""
        return catalog.BLOCKS.get(self.block)


@dataclass(frozen=True)
class HeadSpec:
    """Classifier head: [attention] -> pool -> [Linear -> act -> Dropout]*hidden -> Dropout -> Linear.

    `pool` is "avg", "max" or "flatten" (no pooling); `pool_size` > 1 keeps a spatial grid as
    AlexNet and VGG do. `multilabel` marks a sigmoid (independent per-class) output.
    """

    pool: str = "avg"
    pool_size: int = 1
    hidden: tuple[int, ...] = ()
    hidden_act: str | None = None
    dropout: float = 0.0
    attention: str = "none"
    ratio: float = 16.0
    multilabel: bool = False

    CODES: ClassVar[dict[str, str]] = {
        "pool": "pool", "pool_size": "ps", "hidden": "h", "hidden_act": "hact", "dropout": "dr",
        "attention": "at", "ratio": "rr", "multilabel": "ml",
    }

    def __post_init__(self) -> None:
        _check_types(self, "head")
        _validate_head(self, "head")


@dataclass(frozen=True)
class Genotype:
    """A whole network: stem stages, body stages, head, input and global defaults.

    `drop_path` is the stochastic-depth rate of the last residual block, scaled linearly from 0
    over the blocks as in EfficientNet. `norm_eps` is shared by every norm layer: reference
    networks differ here (1e-3 for Inception, 1e-5 for ResNet) and outputs depend on it.
    """

    stages: tuple[StageSpec, ...]
    stem: tuple[StageSpec, ...] = ()
    head: HeadSpec = field(default_factory=HeadSpec)
    resolution: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    act: str = "relu"
    norm: str = "batch"
    norm_eps: float = 1e-5
    drop_path: float = 0.0

    CODES: ClassVar[dict[str, str]] = {
        "resolution": "res", "in_chans": "in", "num_classes": "cls", "act": "act",
        "norm": "nm", "norm_eps": "eps", "drop_path": "dp",
    }

    def __post_init__(self) -> None:
        _check_types(self, "")
        _validate_genotype(self)

    # -- conversions -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    @classmethod
    def from_dict(cls, data: Any) -> "Genotype":
        return _from_plain(cls, data, "")

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> "Genotype":
        return cls.from_dict(json.loads(text))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "Genotype":
        return cls.from_dict(yaml.safe_load(text))

    def to_string(self) -> str:
        return encode(self)

    @classmethod
    def from_string(cls, text: str) -> "Genotype":
        return decode(text)

    @property
    def arch_id(self) -> str:
        """Stable short hash: equal architectures get equal ids across trials and processes."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(canonical.encode()).hexdigest()[:12]

    def replace(self, **changes: Any) -> "Genotype":
        return dataclasses.replace(self, **changes)

    def __str__(self) -> str:
        return self.to_string()


# -- validation -------------------------------------------------------------------------------------

@functools.cache
def _field_types(cls) -> dict[str, Any]:
    """Resolved annotations, once per class: every StageSpec checks its types on construction, and a
    search space builds thousands (read-only: callers never change the dict)."""
    return typing.get_type_hints(cls)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(underlying type, optional?) for `X | None` annotations."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _check_types(obj: Any, prefix: str) -> None:
    hints = _field_types(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        tp, optional = _base_type(hints[f.name])
        path = _join(prefix, f.name)
        if value is None:
            if not optional:
                _fail(path, "must not be empty")
            continue
        if tp is bool:
            ok = isinstance(value, bool)
        elif tp is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif tp is float:
            ok = isinstance(value, float)
        elif tp is str:
            ok = isinstance(value, str)
        elif typing.get_origin(tp) is tuple:
            item = typing.get_args(tp)[0]
            ok = isinstance(value, tuple) and all(
                isinstance(v, item) and not isinstance(v, bool) for v in value
            )
        else:
            ok = isinstance(value, tp)
        if not ok:
            _fail(path, f"expected {getattr(tp, '__name__', tp)}, got {value!r}")


def _check_name(path: str, name: str | None, registry) -> None:
    if name is not None and name not in registry:
        _fail(path, f"unknown {registry.kind} {name!r}; choose from {', '.join(registry.names())}")


def _validate_stage(spec: StageSpec, path: str) -> None:
    _check_name(_join(path, "block"), spec.block, catalog.BLOCKS)
    _check_name(_join(path, "conv"), spec.conv, catalog.CONVS)
    _check_name(_join(path, "attention"), spec.attention, catalog.ATTENTION)
    _check_name(_join(path, "act"), spec.act, catalog.ACTIVATIONS)
    _check_name(_join(path, "norm"), spec.norm, catalog.NORMS)
    if spec.out_chs < 0:
        _fail(_join(path, "out_chs"), "must be >= 0 (0 keeps the input width)")
    for name in ("repeats", "stride", "kernel", "dilation", "groups"):
        if getattr(spec, name) < 1:
            _fail(_join(path, name), "must be >= 1")
    for name in ("expansion", "ratio"):
        if not getattr(spec, name) > 0:
            _fail(_join(path, name), "must be > 0")
    if spec.padding is not None and spec.padding < 0:
        _fail(_join(path, "padding"), "must be >= 0")
    if any(w < 1 for w in spec.widths):
        _fail(_join(path, "widths"), "every width must be >= 1")
    kind = spec.kind
    if spec.attention != "none" and not kind.supports_attention:
        _fail(_join(path, "attention"), f"block {spec.block!r} takes no attention; use 'none'")
    for name, message in kind.problems(spec):
        _fail(_join(path, name), message)


def _validate_head(head: HeadSpec, path: str) -> None:
    if head.pool not in catalog.POOLS:
        _fail(_join(path, "pool"), f"unknown pooling {head.pool!r}; choose from {', '.join(catalog.POOLS)}")
    if head.pool_size < 1:
        _fail(_join(path, "pool_size"), "must be >= 1")
    if any(h < 1 for h in head.hidden):
        _fail(_join(path, "hidden"), "every hidden width must be >= 1")
    if not 0.0 <= head.dropout < 1.0:
        _fail(_join(path, "dropout"), "must be in [0, 1)")
    if not head.ratio > 0:
        _fail(_join(path, "ratio"), "must be > 0")
    _check_name(_join(path, "hidden_act"), head.hidden_act, catalog.ACTIVATIONS)
    _check_name(_join(path, "attention"), head.attention, catalog.ATTENTION)


def _validate_genotype(g: Genotype) -> None:
    if not g.stages:
        _fail("stages", "needs at least one stage")
    for name in ("resolution", "in_chans", "num_classes"):
        if getattr(g, name) < 1:
            _fail(name, "must be >= 1")
    if not g.norm_eps > 0:
        _fail("norm_eps", "must be > 0")
    if not 0.0 <= g.drop_path < 1.0:
        _fail("drop_path", "must be in [0, 1)")
    _check_name("act", g.act, catalog.ACTIVATIONS)
    _check_name("norm", g.norm, catalog.NORMS)
    for prefix, specs in (("stem", g.stem), ("stages", g.stages)):
        for i, spec in enumerate(specs):
            if not isinstance(spec, StageSpec):
                _fail(f"{prefix}[{i}]", "expected a StageSpec")
    if not isinstance(g.head, HeadSpec):
        _fail("head", "expected a HeadSpec")
    _validate_conv_kinds(g)


def _validate_conv_kinds(g: Genotype) -> None:
    """Walk the widths block by block, as the builder does: whether a conv kind fits a block (a
    depthwise conv needs out a multiple of in) depends on the width the previous stage leaves."""
    chs = g.in_chans
    for prefix, specs in (("stem", g.stem), ("stages", g.stages)):
        for i, spec in enumerate(specs):
            kind = spec.kind
            for r in range(spec.repeats):
                for name, message in kind.conv_problems(chs, spec.stride if r == 0 else 1, spec):
                    _fail(f"{prefix}[{i}].{name}", message)
                chs = kind.out_channels(chs, spec)


# -- dict / JSON / YAML ----------------------------------------------------------------------------

def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            if isinstance(obj, StageSpec) and f.name != "block" and value == f.default:
                continue
            out[f.name] = _to_plain(value)
        return out
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    return obj


def _coerce(tp: Any, value: Any, path: str) -> Any:
    tp, optional = _base_type(tp)
    if value is None:
        return None if optional else _fail(path, "must not be empty")
    if dataclasses.is_dataclass(tp):
        return _from_plain(tp, value, path)
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        if not isinstance(value, (list, tuple)):
            _fail(path, f"expected a list, got {value!r}")
        return tuple(_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _from_plain(cls, data: Any, path: str):
    if not isinstance(data, dict):
        _fail(path or cls.__name__, f"expected a mapping, got {type(data).__name__}")
    hints = _field_types(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted((key for key in data if key not in names), key=str)
    if unknown:
        key = unknown[0] if str(unknown[0]).isidentifier() else repr(unknown[0])
        _fail(_join(path, key), f"unknown key; valid keys are {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        sub = _join(path, name)
        tp = hints[name]
        base, _ = _base_type(tp)
        if typing.get_origin(base) is tuple and dataclasses.is_dataclass(typing.get_args(base)[0]):
            if not isinstance(value, (list, tuple)):
                _fail(sub, "expected a list of stages")
            item_cls = typing.get_args(base)[0]
            kwargs[name] = tuple(_from_plain(item_cls, v, f"{sub}[{i}]") for i, v in enumerate(value))
        else:
            kwargs[name] = _coerce(tp, value, sub)
    try:
        return cls(**kwargs)
    except GenotypeError as err:  # raised by the nested dataclass, which does not know its position
        if path and not err.field.startswith(path):
            raise GenotypeError(_join(path, err.field), err.message) from None
        raise
    except TypeError as err:  # a required field is missing
        missing = re.findall(r"'(\w+)'", str(err))
        _fail(_join(path, missing[0] if missing else ""), "is required")


# -- compact string -------------------------------------------------------------------------------
# One line for logs and trial names, timm-style: `mbconv-r2-c24-s2-e6.0-at:se-rr4.0`. Sections are
# `net-... | stem stages | body stages | head-...`; stages are space separated; only non-defaults
# are written. Floats are written positionally from their shortest repr, so they parse back exactly.

_NUMBER = re.compile(r"^([a-z]+)([0-9][0-9.]*)$")


def _fmt_float(value: float) -> str:
    return format(Decimal(repr(value)), "f")


def _encode_fields(obj: Any, head_token: str, skip: tuple[str, ...] = ()) -> str:
    hints = _field_types(type(obj))
    tokens = [head_token]
    for f in fields(obj):
        if f.name in skip:
            continue
        value = getattr(obj, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if value == default:
            continue
        code = obj.CODES[f.name]
        tp, _ = _base_type(hints[f.name])
        if tp is bool:
            tokens.append(code)
        elif tp is str:
            tokens.append(f"{code}:{value}")
        elif typing.get_origin(tp) is tuple:
            tokens.append(f"{code}:{'x'.join(str(v) for v in value)}")
        elif tp is float:
            tokens.append(f"{code}{_fmt_float(value)}")
        else:
            tokens.append(f"{code}{value}")
    return "-".join(tokens)


def _decode_fields(cls, tokens: list[str], text: str) -> dict[str, Any]:
    hints = _field_types(cls)
    by_code = {code: name for name, code in cls.CODES.items()}
    kwargs: dict[str, Any] = {}
    for token in tokens:
        if ":" in token:
            code, raw = token.split(":", 1)
        else:
            match = _NUMBER.match(token)
            code, raw = (match.group(1), match.group(2)) if match else (token, None)
        name = by_code.get(code)
        if name is None:
            _fail("", f"cannot parse {token!r} in genotype string {text!r}")
        tp, _ = _base_type(hints[name])
        try:
            if tp is bool:
                value: Any = True
            elif tp is str:
                value = raw
            elif typing.get_origin(tp) is tuple:
                value = tuple(int(v) for v in raw.split("x")) if raw else ()
            else:
                value = tp(raw)
        except (TypeError, ValueError):
            _fail(name, f"cannot parse {token!r} in genotype string {text!r}")
        kwargs[name] = value
    return kwargs


def encode(g: Genotype) -> str:
    def stages(specs: tuple[StageSpec, ...]) -> str:
        return " ".join(_encode_fields(s, s.block, skip=("block",)) for s in specs) or "none"

    return " | ".join([
        _encode_fields(g, "net", skip=("stages", "stem", "head")),
        stages(g.stem),
        stages(g.stages),
        _encode_fields(g.head, "head"),
    ])


def decode(text: str) -> Genotype:
    parts = [p.strip() for p in text.strip().split(" | ")]
    if len(parts) != 4 or not parts[0].startswith("net") or not parts[3].startswith("head"):
        _fail("", f"a genotype string has four sections 'net-… | stem | stages | head-…', got {text!r}")

    def stages(section: str) -> tuple[StageSpec, ...]:
        if section == "none":
            return ()
        out = []
        for chunk in section.split():
            block, *tokens = chunk.split("-")
            out.append(StageSpec(block=block, **_decode_fields(StageSpec, tokens, text)))
        return tuple(out)

    head = HeadSpec(**_decode_fields(HeadSpec, parts[3].split("-")[1:], text))
    top = _decode_fields(Genotype, parts[0].split("-")[1:], text)
    return Genotype(stem=stages(parts[1]), stages=stages(parts[2]), head=head, **top)


def load_genotype(path: str) -> Genotype:
    """Read a genotype from a .json, .yaml/.yml or one-line string file; GenotypeError for any bad file."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or type(err).__name__
        raise GenotypeError("", f"cannot read genotype file {path} ({reason}); pass a readable "
                                ".json/.yaml/.txt genotype file or a preset name") from None
    if path.endswith((".json", ".yaml", ".yml")):
        kind = "JSON" if path.endswith(".json") else "YAML"
        try:
            data = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError, RecursionError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            raise GenotypeError("", f"{path} is not valid {kind} ({first}); fix its syntax "
                                    "(Genotype.to_json() / to_yaml() write valid files)") from None
        return Genotype.from_dict(data)
    return Genotype.from_string(text)
