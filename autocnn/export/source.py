"""Collect the source of everything some autocnn code needs, rewritten to run with torch alone.

`Collector` starts from top-level definitions and follows every global name through each module's
own top-level bindings (defs, classes, assignments, imports, package re-exports), so code added
later is found the way Python finds it, without a list of files to keep. Each definition is taken
verbatim from its file, with the few rewrites a file outside autocnn needs:

- annotations go (they name autocnn types and `typing`); the code never reads them;
- `@REGISTRY.register(...)` decorators go, and a registry becomes a plain dict of the members the
  caller wants (`REGISTRY.get(name)` becomes `REGISTRY[name]`); members are written as the name of
  their def or class, a lambda's text, a literal, or a record call;
- a dataclass becomes a read-only namedtuple record with the same fields and defaults, its dataclass
  bases, and the methods and class attributes the collected code reads (`x.name`);
- class attributes bound at import time outside the class body (the facts `load_block` binds from a
  catalog entry) are written into the body;
- imports of autocnn modules go (`module.name` becomes `name`); torch and standard-library imports
  are gathered for the top of the file; anything else cannot be exported;
- two definitions that share a name: the one more code reads keeps it, the other is renamed
  (`catalog.BLOCKS` becomes `CATALOG_BLOCKS` beside the layers' `BLOCKS`).

`ordered` puts the units in an order Python can execute (whatever a definition needs at definition
time comes before it), grouped by module in dependency order.
"""
from __future__ import annotations

import ast
import builtins
import dataclasses
import functools
import importlib
import importlib.util
import sys
import typing
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable

from autocnn.export.errors import CodegenError
from autocnn.registry import Registry

PACKAGE = "autocnn"
WIDTH = 100  # generated lines longer than this are wrapped where the generator writes them
MAX_PASSES = 10  # `gather` passes; two or three suffice
STANDALONE_ROOTS = frozenset({"torch"})  # besides the standard library

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp, ast.SetComp,
           ast.DictComp, ast.GeneratorExp)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclass
class Unit:
    """One top-level statement of the generated file (or an import line, `kind == "import"`)."""

    key: tuple
    kind: str  # "code" | "registry" | "record" | "import"
    name: str  # the name it binds in the generated file ("" for imports)
    module: str  # the autocnn module its source comes from ("" when generated)
    text: str = ""
    hard: list[tuple] = field(default_factory=list)  # keys needed when this statement runs
    soft: list[tuple] = field(default_factory=list)  # keys needed only when its functions run
    strings: set[str] = field(default_factory=set)  # string constants in its code
    attributes: set[str] = field(default_factory=set)  # attribute names it reads (`x.name`)
    line: int = 0  # where it starts in its module (0: generated)
    definition: bool = False  # a def or class (not an assignment)


@dataclass(frozen=True)
class _Module:
    name: str
    data: bytes
    line_starts: tuple[int, ...]
    tree: ast.Module
    bindings: dict[str, tuple[ast.stmt, ast.alias | None]]  # last top-level binding of each name

    def offset(self, line: int, col: int) -> int:
        return self.line_starts[line - 1] + col

    def line(self, line: int) -> bytes:
        return self.data[self.line_starts[line - 1]:self.line_starts[line]]


@functools.lru_cache(maxsize=None)
def _module(name: str) -> _Module:
    module = importlib.import_module(name)
    path = getattr(module, "__file__", None)
    if not path or not path.endswith(".py"):
        raise CodegenError(f"cannot read the source of {name}: it has no .py file")
    with open(path, "rb") as fh:
        data = fh.read()
    starts = [0]
    for line in data.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    tree = ast.parse(data, filename=path)
    bindings: dict[str, tuple[ast.stmt, ast.alias | None]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bindings[node.name] = (node, None)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name_node in ast.walk(target):
                    if isinstance(name_node, ast.Name):
                        bindings[name_node.id] = (node, None)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                if bound != "*":
                    bindings[bound] = (node, alias)
    return _Module(name, data, tuple(starts), tree, bindings)


def _is_autocnn(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def _check_standalone(module: str, user: str) -> None:
    root = module.split(".")[0]
    if root not in STANDALONE_ROOTS and root not in sys.stdlib_module_names:
        raise CodegenError(f"{user} imports {module}, which a standalone model.py cannot: it may use only "
                           "torch and the standard library")


@dataclass(frozen=True)
class _Ref:
    """What a global name stands for; `key` identifies the unit it becomes."""

    kind: str  # "code" | "registry" | "record" | "module" | "import"
    module: str = ""
    name: str = ""
    text: str = ""  # import statement

    @property
    def key(self) -> tuple:
        return ("import", self.text) if self.kind == "import" else (self.kind, self.module, self.name)


def _absolute(module: _Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module
    package = module.name if _is_package(module.name) else module.name.rpartition(".")[0]
    return importlib.util.resolve_name("." * node.level + (node.module or ""), package)


def _is_package(name: str) -> bool:
    return hasattr(sys.modules[name], "__path__")


def _resolve_import(module: str, node: ast.Import | ast.ImportFrom, alias: ast.alias, user: str) -> _Ref:
    """What `alias` of an import statement in `module` binds."""
    if isinstance(node, ast.Import):
        target = alias.name if alias.asname else alias.name.split(".")[0]
        if _is_autocnn(target):
            return _Ref("module", target)
        _check_standalone(alias.name, user)
        return _Ref("import", name=alias.asname or target,
                    text=f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else ""))
    source = _absolute(_module(module), node)
    if not _is_autocnn(source):
        _check_standalone(source, user)
        return _Ref("import", name=alias.asname or alias.name, text=f"from {source} import {alias.name}"
                    + (f" as {alias.asname}" if alias.asname and alias.asname != alias.name else ""))
    if isinstance(getattr(importlib.import_module(source), alias.name, None), ModuleType):
        return _Ref("module", f"{source}.{alias.name}")
    if alias.asname and alias.asname != alias.name:
        raise CodegenError(f"{module} imports {alias.name} as {alias.asname}; the export writes one name "
                           "per definition, so import it under its own name")
    ref = resolve(source, alias.name)
    if ref is None:
        raise CodegenError(f"{module} imports {alias.name} from {source}, which does not define it")
    return ref


def resolve(module: str, name: str) -> _Ref | None:
    """What the top-level `name` of `module` stands for (None when the module does not bind it)."""
    binding = _module(module).bindings.get(name)
    if binding is None:
        return None
    node, alias = binding
    if alias is not None:
        return _resolve_import(module, node, alias, f"{module}.{name}")
    value = getattr(sys.modules[module], name, None)
    if isinstance(value, Registry):
        return _Ref("registry", module, name)
    if isinstance(value, type) and dataclasses.is_dataclass(value):
        return _Ref("record", module, name)
    return _Ref("code", module, name)


def ref_of(obj: Any) -> _Ref:
    """The reference for a top-level function or class (a registry member)."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    if module is None or "." in qualname or "<" in qualname:
        raise CodegenError(f"{obj!r} is not a top-level function or class, so its source cannot be exported")
    ref = resolve(module, qualname)
    if ref is None or getattr(sys.modules[module], qualname, None) is not obj:
        raise CodegenError(f"{module}.{qualname} is not bound at the top level of its module")
    return ref


# -- reading one statement ---------------------------------------------------------------------------

class _Reads(ast.NodeVisitor):
    """The global names a statement reads, each with whether it is read when the statement runs (hard)
    or only when a function it defines is called (soft). Annotations and skipped nodes are not visited."""

    def __init__(self, skip: set[int], imported: set[str]) -> None:
        self.skip = skip  # ids of nodes to leave out (decorators and imports that are removed)
        self.imported = imported  # names bound by removed function-level imports: read as globals
        self.scopes: list[tuple[str, set[str]]] = []
        self.hard = True
        self.reads: list[tuple[ast.Name, bool]] = []

    def visit(self, node):
        if id(node) not in self.skip:
            super().visit(node)

    def _local(self, name: str) -> bool:
        if name in self.imported:
            return False
        for i, (kind, names) in enumerate(self.scopes):
            if name in names and (kind != "class" or i == len(self.scopes) - 1):
                return True
        return False

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load) and not self._local(node.id):
            self.reads.append((node, self.hard))

    def _function(self, node, body: list[ast.AST]) -> None:
        args = node.args
        for default in args.defaults + [d for d in args.kw_defaults if d is not None]:
            self.visit(default)
        names = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
        names |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
        self.scopes.append(("function", names | _stored(body)))
        hard, self.hard = self.hard, False
        for stmt in body:
            self.visit(stmt)
        self.hard = hard
        self.scopes.pop()

    def visit_FunctionDef(self, node) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        self._function(node, node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._function(node, [node.body])

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for child in node.decorator_list + node.bases + [k.value for k in node.keywords]:
            self.visit(child)
        self.scopes.append(("class", _stored(node.body)))
        for stmt in node.body:
            self.visit(stmt)
        self.scopes.pop()

    def _comprehension(self, node) -> None:
        self.scopes.append(("function", {n.id for g in node.generators for n in ast.walk(g.target)
                                         if isinstance(n, ast.Name)}))
        self.generic_visit(node)
        self.scopes.pop()

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.target)
        if node.value is not None:
            self.visit(node.value)


# Per top-level statement of a parsed module (`_module` keeps every tree alive, so ids stay unique): an
# export walks the same statements in each of `gather`'s passes and each export walks them again.
_WALKS: dict[int, tuple[list[ast.AST], dict[int, ast.AST]]] = {}
_READS: dict[tuple[int, frozenset, frozenset], list[tuple[ast.Name, bool]]] = {}


def _walked(node: ast.AST) -> tuple[list[ast.AST], dict[int, ast.AST]]:
    """Every node under `node` (`ast.walk` order) and each one's parent, by id."""
    if id(node) not in _WALKS:
        nodes = list(ast.walk(node))
        _WALKS[id(node)] = nodes, {id(child): parent for parent in nodes for child in ast.iter_child_nodes(parent)}
    return _WALKS[id(node)]


def _reads(node: ast.AST, skip: frozenset, imported: frozenset) -> list[tuple[ast.Name, bool]]:
    """`_Reads(skip, imported).reads` of `node`, computed once."""
    key = (id(node), skip, imported)
    if key not in _READS:
        reads = _Reads(set(skip), set(imported))
        reads.visit(node)
        _READS[key] = reads.reads
    return _READS[key]


def _stored(body: list[ast.AST]) -> set[str]:
    """Names a scope binds itself (not inside nested functions, classes or comprehensions)."""
    names: set[str] = set()
    todo = list(body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        if isinstance(node, (ast.Lambda, *_COMPREHENSIONS)):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {a.asname or a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.Global):
            continue
        todo.extend(ast.iter_child_nodes(node))
    return names


class _Edits:
    """Byte-range replacements in one module's file, applied to the span of one unit."""

    def __init__(self, module: _Module) -> None:
        self.module = module
        self.items: list[tuple[int, int, str]] = []

    def replace(self, start: int, end: int, text: str) -> None:
        self.items.append((start, end, text))

    def at(self, node: ast.AST, end: bool = False) -> int:
        if end:
            return self.module.offset(node.end_lineno, node.end_col_offset)
        return self.module.offset(node.lineno, node.col_offset)

    def delete_lines(self, node: ast.AST, blank_after: bool = False) -> None:
        """Remove the whole lines of a statement (or decorator, with its `@`), and the blank line
        after it if asked (an import that opened a function body)."""
        start = self.module.line_starts[node.lineno - 1]
        end = node.end_lineno
        if blank_after and end < len(self.module.line_starts) - 1 and not self.module.line(end + 1).strip():
            end += 1
        self.replace(start, self.module.line_starts[end], "")

    def apply(self, start: int, end: int) -> str:
        data = self.module.data
        out, pos = [], start
        for a, b, text in sorted(self.items):
            if a < pos:
                raise CodegenError(f"overlapping rewrites in {self.module.name}; simplify the code near byte {a}")
            out += [data[pos:a].decode(), text]
            pos = b
        out.append(data[pos:end].decode())
        return "".join(out)


def _find(data: bytes, token: bytes, start: int) -> int:
    """The offset of `token` after `start`, skipping whitespace, closing brackets and line joins."""
    pos = start
    while data[pos:pos + len(token)] != token:
        if data[pos:pos + 1] not in b" \t\r\n\\)":
            raise CodegenError(f"cannot find {token.decode()!r} where an annotation ends")
        pos += 1
    return pos


def _strip_annotations(tree: ast.AST, edits: _Edits, removed: set[int]) -> None:
    data = edits.module.data
    for node in _walked(tree)[0]:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = args.posonlyargs + args.args
            defaults = dict(zip(map(id, positional[len(positional) - len(args.defaults):]), args.defaults))
            defaults.update((id(a), d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None)
            for arg in positional + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a]:
                if arg.annotation is None:
                    continue
                name_end = edits.at(arg) + len(arg.arg.encode())
                ann_end = edits.at(arg.annotation, end=True)
                if id(arg) in defaults:
                    eq = _find(data, b"=", ann_end)
                    value = edits.at(defaults[id(arg)])
                    edits.replace(name_end, max(eq + 1, min(value, _skip_space(data, eq + 1))), "=")
                else:
                    edits.replace(name_end, ann_end, "")
            if node.returns is not None:
                arrow = data.rindex(b"->", 0, edits.at(node.returns))
                while data[arrow - 1:arrow] in (b" ", b"\t"):
                    arrow -= 1
                edits.replace(arrow, edits.at(node.returns, end=True), "")
        elif isinstance(node, ast.AnnAssign):
            if node.value is not None:
                eq = _find(data, b"=", edits.at(node.annotation, end=True))
                edits.replace(edits.at(node.target, end=True), eq + 1, " =")
            else:
                edits.delete_lines(node)
                removed.add(id(node))


def _skip_space(data: bytes, pos: int) -> int:
    while data[pos:pos + 1] in (b" ", b"\t"):
        pos += 1
    return pos


def _fill_emptied(tree: ast.AST, edits: _Edits, removed: set[int]) -> None:
    """A body whose statements were all removed gets a `pass`."""
    for node in _walked(tree)[0]:
        for attr in ("body", "orelse", "finalbody"):
            body = getattr(node, attr, None)
            if isinstance(body, list) and body and all(id(s) in removed for s in body):
                first = body[0]
                indent = " " * first.col_offset
                start = edits.module.line_starts[first.lineno - 1]
                edits.replace(start, start, f"{indent}pass\n")


def _span(module: _Module, node: ast.stmt) -> tuple[int, int]:
    """Whole lines of a top-level statement, with its decorators and the comment lines just above."""
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    while first > 1 and module.line(first - 1).lstrip().startswith(b"#"):
        first -= 1
    return module.line_starts[first - 1], module.line_starts[node.end_lineno]


# -- collecting -------------------------------------------------------------------------------------

class Collector:
    """Gathers units from roots.

    `strings` picks the registry members to keep (those whose names it holds) and `attributes` the
    methods of a dataclass to keep on its record (those read as `x.name` somewhere); `gather` grows
    both from the collected code until they stop changing. `overrides` maps top-level names of
    `override_module` to the source text that replaces their values (the exported network's
    constants); `reader` names the function records use to read nested plain data.
    """

    def __init__(self, strings: set[str], attributes: set[str] = frozenset(), overrides: dict[str, str] | None = None,
                 override_module: str = "", reader: tuple[str, str] | None = None,
                 preferred: dict[str, tuple] | None = None) -> None:
        self.wanted_strings = strings
        self.wanted_attributes = attributes
        self.overrides = overrides or {}
        self.override_module = override_module
        self.reader = reader
        self.units: dict[tuple, Unit] = {}
        self.order: list[tuple] = []  # depth-first post-order: what each unit needs comes before it
        self._active: set[tuple] = set()
        self._refs: dict[tuple, _Ref] = {}
        self._names: dict[tuple, str] = {}
        self._taken: dict[str, tuple] = {}
        self.preferred = preferred or {}  # name -> the definition that keeps it when several want it
        self.clashes: dict[str, list[tuple]] = {}  # name -> every definition that wanted it
        self.uses: dict[tuple, int] = {}  # how many units read each definition

    # -- public ------------------------------------------------------------------------------------
    def add(self, ref: _Ref) -> tuple:
        key = ref.key
        if key in self.units or key in self._active:
            return key
        self._active.add(key)
        self.name_of(ref)
        unit = self._make(ref)
        for dep in unit.hard + unit.soft:
            self.add(self._refs[dep])
        self._active.discard(key)
        self.units[key] = unit
        self.order.append(key)
        return key

    def add_module(self, module: str) -> None:
        """Collect every top-level definition of `module` (not what it merely imports)."""
        for name, (_, alias) in _module(module).bindings.items():
            if alias is None:
                self.add(resolve(module, name))

    def strings(self) -> set[str]:
        return set().union(set(), *(u.strings for u in self.units.values()))

    def attributes(self) -> set[str]:
        return set().union(set(), *(u.attributes for u in self.units.values()))

    def name_of(self, ref: _Ref) -> str:
        """The name `ref` has in the generated file: its own, unless another definition took it first
        (then `module_name`, as `catalog.BLOCKS` becomes `CATALOG_BLOCKS` beside the layers' `BLOCKS`)."""
        key = ref.key
        if key in self._names:
            return self._names[key]
        name = ref.name
        wanting = self.clashes.setdefault(name, [])
        if key not in wanting:
            wanting.append(key)
        if name in self._taken or self.preferred.get(name, key) != key:
            if ref.kind == "import":
                raise CodegenError(f"the import {ref.text!r} clashes with a definition named {name!r}")
            tail = ref.module.rpartition(".")[2]
            base = f"{tail.upper()}_{name}" if name.isupper() else f"{tail}_{name.lstrip('_')}"
            name, n = base, 2
            while name in self._taken:
                name, n = f"{base}{n}", n + 1
        self._taken[name] = key
        self._names[key] = name
        return name

    # -- making units ----------------------------------------------------------------------------
    def _make(self, ref: _Ref) -> Unit:
        if ref.kind == "import":
            return Unit(ref.key, "import", ref.name, "", ref.text)
        if ref.module == self.override_module and ref.name in self.overrides:
            return self._override(ref)
        if ref.kind == "registry":
            return self._registry(ref)
        if ref.kind == "record":
            return self._record(ref)
        if ref.kind == "code":
            return self._code(ref)
        raise CodegenError(f"cannot export {ref.module}.{ref.name} ({ref.kind})")

    def _depend(self, unit: Unit, ref: _Ref, hard: bool) -> str:
        """Record that `unit` needs `ref`; returns the name to write for it."""
        self._refs[ref.key] = ref
        if ref.key not in unit.hard and ref.key not in unit.soft:
            self.uses[ref.key] = self.uses.get(ref.key, 0) + 1
        if ref.key not in unit.hard:
            if hard:
                unit.hard.append(ref.key)
                if ref.key in unit.soft:
                    unit.soft.remove(ref.key)
            elif ref.key not in unit.soft:
                unit.soft.append(ref.key)
        return self.name_of(ref)

    def _code(self, ref: _Ref) -> Unit:
        module = _module(ref.module)
        node = module.bindings[ref.name][0]
        is_def = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        unit = Unit(ref.key, "code", self.name_of(ref), ref.module, line=node.lineno, definition=is_def)
        edits = _Edits(module)
        if unit.name != ref.name:
            self._rename(module, node, ref.name, unit.name, edits)
        if isinstance(node, ast.ClassDef):
            self._live_attributes(module, node, getattr(sys.modules[ref.module], ref.name), unit, edits)
        start, end = _span(module, node)
        unit.text = self._rewrite(module, node, unit, start, end, edits).rstrip() + "\n"
        return unit

    @staticmethod
    def _rename(module: _Module, node: ast.stmt, old: str, new: str, edits: _Edits) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            pos = module.data.index(old.encode(), module.offset(node.lineno, node.col_offset))
            if pos >= module.line_starts[node.lineno]:
                raise CodegenError(f"cannot rename {old} in {module.name}")
            edits.replace(pos, pos + len(old.encode()), new)
            return
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            for name_node in ast.walk(target):
                if isinstance(name_node, ast.Name) and name_node.id == old:
                    edits.replace(edits.at(name_node), edits.at(name_node, end=True), new)

    def _live_attributes(self, module: _Module, node: ast.ClassDef, cls: type, unit: Unit, edits: _Edits) -> None:
        """Class attributes set at import time outside the class body (`cls.kind = ...` by a loader)
        are written into the body, after the docstring, so the standalone class holds them too."""
        in_source = _stored(node.body)
        lines = []
        for attr, value in vars(cls).items():
            if attr.startswith("__") or attr.startswith("_abc") or attr in in_source:
                continue
            indent = node.body[0].col_offset
            lines.append(f"{attr} = {self._expression(value, unit, indent, indent + len(attr) + 3)}")
        if not lines:
            return
        first = node.body[0]
        indent = " " * first.col_offset
        text = "".join(f"{indent}{line}\n" for line in lines)
        if _is_docstring(first):
            pos = module.line_starts[first.end_lineno]
            text = "\n" + text
        else:
            pos = module.line_starts[first.lineno - 1]
            text += "\n"
        edits.replace(pos, pos, text)

    def _override(self, ref: _Ref) -> Unit:
        module = _module(ref.module)
        node = module.bindings[ref.name][0]
        start, _ = _span(module, node)
        head = module.data[start:module.line_starts[node.lineno - 1]].decode()
        tail = module.data[module.offset(node.end_lineno, node.end_col_offset):
                           module.line_starts[node.end_lineno]].decode()
        return Unit(ref.key, "code", self.name_of(ref), ref.module,
                    f"{head}{ref.name} = {self.overrides[ref.name]}{tail}", line=node.lineno)

    def _registry(self, ref: _Ref) -> Unit:
        registry: Registry = getattr(sys.modules[ref.module], ref.name)
        unit = Unit(ref.key, "registry", self.name_of(ref), ref.module, line=sys.maxsize)
        rows = [(member, self._expression(obj, unit, 4, 4 + len(_string(member)) + 2)) for member, obj in registry.items()
                if member in self.wanted_strings]
        body = "".join(f"    {_string(k)}: {v},\n" for k, v in rows)
        unit.text = f"{unit.name} = {{\n{body}}}\n" if rows else f"{unit.name} = {{}}\n"
        return unit

    def _expression(self, value: Any, unit: Unit, indent: int = 0, column: int = 0) -> str:
        """Source text for a live value: a literal, a lambda's text, the name of a top-level def or
        class, or a record call for a dataclass instance (its arguments wrapped when the call, starting
        at `column` of a line indented by `indent`, would run past WIDTH). Whatever it names is needed
        at once (hard)."""
        if value is None or isinstance(value, (bool, int, float, str)):
            return _plain(value)
        if isinstance(value, (tuple, list)):
            items = [self._expression(v, unit) for v in value]
            if isinstance(value, list):
                return "[" + ", ".join(items) + "]"
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{self._expression(k, unit)}: {self._expression(v, unit)}"
                                   for k, v in value.items()) + "}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            name = self._depend(unit, ref_of(type(value)), hard=True)
            args = [f"{f.name}={self._expression(getattr(value, f.name), unit)}" for f in dataclasses.fields(value)
                    if f.init and not _is_default(f, getattr(value, f.name))]
            return f"{name}({_wrapped(args, room=WIDTH - column - len(name) - 2, indent=indent)})"
        if getattr(value, "__name__", "") == "<lambda>":
            return self._lambda(value, unit)
        if isinstance(value, type) or callable(value):
            module = getattr(value, "__module__", "") or ""
            if _is_autocnn(module):
                return self._depend(unit, ref_of(value), hard=True)
            root = module.split(".")[0]
            _check_standalone(module, f"{unit.module}.{unit.name}")
            self._depend(unit, _Ref("import", name=root, text=f"import {root}"), hard=True)
            return f"{module}.{value.__qualname__}"
        raise CodegenError(f"{unit.module}.{unit.name} holds {value!r}, which cannot be written as source")

    def _lambda(self, obj: Callable, unit: Unit) -> str:
        module = _module(obj.__module__)
        line = obj.__code__.co_firstlineno
        found = [n for n in ast.walk(module.tree) if isinstance(n, ast.Lambda) and n.lineno == line]
        if len(found) != 1:
            raise CodegenError(f"cannot tell which lambda on line {line} of {module.name} is {obj!r}; "
                               "give it a def")
        node = found[0]
        edits = _Edits(module)
        return self._rewrite(module, node, unit, edits.at(node), edits.at(node, end=True), edits)

    def _record(self, ref: _Ref) -> Unit:
        """A dataclass as a namedtuple with the same fields (required ones first; records are built by
        keyword) and defaults, its dataclass bases, and the methods and class attributes the
        collected code reads."""
        cls = getattr(sys.modules[ref.module], ref.name)
        module = _module(ref.module)
        node = module.bindings[ref.name][0]
        unit = Unit(ref.key, "record", self.name_of(ref), ref.module, line=node.lineno, definition=True)
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # annotations that do not evaluate: no nested records then
            hints = {}
        fields = [f for f in dataclasses.fields(cls) if f.init]
        required = [f for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        optional = [f for f in fields if f not in required]
        defaults = [self._expression(f.default if f.default is not dataclasses.MISSING else f.default_factory(), unit)
                    for f in optional]
        nested = {}
        for f in fields:
            inner = _record_type(hints.get(f.name))
            if inner is not None:
                nested[f.name] = self._depend(unit, ref_of(inner), hard=True)
        bases = [self._depend(unit, ref_of(b), hard=True) for b in cls.__bases__ if dataclasses.is_dataclass(b)]
        self._depend(unit, _Ref("import", name="namedtuple", text="from collections import namedtuple"), hard=True)
        reader = self._depend(unit, _Ref("code", *self.reader), hard=False) if self.reader else None
        members = []
        generated = {"NESTED", "from_dict"}
        for stmt in node.body[1:] if _is_docstring(node.body[0]) else node.body:
            names = {stmt.name} if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) else (
                {t.id for t in stmt.targets if isinstance(t, ast.Name)} if isinstance(stmt, ast.Assign) else set())
            if names & self.wanted_attributes and not names & generated and not any(
                    n.startswith("__") for n in names):
                start, end = _span(module, stmt)
                members.append(self._rewrite(module, stmt, unit, start, end, _Edits(module)).rstrip() + "\n")
        doc = ast.get_docstring(node)
        summary = (doc or "").strip().splitlines()[0] if doc else f"autocnn's {ref.name}."
        field_names = _wrapped([_string(f.name) for f in required + optional], room=WIDTH // 2)
        head = (f"class {unit.name}(namedtuple({_string(unit.name)}, [{field_names}], "
                f"defaults=[{_wrapped(defaults, room=WIDTH // 2)}]){''.join(', ' + b for b in bases)}):\n"
                f'    """{summary}\n\n    A read-only record standing in for autocnn\'s dataclass."""\n')
        parts = [head]
        if reader:
            nested_src = "{" + ", ".join(f"{_string(k)}: {v}" for k, v in nested.items()) + "}"
            parts.append(f"    NESTED = {nested_src}\n\n"
                         "    @classmethod\n"
                         "    def from_dict(cls, data):\n"
                         f"        return cls(**{{key: {reader}(cls.NESTED.get(key), value) "
                         "for key, value in data.items()})\n")
        unit.text = "\n".join(parts + members)
        return unit

    # -- rewriting ---------------------------------------------------------------------------------
    def _rewrite(self, module: _Module, node: ast.AST, unit: Unit, start: int, end: int, edits: _Edits) -> str:
        skip: set[int] = set()
        removed: set[int] = set()
        imported: dict[str, _Ref] = {}
        nodes, parents = _walked(node)

        for inner in nodes:
            for decorator in getattr(inner, "decorator_list", []):
                if self._is_registration(module.name, decorator):
                    edits.delete_lines(decorator)
                    skip.add(id(decorator))
            if isinstance(inner, (ast.Import, ast.ImportFrom)) and inner is not node:
                refs = {a.asname or a.name.split(".")[0]: _resolve_import(module.name, inner, a, unit.name)
                        for a in inner.names}
                if all(r.kind != "import" for r in refs.values()):  # an autocnn import inside a function
                    imported.update(refs)
                    edits.delete_lines(inner, blank_after=True)
                    skip.add(id(inner))
                    removed.add(id(inner))
        _strip_annotations(node, edits, removed)
        _fill_emptied(node, edits, removed)

        for name_node, hard in _reads(node, frozenset(skip), frozenset(imported)):
            name = name_node.id
            ref = imported.get(name) or resolve(module.name, name)
            if ref is None:
                if not hasattr(builtins, name) and not (name.startswith("__") and name.endswith("__")):
                    raise CodegenError(f"{module.name}: the name {name!r} in {unit.name or 'a lambda'} is not "
                                       "defined at the top level of its module")
                continue
            parent = parents.get(id(name_node))
            start_at, outer = edits.at(name_node), name_node
            while ref.kind == "module":  # autocnn_module.name (or a.b.name) -> name
                if not isinstance(parent, ast.Attribute) or parent.value is not outer:
                    raise CodegenError(f"{module.name} uses the module {ref.module} other than as "
                                       f"`{name}.attribute`; import the names it needs")
                inner_ref = resolve(ref.module, parent.attr)
                if inner_ref is None:
                    raise CodegenError(f"{module.name} uses {ref.module}.{parent.attr}, which is not defined")
                ref, outer, parent = inner_ref, parent, parents.get(id(parent))
            written = self._depend(unit, ref, hard)
            if outer is not name_node or written != name:
                edits.replace(start_at, edits.at(outer, end=True), written)
            if ref.kind == "registry":
                self._registry_use(module, outer, parent, parents, edits)
        for inner in nodes:
            if id(inner) in skip:
                continue
            if isinstance(inner, ast.Constant) and isinstance(inner.value, str):
                unit.strings.add(inner.value)
            elif isinstance(inner, ast.Attribute):
                unit.attributes.add(inner.attr)
        return edits.apply(start, end)

    def _is_registration(self, module: str, decorator: ast.AST) -> bool:
        """`@NAME.register(...)` where NAME is a registry."""
        if not (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)
                and decorator.func.attr == "register" and isinstance(decorator.func.value, ast.Name)):
            return False
        ref = resolve(module, decorator.func.value.id)
        return ref is not None and ref.kind == "registry"

    @staticmethod
    def _registry_use(module: _Module, name_node: ast.AST, parent: ast.AST, parents: dict, edits: _Edits) -> None:
        """`REGISTRY.get(x)` -> `REGISTRY[x]`; reading it as a container (`in`, iteration, `.items()`)
        works on a dict as it is."""
        if not isinstance(parent, ast.Attribute) or parent.value is not name_node or parent.attr == "items":
            return
        call = parents.get(id(parent))
        if parent.attr != "get" or not (isinstance(call, ast.Call) and call.func is parent
                                        and len(call.args) == 1 and not call.keywords):
            raise CodegenError(f"{module.name} calls the registry method {parent.attr!r}; only "
                               "`REGISTRY.get(name)` can be exported (as a dict lookup)")
        edits.replace(edits.at(parent.value, end=True), edits.at(call.args[0]), "[")
        edits.replace(edits.at(call.args[0], end=True), edits.at(call, end=True), "]")


def gather(roots: Callable[[Collector], None], strings: set[str], **options: Any) -> Collector:
    """Collect from `roots` until the registry members and record methods it keeps, and the choice of
    which definition keeps a name two of them have, stop changing (kept code may name more members:
    a block's fixed `kind="standard"`)."""
    attributes: set[str] = set()
    preferred: dict[str, tuple] = {}
    for _ in range(MAX_PASSES):
        collector = Collector(strings, attributes, preferred=preferred, **options)
        roots(collector)
        # of two definitions with one name, the one more code reads keeps it (the layers' BLOCKS, not
        # the catalog's); the other is renamed
        clashes = {name: keys for name, keys in collector.clashes.items() if len(keys) > 1}
        grown = (strings | collector.strings(), attributes | collector.attributes(),
                 {name: max(keys, key=lambda k: collector.uses.get(k, 0)) for name, keys in clashes.items()})
        if grown == (strings, attributes, preferred):
            return collector
        strings, attributes, preferred = grown
    raise CodegenError(f"the code to export did not settle in {MAX_PASSES} passes; this is an autocnn bug")


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _is_default(f: dataclasses.Field, value: Any) -> bool:
    if f.default is not dataclasses.MISSING:
        return value is f.default or (type(value) is type(f.default) and value == f.default)
    if f.default_factory is not dataclasses.MISSING:
        return value == f.default_factory()
    return False


def _record_type(hint: Any) -> type | None:
    """The dataclass a field holds (directly or as a tuple of them), else None."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if len(args) == 1 and isinstance(args[0], type) and dataclasses.is_dataclass(args[0]):
            return args[0]
    return None


def _wrapped(items: list[str], room: int, indent: int = 0) -> str:
    """Comma-separated items: on one line when they fit in `room`, else packed into lines indented
    one level past `indent` (the closing bracket then starts the next line, at `indent`)."""
    flat = ", ".join(items)
    if len(flat) <= room:
        return flat
    pad = " " * (indent + 4)
    lines, line = [], ""
    for item in items:
        if line and len(pad) + len(line) + len(item) + 2 > WIDTH:
            lines.append(line)
            line = ""
        line += item + ", "
    lines.append(line)
    return "\n" + "".join(f"{pad}{entry.rstrip()}\n" for entry in lines) + " " * indent


def _string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _plain(value: Any) -> str:
    if isinstance(value, str):
        return _string(value)
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(map(_plain, value)) + ("," if len(value) == 1 else "") + ")"
    raise CodegenError(f"cannot write the default {value!r} into model.py")


def _module_order(collector: Collector) -> dict[str, int]:
    """Modules in dependency order (what a module's code uses comes first). A registry stands for the
    modules of its members, so a block module comes before the builder that looks blocks up."""
    units = collector.units

    def modules(key: tuple) -> list[str]:
        unit = units[key]
        if unit.kind == "import":
            return []
        if unit.kind == "registry":
            return [m for dep in unit.hard for m in modules(dep)]
        return [unit.module]

    edges: dict[str, list[str]] = {}
    for key in collector.order:
        unit = units[key]
        if unit.kind in ("code", "record"):
            targets = edges.setdefault(unit.module, [])
            targets += [m for dep in unit.hard + unit.soft for m in modules(dep) if m != unit.module]
    order: dict[str, int] = {}
    visiting: set[str] = set()

    def visit(module: str) -> None:
        if module in order or module in visiting:
            return
        visiting.add(module)
        for target in edges.get(module, []):
            visit(target)
        order[module] = len(order)

    for key in reversed(collector.order):
        for module in modules(key):
            visit(module)
    return order


def ordered(collector: Collector, rank: Callable[[Unit], int]) -> list[Unit]:
    """Units (imports excluded) by `rank`, then module dependency order and line; a registry's dict
    comes after its members. Moved only where a definition-time dependency would otherwise come later."""
    module_order = _module_order(collector)
    units = collector.units

    def place(unit: Unit) -> tuple:
        if unit.kind == "registry":
            modules = [unit.module] + [units[k].module for k in unit.hard]
            return rank(unit), max(module_order.get(m, 0) for m in modules), sys.maxsize
        return rank(unit), module_order.get(unit.module, 0), unit.line

    todo = sorted((u for u in units.values() if u.kind != "import"), key=place)
    done = {key for key, u in units.items() if u.kind == "import"}
    out: list[Unit] = []
    while todo:
        for i, unit in enumerate(todo):
            if all(dep in done for dep in unit.hard):
                out.append(todo.pop(i))
                done.add(unit.key)
                break
        else:
            raise CodegenError("definitions that need each other: " + ", ".join(u.name for u in todo))
    names: dict[str, tuple] = {}
    for unit in out:
        if names.setdefault(unit.name, unit.key) != unit.key:
            raise CodegenError(f"two different definitions are both named {unit.name!r} "
                               f"({names[unit.name][1]} and {unit.module}); rename one")
    return out
