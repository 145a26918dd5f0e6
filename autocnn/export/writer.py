"""Write an exported model folder, atomically, and prove it reproduces the model before keeping it.

A folder holds `model.py` (torch-only code generated from autocnn's own source, `autocnn.export.codegen`),
`weights.safetensors`, `model.pt2` (`torch.export`, dynamic batch), `model.onnx` (dynamo exporter, dynamic batch),
`config.json` and a `README.md` model card. Every format is loaded back and compared with the
in-process model at a batch size other than the one exported (model.py and .pt2 within 1e-5, ONNX
within 1e-4); a failed check raises, and the temporary folder is removed: nothing half-written is
ever left at `--out`.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import warnings
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from autocnn._version import __version__
from autocnn.builder import Network, build_model
from autocnn.export.codegen import generate_source, load_module
from autocnn.errors import first_line
from autocnn.export.errors import ExportError
from autocnn.genotype import Genotype

FORMATS = ("pt2", "onnx")
FORMAT = "autocnn-export"
INDEX_FORMAT = "autocnn-export-index"
FORMAT_VERSION = 1
INPUT_NAME, OUTPUT_NAME = "images", "logits"
EXPORT_BATCH, CHECK_BATCH = 2, 3  # exported at one batch size, checked at another (dynamic batch)
TOLERANCE = {"model.py": 1e-5, "model.pt2": 1e-5, "model.onnx": 1e-4}
ONNX_EXTERNAL_DATA_BYTES = 1_500_000_000  # ONNX protobufs stop at 2 GB; bigger weights go to model.onnx.data

META_KEYS = {
    "name": "model name for the card (default: preset name or autocnn-<arch id>)",
    "mean": "per-channel normalisation mean of images in [0, 1]",
    "std": "per-channel normalisation std",
    "image_size": "square size the training images were stored at (shorter side resized, centre-cropped)",
    "class_names": "one name per output",
    "metrics": "dict of figures, e.g. {'test_accuracy': 0.97}",
    "study": "the study the model came from",
    "trial": "the trial number",
    "dataset": "the dataset it was trained on",
    "objectives": "dict of the study's objective values for this trial",
    "training": "dict describing how the weights were trained",
    "latency_ms": "measured CPU latency, batch 1",
    "source": "dict of further provenance",
}


class ExportWarning(UserWarning):
    """A format was written by a fallback path."""


# -- the output folder ------------------------------------------------------------------------------

def _is_export_folder(path: Path) -> bool:
    for name, fmt in (("config.json", FORMAT), ("index.json", INDEX_FORMAT)):
        try:
            if json.loads((path / name).read_text(encoding="utf-8")).get("format") == fmt:
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def check_output(out: str | os.PathLike, force: bool) -> Path:
    """Raise ExportError unless `out` can be written: absent, or (with force) an earlier export or empty."""
    path = Path(out).expanduser()
    if not path.exists():
        return path
    if not force:
        raise ExportError(f"--out {path} already exists; pass --force to replace it or choose another folder")
    if not path.is_dir():
        raise ExportError(f"--out {path} is a file; choose a folder path")
    if any(path.iterdir()) and not _is_export_folder(path):
        raise ExportError(f"refusing to replace --out {path}: it is not an autocnn export folder; "
                          "choose a new folder")
    return path


class OutputFolder:
    """`with OutputFolder(out, force) as tmp:` write into `tmp`; on success it becomes `out`, on error it is removed.

    `out` is checked at construction, before any work.
    """

    def __init__(self, out: str | os.PathLike, force: bool = False) -> None:
        self.path = check_output(out, force)
        self.force = force
        self.tmp: Path | None = None
        self._created: list[Path] = []

    def __enter__(self) -> Path:
        parent = self.path.absolute().parent
        missing = []
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for folder in reversed(missing):
            folder.mkdir()
            self._created.append(folder)
        self.tmp = self.path.absolute().parent / f".{self.path.name}.tmp-{secrets.token_hex(4)}"
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self._commit()
                return
            except BaseException:
                self._cleanup()
                raise
        self._cleanup()

    def _commit(self) -> None:
        check_output(self.path, self.force)  # someone may have created it meanwhile
        backup = None
        if self.path.exists():
            backup = self.path.absolute().parent / f".{self.path.name}.old-{secrets.token_hex(4)}"
            os.replace(self.path, backup)
        try:
            os.replace(self.tmp, self.path)
        except OSError:
            if backup is not None:
                os.replace(backup, self.path)
            raise
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)

    def _cleanup(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        for folder in reversed(self._created):
            try:
                folder.rmdir()
            except OSError:
                pass


# -- weights ------------------------------------------------------------------------------------------

def match_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], origin: str = "the weights"):
    """`state` keyed and shaped for `model`, or ExportError naming the first difference.

    autocnn state_dicts match by name. Reference (torchvision / timm) weights for a preset match by
    position and shape, as `autocnn.weights` loads them; a classifier of another class count is an error
    here (an export must not ship an untrained head).
    """
    target = model.state_dict()
    state = OrderedDict((k, v) for k, v in state.items() if isinstance(v, torch.Tensor))
    if set(state) == set(target):
        for name, value in target.items():
            if tuple(state[name].shape) != tuple(value.shape):
                raise ExportError(f"{origin} do not match the architecture: {name} has shape "
                                  f"{tuple(state[name].shape)} where the architecture needs {tuple(value.shape)}"
                                  f"{_fix_hint(name, state[name], value)}")
        return OrderedDict((k, state[k]) for k in target)
    if len(state) == len(target) and all(tuple(a.shape) == tuple(b.shape)
                                         for a, b in zip(state.values(), target.values())):
        return OrderedDict(zip(target, state.values()))  # reference weights: same layers, other names
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    detail = (f"{len(state)} tensors where the architecture has {len(target)}"
              + (f" (missing {missing[0]}" + (f", unexpected {unexpected[0]})" if unexpected else ")") if missing
                 else f" (unexpected {unexpected[0]})" if unexpected else ""))
    raise ExportError(f"{origin} do not match the architecture: {detail}; export the architecture "
                      "these weights were trained for")


def _fix_hint(name: str, got: torch.Tensor, want: torch.Tensor) -> str:
    if name.startswith("head.fc.") and got.ndim >= 1 and got.shape[0] != want.shape[0]:
        return f"; the weights are for {got.shape[0]} classes: pass --num-classes {got.shape[0]}"
    if got.ndim == 4 and want.ndim == 4 and got.shape[1] != want.shape[1] and name.startswith(("stem.0.", "stages.0.0.")):
        return f"; the weights take {got.shape[1]} input channels: pass --in-chans {got.shape[1]}"
    return "; export the architecture these weights were trained for"


def reference_model(model_or_genotype: Any, weights: Mapping[str, torch.Tensor] | None,
                    origin: str = "the weights") -> Network:
    """A fresh CPU Network in eval mode with `weights` (default: those of the given Network) loaded."""
    from autocnn.api import resolve_genotype

    if isinstance(model_or_genotype, Network):
        genotype = model_or_genotype.genotype
        if weights is None:
            weights = model_or_genotype.state_dict()
    elif isinstance(model_or_genotype, (Genotype, str, os.PathLike)):
        genotype = resolve_genotype(model_or_genotype)
    else:
        raise ExportError(f"cannot export a {type(model_or_genotype).__name__}; pass an autocnn Network, "
                          "a Genotype, a preset name or a genotype file")
    if weights is None:
        raise ExportError("an architecture without weights cannot be exported; pass its trained state_dict "
                          "(or --weights FILE)")
    model = build_model(genotype)
    state = match_state_dict(model, weights, origin)
    model.load_state_dict(OrderedDict((k, v.detach().to("cpu")) for k, v in state.items()))
    return model.eval()


# -- one folder ---------------------------------------------------------------------------------------

def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).abs().max())


def _check(label: str, got: torch.Tensor, want: torch.Tensor, checks: dict) -> None:
    if tuple(got.shape) != tuple(want.shape):
        raise ExportError(f"{label} returns shape {tuple(got.shape)} instead of {tuple(want.shape)}; "
                          "this is an autocnn bug, please report it")
    diff = _max_diff(got, want)
    scale = max(1.0, float(want.abs().max()))
    if not diff <= TOLERANCE[label] * scale:
        raise ExportError(f"{label} differs from the trained model by {diff:.3g} (tolerance "
                          f"{TOLERANCE[label]:g}); this is an autocnn bug, please report it")
    checks[label] = diff


def _check_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    meta = dict(meta or {})
    unknown = sorted(set(meta) - set(META_KEYS))
    if unknown:
        raise ExportError(f"unknown export metadata {unknown[0]!r}; valid keys are {', '.join(sorted(META_KEYS))}")
    if (meta.get("mean") is None) != (meta.get("std") is None):
        raise ExportError("export metadata needs both mean and std, or neither")
    names = meta.get("class_names")
    if names is not None and len(names) == 0:
        meta["class_names"] = None
    return meta


def _about(meta: dict, genotype: Genotype) -> list[str]:
    lines = []
    if meta.get("study") is not None:
        lines.append(f"Source: trial {meta.get('trial')} of autocnn study {meta['study']!r}"
                     + (f", dataset {meta['dataset']!r}." if meta.get("dataset") else "."))
    elif meta.get("dataset"):
        lines.append(f"Trained on dataset {meta['dataset']!r}.")
    metrics = meta.get("metrics") or {}
    if metrics:
        lines.append("Figures: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in metrics.items()) + ".")
    lines.append(f"Exported {datetime.now(timezone.utc):%Y-%m-%d} with autocnn {__version__} and torch "
                 f"{torch.__version__.split('+')[0]}; see config.json and README.md.")
    return lines


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """The optional files to write beside model.py and the weights, refused before any work is done."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportError(f"unknown export format {unknown[0]!r}; choose from {', '.join(FORMATS)}, or none")
    return tuple(formats)


def parse_formats(text: str) -> tuple[str, ...]:
    """`--formats pt2,onnx` or `none` (the ONNX export takes longest, and a user who deploys with torch
    alone should not wait for it)."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    return () if names == ("none",) else check_formats(names or (text,))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _export_pt2(module: nn.Module, example: torch.Tensor, path: Path):
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    except Exception as err:  # torch raises many kinds; the user needs the reason, not the type
        reason = first_line(err, 200)
        raise ExportError(f"torch.export could not trace this network ({reason}); leave out the pt2 format "
                          "and report it as an autocnn bug") from None
    torch.export.save(program, str(path))
    return program


class _SlicedAdaptiveMaxPool2d(nn.Module):
    """AdaptiveMaxPool2d for one fixed input size, as slices: ONNX has no adaptive max pooling whose
    output size does not divide the input size (e.g. a 1x1 map pooled to 2x2). Same bins as PyTorch:
    [floor(i*in/out), ceil((i+1)*in/out))."""

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
        super().__init__()

        def bins(size: int, n: int) -> list[tuple[int, int]]:
            return [((i * size) // n, -((-(i + 1) * size) // n)) for i in range(n)]

        self.rows, self.cols = bins(in_hw[0], out_hw[0]), bins(in_hw[1], out_hw[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.cat([x[:, :, r0:r1, c0:c1].amax((2, 3), keepdim=True) for c0, c1 in self.cols], 3)
                          for r0, r1 in self.rows], 2)


def _onnx_ready(module: nn.Module, example: torch.Tensor) -> bool:
    """Swap adaptive max pools that ONNX cannot express for sliced equivalents (no parameters change).

    Returns whether anything was swapped.
    """
    shapes: dict[str, tuple[int, int]] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: shapes.__setitem__(name, tuple(args[0].shape[-2:])))
             for name, m in module.named_modules() if isinstance(m, nn.AdaptiveMaxPool2d)]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for hook in hooks:
            hook.remove()
    swapped = False
    for name, in_hw in shapes.items():
        pool = module.get_submodule(name)
        out = pool.output_size if isinstance(pool.output_size, tuple) else (pool.output_size,) * 2
        out_hw = tuple(o if o is not None else i for o, i in zip(out, in_hw))
        if all(i % o == 0 for i, o in zip(in_hw, out_hw)):
            continue
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, child, _SlicedAdaptiveMaxPool2d(in_hw, out_hw))
        swapped = True
    return swapped


def _param_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def _export_onnx(module: nn.Module, program, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """ONNX with a dynamic batch, by the dynamo exporter; the TorchScript exporter only as a warned fallback."""
    external = _param_bytes(module) > ONNX_EXTERNAL_DATA_BYTES
    info: dict[str, Any] = {"input": INPUT_NAME, "output": OUTPUT_NAME, "dynamic_axes": {INPUT_NAME: {"0": "batch"},
                                                                                         OUTPUT_NAME: {"0": "batch"}}}
    try:
        import onnxscript  # noqa: F401  (without it torch silently switches exporter)
    except ImportError:
        raise ExportError("ONNX export needs the onnxscript package: pip install onnx onnxscript onnxruntime "
                          "(or leave out the onnx format)") from None
    try:
        source = program if program is not None else module
        kwargs = {} if program is not None else {"dynamic_shapes": ({0: torch.export.Dim("batch", min=1, max=65536)},)}
        torch.onnx.export(source, (example,), str(path), dynamo=True, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], external_data=external, verbose=False, **kwargs)
        info["exporter"] = "dynamo"
    except Exception as err:  # fall back, loudly, to the deprecated exporter
        reason = first_line(err, 200)
        warnings.warn(f"the dynamo ONNX exporter failed ({reason}); model.onnx was written by the deprecated "
                      "TorchScript exporter instead", ExportWarning, stacklevel=3)
        for leftover in (path, path.with_name(path.name + ".data")):
            leftover.unlink(missing_ok=True)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, (example,), str(path), dynamo=False, input_names=[INPUT_NAME],
                                  output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "batch"},
                                                                            OUTPUT_NAME: {0: "batch"}})
        except Exception as err2:
            reason = first_line(err2, 200)
            raise ExportError(f"ONNX export failed ({reason}); leave out the onnx format and report it as "
                              "an autocnn bug") from None
        info["exporter"] = "torchscript"
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        info["opset"] = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    except Exception:  # the opset is informative only
        info["opset"] = None
    return info


def _check_onnx(path: Path, x: torch.Tensor, want: torch.Tensor, checks: dict) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        warnings.warn("onnxruntime is not installed: model.onnx was not checked", ExportWarning, stacklevel=3)
        checks["model.onnx"] = None
        return
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
    _check("model.onnx", torch.from_numpy(got), want, checks)


def write_model_folder(folder: Path, model: Network, meta: Mapping[str, Any] | None = None, *,
                       formats: Sequence[str] = FORMATS) -> dict[str, Any]:
    """Write every file of one export into the existing, empty `folder`; returns the config.json data.

    `model` is the trained autocnn Network (CPU, eval mode, see `reference_model`).
    """
    from safetensors.torch import save_file

    from autocnn.costs import count_flops, count_params
    from autocnn.export.card import model_card

    meta = _check_meta(meta)
    check_formats(formats)
    g = model.genotype
    name = meta.get("name") or f"autocnn-{g.arch_id}"
    folder = Path(folder)

    source = generate_source(g, name=name, mean=meta.get("mean"), std=meta.get("std"),
                             class_names=meta.get("class_names"), about=_about(meta, g),
                             image_size=meta.get("image_size"))
    (folder / "model.py").write_text(source, encoding="utf-8")
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "weights.safetensors"),
              metadata={"format": "pt", "arch": g.to_string(), "exporter": f"autocnn {__version__}"})

    generator = torch.Generator().manual_seed(0)
    shape = (g.in_chans, g.resolution, g.resolution)
    example = torch.randn(EXPORT_BATCH, *shape, generator=generator)
    x = torch.randn(CHECK_BATCH, *shape, generator=generator)
    with torch.no_grad():
        want = model(x)
    checks: dict[str, float | None] = {}
    module = load_module(folder / "model.py", name="model")
    standalone = module.build(str(folder / "weights.safetensors")).eval()
    if list(standalone.state_dict()) != list(model.state_dict()):
        raise ExportError("the generated model.py names its parameters differently from autocnn; "
                          "this is an autocnn bug, please report it")
    with torch.no_grad():
        _check("model.py", standalone(x), want, checks)

    files = {"code": "model.py", "weights": "weights.safetensors"}
    program = None
    if "pt2" in formats:
        program = _export_pt2(standalone, example, folder / "model.pt2")
        loaded = torch.export.load(str(folder / "model.pt2")).module()
        with torch.no_grad():
            _check("model.pt2", loaded(x), want, checks)
        files["torch_export"] = "model.pt2"
    onnx_info = None
    if "onnx" in formats:
        swapped = _onnx_ready(standalone, example)  # after the .pt2 export, which keeps the original modules
        onnx_info = _export_onnx(standalone, None if swapped else program, example, folder / "model.onnx")
        _check_onnx(folder / "model.onnx", x, want, checks)
        files["onnx"] = "model.onnx"
        if (folder / "model.onnx.data").exists():
            files["onnx_data"] = "model.onnx.data"
    files["card"] = "README.md"

    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "arch": g.to_string(),
        "arch_id": g.arch_id,
        "genotype": g.to_dict(),
        "num_classes": g.num_classes,
        "class_names": list(meta["class_names"]) if meta.get("class_names") is not None else None,
        "multilabel": g.head.multilabel,
        "in_chans": g.in_chans,
        "resolution": g.resolution,
        "input_size": [g.in_chans, g.resolution, g.resolution],
        "mean": [float(v) for v in meta["mean"]] if meta.get("mean") is not None else None,
        "std": [float(v) for v in meta["std"]] if meta.get("std") is not None else None,
        "pixel_range": [0.0, 1.0],
        "image_size": meta.get("image_size"),
        "interpolation": "bilinear",
        "metrics": dict(meta.get("metrics") or {}),
        "params": count_params(model),
        "flops": count_flops(g),
        "latency_ms": meta.get("latency_ms"),
        "source": {"study": meta.get("study"), "trial": meta.get("trial"), "dataset": meta.get("dataset"),
                   "objectives": meta.get("objectives"), **(meta.get("source") or {})},
        "training": meta.get("training"),
        "files": files,
        "onnx": onnx_info,
        "weights_sha256": _sha256(folder / "weights.safetensors"),
        "checks": {"batch": CHECK_BATCH, "max_abs_diff": checks},
        "autocnn_version": __version__,
        "torch_version": torch.__version__,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(model_card(config), encoding="utf-8")
    return config


def export_model(model_or_genotype: Any, weights_state_dict: Mapping[str, torch.Tensor] | None = None,
                 out_dir: str | os.PathLike | None = None, *, meta: Mapping[str, Any] | None = None,
                 force: bool = False, formats: Sequence[str] = FORMATS) -> Path:
    """Export a trained network as a standalone folder at `out_dir`; returns its path.

    `model_or_genotype` is an autocnn Network (its own weights are used unless `weights_state_dict` is
    given), a Genotype, a preset name or a genotype file (these need `weights_state_dict`). `meta` adds
    normalisation (`mean`, `std`), `class_names`, `metrics` and provenance (see `META_KEYS`).

    >>> import autocnn, tempfile, os
    >>> model = autocnn.create_model("lenet5", num_classes=10, in_chans=1, resolution=28)
    >>> out = export_model(model, out_dir=os.path.join(tempfile.mkdtemp(), "lenet"), formats=())
    >>> sorted(p.name for p in out.iterdir())
    ['README.md', 'config.json', 'model.py', 'weights.safetensors']
    """
    if out_dir is None:
        raise ExportError("export_model needs out_dir, the folder to write")
    meta = _check_meta(meta)
    folder = OutputFolder(out_dir, force)
    model = reference_model(model_or_genotype, weights_state_dict)
    with folder as tmp:
        write_model_folder(tmp, model, meta, formats=formats)
    return folder.path
