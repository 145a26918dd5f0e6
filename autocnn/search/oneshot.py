"""One-shot trials (`--strategy oneshot --supernet NAME`): a candidate is valued by the weights it
inherits from a trained supernet instead of by training (issue #16).

The search samples the space as usual (its sampler, design, constraints and prescreen), except that the
dimensions the supernet holds fixed are pinned to the supernet's values (`PinnedSpace`): every candidate
is a sub-network, and the sampler learns only over the dimensions that change anything. A trial then

1. cuts the candidate's weights out of the supernet (`autocnn.supernet.extract`),
2. recalibrates its BatchNorm statistics on `CALIBRATION_IMAGES` training images (the shared statistics
   belong to no sub-network; OFA and BigNAS recalibrate the same way),
3. validates it, and records the result as a trained trial's (`val_curve` of one value, no epochs) with
   `evaluation: oneshot` and the supernet's name, and saves the recalibrated weights as the trial's
   weights, so `best`, `export` and the dashboard read it unchanged.

The supernet, the calibration batches and the validation inputs are prepared once per process
(`Oneshot`, held by the run's `TrialContext`; once per resolution when the supernet's is elastic, where the
resolution is a choice of the trial): a trial costs a slice, a few forward passes and one weights file.
Latency is measured only for a latency objective or limit, as in a trained search.
"""
from __future__ import annotations

import time
from typing import Any

import torch

from autocnn.search import records
from autocnn.search.config import ConfigError, SearchConfig
from autocnn.spaces.dimensions import Categorical, Float, Int
from autocnn.supernet import ElasticSpace, Supernet, SupernetError, extract, recalibrate_bn
from autocnn.supernet import store
from autocnn.supernet.space import RESOLUTION
from autocnn.supernet.trainer import identity, network_inputs

CALIBRATION_IMAGES = 256  # training images (drawn at random by the seed) that recalibrate each candidate's
# BatchNorm; BigNAS and OFA use ~2,000 ImageNet images; a few hundred keep a trial in the tens of milliseconds on a CPU
CALIBRATION_BATCH = 128
EVAL_BATCH = 512


def calibration_inputs(train, resolution: int | None, seed: int) -> torch.Tensor:
    """`CALIBRATION_IMAGES` training images drawn by `seed`, as a network sees them. Drawn, not the first ones:
    a split may be stored class by class (an ImageFolder's is), and statistics of one or two classes leave
    every sub-network near chance (bench_oneshot on `shapes`: 0.26-0.37 validation accuracy)."""
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:CALIBRATION_IMAGES]
    return network_inputs(train.subset(pick.sort().values), resolution)


def _root(config: SearchConfig) -> str:
    from autocnn.artifacts import resolve_artifacts

    return resolve_artifacts(config.artifacts, config.storage)


def _elastic(space, record: dict, num_classes: int, in_chans: int) -> ElasticSpace:
    """The supernet's view of the searched space, or one line saying the space is not the supernet's."""
    name = record["name"]
    fix = (f"search the space it was trained on ({record['space']}) or train a supernet for this one with "
           f"'autocnn supernet train --space SPACE --name NEW'")
    try:
        es = ElasticSpace(space, fixed=record.get("fixed"), resolution=resolutions_of(record),
                          num_classes=num_classes, in_chans=in_chans)
    except SupernetError as err:
        raise SupernetError(f"space {space.name} does not fit supernet {name!r} ({err}); {fix}") from None
    if identity(es) != {"largest": record["largest"], "choices": record["choices"]}:
        raise SupernetError(f"supernet {name!r} was trained on another space ({record['space_name']}: its largest "
                            f"sub-network {record['largest']}); {fix}")
    return es


def resolutions_of(record: dict) -> list[int]:
    """The resolutions a supernet trained at (one unless its resolution is elastic)."""
    return list(record["choices"].get(RESOLUTION, [record["resolution"]]))


def configure(config: SearchConfig, backend: str = "local") -> SearchConfig:
    """Check a oneshot search before anything is written: the supernet exists, was trained on this space and
    dataset, and the options go with inheriting weights; the resolution defaults to the supernet's."""
    if config.strategy != "oneshot":
        return config
    if backend != "local":
        raise ConfigError("--strategy oneshot runs on --backend local only (its trials take a fraction of a second, so "
                          "one process keeps the loaded supernet busy); drop --backend ray")
    for flag, given in (("--enqueue", config.enqueue), ("--weights", config.weights)):
        if given:
            raise ConfigError(f"{flag} does not go with --strategy oneshot: every candidate takes its weights "
                              "from the supernet; drop it")
    from autocnn.spaces import load_space

    record = store.find_record(_root(config), config.supernet)
    if record["dataset"] != config.dataset:
        raise SupernetError(f"supernet {config.supernet!r} was trained on dataset {record['dataset']!r}, not "
                            f"{config.dataset!r}; search it with --dataset {record['dataset']} or train a supernet "
                            "on this dataset")
    if config.resolution not in (None, record["resolution"]):
        raise ConfigError(f"supernet {config.supernet!r} was trained at resolution {record['resolution']}, not "
                          f"{config.resolution}; drop --resolution")
    _elastic(load_space(config.space), record, record["num_classes"], record["in_chans"])
    return config.replace(resolution=record["resolution"])


def _within(choices, elastic) -> tuple:
    """The space's `choices` the supernet has (in the space's order: a study's distributions stay as they were)."""
    return tuple(c for c in choices if c in elastic)


class _Pinned:
    """A trial whose suggestions of the supernet's fixed dimensions return its fixed values, unasked."""

    def __init__(self, trial, es: ElasticSpace) -> None:
        self._trial, self._es = trial, es

    def suggest_categorical(self, name, choices):
        if name in self._es.choices:  # (an attention's kinds the supernet cannot slice are no choice)
            return self._trial.suggest_categorical(name, _within(choices, self._es.choices[name]))
        return self._es.fixed_value(name, Categorical(tuple(choices)))

    def suggest_int(self, name, low, high, *, step=1, log=False):
        if name in self._es.choices:
            return self._trial.suggest_int(name, low, high, step=step, log=log)
        return self._es.fixed_value(name, Int(low, high, step, log))

    def suggest_float(self, name, low, high, *, step=None, log=False):
        if name in self._es.choices:
            return self._trial.suggest_float(name, low, high, step=step, log=log)
        return self._es.fixed_value(name, Float(low, high, step, log))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)


class PinnedSpace:
    """The searched space with the supernet's fixed dimensions pinned: its `sample` gives sub-networks only and
    its `dimensions` (what the initial design spans) are the elastic ones; everything else is the space's."""

    def __init__(self, space, es: ElasticSpace) -> None:
        self.space, self.elastic = space, es

    def sample(self, trial, **kwargs):
        if RESOLUTION in self.elastic.choices:  # an elastic resolution: the trial's own choice, not the run's
            kwargs[RESOLUTION] = trial.suggest_categorical(RESOLUTION, list(self.elastic.choices[RESOLUTION]))
        return self.space.sample(_Pinned(trial, self.elastic), **kwargs)

    def dimensions(self) -> dict:
        dims = {n: Categorical(_within(d.choices, self.elastic.choices[n])) if isinstance(d, Categorical) else d
                for n, d in self.space.dimensions().items() if n in self.elastic.choices}
        if RESOLUTION in self.elastic.choices:
            dims[RESOLUTION] = Categorical(self.elastic.choices[RESOLUTION])
        return dims

    def __getattr__(self, name: str) -> Any:
        return getattr(self.space, name)


class _Prepared:
    """Validation batches already normalised and resized: what the trainer's `_evaluate` iterates."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor, device: torch.device) -> None:
        self.device, self.labels = device, labels.to(device)
        self._batches = x.to(device).split(EVAL_BATCH)

    def __iter__(self):
        return ((x, None) for x in self._batches)


class Oneshot:
    """What every oneshot trial of a process shares: the loaded supernet, calibration and validation inputs."""

    def __init__(self, config: SearchConfig, space, data) -> None:
        from autocnn.training import resolve_device

        root = _root(config)
        self.name = config.supernet
        self.record = record = store.find_record(root, self.name)
        if (data.num_classes, data.in_chans) != (record["num_classes"], record["in_chans"]):
            raise SupernetError(f"supernet {self.name!r} takes {record['num_classes']} classes of "
                                f"{record['in_chans']}-channel images, the data {data.num_classes} of "
                                f"{data.in_chans}; search it on the data it was trained on")
        self.elastic = _elastic(space, record, data.num_classes, data.in_chans)
        self.device = resolve_device(config.device)
        self.net = Supernet(self.elastic.largest())
        self.net.load_state_dict(store.load_weights(root, self.name))
        self.net.to("cpu").eval()  # only sliced from: it never runs
        self._data, self._seed = data, config.seed
        self._inputs: dict[int, tuple[list[torch.Tensor], _Prepared]] = {}

    def inputs(self, resolution: int | None = None) -> tuple[list[torch.Tensor], _Prepared]:
        """Calibration batches and validation set at `resolution` (None: the supernet's largest), prepared once."""
        res = resolution or self.record["resolution"]
        if res not in self._inputs:
            calibration = calibration_inputs(self._data.train, res, self._seed).to(self.device)
            val = _Prepared(network_inputs(self._data.val, res), self._data.val.labels, self.device)
            self._inputs[res] = (list(calibration.split(CALIBRATION_BATCH)), val)
        return self._inputs[res]

    def inherit(self, genotype, model=None) -> torch.nn.Module:
        """`genotype`'s network (`model`: its meta build from pricing) with the supernet's weights and its own
        BatchNorm statistics, in eval mode on the run's device."""
        from autocnn.builder import build_model

        state = extract(self.net, genotype)
        if model is None:
            model = build_model(genotype)
        meta = any(t.is_meta for t in model.parameters())
        model.load_state_dict(state, assign=meta)
        model.to(self.device)
        return recalibrate_bn(model, self.inputs(genotype.resolution)[0]).eval()

    def validate(self, model: torch.nn.Module, metric: str, multilabel: bool,
                 resolution: int | None = None) -> dict[str, float]:
        """`model`'s validation figures on images at `resolution` (its genotype's; None: the supernet's)."""
        from autocnn.training.trainer import _evaluate

        return _evaluate(model, self.inputs(resolution)[1], multilabel, None, metric)


def record_oneshot(trial, ctx, genotype, model) -> float:
    """Inherit `model`'s weights (a priced candidate of `genotype`), validate, save and record them as a
    trained trial's; returns the quality metric. The engine samples and prices the candidate first
    (`engine._evaluate_trial`), so constraints reject candidates as in a trained search."""
    from autocnn.artifacts import save_trial_weights
    from autocnn.storage import set_trial_user_attrs

    started = time.perf_counter()
    config, shot = ctx.config, ctx.oneshot
    model = shot.inherit(genotype, model)
    metric = config.metric
    figures = shot.validate(model, metric, ctx.data.multilabel, genotype.resolution)
    weights = save_trial_weights(model, config.storage, trial.study.study_name, trial.number, config.artifacts)
    attrs = {records.METRIC: metric, records.VAL_CURVE: [figures[metric]], records.EPOCHS_RUN: 0,
             records.EVALUATION: "oneshot", records.SUPERNET: shot.name,
             records.SUPERNET_EPOCHS: shot.record["epochs_done"],
             **{f"val_{k}": float(v) for k, v in figures.items() if k != metric},
             records.WALL_TIME: time.perf_counter() - started}
    if weights:
        attrs[records.WEIGHTS_PATH] = weights
    set_trial_user_attrs(trial, attrs)
    return figures[metric]


def check_backend(config: SearchConfig, backend) -> None:
    """A oneshot study (new or resumed) runs on the local backend only."""
    if config.strategy == "oneshot" and getattr(backend, "name", "local") != "local":
        configure(config, backend.name)


__all__ = ["CALIBRATION_IMAGES", "Oneshot", "calibration_inputs", "PinnedSpace", "configure", "record_oneshot"]
