"""Bad input through the real CLI: one case per mistake a user can make.

Every case runs `autocnn` in a subprocess (cwd: the test's own folder) and must end with exit code 2,
exactly one line on stderr that names the problem and a fix, no traceback, and not one file or folder
created or changed: the folder is snapshotted (paths, sizes, mtimes, SHA-1s) before and after, which
also covers the sqlite files a case reads (a valid study copied in, a corrupt one, a missing one).
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from conftest import FAST, TINY_SPACE, assert_user_error, autocnn_exe, cli_env, free_port, run_cli, snapshot

TINY = Path(TINY_SPACE).read_text()
STORE = ("--storage", "sqlite:///{tmp}/s.db")  # a storage that does not exist yet: it must stay that way
STUDY = ("--storage", "sqlite:///{tmp}/study.db")  # a copy of a real one-trial study (`template`)
SEARCH = ("search", "--space", TINY_SPACE, "--limit", "100", "--epochs", "1")


def _write(name: str, text: str | bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return setup


def _shell_study(tmp: Path) -> None:
    """What a run killed between Optuna's creation of its study and the write of its configuration leaves (in
    a storage autocnn opened: WAL mode, which opening a plain Optuna file would switch it to)."""
    import optuna

    from autocnn.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp}/shell.db", heartbeat=False)
    optuna.create_study(study_name="k", storage=storage)
    storage.engine.dispose()  # its last connection closed: the WAL is checkpointed now, not by the command under test


def _space(name: str, old: str, new: str) -> Callable[[Path], None]:
    assert old in TINY, old
    return _write(name, TINY.replace(old, new))


def _other_weights(tmp: Path) -> None:
    """A real LeNet-5 state_dict, to be offered to a ResNet-18."""
    import autocnn
    from safetensors.torch import save_file

    model = autocnn.create_model("lenet5", num_classes=10, in_chans=1)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "lenet5.safetensors"))


def _images(*specs: tuple[str, str]) -> Callable[[Path], None]:
    """Real 8×8 PNGs at the given paths, in the given PIL mode ("RGB" or "L"); a path ending in / is an empty folder."""
    def setup(tmp: Path) -> None:
        from PIL import Image

        for name, mode in specs:
            path = tmp / name
            if name.endswith("/"):
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new(mode, (8, 8)).save(path)
    return setup


def _both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        for step in setups:
            step(tmp)
    return setup


SUPERNET_SPACE = Path(__file__).parents[1] / "supernet" / "tiny_supernet.yaml"
SUPERNET_TEXT = SUPERNET_SPACE.read_text()
ONESHOT = ("search", "--space", str(SUPERNET_SPACE), "--limit", "100", "--strategy", "oneshot")
FLAT_SUPERNET = SUPERNET_TEXT.replace("kernel: {choices: [3, 5]}", "kernel: 3").replace(
    "expansion: {choices: [1.0, 4.0, 6.0]}", "expansion: 4.0").replace("repeats: {choices: [1, 2]}", "repeats: 1").replace(
    "width_mult: {choices: [0.5, 1.0]}", "width_mult: 1.0")
OTHER_SUPERNET = json.dumps({  # the record of a supernet trained on another space (only kernel 3 or 7)
    "name": "other", "space": "other.yaml", "space_name": "other", "dataset": "digits", "resolution": 16,
    "num_classes": 10, "in_chans": 1, "fixed": {"act": "silu"}, "epochs_done": 1,
    "largest": "net-res16-in1-cls10-act:silu | conv-c8 | mbconv-c8-k7-cv:depthwise | head",
    "choices": {"stages.0.kernel": [3, 7]}})
IMGS = ("--dataset", "imagefolder", "--data-root", "imgs")
TWO_CLASSES = _images(*[(f"imgs/{c}/{i}.png", "RGB") for c in ("cat", "dog") for i in range(4)])


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    fragments: tuple[str, ...]  # all must appear in the one stderr line
    setup: Callable[[Path], None] | None = None
    study: bool = False  # needs the copied study at {tmp}/study.db
    extra: dict = field(default_factory=dict)


CASES = {
    # search spaces
    "unknown-space": Case(("search", "--space", "nope", *STORE), ("nope:0", "no built-in space", "YAML")),
    "unknown-space-default-storage": Case(("search", "--space", "nope"), ("no built-in space",)),  # no ./studies
    "invalid-yaml": Case(("search", "--space", "bad.yaml", *STORE), ("bad.yaml:", "invalid YAML", "fix"),
                         _write("bad.yaml", "name: x\nparams: [\n")),
    "space-unknown-key": Case(("search", "--space", "s.yaml", *STORE), ("s.yaml:", "unknown key 'bogus'", "use one of"),
                              _space("s.yaml", "name: tiny", "name: tiny\nbogus: 1")),
    "space-bad-type": Case(("search", "--space", "s.yaml", *STORE), ("s.yaml:6", "width", "expected an integer"),
                           _space("s.yaml", "{int: [4, 24], step: 4}", "{int: [four, 24]}")),
    "space-empty-choice": Case(("search", "--space", "s.yaml", *STORE), ("s.yaml:", "empty choices", "at least one"),
                               _space("s.yaml", "[none, se, eca]", "[]")),
    "space-non-positive-constraint": Case(("search", "--space", "s.yaml", *STORE),
                                          ("constraints.max_params", "greater than 0"),
                                          _write("s.yaml", TINY + "constraints: {max_params: 0}\n")),
    "space-impossible-constraint": Case(("search", "--space", "s.yaml", "--limit", "100", *STORE),
                                        ("max_params", "rejected all 100", "relax"),
                                        _write("s.yaml", TINY + "constraints: {max_params: 10}\n")),
    "space-impossible-require": Case(("search", "--space", "s.yaml", "--limit", "100", *STORE),
                                     ("require", "none of 100", "loosen"),
                                     _write("s.yaml", TINY + 'require: ["width > 100"]\n')),
    "space-depthwise-changes-width": Case(("search", "--space", "s.yaml", *STORE),
                                          ("s.yaml:", "stages[2].conv", "multiple of its input", "use conv 'separable'"),
                                          _space("s.yaml", 'out_chs: "${width * 2}", kernel: 3,',
                                                 'out_chs: "${width + 2}", kernel: 3, conv: depthwise,')),
    "space-fused-mbconv-depthwise": Case(("search", "--space", "s.yaml", *STORE),
                                         ("s.yaml:", "stages[1].conv", "no depthwise form", "use block 'mbconv'"),
                                         _space("s.yaml", "{block: maxpool, kernel: 2, stride: 2}",
                                                "{block: fused_mbconv, conv: depthwise}")),
    "space-bad-training": Case(("search", "--space", "s.yaml", *STORE), ("s.yaml:", "training.mixup", "takes a number"),
                               _write("s.yaml", TINY + "training: {mixup: lots}\n")),
    # weight-sharing search (issue #16)
    "supernet-without-elastic-dimension": Case(("supernet", "train", "--space", "flat.yaml", "--name", "x", "--limit",
                                                "100", *STORE), ("has no elastic dimension", "add one"),
                                               _write("flat.yaml", FLAT_SUPERNET)),
    "supernet-zero-processes": Case(("supernet", "train", "--space", str(SUPERNET_SPACE), "--name", "x", "--limit",
                                     "100", "--processes", "0", *STORE), ("--processes must be >= 1",)),
    "supernet-batch-below-processes": Case(("supernet", "train", "--space", str(SUPERNET_SPACE), "--name", "x",
                                            "--limit", "100", "--processes", "2", "--batch-size", "3", *STORE),
                                           ("--batch-size 3 is split between 2 processes", "--batch-size 4")),
    "supernet-unknown-schedule": Case(("supernet", "train", "--space", str(SUPERNET_SPACE), "--name", "x", "--limit",
                                       "100", "--schedule", "linear", *STORE),
                                      ("--schedule must be one of", "cosine", "'linear'")),
    "supernet-address-without-ray": Case(("supernet", "train", "--space", str(SUPERNET_SPACE), "--name", "x",
                                          "--limit", "100", "--address", "127.0.0.1:6379", *STORE),
                                         ("--address needs --backend ray",)),
    "supernet-unreachable-ray": Case(("supernet", "train", "--space", str(SUPERNET_SPACE), "--name", "x", "--limit",
                                      "100", "--backend", "ray", "--address", "127.0.0.1:{port}", *STORE),
                                     ("cannot reach the Ray cluster at 127.0.0.1:{port}", "ray start --head")),
    "oneshot-without-supernet": Case((*ONESHOT, *STORE), ("--strategy oneshot needs --supernet NAME",)),
    "oneshot-missing-supernet": Case((*ONESHOT, "--supernet", "nope", *STORE),
                                     ("no supernet named 'nope'", "autocnn supernet train")),
    "oneshot-supernet-of-another-space": Case((*ONESHOT, "--supernet", "other", *STORE),
                                              ("supernet 'other' was trained on another space", "search the space"),
                                              _write("supernets/other/supernet.json", OTHER_SUPERNET)),
    # training recipe
    "recipe-file-missing": Case((*SEARCH, "--recipe", "nope.yaml", *STORE), ("--recipe nope.yaml", "no such file")),
    "recipe-invalid-yaml": Case((*SEARCH, "--recipe", "r.yaml", *STORE), ("--recipe r.yaml is not valid YAML",),
                                _write("r.yaml", "label_smoothing: [\n")),
    "recipe-unknown-field": Case((*SEARCH, "--recipe", "r.yaml", *STORE),
                                 ("unknown recipe field 'emadecay'", "ema_decay"), _write("r.yaml", "emadecay: 0.9\n")),
    "recipe-flag-out-of-range": Case((*SEARCH, "--label-smoothing", "1.5", *STORE), ("--label-smoothing", "[0, 1)")),
    # data
    "unknown-dataset": Case((*SEARCH, "--dataset", "nope", *STORE), ("unknown dataset 'nope'", "digits")),
    "missing-data-root": Case((*SEARCH, "--dataset", "cifar10", *STORE), ("--data-root", "cifar-10-batches-py")),
    "data-root-not-found": Case((*SEARCH, "--dataset", "imagefolder", "--data-root", "{tmp}/nowhere", *STORE),
                                ("nowhere does not exist", "train/<class>/<image>")),
    "data-root-is-a-file": Case((*SEARCH, "--dataset", "imagefolder", "--data-root", "notes.txt", *STORE),
                                ("notes.txt is a file", "folder"), _write("notes.txt", "hello\n")),
    "data-root-malformed": Case((*SEARCH, "--dataset", "imagefolder", "--data-root", "imgs", *STORE),
                                ("no train/ folder", "ImageFolder layout"), _write("imgs/readme.txt", "no images\n")),
    "imagefolder-test-without-train": Case((*SEARCH, "--dataset", "imagefolder", "--data-root", "imgs", *STORE),
                                           ("has test/ but no train/ folder", "imgs/train/<class>/<image>"),
                                           _write("imgs/test/cat/0.png", b"not decoded: refused before")),
    "imagefolder-without-images": Case((*SEARCH, "--dataset", "imagefolder", "--data-root", "imgs", *STORE),
                                       ("imgs contains no images", "imgs/<class>/"),
                                       _write("imgs/cat/readme.txt", "no images\n")),
    "corrupt-image": Case((*SEARCH, *IMGS, *STORE), ("cannot read image", "imgs/dog/9.png", "replace or remove"),
                          _both(TWO_CLASSES, _write("imgs/dog/9.png", b"\x89PNG\r\n\x1a\nbroken"))),
    "empty-class-folder": Case((*SEARCH, *IMGS, *STORE), ("class folder", "imgs/eel has no images", "remove it"),
                               _both(TWO_CLASSES, _images(("imgs/eel/", "")))),
    "mixed-channels": Case((*SEARCH, *IMGS, *STORE), ("mixes 1-channel images", "3-channel", "--channels 1"),
                           _both(TWO_CLASSES, _images(("imgs/dog/grey.png", "L")))),
    "csv-missing-files": Case((*SEARCH, "--dataset", "csv", "--data-root", "imgs", *STORE),
                              ("1 image(s) listed in", "labels.csv are missing", "imgs/cat/nope.png"),
                              _both(TWO_CLASSES, _write("imgs/labels.csv", "path,label\ncat/0.png,cat\n"
                                                                           "cat/nope.png,cat\n"))),
    "cache-dir-not-writable": Case((*SEARCH, *IMGS, "--cache-dir", "notes.txt/cache", *STORE),
                                   ("--cache-dir", "notes.txt/cache is not writable", "writable folder"),
                                   _both(TWO_CLASSES, _write("notes.txt", "a file\n"))),
    "bad-data-memory": Case((*SEARCH, "--data-memory", "lots", *STORE), ("--data-memory 'lots'", "2GB")),
    "image-size-of-array-data": Case((*SEARCH, "--image-size", "32", *STORE),
                                     ("--image-size sets how image files are decoded", "'digits'", "--resolution")),
    # storage
    "unreachable-storage": Case((*SEARCH, "--storage", "postgresql+psycopg2://autocnn@127.0.0.1:{port}/db"),
                                ("storage 'postgresql", "127.0.0.1:{port}")),
    "corrupt-sqlite": Case((*SEARCH, *STORE), ("s.db is not an SQLite database", "restore it"),
                           _write("s.db", b"these are not the bytes of a database\n" * 100)),
    "corrupt-sqlite-pages": Case(("studies", *STORE), ("s.db is a corrupt SQLite database", "restore it"),
                                 _write("s.db", b"SQLite format 3\x00" + b"\xff" * 4000)),
    "storage-is-a-folder": Case((*SEARCH, "--storage", "sqlite:///{tmp}/imgs"), ("names a folder", "autocnn.db"),
                                _write("imgs/readme.txt", "a folder\n")),
    "missing-storage": Case(("studies", *STORE), ("no study storage", "autocnn search")),
    "study-folder-of-another-database": Case((*SEARCH, "--study", "run", *STORE),
                                             ("holds the weights of study 'run'", "another database", "--study"),
                                             _write("run/.study", '{"storage": "/elsewhere/a.db"}')),
    # budgets and choices
    "zero-trials": Case((*SEARCH, "--trials", "0", *STORE), ("--trials must be >= 1", "at least one")),
    "negative-trials": Case((*SEARCH, "--trials", "-3", *STORE), ("--trials must be >= 1, got -3",)),
    "zero-epochs": Case((*SEARCH, "--epochs", "0", *STORE), ("--epochs must be >= 1",)),
    "zero-grace-epochs": Case((*SEARCH, "--grace-epochs", "0", *STORE), ("--grace-epochs must be >= 1",)),
    "negative-initial-design": Case((*SEARCH, "--initial-design", "-1", *STORE),
                                    ("--initial-design must be >= 0", "0 turns it off")),
    "timeout-not-a-duration": Case((*SEARCH, "--timeout", "5x", *STORE),
                                   ("--timeout '5x' is not a duration", "90s, 20m, 2h")),
    "negative-timeout": Case((*SEARCH, "--timeout", "-5m", *STORE), ("--timeout must be a positive duration", "'-5m'")),
    "zero-stop-starting-after": Case((*SEARCH, "--stop-starting-after", "0", *STORE),
                                     ("--stop-starting-after must be a positive duration",)),
    "resume-bad-timeout": Case(("search", "--resume", "--study", "s", "--timeout", "2 hours", *STUDY),
                               ("--timeout '2 hours' is not a duration",), study=True),
    "trial-share-above-one": Case((*SEARCH, "--max-trial-share", "2", *STORE),
                                  ("--max-trial-share must be in (0, 1], got 2", "none")),
    "trial-share-not-a-number": Case((*SEARCH, "--max-trial-share", "half", *STORE),
                                     ("--max-trial-share 'half' is not a number", "0.5")),
    "unknown-sampler": Case((*SEARCH, "--sampler", "nope", *STORE), ("unknown sampler 'nope'", "tpe")),
    "unknown-pruner": Case((*SEARCH, "--pruner", "nope", *STORE), ("unknown pruner 'nope'", "median")),
    "prescreen-unknown-proxy": Case((*SEARCH, "--prescreen", "bogus:3", *STORE),
                                    ("unknown proxy 'bogus' for --prescreen", "synflow")),
    "prescreen-zero-candidates": Case((*SEARCH, "--prescreen", "synflow:0", *STORE),
                                      ("--prescreen 'synflow:0'", "K must be >= 1")),
    "prescreen-without-k": Case((*SEARCH, "--prescreen", "synflow", *STORE), ("is not PROXY:K", "synflow:4")),
    "enqueue-unknown-preset": Case((*SEARCH, "--enqueue", "lenet5,resnet9000", *STORE),
                                   ("unknown preset 'resnet9000'", "--enqueue", "autocnn models")),
    "single-objective-sampler": Case((*SEARCH, "--sampler", "cmaes", "--objectives", "accuracy,params", *STORE),
                                     ("--sampler cmaes optimises one objective", "nsga2")),
    "pruner-in-pareto-search": Case((*SEARCH, "--pruner", "median", "--objectives", "accuracy,params", *STORE),
                                    ("--pruner median judges one objective", "drop --pruner")),
    # fine-tuning from reference weights
    "weights-not-name-file": Case((*SEARCH, "--enqueue", "resnet18", "--weights", "w.pt", *STORE),
                                  ("--weights 'w.pt' is not NAME=FILE", "resnet18=")),
    "weights-preset-not-enqueued": Case((*SEARCH, "--weights", "resnet18=w.pt", *STORE),
                                        ("resnet18", "not enqueued", "--enqueue resnet18")),
    "freeze-without-weights": Case((*SEARCH, "--freeze", "2", *STORE), ("--freeze needs --weights",)),
    "negative-freeze": Case(("train", "--model", "lenet5", "--freeze", "-1", *STORE), ("--freeze must be >= 0",)),
    "enqueued-weights-do-not-match": Case((*SEARCH, "--enqueue", "resnet18", "--weights",
                                           "resnet18=lenet5.safetensors", *STORE),
                                          ("lenet5.safetensors", "architecture"), _other_weights),
    "train-weights-missing": Case(("train", "--model", "lenet5", "--limit", "100", "--weights", "nope.pt", *STORE),
                                  ("nope.pt does not exist", "state_dict")),
    "map-on-single-label-data": Case((*SEARCH, "--objectives", "map", *STORE),
                                     ("--objectives map needs multi-label data", "'digits' is single-label", "f1")),
    "two-quality-objectives": Case((*SEARCH, "--objectives", "accuracy,f1", *STORE),
                                   ("2 quality metrics (accuracy, f1)", "keep one")),
    "artifacts-unsupported-uri": Case((*SEARCH, "--artifacts", "s3://bucket/runs", *STORE),
                                      ("--artifacts 's3://bucket/runs'", "not s3://", "mount")),
    "resume-zero-trials": Case(("search", "--resume", "--study", "s", "--trials", "0", *STUDY),
                               ("--trials must be >= 1",), study=True),
    "resume-missing-study": Case(("search", "--resume", "--study", "nope", *STUDY),
                                 ("no study named 'nope'", "existing studies: s"), study=True),
    "report-missing-study": Case(("report", "--study", "nope", "--out", "{tmp}/report", *STUDY),
                                 ("no study named 'nope'",), study=True),
    "report-interrupted-study": Case(("report", "--study", "k", "--out", "{tmp}/report", "--storage",
                                      "sqlite:///{tmp}/shell.db"),
                                     ("'k' was interrupted before its configuration was stored", "start it again"),
                                     _shell_study),
    # Ray
    "unreachable-ray-address": Case((*SEARCH, "--backend", "ray", "--address", "127.0.0.1:{port}", *STORE),
                                    ("cannot reach the Ray cluster at 127.0.0.1:{port}", "ray start --head")),
    "unknown-scheduler": Case((*SEARCH, "--backend", "ray", "--scheduler", "nope", *STORE),
                              ("unknown scheduler 'nope'", "asha")),
    # export
    "export-missing-study": Case(("export", "--study", "nope", "--out", "{tmp}/out", *STUDY),
                                 ("no study named 'nope'",), study=True),
    "export-missing-trial": Case(("export", "--study", "s", "--trial", "99", "--out", "{tmp}/out", *STUDY),
                                 ("has no trial 99", "--trial best"), study=True),
    "weights-do-not-match": Case(("export", "--model", "resnet18", "--weights", "lenet5.safetensors",
                                  "--out", "{tmp}/out"), ("lenet5.safetensors", "architecture"),
                                 _other_weights),
    "unknown-export-format": Case(("export", "--study", "s", "--formats", "pt2,tflite", "--out", "{tmp}/out", *STUDY),
                                  ("unknown export format 'tflite'", "pt2, onnx, or none"), study=True),
    "weights-not-a-state-dict": Case(("export", "--model", "lenet5", "--weights", "w.pt", "--out", "{tmp}/out"),
                                     ("cannot read weights", "state_dict"), _write("w.pt", b"\x00garbage")),
    # dashboard and show
    "dashboard-missing-storage": Case(("dashboard", "--port", "0", *STORE), ("no study storage",)),
    "malformed-genotype-json": Case(("show", "g.json"), ("g.json is not valid JSON", "fix its syntax"),
                                    _write("g.json", '{"stages": [')),
    "invalid-genotype": Case(("show", "g.json"), ("stages", "expected a list"), _write("g.json", '{"stages": 3}')),
    "genotype-depthwise-changes-width": Case(("show", "g.yaml"), ("stages[0].conv", "16 -> 24", "use conv 'separable'"),
                                             _write("g.yaml", "stem: [{block: conv, out_chs: 16}]\n"
                                                              "stages: [{block: conv, out_chs: 24, conv: depthwise}]\n")),
    "genotype-fused-mbconv-depthwise": Case(("show", "g.yaml"), ("stages[0].conv", "fused_mbconv", "use block 'mbconv'"),
                                            _write("g.yaml", "stages: [{block: fused_mbconv, out_chs: 24, "
                                                             "expansion: 4.0, conv: depthwise}]\n")),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A real study (one trained trial) that cases copy in."""
    folder = tmp_path_factory.mktemp("template")
    result = run_cli("search", *FAST, "--trials", "1", "--epochs", "1", "--study", "s",
                     "--storage", f"sqlite:///{folder / 'study.db'}", cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "study.db"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_touches_nothing(name, tmp_path, request):
    case = CASES[name]
    port = free_port()  # closed again: nothing listens there
    fill = {"tmp": str(tmp_path), "port": port}
    if case.study:
        shutil.copyfile(request.getfixturevalue("template"), tmp_path / "study.db")
    if case.setup is not None:
        case.setup(tmp_path)
    before = snapshot(tmp_path)
    result = run_cli(*[a.format(**fill) for a in case.args], cwd=tmp_path, timeout=120)
    assert_user_error(result, *[f.format(**fill) for f in case.fragments])
    assert snapshot(tmp_path) == before, "a file was created or changed"


def test_cases_cover_the_issue_matrix():
    assert len(CASES) >= 20
    commands = {case.args[0] for case in CASES.values()}
    assert commands >= {"search", "studies", "report", "export", "dashboard", "show"}


def test_dashboard_answers_a_bad_study_name_with_an_error_and_changes_nothing(template, tmp_path):
    """The dashboard server (a real process): unknown and malformed study names in pages and API calls."""
    shutil.copyfile(template, tmp_path / "study.db")
    before = snapshot(tmp_path)
    proc = subprocess.Popen([autocnn_exe(), "dashboard", "--storage", f"sqlite:///{tmp_path / 'study.db'}",
                             "--port", "0"], cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("autocnn dashboard on http://"), (line, proc.stderr.read() if proc.poll() else "")
        url = line.split()[3]

        def call(method: str, path: str) -> tuple[int, str]:
            req = urllib.request.Request(url + path, method=method, data=b"{}" if method == "POST" else None,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as res:
                    return res.status, res.read().decode()
            except urllib.error.HTTPError as err:
                return err.code, err.read().decode()

        status, body = call("GET", "/api/autocnn/studies/nope")
        assert status == 404 and "nope" in json.loads(body)["error"], (status, body)
        status, body = call("POST", "/api/autocnn/studies/nope/resume")
        assert status == 404 and "nope" in json.loads(body)["error"], (status, body)
        status, body = call("GET", "/api/autocnn/studies/..%2Fetc")  # no route: bottle's own 404 page
        assert status == 404 and "Traceback" not in body, (status, body)
        status, body = call("POST", "/api/autocnn/studies/-x/stop")
        assert status == 400 and "malformed study name" in json.loads(body)["error"], (status, body)
        status, body = call("GET", "/studies/-bad")
        assert status == 400 and "malformed study name" in body, (status, body)
        status, body = call("GET", "/api/autocnn/studies/s")  # the real study is still served
        assert status == 200 and json.loads(body)["study"]["name"] == "s", (status, body[:500])
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert snapshot(tmp_path) == before
