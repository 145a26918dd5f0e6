"""README.md model cards: one per exported model, one index for a Pareto-front export."""
from __future__ import annotations

from typing import Any

_METRIC_LABELS = {"accuracy": "accuracy", "mAP": "mAP", "f1": "F1", "loss": "loss"}


def _label(key: str) -> str:
    split, _, metric = key.partition("_")
    if split in ("val", "test") and metric:
        where = "validation" if split == "val" else "test"
        return f"{where} {_METRIC_LABELS.get(metric, metric)}"
    return key.replace("_", " ")


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _flops(value: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return str(value)


def loading_example(config: dict[str, Any]) -> str:
    """Five lines that load the folder's model with torch alone and classify a batch."""
    c, r = config["in_chans"], config["resolution"]
    last = ("print([CLASS_NAMES[i] for i in probs.argmax(1)])" if config.get("class_names") and not config["multilabel"]
            else "print(probs.argmax(1))" if not config["multilabel"] else "print(probs > 0.5)")
    names = ", CLASS_NAMES" if "CLASS_NAMES" in last else ""
    return "\n".join([
        "import torch",
        f"from model import build, preprocess{names}",
        "model = build().eval()  # model.py + weights.safetensors; needs only PyTorch",
        f"probs = model.predict(preprocess(torch.rand(4, {c}, {r}, {r})))  # your images: uint8 or [0, 1] floats",
        last,
    ])


def model_card(config: dict[str, Any]) -> str:
    source = config.get("source") or {}
    name = config["name"]
    c, r = config["in_chans"], config["resolution"]
    dataset = source.get("dataset")
    front = ["---", "library_name: pytorch", "pipeline_tag: image-classification",
             "tags: [image-classification, autocnn, neural-architecture-search]"]
    if dataset:
        front.append(f"datasets: [{dataset}]")
    front.append("---")

    if source.get("study") is not None:
        intro = (f"A {config['params']:,}-parameter convolutional image classifier found by autocnn's architecture "
                 f"search: trial {source.get('trial')} of study `{source['study']}`"
                 + (f", trained on `{dataset}`." if dataset else "."))
    else:
        intro = (f"A {config['params']:,}-parameter convolutional image classifier exported by autocnn"
                 + (f", trained on `{dataset}`." if dataset else "."))
    training = config.get("training") or {}

    rows = [(_label(k), _number(v)) for k, v in (config.get("metrics") or {}).items()]
    rows += [("parameters", f"{config['params']:,}"), ("FLOPs per image", _flops(config["flops"])),
             ("input", f"{c} × {r} × {r}"), ("classes", str(config["num_classes"]))]
    latency = config.get("latency_ms")
    rows.append(("CPU latency, batch 1", "not measured" if latency is None else f"{latency:.2f} ms"))
    if training.get("epochs"):
        epochs = training["epochs"]
        rows.append(("training", f"{epochs} epoch{'s' if epochs != 1 else ''} on {training.get('data', 'train')}"))
    table = ["| figure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]

    size = config.get("image_size")
    crop = (f"Each image is resized on its shorter side to {size} px and centre-cropped to {size} × {size} "
            f"(how the training images were stored), then " if size else "")
    if config.get("mean") is not None:
        norm = (f"{crop}{'p' if crop else 'P'}ixels are scaled to [0, 1], normalised per channel with mean "
                f"`{[round(v, 4) for v in config['mean']]}` and std `{[round(v, 4) for v in config['std']]}`, "
                f"and resized (bilinear) to {r} × {r}: `preprocess` in model.py does all of it, exactly as "
                f"training evaluated the images.")
    else:
        norm = (f"{crop}The normalisation these weights expect is not recorded: `preprocess` only scales pixels "
                f"to [0, 1] and resizes to {r} × {r}.")
    files = config["files"]
    lines = front + ["", f"# {name}", "", intro, "", "## Use it", "", "```python", loading_example(config), "```", ""]
    if config["multilabel"]:
        lines += ["The head is multi-label: `predict` returns independent per-class probabilities.", ""]
    if "torch_export" in files or "onnx" in files:
        lines += ["The same network as a `torch.export` program and as ONNX, both with a dynamic batch dimension "
                  "(inputs prepared as `preprocess` does, see Input below):", "", "```python",
                  f"x = preprocess(torch.rand(4, {c}, {r}, {r}))"]
        if "torch_export" in files:
            lines += ['logits = torch.export.load("model.pt2").module()(x)']
        if "onnx" in files:
            lines += ["import onnxruntime",
                      'session = onnxruntime.InferenceSession("model.onnx")',
                      f'logits = session.run(None, {{"{config["onnx"]["input"]}": x.numpy()}})[0]']
        lines += ["```", ""]
    lines += ["## Figures", ""] + table + [""]
    if training:
        recipe = ", ".join(f"{k} {v}" for k, v in training.items() if k not in ("epochs", "data") and v is not None)
        if recipe:
            lines += [f"Training recipe: {recipe}.", ""]
    lines += ["## Input", "", norm, ""]
    if config.get("class_names"):
        shown = ", ".join(f"`{n}`" for n in config["class_names"][:20])
        more = f" and {len(config['class_names']) - 20} more (config.json)" if len(config["class_names"]) > 20 else ""
        lines += [f"Classes, in output order: {shown}{more}.", ""]
    lines += ["## Architecture", "", "autocnn genotype (the same genotype is `GENOTYPE` in model.py and `genotype` in "
              "config.json):", "", "```", config["arch"], "```", ""]
    described = {
        "code": "readable PyTorch code for exactly this network; imports only torch; `build()` returns it",
        "weights": "the trained state_dict (safetensors; keys match model.py and autocnn)",
        "torch_export": "`torch.export` program with a dynamic batch dimension; `torch.export.load`",
        "onnx": (f"ONNX (opset {config['onnx'].get('opset')}), input `{config['onnx']['input']}` "
                 f"[batch, {c}, {r}, {r}], output `{config['onnx']['output']}` [batch, {config['num_classes']}]"
                 if config.get("onnx") else ""),
        "onnx_data": "the ONNX model's weights (external data)",
        "card": "this card",
    }
    lines += ["## Files", ""] + [f"- `{fname}`: {described[key]}" for key, fname in files.items()]
    lines += ["- `config.json`: genotype, input size, normalisation, class names, metrics, params, FLOPs, provenance",
              ""]
    checks = (config.get("checks") or {}).get("max_abs_diff") or {}
    if checks:
        shown = ", ".join(f"{k} {v:.1e}" if isinstance(v, float) else f"{k} not checked" for k, v in checks.items())
        lines += [f"Each file was loaded back at export and compared with the trained model (max. abs. "
                  f"difference of the logits at batch {config['checks']['batch']}: {shown}).", ""]
    prov = [f"autocnn {config['autocnn_version']}", f"torch {config['torch_version']}",
            f"exported {config['exported_at']}"]
    if source.get("study") is not None:
        prov.insert(0, f"study `{source['study']}`, trial {source.get('trial')}")
    lines += ["## Provenance", "", "; ".join(prov) + ".", ""]
    return "\n".join(lines)


def index_card(index: dict[str, Any]) -> str:
    """README.md of a Pareto-front export: one row per member, linking its folder."""
    objectives = index["objectives"]
    head = ["trial", "folder"] + [f"{o} ({d[:3]})" for o, d in zip(objectives, index["directions"])] + ["params", "FLOPs"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in index["members"]:
        values = [_number(m["values"].get(o)) for o in objectives]
        rows.append("| " + " | ".join([str(m["trial"]), f"[{m['folder']}]({m['folder']}/README.md)", *values,
                                       f"{m['params']:,}", _flops(m["flops"])]) + " |")
    return "\n".join([
        f"# Pareto front of study `{index['study']}`", "",
        f"{len(index['members'])} trials are Pareto-optimal for {', '.join(objectives)}: none is beaten on every "
        "objective by another trial. Each folder is a complete, standalone export (model.py, weights.safetensors, "
        "model.pt2, model.onnx, config.json, README.md); `index.json` lists them as data.", "",
        *rows, "",
    ])
