"""Export: model.py + weights reproduce the model in an interpreter that cannot import autocnn; model.pt2 and
model.onnx do too; `autocnn export` end to end (best, retrain, Pareto front) and its errors.

Standalone checks batch many exports into one isolated subprocess (`python -I`, clean environment, autocnn
blocked and proven unimportable) that loads every folder and writes its outputs back for comparison.
"""
import ast
import dataclasses
import json
import os
import re
import subprocess
import sys
import pickle
from pathlib import Path

import optuna
import pytest
import torch

import autocnn
from autocnn import Genotype, GenotypeError, HeadSpec, StageSpec
from autocnn.builder import build_features, build_model
from autocnn.export import ExportError, export_model
from autocnn.export.codegen import generate_source, missing_templates
from autocnn.layers import ACTIVATIONS, ATTENTION, BLOCKS, CONVS, NORMS
from autocnn.presets import PRESETS, get_preset
from conftest import assert_user_error, run_cli
from disk_formats import write_cifar10, write_mnist, write_svhn

ATTENTIVE_BLOCKS = [name for name in BLOCKS if BLOCKS.get(name).supports_attention]
CONV_KINDS = ["standard", "separable"]
ALL_FORMATS = ("pt2", "onnx")
ISOLATED_IMPORTS = {"json", "math", "os", "collections", "torch", "torch.nn", "torch.nn.functional"}

# Runs in `python -I` with a clean environment: autocnn is blocked (the venv has it installed editable, and
# isolated mode alone would still find it), then every case's folder is loaded with torch alone.
RUNNER = r'''
import importlib.util, json, sys

class NoAutocnn:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "autocnn":
            raise ModuleNotFoundError("autocnn cannot be imported here", name=name)
        return None

sys.meta_path.insert(0, NoAutocnn())
try:
    import autocnn
    autocnn_importable = True
except ImportError:
    autocnn_importable = False

import torch
torch.set_num_threads(1)
cases = json.load(open(sys.argv[1]))
out = {"autocnn_importable": autocnn_importable, "sys_path": list(sys.path), "outputs": {}, "errors": {}}
for i, case in enumerate(cases):
    try:
        spec = importlib.util.spec_from_file_location(f"exported_{i}", case["dir"] + "/model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        x = torch.load(case["input"])
        with torch.no_grad():
            out["outputs"][case["id"]] = {"model.py": module.build().eval()(x)}
    except Exception as err:  # one case's failure is that case's test failing, not every test of the batch
        out["errors"][case["id"]] = f"model.py: {type(err).__name__}: {err}"
out["imported"] = sorted({m.split(".")[0] for m in sys.modules})
for case in cases:
    x = torch.load(case["input"])
    got = out["outputs"].setdefault(case["id"], {})
    try:
        if "pt2" in case["formats"]:
            with torch.no_grad():
                got["model.pt2"] = torch.export.load(case["dir"] + "/model.pt2").module()(x)
        if "onnx" in case["formats"]:
            import onnxruntime
            session = onnxruntime.InferenceSession(case["dir"] + "/model.onnx", providers=["CPUExecutionProvider"])
            (onnx_out,) = session.run(None, {"images": x.numpy()})
            got["model.onnx"] = torch.from_numpy(onnx_out)
    except Exception as err:
        out["errors"][case["id"]] = f"{type(err).__name__}: {err}"
torch.save(out, sys.argv[2])
'''
TOLERANCE = {"model.py": 1e-5, "model.pt2": 1e-5, "model.onnx": 1e-4}


def run_isolated(cases: list[dict], workdir: Path) -> dict:
    """Load every exported folder in one `python -I` process without autocnn; returns its outputs."""
    (workdir / "cases.json").write_text(json.dumps(cases))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir), "OMP_NUM_THREADS": "1",
           "LC_ALL": "C.UTF-8"}
    proc = subprocess.run([sys.executable, "-I", "-c", RUNNER, str(workdir / "cases.json"), str(workdir / "out.pt")],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = torch.load(workdir / "out.pt")
    assert result["autocnn_importable"] is False
    assert str(Path(__file__).parents[2]) not in result["sys_path"]  # clean sys.path: not the checkout
    assert not {"autocnn", "safetensors", "optuna"} & set(result["imported"]), result["imported"]
    return {case_id: result["errors"].get(case_id, got) for case_id, got in result["outputs"].items()}


def realistic_(model: torch.nn.Module, gen: torch.Generator) -> torch.nn.Module:
    """Eval statistics and affine parameters that are not the identity, with activations kept finite:
    batch-norm statistics of one random batch, then everything normalising perturbed at random."""
    g = model.genotype
    norms = [m for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm))]
    for m in norms:
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.randn(4, g.in_chans, g.resolution, g.resolution, generator=gen))
        for m in norms:
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 0.1
                m.running_var.mul_(torch.empty(m.running_var.shape).uniform_(0.8, 1.25, generator=gen))
            m.weight.uniform_(0.5, 1.5, generator=gen)
            m.bias.uniform_(-0.2, 0.2, generator=gen)
    return model.eval()


def export_case(case_id: str, g: Genotype, root: Path, gen: torch.Generator, formats=(), meta=None) -> dict:
    """Export a randomly initialised network of `g` and record its in-process output at batch 3."""
    model = realistic_(build_model(g), gen)
    x = torch.randn(3, g.in_chans, g.resolution, g.resolution, generator=gen)
    with torch.no_grad():
        want = model(x)
    assert want.abs().max() > 1e-3  # a non-trivial output to compare
    folder = root / case_id
    export_model(model, out_dir=folder, meta=meta, formats=formats)
    torch.save(x, root / f"{case_id}.input.pt")
    torch.save(want, root / f"{case_id}.want.pt")
    return {"id": case_id, "dir": str(folder), "input": str(root / f"{case_id}.input.pt"), "formats": list(formats)}


def check_parity(cases: list[dict], outputs: dict, root: Path) -> None:
    for case in cases:
        want = torch.load(root / f"{case['id']}.want.pt")
        got = outputs[case["id"]]
        assert not isinstance(got, str), f"{case['id']}: {got}"  # the isolated interpreter's error
        assert set(got) == {"model.py", *(f"model.{f}" for f in case["formats"])}
        for label, value in got.items():
            assert value.shape == want.shape, (case["id"], label)
            diff = (value - want).abs().max().item()
            assert diff <= TOLERANCE[label], f"{case['id']} {label}: max abs diff {diff}"


# -- genotypes ------------------------------------------------------------------------------------------

def tiny_genotype(block: str, attention: str = "none", conv: str = "standard", resolution: int = 32) -> Genotype:
    """A stem and one two-block stage of `block`, strided where the block kind allows it (as tests/core)."""
    def stage(stride):
        return StageSpec(block, out_chs=8 if block == "dense" else 24, repeats=2, stride=stride,
                         expansion=4.0 if block in ("dense", "bottleneck") else 2.0,
                         conv=conv, attention=attention, ratio=4.0)
    try:
        body = stage(2)
    except GenotypeError:
        body = stage(1)
    return Genotype(stem=(StageSpec("conv", out_chs=16),), stages=(body,), head=HeadSpec(),
                    resolution=resolution, num_classes=10)


# Stage settings for the chain models: every block kind in one network, at 32 px down to 1 px.
CHAIN_STAGES = {
    "conv": dict(out_chs=16, bias=True), "maxpool": dict(kernel=3, padding=1), "avgpool": dict(kernel=3, padding=1),
    "norm_act": {}, "basic": dict(out_chs=16, stride=2, repeats=2),
    "bottleneck": dict(out_chs=32, expansion=4.0, groups=2), "dense": dict(out_chs=8, repeats=2, expansion=2.0),
    "transition": dict(out_chs=16, stride=2), "mbconv": dict(out_chs=16, repeats=2, expansion=2.0, dilation=2),
    "fused_mbconv": dict(out_chs=24, expansion=2.0, stride=2), "inception_v1": dict(out_chs=32),
    "inception_v3_a": dict(out_chs=32), "inception_v3_b": dict(out_chs=16), "inception_v3_c": dict(out_chs=32),
    "inception_v3_d": dict(out_chs=16, stride=2), "inception_v3_e": dict(out_chs=32),
    "xception": dict(out_chs=32, stride=2),
}
CHAIN_VARIANTS = 2


def chain_genotype(i: int) -> Genotype:
    """Every registered block kind, stage j taking attention, conv kind, activation and norm number i + j
    of their registries: across the variants every kind of every registry is exported, in every format."""
    att, convs, acts, norms = ATTENTION.names(), CONVS.names(), ACTIVATIONS.names(), NORMS.names()
    stages = []
    for j, block in enumerate(BLOCKS.names()):
        extra = dict(CHAIN_STAGES.get(block, dict(out_chs=16)))
        if BLOCKS.get(block).supports_attention:
            extra.update(attention=att[(i + j) % len(att)], ratio=4.0)
        conv = convs[(i + j) % len(convs)]
        if block == "fused_mbconv" and conv == "depthwise":
            conv = "separable"  # its kxk conv expands the width: fused-MBConv has no depthwise form
        stages.append(StageSpec(block, conv=conv, act=acts[(i + j) % len(acts)],
                                norm=norms[(i + j) % len(norms)], **extra))
    # variant 1 pools a 1x1 map to 2x2 with max pooling, which ONNX cannot express directly; a flatten
    # head is exported in every format by the CLI tests' LeNet-5
    head = HeadSpec(pool=("avg", "max")[i % 2], pool_size=(1, 2)[i % 2], hidden=((), (32, 16))[i % 2],
                    dropout=0.1, attention=att[i % len(att)], ratio=4.0, multilabel=i % 2 == 1)
    while True:
        try:
            return Genotype(stem=(StageSpec("conv", out_chs=16),), stages=tuple(stages), head=head, resolution=32,
                            num_classes=10, act=acts[i % len(acts)], norm=norms[i % len(norms)], drop_path=0.1,
                            norm_eps=1e-3)
        except GenotypeError as err:  # a depthwise conv whose width is no multiple of its input: no such conv
            j = int(re.fullmatch(r"stages\[(\d+)\]\.conv", err.field).group(1))
            stages[j] = dataclasses.replace(stages[j], conv="separable")


def preset_families() -> dict[str, str]:
    """One representative per preset family (name up to its first digit), the smallest registered."""
    families: dict[str, str] = {}
    for name in PRESETS.names():
        family = re.sub(r"\d.*$", "", name).rstrip("_")
        if family not in families or name.endswith("_cifar"):
            families[family] = name
    return families


def small_preset(name: str) -> Genotype:
    """The preset at the smallest of 28-96 px its layers allow, 10 classes."""
    g = get_preset(name).replace(num_classes=10)
    for res in (g.resolution if g.resolution <= 32 else 32, 64, 75, 96):
        candidate = g.replace(resolution=res)
        try:
            with torch.device("meta"):
                stem, body, _ = build_features(candidate)
                body.eval()(stem.eval()(torch.empty(2, g.in_chans, res, res)))
                build_model(candidate)
            return candidate
        except (RuntimeError, ValueError):
            continue
    raise AssertionError(f"no small resolution works for {name}")


# -- registry coverage and generated code --------------------------------------------------------------

def test_every_registered_kind_has_an_export_template():
    assert missing_templates() == {"blocks": [], "attention": [], "convs": [], "activations": [], "norms": []}


def test_chain_variants_cover_every_registered_kind():
    used = {key: set() for key in ("blocks", "attention", "convs", "activations", "norms")}
    for i in range(CHAIN_VARIANTS):
        g = chain_genotype(i)
        specs = g.stem + g.stages
        used["blocks"] |= {s.block for s in specs}
        used["attention"] |= {s.attention for s in specs}
        used["convs"] |= {s.conv for s in specs}
        used["activations"] |= {s.act for s in specs if s.act}
        used["norms"] |= {s.norm for s in specs if s.norm}
    assert used["blocks"] == set(BLOCKS.names()) and used["attention"] == set(ATTENTION.names())
    assert used["convs"] == set(CONVS.names()) and used["activations"] == set(ACTIVATIONS.names())
    assert used["norms"] == set(NORMS.names())


def test_generated_model_py_imports_only_torch_and_embeds_the_genotype():
    g = chain_genotype(0)
    source = generate_source(g, name="chain", mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2), class_names=list("abcdefghij"))
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported <= ISOLATED_IMPORTS, imported
    namespace: dict = {}
    exec(compile(source, "model.py", "exec"), namespace)
    assert Genotype.from_dict(namespace["GENOTYPE"]) == g
    assert g.to_string() in source and "def build(" in source
    # only the kinds this network uses are emitted
    lenet = generate_source(get_preset("lenet5"), name="lenet5")
    assert "class BasicBlock" not in lenet and "class CBAM" not in lenet and "class ConvBlock" in lenet


# -- standalone parity: every block x attention x conv kind, every preset family -----------------------

# One isolated interpreter per group below (module-scoped fixtures) rather than one per test: each
# start-up imports torch, and each test still checks (and fails on) its own cases alone.

@pytest.fixture(scope="module")
def block_exports(tmp_path_factory) -> tuple[Path, dict[str, list[dict]], dict]:
    return _export_group(tmp_path_factory.mktemp("blocks"), 0, lambda root, gen: {
        block: [export_case(f"{block}-{attention}-{conv}", tiny_genotype(block, attention, conv), root, gen)
                for attention in ATTENTION.names() for conv in CONV_KINDS] for block in ATTENTIVE_BLOCKS})


def _export_group(root: Path, seed: int, make_cases) -> tuple[Path, dict, dict]:
    """Cases by test (`make_cases(root, generator)`) exported under `root`, checked in one isolated run."""
    cases = make_cases(root, torch.Generator().manual_seed(seed))
    return root, cases, run_isolated([case for group in cases.values() for case in group], root)


@pytest.mark.parametrize("block", ATTENTIVE_BLOCKS)
def test_block_attention_conv_kinds_standalone_parity(block, block_exports):
    root, cases, outputs = block_exports
    check_parity(cases[block], outputs, root)


@pytest.fixture(scope="module")
def preset_exports(tmp_path_factory) -> tuple[Path, dict[str, list[dict]], dict]:
    return _export_group(tmp_path_factory.mktemp("presets"), 1, lambda root, gen: {
        name: [export_case(name, small_preset(name), root, gen)] for name in sorted(preset_families().values())})


@pytest.mark.parametrize("name", sorted(preset_families().values()))
def test_preset_family_standalone_parity(name, preset_exports):
    root, cases, outputs = preset_exports
    check_parity(cases[name], outputs, root)


@pytest.fixture(scope="module")
def chain_exports(tmp_path_factory) -> tuple[Path, dict[int, list[dict]], dict]:
    return _export_group(tmp_path_factory.mktemp("chains"), 2, lambda root, gen: {
        variant: [export_case(f"chain{variant}", chain_genotype(variant), root, gen, formats=ALL_FORMATS)]
        for variant in range(CHAIN_VARIANTS)})


@pytest.mark.parametrize("variant", range(CHAIN_VARIANTS))
def test_every_kind_exports_to_pt2_and_onnx(variant, chain_exports):
    """One network per variant holds every block kind; model.py, model.pt2 (torch.export.load) and
    model.onnx (onnxruntime) all match at batch 3 after export at batch 2."""
    root, cases, outputs = chain_exports
    check_parity(cases[variant], outputs, root)
    config = json.loads((root / f"chain{variant}" / "config.json").read_text())
    assert config["onnx"]["exporter"] == "dynamo"
    assert set(config["checks"]["max_abs_diff"]) == {"model.py", "model.pt2", "model.onnx"}


# -- Python API -------------------------------------------------------------------------------------------

def lenet() -> torch.nn.Module:
    return autocnn.create_model("lenet5", num_classes=10, in_chans=1, resolution=28)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_export_model_folder_contents_and_card(tmp_path):
    out = export_model(lenet(), out_dir=tmp_path / "lenet", formats=ALL_FORMATS,
                       meta={"name": "lenet5", "mean": [0.3], "std": [0.4], "class_names": [str(i) for i in range(10)],
                             "metrics": {"test_accuracy": 0.9}, "dataset": "digits"})
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.onnx", "model.pt2",
                                                      "model.py", "weights.safetensors"]
    config = json.loads((out / "config.json").read_text())
    for key in ("genotype", "arch", "input_size", "in_chans", "resolution", "mean", "std", "class_names", "metrics",
                "params", "flops", "source"):
        assert key in config, key
    assert config["params"] == 44_426 and config["input_size"] == [1, 28, 28]
    assert Genotype.from_dict(config["genotype"]).to_string() == config["arch"]
    readme = (out / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    assert len(example) == 5 and "from model import build" in example[1]
    assert leftovers(tmp_path) == []


def test_export_model_errors_leave_nothing_behind(tmp_path):
    model = lenet()
    wrong = autocnn.create_model("lenet5", num_classes=5, in_chans=1, resolution=28).state_dict()
    with pytest.raises(ExportError, match="pass --num-classes 5"):
        export_model(model.genotype, wrong, tmp_path / "a" / "b", formats=())
    assert not (tmp_path / "a").exists() and leftovers(tmp_path) == []
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="already exists; pass --force"):
        export_model(model, out_dir=tmp_path / "taken", formats=())
    with pytest.raises(ExportError, match="not an autocnn export folder"):
        export_model(model, out_dir=tmp_path / "taken", formats=(), force=True)
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    first = export_model(model, out_dir=tmp_path / "done", formats=())
    export_model(lenet(), out_dir=first, formats=(), force=True)  # an earlier export may be replaced
    assert sorted(p.name for p in first.iterdir()) == ["README.md", "config.json", "model.py", "weights.safetensors"]
    assert leftovers(tmp_path) == []


def test_autocnn_export_takes_a_network_or_a_preset_with_weights(tmp_path):
    from safetensors.torch import save_file

    model = lenet()
    folder = autocnn.export(tmp_path / "net", model=model, formats=())
    assert (folder / "model.py").is_file()
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    folder = autocnn.export(tmp_path / "preset", model="lenet5", weights=tmp_path / "w.safetensors", num_classes=10,
                            in_chans=1, resolution=28, dataset="digits", formats=())
    config = json.loads((folder / "config.json").read_text())
    assert config["name"] == "lenet5" and config["class_names"] == [str(i) for i in range(10)]
    with pytest.raises(ExportError, match="exactly one of --study"):
        autocnn.export(tmp_path / "x", formats=())


# -- studies: search weights, CLI end to end ----------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real one-trial study made by the real CLI: `autocnn train --model lenet5 ...`."""
    root = tmp_path_factory.mktemp("trained")
    storage = f"sqlite:///{root / 'db.sqlite'}"
    result = run_cli("train", "--model", "lenet5", "--dataset", "digits", "--epochs", "1", "--resolution", "28",
                     "--study", "s", "--storage", storage, cwd=root)
    assert result.returncode == 0, result.stderr
    return root, storage


def test_search_saves_each_trials_weights_beside_the_database(trained):
    from safetensors.torch import load_file

    from autocnn.search import records

    root, storage = trained
    trial = optuna.load_study(study_name="s", storage=storage).trials[0]
    assert trial.user_attrs[records.WEIGHTS_PATH] == "s/trial-0/weights.safetensors"
    state = load_file(root / "s" / "trial-0" / "weights.safetensors")
    model = build_model(records.genotype_of(trial))
    model.load_state_dict(state)  # every key, every shape


def test_study_with_relative_artifacts_exports_its_trial_weights_from_another_folder(tmp_path):
    """--artifacts (relative, away from the database) is stored absolute in the study: an export run in
    another folder finds the weights the search wrote."""
    from safetensors.torch import load_file

    where, elsewhere, db = tmp_path / "run", tmp_path / "elsewhere", tmp_path / "db"
    for folder in (where, elsewhere, db):
        folder.mkdir()
    storage = f"sqlite:///{db / 'studies.db'}"
    result = run_cli("train", "--model", "lenet5", "--dataset", "digits", "--epochs", "1", "--resolution", "28",
                     "--limit", "200", "--study", "far", "--storage", storage, "--artifacts", "weights", cwd=where)
    assert result.returncode == 0, result.stderr
    config = optuna.load_study(study_name="far", storage=storage).user_attrs["autocnn.config"]
    assert config["artifacts"] == str((where / "weights").resolve())
    saved = where / "weights" / "far" / "trial-0" / "weights.safetensors"
    assert saved.is_file() and not (db / "far").exists()
    result = run_cli("export", "--study", "far", "--storage", storage, "--out", "out", "--formats", "none",
                     cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    trained, exported = load_file(saved), load_file(elsewhere / "out" / "weights.safetensors")
    assert trained.keys() == exported.keys() and all(torch.equal(trained[k], exported[k]) for k in trained)


def test_cli_exports_the_best_trial_standalone(trained, tmp_path):
    from safetensors.torch import load_file

    root, storage = trained
    out = tmp_path / "best"
    result = run_cli("export", "--study", "s", "--storage", storage, "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "exported trial 0 of study s" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.onnx", "model.pt2",
                                                      "model.py", "weights.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["source"]["study"] == "s" and config["source"]["trial"] == 0
    assert config["source"]["dataset"] == "digits" and config["class_names"] == [str(i) for i in range(10)]
    assert config["input_size"] == [1, 28, 28] and len(config["mean"]) == len(config["std"]) == 1
    assert config["params"] == 44_426 and config["flops"] > 0
    assert {"val_accuracy", "test_accuracy"} <= set(config["metrics"])
    assert "from model import build" in (out / "README.md").read_text()
    trial_state = load_file(root / "s" / "trial-0" / "weights.safetensors")
    exported = load_file(out / "weights.safetensors")
    assert all(torch.equal(trial_state[k], exported[k]) for k in trial_state)  # the search's trained weights

    # the trained network, in process, against the folder in an interpreter without autocnn
    model = build_model(Genotype.from_dict(config["genotype"]))
    model.load_state_dict(trial_state)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.save(model.eval()(x), tmp_path / "best.want.pt")
    torch.save(x, tmp_path / "best.input.pt")
    cases = [{"id": "best", "dir": str(out), "input": str(tmp_path / "best.input.pt"), "formats": list(ALL_FORMATS)}]
    check_parity(cases, run_isolated(cases, tmp_path), tmp_path)


def test_cli_retrains_on_train_and_val_before_exporting(trained, tmp_path):
    from safetensors.torch import load_file

    root, storage = trained
    out = tmp_path / "retrained"
    result = run_cli("export", "--study", "s", "--storage", storage, "--trial", "0", "--retrain-epochs", "1",
                     "--out", str(out), "--formats", "pt2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"retrained 1 epoch on train\+val: test accuracy 0\.\d+", result.stdout), result.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["data"] == "train+val" and config["training"]["epochs"] == 1
    assert not (out / "model.onnx").exists() and (out / "model.pt2").is_file()  # --formats pt2
    assert config["metrics"]["test_accuracy"] > 0.3  # chance is 0.1
    trial_state = load_file(root / "s" / "trial-0" / "weights.safetensors")
    exported = load_file(out / "weights.safetensors")
    assert not torch.equal(trial_state["head.fc.weight"], exported["head.fc.weight"])


# -- errors: one line, exit 2, nothing written ----------------------------------------------------------

@pytest.fixture(scope="module")
def error_study(trained):
    """The trained study plus a pruned trial and a complete trial whose weights were never saved."""
    from autocnn.search import records

    root, storage = trained
    study = optuna.load_study(study_name="s", storage=storage)
    if len(study.trials) == 1:
        (done,) = study.trials
        attrs = {k: v for k, v in done.user_attrs.items() if k != records.WEIGHTS_PATH}
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs=attrs,
                                                  params={}, distributions={}))
        study.add_trial(optuna.trial.create_trial(values=[0.1], user_attrs=attrs, params={}, distributions={}))
    return root, storage


ERRORS = {
    "unknown study": (["--study", "nope"], "no study named 'nope'"),
    "unknown trial": (["--study", "s", "--trial", "7"], "has no trial 7"),
    "bad trial": (["--study", "s", "--trial", "first"], "--trial must be best, pareto or a trial number"),
    "incomplete trial": (["--study", "s", "--trial", "1"], "trial 1 of study 's' is PRUNED, not COMPLETE"),
    "no saved weights": (["--study", "s", "--trial", "2"], "pass --retrain-epochs"),
    "existing out": (["--study", "s", "EXISTING"], "already exists; pass --force"),
    "mismatching weights": (["--model", "resnet18", "--weights", "WEIGHTS"], "do not match the architecture"),
    "mismatching classes": (["--model", "lenet5", "--num-classes", "5", "--weights", "WEIGHTS"],
                            "pass --num-classes 10"),
    "model without weights": (["--model", "lenet5"], "--model needs --weights FILE"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_cli_errors_are_one_line_and_write_nothing(case, error_study, tmp_path):
    root, storage = error_study
    args, message = ERRORS[case]
    out = tmp_path / "out" / "model"
    if "EXISTING" in args:
        args = [a for a in args if a != "EXISTING"]
        out = tmp_path / "existing"
        out.mkdir()
    args = [str(root / "s" / "trial-0" / "weights.safetensors") if a == "WEIGHTS" else a for a in args]
    result = run_cli("export", *args, "--storage", storage, "--out", str(out), cwd=tmp_path)
    assert_user_error(result, message)
    if case == "existing out":
        assert list(out.iterdir()) == []
    else:
        assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.rglob(".*")]


def test_trial_weights_that_do_not_fit_the_architecture_are_an_error(trained, tmp_path):
    from safetensors.torch import save_file

    from autocnn.search import records

    root, storage = trained
    study_storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    study = optuna.create_study(study_name="swapped", storage=study_storage, directions=["maximize"])
    g = get_preset("lenet5").replace(num_classes=10, in_chans=1, resolution=28)
    (tmp_path / "swapped" / "trial-0").mkdir(parents=True)
    save_file(build_model(g.replace(num_classes=3)).state_dict(), str(tmp_path / "swapped/trial-0/weights.safetensors"))
    study.add_trial(optuna.trial.create_trial(values=[0.5], user_attrs={
        records.GENOTYPE: g.to_dict(), records.WEIGHTS_PATH: "swapped/trial-0/weights.safetensors"}))
    result = run_cli("export", "--study", "swapped", "--storage", study_storage, "--dataset", "digits",
                     "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert_user_error(result, "the saved weights of trial 0", "do not match the architecture")
    assert not (tmp_path / "o").exists()


# -- Pareto front ----------------------------------------------------------------------------------------

def lenet_variant(width: int) -> Genotype:
    g = get_preset("lenet5")
    stages = list(g.stages)
    stages[2] = dataclasses.replace(stages[2], out_chs=width)
    return g.replace(stages=tuple(stages), num_classes=10, in_chans=1, resolution=28)


def test_cli_pareto_exports_one_folder_per_front_member(tmp_path):
    from autocnn.artifacts import save_trial_weights
    from autocnn.costs import count_params
    from autocnn.search import records
    from autocnn.search.config import CONFIG_ATTR, SearchConfig

    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    config = SearchConfig(space="model:x", dataset="digits", objectives=("accuracy", "params"), study="moo",
                          storage=storage)
    study = optuna.create_study(study_name="moo", storage=storage, directions=config.directions)
    study.set_user_attr(CONFIG_ATTR, config.to_dict())
    accuracy = {16: 0.95, 8: 0.90, 24: 0.80}  # width 24 is larger and worse than 16: dominated
    for number, (width, acc) in enumerate(accuracy.items()):
        model = build_model(lenet_variant(width))
        trial = optuna.trial.create_trial(values=[acc, count_params(model)], user_attrs={
            records.GENOTYPE: lenet_variant(width).to_dict(), records.METRIC: "accuracy", records.TEST_METRIC: acc,
            records.VAL_CURVE: [acc], records.PARAMS: count_params(model),
            records.WEIGHTS_PATH: save_trial_weights(model, storage, "moo", number)})
        study.add_trial(trial)
    out = tmp_path / "front"
    result = run_cli("export", "--study", "moo", "--trial", "pareto", "--storage", storage, "--out", str(out),
                     "--formats", "none", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "index.json", "trial-0", "trial-1"]
    index = json.loads((out / "index.json").read_text())
    assert [m["trial"] for m in index["members"]] == [0, 1] and index["objectives"] == ["accuracy", "params"]
    for member in index["members"]:
        folder = out / member["folder"]
        assert {p.name for p in folder.iterdir()} == {"model.py", "weights.safetensors", "config.json", "README.md"}
        assert json.loads((folder / "config.json").read_text())["source"]["trial"] == member["trial"]
    assert "trial-1/README.md" in (out / "README.md").read_text()

    # "best" of a multi-objective study: the front member best on the first objective (the Python API,
    # called as the dashboard's "Export best" calls it, twice: the second run replaces the first)
    from autocnn.export import export_trial

    for _ in range(2):
        best = export_trial("moo", storage, "best", out=str(tmp_path / "best"), force=True, formats=())
    assert json.loads((best / "config.json").read_text())["source"]["trial"] == 0


# -- what is measured is what ships ----------------------------------------------------------------------

def test_best_trial_figures_agree_everywhere_and_are_those_of_the_saved_weights(tmp_path):
    """`autocnn best`, the trial record, the dashboard and the exported model card show one validation and
    one test figure for a trial whose curve peaks before its last epoch, and the saved weights score them."""
    from autocnn.dashboard import state
    from autocnn.data import load_dataset
    from autocnn.search import control, records
    from autocnn.storage import open_storage
    from autocnn.training import evaluate
    from autocnn.weights import read_state_dict

    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    result = run_cli("train", "--model", "lenet5", "--dataset", "digits", "--limit", "300", "--epochs", "4",
                     "--resolution", "16", "--lr", "0.1", "--augment", "translate", "--study", "peak", "--storage", storage, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (trial,) = optuna.load_study(study_name="peak", storage=storage).trials
    curve, best_epoch = trial.user_attrs[records.VAL_CURVE], trial.user_attrs[records.BEST_EPOCH]
    assert best_epoch < len(curve) and curve[best_epoch - 1] == max(curve) > curve[-1], curve  # the case tested
    val, test = trial.values[0], trial.user_attrs[records.TEST_METRIC]
    assert val == max(curve)

    shown = run_cli("best", "--study", "peak", "--storage", storage, "--json", cwd=tmp_path)
    (row,) = json.loads(shown.stdout)["best"]
    assert (row["values"][0], row["test_metric"]) == (val, test)
    assert (row["genotype"], row["evaluation"]) == (trial.user_attrs[records.GENOTYPE], "trained")  # rebuildable
    (dash,) = state.detail(control.inspect(open_storage(storage, create=False, heartbeat=False), "peak"))["best"]
    assert (dash["values"][0], dash["test_metric"]) == (val, test)
    out = autocnn.export(tmp_path / "out", study="peak", storage=storage, formats=())  # what `autocnn export` runs
    config = json.loads((out / "config.json").read_text())
    assert (config["metrics"]["val_accuracy"], config["metrics"]["test_accuracy"]) == (val, test)
    card = (out / "README.md").read_text()
    assert f"| validation accuracy | {val:.4f} |" in card and f"| test accuracy | {test:.4f} |" in card

    # the shipped weights score exactly those figures on the study's own splits
    model = build_model(records.genotype_of(trial))
    model.load_state_dict(read_state_dict(out / "weights.safetensors"))
    data = load_dataset("digits", limit=300)
    for split, figure in (("val", val), ("test", test)):
        assert evaluate(model, getattr(data, split), batch_size=64, device="cpu", resolution=16)["accuracy"] == figure


def _exported_predictions(model, data, tmp_path, name) -> tuple[object, torch.nn.Module]:
    from autocnn.export.codegen import load_module

    folder = export_model(model, out_dir=tmp_path / name, formats=(),
                          meta={"mean": data.mean, "std": data.std, "image_size": data.native_resolution})
    module = load_module(folder / "model.py", name=f"exported_{name}")
    return module, module.build().eval()


def test_preprocess_reproduces_the_trainers_evaluation_of_the_raw_files(tmp_path):
    """model.py + preprocess on the raw images of every dataset kind (files of any size decoded with PIL, CIFAR's
    pickled rows, MNIST's IDX bytes, SVHN's .mat arrays, digits' 0-16 levels) predicts what the trainer's own
    evaluation of the same images does: the evaluation transform is exported exactly."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from autocnn.data import load_dataset
    from autocnn.data.splits import SPLIT_SEED, stratified_split
    from autocnn.training import predict

    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    for c, tint in (("ant", (200, 40, 40)), ("bee", (40, 40, 200))):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i, (w, h) in enumerate([(37, 23), (23, 41), (30, 30), (64, 48), (19, 19)] * 2):
            pixels = np.clip(rng.normal(tint, 60, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / c / f"{i}.{'jpg' if i % 2 else 'png'}")
    folder = load_dataset("imagefolder", tmp_path / "imgs")
    assert folder.native_resolution == 23
    digits = load_dataset("digits")
    raw_digits = load_digits()
    test_rows = stratified_split(raw_digits.target, [0.6, 0.2, 0.2], SPLIT_SEED)[2]

    def decoded(files):
        return [torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy()).permute(2, 0, 1) for f in files]

    with open(tmp_path / "imgs" / "labels.csv", "w") as f:  # the same files, labelled by a CSV
        f.write("path,label\n" + "".join(f"{c}/{i}.{'jpg' if i % 2 else 'png'},{c}\n"
                                          for c in ("ant", "bee") for i in range(10)))
    listed = load_dataset("csv", tmp_path / "imgs")
    write_cifar10(tmp_path / "raw-cifar")
    cifar = load_dataset("cifar10", tmp_path / "raw-cifar")
    with open(tmp_path / "raw-cifar" / "cifar-10-batches-py" / "test_batch", "rb") as f:
        cifar_rows = pickle.load(f, encoding="latin1")["data"]
    write_mnist(tmp_path / "raw-mnist")
    mnist = load_dataset("mnist", tmp_path / "raw-mnist")
    idx = (tmp_path / "raw-mnist" / "MNIST" / "raw" / "t10k-images-idx3-ubyte").read_bytes()[16:]
    write_svhn(tmp_path / "raw-svhn")
    svhn = load_dataset("svhn", tmp_path / "raw-svhn")
    from scipy import io as sio

    svhn_x = sio.loadmat(tmp_path / "raw-svhn" / "test_32x32.mat")["X"]

    cases = [
        # (data, network input resolution, the raw test images as a user has them)
        (folder, 32, decoded(folder.test.files)),
        (listed, 24, decoded(listed.test.files)),
        (digits, 16, [torch.from_numpy(raw_digits.images[i] / 16).float()[None] for i in test_rows]),
        (cifar, 24, [torch.from_numpy(row.reshape(3, 32, 32).copy()) for row in cifar_rows]),
        (mnist, 32, [torch.frombuffer(bytearray(idx[i * 784:(i + 1) * 784]), dtype=torch.uint8).view(1, 28, 28)
                     for i in range(len(idx) // 784)]),
        (svhn, 32, [torch.from_numpy(svhn_x[..., i].copy()).permute(2, 0, 1) for i in range(svhn_x.shape[-1])]),
    ]
    assert {data.name for data, _, _ in cases} == {"imagefolder", "csv", "digits", "cifar10", "mnist", "svhn"}
    for data, resolution, raw in cases:
        g = get_preset("lenet5").replace(num_classes=data.num_classes, in_chans=data.in_chans, resolution=resolution)
        model = realistic_(build_model(g), gen)
        want = predict(model, data.test, batch_size=7, device="cpu", resolution=resolution)
        module, standalone = _exported_predictions(model, data, tmp_path, data.name)
        with torch.no_grad():
            got = torch.cat([standalone(module.preprocess(x)) for x in raw])
        assert len(got) == len(data.test) and want.abs().max() > 1e-3
        assert torch.equal(got.argmax(1), want.argmax(1)), data.name
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), (data.name, (got - want).abs().max())
