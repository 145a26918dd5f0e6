"""The sub-networks of a search space that one supernet covers, as ordinary genotypes.

A space's per-stage `kernel`, `expansion` and `repeats` dimensions and its `width_mult` (the width
multiplier MobileNet and EfficientNet scale every stage by) are elastic: a sub-network is one value for
each. So is a stage's `attention` between `none` and SE where it offers both (its other kinds, which
cannot be sliced, are left out of the supernet's choices), and SE's reduction ratio (`<stage>.se.ratio`),
whose largest sub-network is its smallest ratio. Given several input resolutions (`resolution=(24, 32)`,
BigNAS's elastic resolution), the resolution is a choice of its own, `RESOLUTION`, the largest last. Every
other dimension (block family, conv kind, activation, depth multiplier, compound coefficient, ...) is fixed
for the whole supernet, from `fixed` params, else a `preset`'s params, else its first choice (a number range:
its low end). A sub-network's genotype is what `SearchSpace.sample` returns for those answers, so it is a genotype of the space itself:
`create_model` builds it, search records it, export writes it.
"""
from __future__ import annotations

import itertools
import random
from typing import Any, Iterator, Mapping, Sequence

from autocnn.genotype import Genotype
from autocnn.spaces import Categorical, Int, SearchSpace, load_space
from autocnn.spaces.space import AnsweringTrial
from autocnn.supernet.model import ELASTIC_ATTENTION, SupernetError, check_shareable

ELASTIC_KEYS = ("kernel", "expansion", "repeats", "width_mult")
"""Last key of a dimension's name that makes it elastic (`stages.3.kernel`, `width_mult`)."""
RESOLUTION = "resolution"
"""The choice of input resolution, when a supernet trains at several (not a dimension of the space)."""
SLICED_ATTENTION = tuple(kind for kind in ELASTIC_ATTENTION if kind != "none")
"""Attention kinds a sub-network may switch off and whose ratio is elastic (`stages.3.se.ratio`)."""


class _Answers(AnsweringTrial):
    def __init__(self, space: "ElasticSpace", choice: Mapping[str, Any]) -> None:
        super().__init__()
        self._space, self._choice = space, choice

    def answer(self, name: str, dim: Any) -> Any:
        if name in self._space.choices:
            if name not in self._choice:
                raise SupernetError(f"no value for elastic dimension {name!r}; give one of "
                                    f"{list(self._space.choices[name])}")
            value = self._choice[name]
            if value not in self._space.choices[name]:
                raise SupernetError(f"{name} = {value!r} is outside the supernet; choose from "
                                    f"{list(self._space.choices[name])}")
            return dim.canonical(value)
        return self._space.fixed_value(name, dim)


class ElasticSpace:
    """The supernet's view of a space: which dimensions are elastic, and the genotype of each choice.

    >>> es = ElasticSpace("efficientnet_compound", preset="efficientnet_b0", num_classes=10)  # doctest: +SKIP
    >>> es.largest(), es.smallest(), es.sample(random.Random(0))                          # doctest: +SKIP
    """

    def __init__(self, space: SearchSpace | str, *, fixed: Mapping[str, Any] | None = None,
                 preset: str | None = None, resolution: int | Sequence[int] | None = None,
                 num_classes: int | None = None, in_chans: int | None = None) -> None:
        self.space = load_space(space) if isinstance(space, str) else space
        if self.space.families:
            raise SupernetError(f"space {self.space.name} is a union of block families ({', '.join(self.space.families)}), "
                                "which cannot share weights; build a supernet per family (space.family(name))")
        dims = self.space.dimensions()
        defaults: dict[str, Any] = {}
        if preset is not None:
            params = self.space.fixed_params(preset)
            if params is None:
                raise SupernetError(f"space {self.space.name} cannot express preset {preset!r}; choose one of "
                                    f"{', '.join(self.space.known_presets()) or '(none)'} or give fixed params")
            defaults.update(params)
        unknown = sorted(set(fixed or {}) - set(dims))
        if unknown:
            raise SupernetError(f"fixed param {unknown[0]!r} is not a dimension of space {self.space.name}; "
                                f"choose from {', '.join(dims)}")
        self.fixed: dict[str, Any] = {**defaults, **(fixed or {})}
        self.choices: dict[str, tuple] = {}
        for name, dim in dims.items():
            if name in (fixed or {}):
                continue
            *_, parent, key = ["", *name.split(".")]
            if key in ELASTIC_KEYS:
                values = _values(dim)
            elif key == "attention" and isinstance(dim, Categorical):
                values = _attention_values(dim)
            elif key == "ratio" and parent in SLICED_ATTENTION and self._may_attend(name, parent, dims):
                values = _values(dim)
                values = values and values[::-1]  # the largest sub-network squeezes least: its smallest ratio
            else:
                values = None
            if values is not None and len(values) > 1:
                self.choices[name] = values
        if isinstance(resolution, (list, tuple)):
            resolutions = tuple(sorted(set(resolution)))
            if len(resolutions) > 1:
                self.choices[RESOLUTION] = resolutions
            resolution = resolutions[-1] if resolutions else None
        if not self.choices:
            raise SupernetError(f"space {self.space.name} has no elastic dimension (a per-stage choice or a width "
                                f"multiplier: {', '.join(ELASTIC_KEYS)}), so a supernet would share nothing; add one, e.g. "
                                "`kernel: {choices: [3, 5]}` in a stage, or search the space without a supernet")
        self._sample_args = {"resolution": resolution, "num_classes": num_classes, "in_chans": in_chans}
        largest = self.largest()
        check_shareable(largest, fix="fix them with ElasticSpace(fixed={DIMENSION: VALUE})")
        if RESOLUTION in self.choices and largest.head.pool == "flatten":
            raise SupernetError(f"space {self.space.name} ends in a flatten head, whose weights fit one resolution; "
                                "train the supernet at one resolution or give the space a pooled head")

    @property
    def resolutions(self) -> tuple:
        """The input resolutions of its sub-networks, ascending (one unless the resolution is elastic; None: each
        genotype's own)."""
        return self.choices.get(RESOLUTION, (self._sample_args[RESOLUTION],))

    def _may_attend(self, ratio_name: str, kind: str, dims: dict) -> bool:
        """Whether the stage of `ratio_name` (`<stage>.<kind>.ratio`) can run `kind`: its attention is elastic
        (decided before its ratio, which the space asks after it) or fixed at `kind`."""
        attention = _attention_of(ratio_name)
        if attention in self.choices:
            return kind in self.choices[attention]
        return attention in dims and self.fixed_value(attention, dims[attention]) == kind

    def fixed_value(self, name: str, dim: Any) -> Any:
        if name in self.fixed:
            if not dim.contains(self.fixed[name]):
                raise SupernetError(f"fixed {name} = {self.fixed[name]!r} is outside its dimension {dim}; "
                                    "give a value the space allows")
            return dim.canonical(self.fixed[name])
        if isinstance(dim, Categorical):
            return dim.choices[0]
        return dim.at(0.0)

    # -- genotypes ----------------------------------------------------------------------------------
    def genotype(self, choice: Mapping[str, Any]) -> Genotype:
        """The space's genotype for these elastic values (a value for every name in `choices`)."""
        extra = sorted(set(choice) - set(self.choices))
        if extra:
            raise SupernetError(f"{extra[0]!r} is not an elastic dimension of this supernet; "
                                f"give values for {', '.join(self.choices)}")
        sample_args = dict(self._sample_args)
        if RESOLUTION in self.choices:
            if choice.get(RESOLUTION) not in self.choices[RESOLUTION]:
                raise SupernetError(f"resolution {choice.get(RESOLUTION)!r} is not one the supernet trains at; "
                                    f"choose from {list(self.choices[RESOLUTION])}")
            sample_args[RESOLUTION] = choice[RESOLUTION]
        try:
            return self.space.sample(_Answers(self, choice), **sample_args)
        except SupernetError:
            raise
        except Exception as err:
            import optuna

            if isinstance(err, optuna.TrialPruned):
                raise SupernetError(f"space {self.space.name} rejects the sub-network {dict(choice)} ({err}); "
                                    "fix the requirement's dimensions with fixed= so every sub-network meets it") from None
            raise

    def largest(self) -> Genotype:
        return self.genotype({n: v[-1] for n, v in self.choices.items()})

    def smallest(self) -> Genotype:
        return self.genotype({n: v[0] for n, v in self.choices.items()})

    def sample(self, rng: random.Random) -> Genotype:
        """A uniformly random sub-network (each elastic dimension independently, as SPOS/BigNAS do)."""
        return self.genotype({n: rng.choice(v) for n, v in self.choices.items()})

    def sandwich(self, rng: random.Random, n_random: int = 2) -> list[Genotype]:
        """BigNAS's sandwich rule: the largest, the smallest and `n_random` random sub-networks."""
        return [self.largest(), self.smallest(), *(self.sample(rng) for _ in range(n_random))]

    def __iter__(self) -> Iterator[Genotype]:
        """Every sub-network once (the product of all choices, less the ratios of SE switched off; only for
        small spaces)."""
        names, seen = list(self.choices), set()
        for values in itertools.product(*(self.choices[n] for n in names)):
            genotype = self.genotype(dict(zip(names, values)))
            if genotype.arch_id not in seen:
                seen.add(genotype.arch_id)
                yield genotype

    def __len__(self) -> int:
        """How many sub-networks (a ratio counts only where its stage's attention is on)."""
        size = 1
        for name, values in self.choices.items():
            if name.endswith(".ratio") and _attention_of(name) in self.choices:
                continue  # counted with its attention
            if name.endswith(".attention"):  # off, or each kind with each of its ratios
                stage = name.removesuffix("attention")
                size *= sum(len(self.choices.get(f"{stage}{kind}.ratio", (kind,))) for kind in values)
            else:
                size *= len(values)
        return size


def _attention_of(ratio_name: str) -> str:
    """The attention dimension a ratio depends on: `stages.3.se.ratio` -> `stages.3.attention`."""
    return ratio_name.rsplit(".", 2)[0] + ".attention"


def _attention_values(dim: Categorical) -> tuple | None:
    """An attention dimension's choices a supernet can share: `none` and the kinds it slices, off first."""
    kinds = [c for c in dim.choices if c in SLICED_ATTENTION]
    return ("none", *kinds) if "none" in dim.choices and kinds else None


def _values(dim: Any) -> tuple | None:
    """A numeric dimension's values, ascending; None for one that is not a finite numeric set."""
    if isinstance(dim, Categorical) and dim.ordered:
        return tuple(sorted(dim.choices))
    if isinstance(dim, Int) and not dim.log:
        return tuple(range(dim.low, dim.high + 1, dim.step))
    return None
