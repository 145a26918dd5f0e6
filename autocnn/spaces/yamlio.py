"""Reading a space file: YAML with the line of every key kept, so errors can point at it.

PyYAML's node API gives each key and value a start mark; the loader below builds plain dicts and
lists that remember those lines (`LocDict.lines[key]`, `LocList.lines[i]`). Duplicate keys, which
PyYAML would silently overwrite, are recorded and reported by the schema check. YAML 1.2 floats
such as `1e6` are read as numbers (PyYAML's YAML 1.1 rules would read them as strings).
"""
from __future__ import annotations

import re

import yaml
from yaml.nodes import MappingNode, ScalarNode

from autocnn.spaces.errors import SpaceError

MAX_NODES = 20_000  # aliases can make a small file a huge tree ("billion laughs"); stop well before


class LocDict(dict):
    """A mapping read from YAML: `line` of the mapping, `lines[key]` of each key, and problems seen."""

    def __init__(self) -> None:
        super().__init__()
        self.line = 1
        self.lines: dict[str, int] = {}
        self.problems: list[tuple[str, int, str, str]] = []  # (key, line, problem, fix)


class LocList(list):
    def __init__(self) -> None:
        super().__init__()
        self.line = 1
        self.lines: list[int] = []


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _line(node) -> int:
    return node.start_mark.line + 1


def _construct_map(loader: _Loader, node: MappingNode):
    data = LocDict()
    data.line = _line(node)
    yield data
    own: dict[str, int] = {}
    for key_node, _ in node.value:
        if isinstance(key_node, ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            if key_node.value in own:
                data.problems.append((key_node.value, _line(key_node), "duplicate key",
                                      f"remove one of the two (the other is on line {own[key_node.value]})"))
            own.setdefault(key_node.value, _line(key_node))
    loader.flatten_mapping(node)  # `<<: *anchor` merges: merged keys first, own keys override
    for key_node, value_node in node.value:
        if not isinstance(key_node, ScalarNode):
            data.problems.append(("?", _line(key_node), "a key must be a plain name",
                                  "write the key as a string"))
            continue
        key = key_node.value
        data[key] = loader.construct_object(value_node, deep=True)
        data.lines[key] = _line(key_node)


def _construct_seq(loader: _Loader, node):
    data = LocList()
    data.line = _line(node)
    yield data
    for item in node.value:
        data.append(loader.construct_object(item, deep=True))
        data.lines.append(_line(item))


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _count(node, seen: dict[int, int]) -> int:
    """Number of nodes of the expanded tree (aliases counted every time they are used)."""
    if id(node) in seen:
        return seen[id(node)]
    seen[id(node)] = 1  # a recursive alias is counted once here; construction rejects it later
    total = 1
    if isinstance(node, MappingNode):
        for k, v in node.value:
            total += _count(k, seen) + _count(v, seen)
    elif not isinstance(node, ScalarNode):
        for v in node.value:
            total += _count(v, seen)
    seen[id(node)] = total
    if total > MAX_NODES:
        raise OverflowError
    return total


def _key_path_at(text: str, line: int) -> str:
    """Best-effort dotted key path of `line` (1-based) from indentation, for syntax errors."""
    stack: list[tuple[int, str]] = []
    pattern = re.compile(r"^(\s*)(?:-\s+)?([A-Za-z0-9_.$-]+)\s*:(?:\s|$)")
    for raw in text.splitlines()[:line]:
        match = pattern.match(raw)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
    return ".".join(k for _, k in stack) or "(document)"


def read_yaml(text: str, file: str) -> LocDict:
    """Parse one YAML document into LocDict/LocList values; raise SpaceError on any YAML problem."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpaceError(file, 1, "(document)", "the file is empty",
                             "write a mapping with `params` and `genotype` (or `families`)")
        try:
            _count(node, {})
        except (OverflowError, RecursionError):
            raise SpaceError(file, _line(node), "(document)",
                             f"the document expands to more than {MAX_NODES} values",
                             "use fewer nested aliases") from None
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 1
        problem = " ".join(p for p in (err.context, err.problem) if p) or "cannot parse"
        raise SpaceError(file, line, _key_path_at(text, line), f"invalid YAML: {problem}",
                         "fix the YAML syntax (indent with spaces, quote values containing ': ' or '#')") from None
    except yaml.YAMLError as err:
        raise SpaceError(file, 1, "(document)", f"invalid YAML: {err}", "fix the YAML syntax") from None
    except RecursionError:
        raise SpaceError(file, 1, "(document)", "the document nests too deeply",
                         "flatten it") from None
    finally:
        loader.dispose()
    if not isinstance(data, LocDict):
        raise SpaceError(file, getattr(data, "line", 1), "(document)",
                         f"the document is {'a list' if isinstance(data, list) else type(data).__name__ + ' ' + repr(data)[:40]}, not a mapping",
                         "write `key: value` pairs at the top level")
    return data
