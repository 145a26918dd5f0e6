"""Fuzzing the genotype *files* a user hands to autocnn (`show`, `train --model`, `export --model`).

tests/core/test_genotype.py fuzzes `Genotype.from_dict` with arbitrary dicts and tests/spaces/test_spaces.py
fuzzes the search-space parser with random YAML documents; this adds the layer in front of them: files
(JSON, YAML or the one-line string form) that are mutated valid genotypes, truncated, nested too deep or
not text at all. `load_genotype` must answer only with GenotypeError (one line), and the CLI with exit 2
and one `error: ...` line, or accept the file.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from autocnn.genotype import Genotype, GenotypeError, load_genotype
from autocnn.presets import get_preset

BASE = get_preset("lenet5").replace(resolution=28, in_chans=1, num_classes=10).to_dict()
_junk = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                  st.text(max_size=12), st.sampled_from(["conv", "maxpool", "mbconv", "se", "avg", "relu", "batch"]),
                  st.lists(st.integers(-3, 64), max_size=3), st.dictionaries(st.text(max_size=6), st.integers(), max_size=2))


def _paths(node, prefix=()):
    """Every key/index path into a nested dict/list."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


_ALL_PATHS = [p for p in _paths(BASE) if p]


@st.composite
def mutated_genotypes(draw):
    """The LeNet-5 genotype with 1-3 entries replaced by junk, deleted, or an unknown key added."""
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_ALL_PATHS))
        parent = data
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                parent[path[-1]] = draw(_junk)
            elif action == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=8))] = draw(_junk)
        except (KeyError, IndexError, TypeError):  # an earlier mutation removed or replaced the path
            pass
    return data


def _dump(data, kind: str) -> str:
    if kind == "json":
        return json.dumps(data)
    if kind == "yaml":
        return yaml.safe_dump(data)
    try:
        return Genotype.from_dict(data).to_string()
    except GenotypeError:
        return json.dumps(data)[:60]


_texts = st.one_of(
    st.tuples(mutated_genotypes(), st.sampled_from(["json", "yaml", "txt"])).map(lambda t: (_dump(*t), t[1])),
    st.tuples(st.sampled_from(["json", "yaml", "txt"]), st.floats(0, 1)).map(  # a valid file, cut short
        lambda t: (_dump(BASE, t[0])[: int(len(_dump(BASE, t[0])) * t[1])], t[0])),
    st.tuples(st.text(max_size=200), st.sampled_from(["json", "yaml", "txt"])),
    st.tuples(st.integers(1, 3000), st.sampled_from(["json", "yaml"])).map(  # nested too deep
        lambda t: ("[" * t[0] + "]" * t[0] if t[1] == "json" else "- " * t[0] + "x", t[1])),
)
_bytes = st.tuples(st.binary(max_size=200), st.sampled_from(["json", "yaml", "txt"]))


def _write(content, kind: str, folder: Path) -> str:
    path = folder / f"genotype.{kind}"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    return str(path)


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.one_of(_texts, _bytes))
def test_genotype_files_load_or_raise_genotype_error(folder, doc):
    path = _write(*doc, folder)
    try:
        genotype = load_genotype(path)
    except GenotypeError as err:
        assert str(err) and "\n" not in str(err), repr(str(err))
        return
    assert isinstance(genotype, Genotype)
    assert Genotype.from_dict(genotype.to_dict()) == genotype


# LeNet-5 at 28 px with the first conv's kernel and padding and the head's pooling left open
_LENET = ('{"stages": [{"block": "conv", "out_chs": 6, "kernel": %s, "padding": %s}, '
          '{"block": "maxpool", "stride": 2, "kernel": 2}, {"block": "conv", "out_chs": 16, "kernel": 5, "padding": 0}, '
          '{"block": "maxpool", "stride": 2, "kernel": 2}], "head": {"pool": "%s"}, "resolution": 28, "in_chans": 1, '
          '"num_classes": 10}')


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.one_of(_texts, _bytes))
@example(('{"stages": [], "\\r": null}', "json"))  # a key that is a carriage return once CI split the line
@example(('stages: []\n"a\\nb": 1\n', "yaml"))  # a key with a line break inside
# each layer valid, but together they shrink 28 px to nothing (a flatten head probes the shape, an avg one does not)
@example((_LENET % (18, 0, "flatten"), "json"))
@example((_LENET % (18, 0, "avg"), "json"))
@example((_LENET % (5, 69309730, "flatten"), "json"))  # a border that made a 10^16-wide linear layer
def test_show_answers_bad_genotype_files_with_one_error_line(folder, doc):
    """`autocnn show FILE` through the CLI's own entry point (in-process, for speed; the bad-input
    matrix runs the same command as a subprocess)."""
    from autocnn.cli import cli

    path = _write(*doc, folder)
    err, out = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            cli.main(args=["show", path], prog_name="autocnn")
        except SystemExit as exited:
            code = exited.code or 0
    if code == 0:
        return  # a valid genotype: its table was printed
    lines = err.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err.getvalue()[-2000:])
