"""Compiling a space file: every key, type, range, name and reference is checked at load time.

The YAML (read with line numbers by `yamlio`) becomes the node tree of `space` — dimensions,
constants, derived expressions, groups, lists and the genotype recipe — or a `SpaceError` naming
the file, the line and the key path of the first problem.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import re
from pathlib import Path
from typing import Any

from autocnn.genotype import Genotype
from autocnn.spaces.dimensions import Categorical, Dimension, Float, Int
from autocnn.spaces.errors import Loc, SpaceError
from autocnn.spaces.expr import Expr, ExprError
from autocnn.spaces.space import (DEFAULT_BASE_RESOLUTION, Const, Derived, DimNode, Group, ListNode, Recipe,
                                  SearchSpace)
from autocnn.spaces.yamlio import LocDict, LocList, read_yaml

# search_spaces/ of the checkout, through a link that wheels replace with a copy of its files
BUILTIN_DIR = (Path(__file__).resolve().parent / "builtin").resolve()
MAX_DEPTH = 40

TOP_KEYS = ("name", "description", "base_resolution", "constraints", "training", "params", "require", "record",
            "genotype", "presets", "start", "families")
FAMILY_KEYS = ("include", "description", "params", "require", "record", "genotype", "presets", "start", "families")
CONSTRAINT_KEYS = ("max_params", "max_flops", "max_latency_ms")
DIM_KINDS = ("choices", "int", "float")
GENOTYPE_FIELDS = tuple(f.name for f in dataclasses.fields(Genotype))
RECIPE_KEYS = ("preset", "generator", "args", "edit_stages", "scale") + GENOTYPE_FIELDS
SCALE_KEYS = ("width", "depth")
RESERVED = ("base_resolution", "native_resolution", "family")
GIVEN = {"base_resolution", "native_resolution"}  # names every expression may read: set by the run, not sampled
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EXPR = re.compile(r"^\$\{(.*)\}$", re.DOTALL)
_SCALARS = (str, int, float, bool, type(None))



# -- compiling a document ----------------------------------------------------------------------------

def builtin_dir() -> Path:
    return BUILTIN_DIR


class _Compiler:
    """Checks one file and compiles it; `stack` holds the files being included (cycle check)."""

    def __init__(self, file: str, stack: tuple[str, ...]) -> None:
        self.file = file
        self.stack = stack

    # -- helpers -------------------------------------------------------------------------------------
    def problems(self, d: LocDict, loc: Loc) -> None:
        if d.problems:
            key, line, problem, fix = d.problems[0]
            raise loc.child(key, line).error(problem, fix)

    def keys(self, d: Any, loc: Loc, allowed: tuple[str, ...], what: str) -> LocDict:
        if not isinstance(d, LocDict):
            raise loc.error(f"expected a mapping, got {_describe(d)}", f"write {what} as `key: value` lines")
        self.problems(d, loc)
        for key in d:
            if key not in allowed:
                raise loc.child(key, d.lines[key]).error(
                    f"unknown key {key!r} in {what}", f"use one of: {', '.join(allowed)}")
        return d

    def at(self, d: LocDict, loc: Loc, key: str) -> Loc:
        return loc.child(key, d.lines.get(key, loc.line))

    def plain(self, value: Any, loc: Loc, depth: int = 0) -> Any:
        """A constant: LocDict/LocList -> dict/list of scalars, checking types and expressions."""
        if depth > MAX_DEPTH:
            raise loc.error("nested too deeply", f"nest at most {MAX_DEPTH} levels")
        if isinstance(value, LocDict):
            self.problems(value, loc)
            return {k: self.plain(v, loc.child(k, value.lines[k]), depth + 1) for k, v in value.items()}
        if isinstance(value, LocList):
            return [self.plain(v, loc.child(i, value.lines[i]), depth + 1) for i, v in enumerate(value)]
        if isinstance(value, _SCALARS):
            return value
        raise loc.error(f"unsupported value {_describe(value)}",
                        "use numbers, strings, true/false, null, lists or mappings")

    def string(self, d: LocDict, loc: Loc, key: str) -> str:
        value = d[key]
        if not isinstance(value, str):
            raise self.at(d, loc, key).error(f"expected a string, got {_describe(value)}", "quote it")
        return value

    def number(self, value: Any, loc: Loc, *, integer: bool = False, positive: bool = False) -> float:
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if not ok or isinstance(value, bool) or (positive and not value > 0) or value != value:
            kind = "an integer" if integer else "a number"
            raise loc.error(f"expected {kind}{' > 0' if positive else ''}, got {_describe(value)}",
                            f"write {kind}{' greater than 0' if positive else ''}")
        return value

    # -- documents -----------------------------------------------------------------------------------
    def document(self, d: Any, *, name: str, top: bool = True, root: Loc | None = None) -> SearchSpace:
        root = root or Loc(self.file, getattr(d, "line", 1), "")
        allowed = TOP_KEYS if top else FAMILY_KEYS
        d = self.keys(d, root, allowed, "a search space" if top else "a family")
        if not top and "include" in d:
            if len(d) > 1:
                other = next(k for k in d if k != "include")
                raise self.at(d, root, other).error("a family with `include` takes no other keys",
                                                    "move the other keys into the included file")
            return self.include(self.string(d, root, "include"), self.at(d, root, "include"))
        if "name" in d:
            name = self.string(d, root, "name")
        description = self.string(d, root, "description") if "description" in d else ""
        base_resolution = DEFAULT_BASE_RESOLUTION
        if "base_resolution" in d:
            base_resolution = self.number(d["base_resolution"], self.at(d, root, "base_resolution"),
                                          integer=True, positive=True)
        constraints = {}
        if "constraints" in d:
            cloc = self.at(d, root, "constraints")
            c = self.keys(d["constraints"], cloc, CONSTRAINT_KEYS, "constraints")
            constraints = {k: self.number(v, cloc.child(k, c.lines[k]), positive=True) for k, v in c.items()}
        training = self.training(d["training"], self.at(d, root, "training")) if "training" in d else {}
        common = dict(name=name, path=self.file, description=description,
                      base_resolution=base_resolution, constraints=constraints, training=training)
        if "families" in d:
            for other in ("params", "genotype", "require", "record", "presets", "start"):
                if other in d:
                    raise self.at(d, root, other).error(
                        "a union space (`families`) has no keys of its own besides name, description, "
                        "base_resolution and constraints", "move it into one of the families")
            return SearchSpace(families=self.families(d["families"], self.at(d, root, "families")), **common)
        if "genotype" not in d:
            raise root.child("genotype", d.line).error("missing the genotype recipe",
                                                       "add `genotype:` (with `preset`, `generator` or `stages`)")
        dims: dict[str, Dimension] = {}
        params, defined = (Group([], root), set())
        if "params" in d:
            params, defined = self.group(d["params"], self.at(d, root, "params"), [set(GIVEN)], dims, "")
        visible = [GIVEN | defined]
        require = []
        if "require" in d:
            rloc = self.at(d, root, "require")
            if not isinstance(d["require"], LocList):
                raise rloc.error(f"expected a list of expressions, got {_describe(d['require'])}",
                                 "write `- alpha * beta ** 2 <= 2` items")
            for i, src in enumerate(d["require"]):
                iloc = rloc.child(i, d["require"].lines[i])
                if not isinstance(src, str):
                    raise iloc.error(f"expected an expression, got {_describe(src)}", "quote the expression")
                match = _EXPR.match(src.strip())
                require.append(self.expr(match.group(1) if match else src, iloc, visible))
        record = []
        if "record" in d:
            rloc = self.at(d, root, "record")
            if not isinstance(d["record"], LocList):
                raise rloc.error(f"expected a list of names, got {_describe(d['record'])}", "write `[gamma, width]`")
            for i, item in enumerate(d["record"]):
                if not isinstance(item, str) or item not in visible[0] or item in RESERVED:
                    raise rloc.child(i, d["record"].lines[i]).error(
                        f"{item!r} is not a value of `params`", "record names defined under params")
                record.append(item)
        recipe = self.recipe(d["genotype"], self.at(d, root, "genotype"), visible)
        presets = self.presets(d["presets"], self.at(d, root, "presets"), dims) if "presets" in d else {}
        start = self.start(d["start"], self.at(d, root, "start"), dims) if "start" in d else []
        return SearchSpace(params=params, require=require, record=record, recipe=recipe, presets=presets,
                           start=start, dimensions=dims, **common)

    def training(self, d: Any, loc: Loc) -> dict[str, Any]:
        """The space's training recipe (`autocnn.training.RECIPE_FIELDS`): a search of this space trains with it
        unless a recipe file or a flag says otherwise."""
        from autocnn.training.config import RecipeError, check_recipe  # torch only for spaces that set a recipe

        if not isinstance(d, LocDict):
            raise loc.error(f"expected a mapping of recipe fields, got {_describe(d)}", "write `label_smoothing: 0.1`")
        try:
            return check_recipe(dict(d), "training")
        except RecipeError as err:
            where = loc.child(err.field, d.lines[err.field]) if err.field in d else loc
            raise where.error(str(err).removeprefix("training: "),
                              "see `autocnn search --help` for the recipe fields") from None

    def include(self, target: str, loc: Loc) -> SearchSpace:
        if target in builtin_spaces():
            path = BUILTIN_DIR / f"{target}.yaml"
        else:
            path = Path(self.file).parent / target
        path = path.resolve()
        if str(path) in self.stack:
            raise loc.error(f"including {target!r} forms a cycle ({' -> '.join(self.stack)})",
                            "remove the circular include")
        if not path.is_file():
            raise loc.error(f"cannot include {target!r}: no built-in space or file {path}",
                            f"use a built-in name ({', '.join(builtin_spaces())}) or a path relative to this file")
        return _load_file(path, self.stack)

    def families(self, d: Any, loc: Loc) -> dict[str, SearchSpace]:
        if not isinstance(d, LocDict) or not d:
            raise loc.error(f"expected a non-empty mapping of family name -> space, got {_describe(d)}",
                            "write `name: {include: other_space}` entries")
        self.problems(d, loc)
        out = {}
        for fam, value in d.items():
            floc = loc.child(fam, d.lines[fam])
            if not _NAME.match(fam):
                raise floc.error(f"family name {fam!r} is not a plain name", "use letters, digits and _")
            out[fam] = self.document(value, name=fam, top=False, root=floc)
        return out

    # -- params ----------------------------------------------------------------------------------------
    def group(self, d: Any, loc: Loc, visible: list[set[str]], dims: dict[str, Dimension],
              name: str, depth: int = 0) -> tuple[Group, set[str]]:
        if not isinstance(d, LocDict):
            raise loc.error(f"expected a mapping of name -> value, got {_describe(d)}",
                            "write `name: {choices: [...]}` lines")
        self.problems(d, loc)
        local: set[str] = set()
        owners: dict[str, str] = {}  # branch value name -> the dimension whose branches define it
        scope = visible + [local]
        items = []
        prefix = f"{name}." if name else ""
        for key, value in d.items():
            kloc = loc.child(key, d.lines[key])
            if not _NAME.match(key):
                raise kloc.error(f"{key!r} is not a plain name", "use letters, digits and _ (it is read in expressions)")
            if key in RESERVED or key in local:
                raise kloc.error(f"{key!r} is already defined here", "rename it")
            node = self.node(value, kloc, scope, dims, prefix + key, depth + 1)
            items.append((key, node))
            local.add(key)
            if isinstance(node, DimNode):
                for bkey in _branch_keys(node):
                    if bkey in d or owners.get(bkey, key) != key:
                        raise kloc.child("when").error(
                            f"branch value {bkey!r} clashes with {owners.get(bkey, bkey)!r} of the same group",
                            "rename it")
                    owners[bkey] = key
                    local.add(bkey)
        return Group(items, loc), local

    def node(self, value: Any, loc: Loc, visible: list[set[str]], dims: dict[str, Dimension] | None,
             name: str, depth: int = 0) -> Any:
        """Compile a params value (dims allowed) or, with dims=None, a recipe value (dims refused)."""
        if depth > MAX_DEPTH:
            raise loc.error("nested too deeply", f"nest at most {MAX_DEPTH} levels")
        if isinstance(value, LocDict):
            self.problems(value, loc)
            if any(k in value for k in DIM_KINDS):
                if dims is None:
                    raise loc.error("dimensions belong under `params`",
                                    "declare it there and write `${name}` here")
                return self.dimension(value, loc, visible, dims, name, depth)
            if dims is None:
                return Group([(k, self.node(v, loc.child(k, value.lines[k]), visible, None, "", depth + 1))
                              for k, v in value.items()], loc)
            return self.group(value, loc, visible, dims, name, depth)[0]
        if isinstance(value, LocList):
            return ListNode([self.node(v, loc.child(i, value.lines[i]), visible, dims, f"{name}.{i}", depth + 1)
                             for i, v in enumerate(value)], loc)
        if isinstance(value, str) and "${" in value:
            match = _EXPR.match(value.strip())
            if not match:
                raise loc.error(f"{value!r} mixes text and an expression",
                                "make the whole value one expression: '${...}'")
            return self.expr(match.group(1), loc, visible)
        return Const(self.plain(value, loc), loc)

    def expr(self, source: str, loc: Loc, visible: list[set[str]]) -> Derived:
        try:
            expr = Expr(source)
        except ExprError as err:
            raise loc.error(str(err), "write a Python-like expression over sampled values") from None
        known = set().union(*visible)
        unknown = sorted(expr.names - known)
        if unknown:
            raise loc.error(f"{unknown[0]!r} is not defined before this expression",
                            f"use a value defined above it ({', '.join(sorted(known)) or 'none yet'})")
        return Derived(expr, loc)

    def dimension(self, d: LocDict, loc: Loc, visible: list[set[str]], dims: dict[str, Dimension],
                  name: str, depth: int) -> DimNode:
        kinds = [k for k in DIM_KINDS if k in d]
        if len(kinds) > 1:
            raise self.at(d, loc, kinds[1]).error(f"a dimension has one kind, got {' and '.join(kinds)}",
                                                  "keep one of choices/int/float")
        kind = kinds[0]
        options = {"choices": ("choices", "when"), "int": ("int", "step", "log"), "float": ("float", "step", "log")}
        self.keys(d, loc, options[kind], f"{'an' if kind == 'int' else 'a'} {kind} dimension")
        kloc = self.at(d, loc, kind)
        log = False
        if "log" in d:
            log = d["log"]
            if not isinstance(log, bool):
                raise self.at(d, loc, "log").error(f"expected true or false, got {_describe(log)}", "write `log: true`")
        if kind == "choices":
            choices = d["choices"]
            if not isinstance(choices, LocList):
                raise kloc.error(f"expected a list of choices, got {_describe(choices)}", "write `choices: [a, b]`")
            if not choices:
                raise kloc.error("empty choices", "list at least one value")
            seen = []
            for i, c in enumerate(choices):
                cloc = kloc.child(i, choices.lines[i])
                if not isinstance(c, _SCALARS):
                    raise cloc.error(f"a choice must be a number, string, bool or null, got {_describe(c)}",
                                     "encode structured choices as names and derive the structure with ${...}")
                if isinstance(c, str) and "${" in c:
                    raise cloc.error("choices are constants", "derive values from the choice with ${...} instead")
                if any(c == s and type(c) is type(s) for s in seen) or any(c == s for s in seen):
                    raise cloc.error(f"choice {c!r} is listed twice", "remove the duplicate")
                seen.append(c)
            dim: Dimension = Categorical(tuple(seen))
        else:
            bounds = d[kind]
            integer = kind == "int"
            if not isinstance(bounds, LocList) or len(bounds) != 2:
                raise kloc.error(f"expected [low, high], got {_describe(bounds)}", f"write `{kind}: [low, high]`")
            low, high = (self.number(b, kloc.child(i, bounds.lines[i]), integer=integer) for i, b in enumerate(bounds))
            if low > high:
                raise kloc.error(f"low {low} is above high {high}", "swap the bounds")
            step = None if not integer else 1
            if "step" in d:
                step = self.number(d["step"], self.at(d, loc, "step"), integer=integer, positive=True)
                if log:
                    raise self.at(d, loc, "step").error("`step` and `log` cannot be combined", "drop one of them")
                if integer and (high - low) % step:
                    raise self.at(d, loc, "step").error(f"{high} - {low} is not a multiple of step {step}",
                                                        "make high = low + k * step")
            if log and not low > 0:
                raise kloc.error(f"a log dimension needs low > 0, got {low}", "raise the low bound")
            dim = Int(int(low), int(high), int(step), log) if integer else Float(float(low), float(high),
                                                                                 None if step is None else float(step), log)
        previous = dims.get(name)
        if previous is not None and previous != dim:
            raise loc.error(f"parameter {name!r} is declared twice with different values ({previous} vs {dim})",
                            "give one of them another name")
        dims[name] = dim
        node = DimNode(dim, loc)
        if "when" in d:
            wloc = self.at(d, loc, "when")
            when = d["when"]
            if not isinstance(when, LocDict):
                raise wloc.error(f"expected a mapping of choice -> sub-space, got {_describe(when)}",
                                 "write `when: {choice: {name: dimension}}`")
            self.problems(when, wloc)
            parent = name.rsplit(".", 1)[0] + "." if "." in name else ""
            for key, sub in when.items():
                bloc = wloc.child(key, when.lines[key])
                choice = _match_choice(key, dim.choices)
                if choice is _MISSING:
                    raise bloc.error(f"{key!r} is not one of the choices {list(dim.choices)}",
                                     "key `when` branches by a listed choice")
                node.branches[choice] = self.group(sub, bloc, visible + [{name.rsplit('.', 1)[-1]}], dims,
                                                   f"{parent}{choice}", depth + 1)[0]
        return node

    # -- genotype recipe -----------------------------------------------------------------------------
    def recipe(self, d: Any, loc: Loc, visible: list[set[str]]) -> Recipe:
        from autocnn.presets import PRESETS
        from autocnn.spaces.generators import GENERATORS

        d = self.keys(d, loc, RECIPE_KEYS, "the genotype recipe")
        recipe = Recipe(loc)
        if "preset" in d and "generator" in d:
            raise self.at(d, loc, "generator").error("give `preset` or `generator`, not both", "drop one")
        if "preset" in d:
            recipe.preset = self.string(d, loc, "preset")
            if recipe.preset not in PRESETS:
                raise self.at(d, loc, "preset").error(f"unknown preset {recipe.preset!r}",
                                                      f"choose from {', '.join(PRESETS.names())}")
        if "generator" in d:
            recipe.generator = self.string(d, loc, "generator")
            if recipe.generator not in GENERATORS:
                raise self.at(d, loc, "generator").error(f"unknown generator {recipe.generator!r}",
                                                         f"choose from {', '.join(GENERATORS.names())}")
        if "args" in d:
            aloc = self.at(d, loc, "args")
            if recipe.generator is None:
                raise aloc.error("`args` are a generator's arguments", "add `generator:` or drop `args`")
            args = d["args"]
            if not isinstance(args, LocDict):
                raise aloc.error(f"expected a mapping, got {_describe(args)}", "write `name: value` lines")
            self.problems(args, aloc)
            signature = inspect.signature(GENERATORS.get(recipe.generator))
            for key in args:
                try:
                    signature.bind_partial(**{key: None})
                except TypeError:
                    raise aloc.child(key, args.lines[key]).error(
                        f"generator {recipe.generator!r} takes no argument {key!r}",
                        f"use one of: {', '.join(signature.parameters)}") from None
            recipe.args = self.node(args, aloc, visible, None, "")
        if recipe.preset is None and recipe.generator is None and "stages" not in d:
            raise loc.error("no base for the genotype", "give `preset`, `generator` or `stages`")
        for key in GENOTYPE_FIELDS:
            if key in d:
                recipe.fields[key] = self.node(d[key], self.at(d, loc, key), visible, None, "")
        if "edit_stages" in d:
            recipe.edit_stages = self.node(d["edit_stages"], self.at(d, loc, "edit_stages"), visible, None, "")
        if "scale" in d:
            sloc = self.at(d, loc, "scale")
            self.keys(d["scale"], sloc, SCALE_KEYS, "scale")
            recipe.scale = self.node(d["scale"], sloc, visible, None, "")
        return recipe

    def presets(self, d: Any, loc: Loc, dims: dict[str, Dimension]) -> dict[str, dict[str, Any]]:
        from autocnn.presets import PRESETS

        if not isinstance(d, LocDict):
            raise loc.error(f"expected a mapping of preset name -> parameter values, got {_describe(d)}",
                            "write `resnet18: {block: basic, ...}`")
        self.problems(d, loc)
        out = {}
        for preset, values in d.items():
            ploc = loc.child(preset, d.lines[preset])
            if preset not in PRESETS:
                raise ploc.error(f"unknown preset {preset!r}", f"choose from {', '.join(PRESETS.names())}")
            out[preset] = self.point(values, ploc, dims)
        return out

    def start(self, d: Any, loc: Loc, dims: dict[str, Dimension]) -> list[dict[str, Any]]:
        """The candidates a search tries first (parameter values, like a preset's), before its design's rungs."""
        if not isinstance(d, LocList):
            raise loc.error(f"expected a list of parameter mappings, got {_describe(d)}",
                            "write `- {stages: 3, width: 32, ...}` items")
        return [self.point(values, loc.child(i, d.lines[i]), dims) for i, values in enumerate(d)]

    def point(self, values: Any, loc: Loc, dims: dict[str, Dimension]) -> dict[str, Any]:
        """One point of the space as flat parameter -> value, each value one its dimension can suggest."""
        values = self.plain(values, loc)
        if not isinstance(values, dict):
            raise loc.error("expected a mapping of parameter -> value", "write `name: value` lines")
        flat: dict[str, Any] = {}
        _flatten(values, "", flat)
        for key, value in flat.items():
            if key not in dims:
                raise loc.child(key).error(f"{key!r} is not a parameter of this space",
                                           "use the key paths of `params` dimensions")
            if not dims[key].contains(value):
                raise loc.child(key).error(f"{value!r} is outside the dimension {dims[key]}",
                                           "use a value the dimension can suggest")
        return flat


_MISSING = object()


def _match_choice(key: str, choices: tuple) -> Any:
    import yaml

    for c in choices:
        if str(c) == key:
            return c
    try:
        parsed = yaml.safe_load(key)
    except yaml.YAMLError:
        return _MISSING
    for c in choices:
        if parsed == c and isinstance(parsed, _SCALARS):
            return c
    return _MISSING


def _branch_keys(node: DimNode) -> set[str]:
    return {k for branch in node.branches.values() for k, _ in branch.items}


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}{k}.", out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}{i}.", out)
    else:
        out[prefix[:-1]] = value


def _describe(value: Any) -> str:
    if isinstance(value, LocDict):
        return "a mapping"
    if isinstance(value, LocList):
        return f"a list of {len(value)}"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}"


# -- loading -------------------------------------------------------------------------------------------

def builtin_spaces() -> list[str]:
    """Names of the built-in spaces (the YAML files of the `search_spaces/` folder)."""
    if not BUILTIN_DIR.is_dir():
        return []
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def _load_file(path: Path, stack: tuple[str, ...] = ()) -> SearchSpace:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpaceError(file, 0, "(document)", f"cannot read the file: {err}", "check the path") from None
    return load_space_text(text, file, _stack=stack + (str(path.resolve()),))


def load_space_text(text: str, file: str = "<string>", *, _stack: tuple[str, ...] = ()) -> SearchSpace:
    """Compile a space from YAML text; `file` names it in error messages (includes resolve from its folder)."""
    data = read_yaml(text, file)
    try:
        return _Compiler(file, _stack).document(data, name=Path(file).stem)
    except RecursionError:
        raise SpaceError(file, 1, "(document)", "the space nests too deeply", "flatten it") from None


def load_space(name_or_path: str | os.PathLike | SearchSpace) -> SearchSpace:
    """A built-in space by name (see `builtin_spaces()`), or a space YAML file by path."""
    if isinstance(name_or_path, SearchSpace):
        return name_or_path
    text = os.fspath(name_or_path)
    if text in builtin_spaces() and not os.path.isfile(text):
        return _load_file(BUILTIN_DIR / f"{text}.yaml")
    path = Path(text)
    if path.is_file():
        return _load_file(path)
    raise SpaceError(text, 0, "space", "no built-in space or file of this name",
                     f"choose from {', '.join(builtin_spaces())} or give the path of a YAML file")
