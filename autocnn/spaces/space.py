"""A search space: YAML compiled into a tree of dimensions, derived values and a genotype recipe.

`SearchSpace.sample(trial)` walks the tree define-by-run: every dimension is one `trial.suggest_*`
call named by its key path, derived values are evaluated as soon as they are reached, and the
genotype recipe (a preset or generator, edits, compound scaling) turns the sampled values into a
`Genotype`. The tree is built, and everything that can be checked without a trial is checked, by
`compiler` when the file is loaded.
"""
from __future__ import annotations

import copy
from collections import ChainMap
from dataclasses import dataclass, field
from typing import Any, Mapping

from autocnn.genotype import Genotype, GenotypeError
from autocnn.spaces.dimensions import Categorical, Dimension, Float, Int
from autocnn.spaces.errors import Loc, SpaceError
from autocnn.spaces.expr import Expr, ExprError

DEFAULT_BASE_RESOLUTION = 32

# -- compiled nodes ----------------------------------------------------------------------------------

@dataclass
class Const:
    value: Any
    loc: Loc


@dataclass
class Derived:
    expr: Expr
    loc: Loc


@dataclass
class DimNode:
    dim: Dimension
    loc: Loc
    branches: dict[Any, "Group"] = field(default_factory=dict)


@dataclass
class Group:
    items: list[tuple[str, Any]]
    loc: Loc


@dataclass
class ListNode:
    items: list[Any]
    loc: Loc


def _sample(node: Any, trial: Any, name: str, scope: Mapping[str, Any]) -> Any:
    """Value of `node`: dimensions are suggested on `trial` under `name`, expressions see `scope`."""
    if isinstance(node, Const):
        return copy.deepcopy(node.value)
    if isinstance(node, Derived):
        try:
            return node.expr.evaluate(scope)
        except ExprError as err:
            raise node.loc.error(str(err), "fix the expression or the values it reads") from None
    if isinstance(node, DimNode):
        return node.dim.suggest(trial, name)
    if isinstance(node, ListNode):
        return [_sample(item, trial, f"{name}.{i}", scope) for i, item in enumerate(node.items)]
    return _sample_group(node, trial, name, scope)


def _sample_group(group: Group, trial: Any, name: str, scope: Mapping[str, Any]) -> dict[str, Any]:
    local: dict[str, Any] = {}
    chain = ChainMap(local, scope)
    prefix = f"{name}." if name else ""
    for key, node in group.items:
        value = _sample(node, trial, prefix + key, chain)
        local[key] = value
        if isinstance(node, DimNode) and node.branches:
            branch = node.branches.get(node.dim.canonical(value) if node.dim.contains(value) else value)
            if branch is not None:
                local.update(_sample_group(branch, trial, f"{prefix}{value}", chain))
    return local


# -- the genotype recipe -----------------------------------------------------------------------------

@dataclass
class Recipe:
    loc: Loc
    preset: str | None = None
    generator: str | None = None
    args: Group | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # Genotype field -> node
    edit_stages: Any = None
    scale: Group | None = None

    def build(self, scope: Mapping[str, Any], base_resolution: int) -> Genotype:
        from autocnn.presets import get_preset
        from autocnn.scaling import compound_scale
        from autocnn.spaces.generators import GENERATORS

        if self.preset:
            data = get_preset(self.preset).to_dict()
        elif self.generator:
            args = _tuples(_sample(self.args, None, "", scope)) if self.args else {}
            try:
                data = GENERATORS.get(self.generator)(**args).to_dict()
            except (GenotypeError, TypeError, ValueError, KeyError, IndexError, ArithmeticError) as err:
                raise self.loc.child("args").error(
                    f"generator {self.generator!r} failed on {args}: {err}",
                    "restrict the arguments to values the generator accepts") from None
        else:
            data = {}
        for name, node in self.fields.items():
            value = _sample(node, None, "", scope)
            if value is None:  # null keeps the base's value
                continue
            if name == "head" and isinstance(value, dict) and isinstance(data.get("head"), dict):
                value = {**data["head"], **value}
            data[name] = value
        if self.edit_stages is not None:
            self._edit(data, _sample(self.edit_stages, None, "", scope))
        if "resolution" not in self.fields:
            data["resolution"] = base_resolution
        try:
            g = Genotype.from_dict(data)
            if self.scale is not None:
                scale = _sample(self.scale, None, "", scope)
                for key, value in scale.items():
                    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
                        raise self.loc.child(f"scale.{key}").error(
                            f"scale factor {value!r} is not a positive number", "fix the expression")
                g = compound_scale(g, float(scale.get("width", 1.0)), float(scale.get("depth", 1.0)))
        except GenotypeError as err:
            raise self.loc.error(f"sampled an invalid genotype: {err}",
                                 "change the space so that every sample is a valid genotype") from None
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            if isinstance(err, SpaceError):
                raise
            raise self.loc.error(f"sampled an invalid genotype: {type(err).__name__}: {err}",
                                 "change the space so that every sample is a valid genotype") from None
        return g

    def _edit(self, data: dict, edits: Any) -> None:
        loc = self.loc.child("edit_stages")
        if isinstance(edits, list):
            pairs = list(enumerate(edits))
        elif isinstance(edits, dict):
            pairs = list(edits.items())
        else:
            raise loc.error(f"evaluates to {edits!r}", "give a list or a mapping of stage index -> changes")
        stages = data.get("stages")
        if not isinstance(stages, list):
            raise loc.error("there are no stages to edit", "give `preset`, `generator` or `stages` first")
        for index, change in pairs:
            if change is None:
                continue
            if isinstance(index, str) and index.isdigit():
                index = int(index)
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(stages):
                raise loc.error(f"stage index {index!r} is out of range (the base has {len(stages)} stages)",
                                f"use indices 0..{len(stages) - 1}")
            if not isinstance(change, dict) or not isinstance(stages[index], dict):
                raise loc.error(f"stage {index} change {change!r} is not a mapping",
                                "give `field: value` changes per stage")
            stages[index] = {**stages[index], **change}


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


# -- fixed parameters (warm starts) ------------------------------------------------------------------

class _Unfixed(Exception):
    """The fixed parameters do not cover (or do not fit) a dimension the sample reached."""


class AnsweringTrial:
    """A trial stand-in for `SearchSpace.sample` outside any study: `answer(name, dim)` gives each value;
    `params` collects what was answered (ready for `study.enqueue_trial`)."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.user_attrs: dict[str, Any] = {}

    def answer(self, name: str, dim: Dimension) -> Any:
        raise NotImplementedError

    def _take(self, name: str, dim: Dimension) -> Any:
        value = self.answer(name, dim)
        self.params[name] = value
        return value

    def suggest_categorical(self, name, choices):
        return self._take(name, Categorical(tuple(choices)))

    def suggest_int(self, name, low, high, *, step=1, log=False):
        return self._take(name, Int(low, high, step, log))

    def suggest_float(self, name, low, high, *, step=None, log=False):
        return self._take(name, Float(low, high, step, log))

    def set_user_attr(self, key, value):
        self.user_attrs[key] = value


class _FixedParams(AnsweringTrial):
    """Answers from fixed values and checks each lies in its dimension."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__()
        self._params = dict(params)

    def answer(self, name: str, dim: Dimension) -> Any:
        if name not in self._params or not dim.contains(self._params[name]):
            raise _Unfixed(name)
        return dim.canonical(self._params[name])


# -- the space ---------------------------------------------------------------------------------------

class SearchSpace:
    """Maps an Optuna trial to a Genotype, define-by-run; load one with `load_space`.

    >>> from optuna.trial import FixedTrial
    >>> from autocnn.presets import get_preset
    >>> from autocnn.spaces import load_space
    >>> space = load_space("resnet_attention")
    >>> params = space.fixed_params("resnet18")
    >>> space.sample(FixedTrial(params), resolution=224, num_classes=1000) == get_preset("resnet18")
    True
    """

    def __init__(self, *, name: str, path: str, description: str = "",
                 base_resolution: int = DEFAULT_BASE_RESOLUTION, constraints: dict | None = None,
                 training: dict[str, Any] | None = None, params: Group | None = None, require: list[Derived] = (), record: list[str] = (),
                 recipe: Recipe | None = None, presets: dict[str, dict[str, Any]] | None = None,
                 start: list[dict[str, Any]] = (), families: dict[str, "SearchSpace"] | None = None,
                 dimensions: dict[str, Dimension] | None = None) -> None:
        self.name, self.path, self.description = name, path, description
        self.base_resolution = base_resolution
        self.constraints: dict[str, float] = dict(constraints or {})
        self.training: dict[str, Any] = dict(training or {})
        """Recipe fields the space's YAML sets (`training:`), checked; the search's defaults for them."""
        self._params, self._require, self._record = params, list(require), list(record)
        self._recipe = recipe
        self._presets = dict(presets or {})
        self._start = [dict(point) for point in start]
        self._families = dict(families or {})
        self._dimensions = dict(dimensions or {})

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, path={self.path!r})"

    # -- structure ---------------------------------------------------------------------------------
    @property
    def families(self) -> tuple[str, ...]:
        """Branch names of a union space (`cnn_families`); empty for a single-family space."""
        return tuple(self._families)

    def family(self, name: str) -> "SearchSpace":
        if name not in self._families:
            raise KeyError(f"{self.name} has no family {name!r}; choose from {', '.join(self._families)}")
        return self._families[name]

    def distributions(self) -> dict[str, Any]:
        """Every parameter the space can suggest, name -> Optuna distribution (conditional ones included)."""
        return {name: dim.distribution() for name, dim in self.dimensions().items()}

    def dimensions(self) -> dict[str, Dimension]:
        if not self._families:
            return dict(self._dimensions)
        out: dict[str, Dimension] = {"family": Categorical(self.families)}
        for fam, sub in self._families.items():
            out.update({f"{fam}.{k}": v for k, v in sub.dimensions().items()})
        return out

    def start_points(self) -> list[dict[str, Any]]:
        """The parameters of the candidates a search tries first (the YAML's `start:`, a union's from each family
        in turn): settings known to train well and fast, as AutoGluon starts from a portfolio of defaults."""
        points = [dict(point) for point in self._start]
        for fam, sub in self._families.items():
            points += [{"family": fam, **{f"{fam}.{k}": v for k, v in point.items()}} for point in sub.start_points()]
        return points

    def known_presets(self) -> tuple[str, ...]:
        """Presets this space lists parameter values for (what `fixed_params` can express)."""
        names = list(self._presets)
        for sub in self._families.values():
            names += [n for n in sub.known_presets() if n not in names]
        return tuple(names)

    # -- sampling ------------------------------------------------------------------------------------
    def sample(self, trial: Any, *, resolution: int | None = None, num_classes: int | None = None,
               in_chans: int | None = None, native_resolution: int | None = None) -> Genotype:
        """Suggest every dimension on `trial` and return the genotype they describe.

        `resolution` replaces the file's `base_resolution` (compound scaling scales from it);
        `num_classes` and `in_chans` replace the genotype's (None keeps them). `native_resolution` is the
        data's own side length, which a space reads as `native_resolution` to train at it (small images
        are not upsampled to a large network's base; `resolution` overrides it too). A failed `require`
        raises `optuna.TrialPruned`.
        """
        base = resolution or self.base_resolution
        g = self._sample(trial, "", base, resolution or native_resolution or base)
        changes = {k: v for k, v in (("num_classes", num_classes), ("in_chans", in_chans)) if v is not None}
        return g.replace(**changes) if changes else g

    def _sample(self, trial: Any, prefix: str, base_resolution: int, native_resolution: int) -> Genotype:
        if self._families:
            fam = Categorical(self.families).suggest(trial, prefix + "family")
            return self._families[fam]._sample(trial, f"{prefix}{fam}.", base_resolution, native_resolution)
        scope: dict[str, Any] = {"base_resolution": base_resolution, "native_resolution": native_resolution}
        if self._params is not None:
            scope.update(_sample_group(self._params, trial, prefix.rstrip("."), scope))
        for check in self._require:
            ok = _sample(check, trial, "", scope)
            if not ok:
                import optuna

                raise optuna.TrialPruned(f"{check.loc!r}: requirement {check.expr.source!r} does not hold")
        for name in self._record:
            if name in scope:
                trial.set_user_attr(prefix + name, scope[name])
        return self._recipe.build(scope, base_resolution)

    # -- warm starts ---------------------------------------------------------------------------------
    def fixed_params(self, genotype_or_preset: Genotype | str) -> dict[str, Any] | None:
        """The parameter values that make `sample` return this genotype, or None if it is outside.

        A preset name is looked up in autocnn.presets. The genotype's resolution, classes and input
        channels are taken as `sample`'s arguments, so the result is a warm start for
        `study.enqueue_trial(params)` and `sample(trial, resolution=g.resolution,
        num_classes=g.num_classes, in_chans=g.in_chans)` gives `g` back.
        """
        if isinstance(genotype_or_preset, Genotype):
            target, preferred = genotype_or_preset, None
        else:
            from autocnn.presets import get_preset

            target, preferred = get_preset(str(genotype_or_preset)), str(genotype_or_preset)
        return self._fixed(target, preferred, "")

    def _fixed(self, target: Genotype, preferred: str | None, prefix: str) -> dict[str, Any] | None:
        import optuna

        if self._families:
            order = sorted(self._families, key=lambda f: preferred not in self._families[f].known_presets())
            for fam in order:
                params = self._families[fam]._fixed(target, preferred, f"{prefix}{fam}.")
                if params is not None:
                    return {prefix + "family": fam, **params}
            return None
        names = sorted(self._presets, key=lambda n: n != preferred)
        for name in names:
            trial = _FixedParams({prefix + k: v for k, v in self._presets[name].items()})
            try:
                g = self._sample(trial, prefix, target.resolution, target.resolution)
                g = g.replace(num_classes=target.num_classes, in_chans=target.in_chans)
            except (_Unfixed, SpaceError, GenotypeError, optuna.TrialPruned):
                continue
            if g == target:
                return trial.params
        return None
