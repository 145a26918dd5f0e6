"""Export from a study: the best trial, a numbered trial, or every Pareto-optimal trial.

Each trial's weights are the ones its search run saved (`autocnn.artifacts`); `retrain_epochs`
instead retrains the architecture from scratch on train+val with the study's recipe and reports the
test metric of those weights. Every check (study, trial, state, weights on disk, dataset) runs
before any work, so a mistake costs nothing and writes nothing.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from autocnn.export.errors import ExportError
from autocnn.export.writer import FORMATS, INDEX_FORMAT, FORMAT_VERSION, OutputFolder, reference_model, write_model_folder

@dataclass
class _Member:
    """One trial to export and what is known about it."""

    trial: Any  # optuna FrozenTrial
    genotype: Any
    weights: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] | None = None
    state: dict | None = None

    @property
    def number(self) -> int:
        return self.trial.number


def _parse_trial(trial: Any) -> str | int:
    if isinstance(trial, bool):
        raise ExportError(f"--trial must be best, pareto or a trial number, got {trial!r}")
    if isinstance(trial, int):
        return trial
    text = str(trial).strip().lower()
    if text in ("best", "pareto"):
        return text
    if text.isdigit():
        return int(text)
    raise ExportError(f"--trial must be best, pareto or a trial number, got {trial!r}")


def select_trials(study, trial: Any) -> list:
    """The FrozenTrials `trial` names in `study`; ExportError for unknown, incomplete or missing ones."""
    from optuna.trial import TrialState

    from autocnn.search import control, records

    spec = _parse_trial(trial)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    name = study.study_name
    if isinstance(spec, int):
        found = next((t for t in trials if t.number == spec), None)
        if found is None:
            numbers = f"0 to {max(t.number for t in trials)}" if trials else "none yet"
            raise ExportError(f"study {name!r} has no trial {spec} (its trials: {numbers}); "
                              "pass --trial best or an existing trial number")
        if found.state != TrialState.COMPLETE:
            done = ", ".join(str(t.number) for t in complete[:10]) or "none yet"
            raise ExportError(f"trial {spec} of study {name!r} is {found.state.name}, not COMPLETE; "
                              f"export a complete trial (complete: {done}) or --trial best")
        chosen = [found]
    elif not complete:
        raise ExportError(f"study {name!r} has no complete trial to export yet; wait for one to finish "
                          "or resume it with 'autocnn search --resume'")
    elif spec == "pareto":
        chosen = control.pareto_front(complete, study.directions)
    else:  # the study's best trial by the one rule of autocnn.search.control (also for multi-objective)
        chosen = [control.best_trial(complete, study.directions)]
    for t in chosen:
        if records.GENOTYPE not in t.user_attrs:
            raise ExportError(f"trial {t.number} of study {name!r} recorded no architecture; it was not run by "
                              "autocnn")
    return chosen


def _weights_of(trial, root: Path, study_name: str, retrain: bool) -> Path | None:
    from autocnn.search import records

    rel = trial.user_attrs.get(records.WEIGHTS_PATH)
    path = root / rel if rel else None
    if retrain:
        return path
    if path is None:
        raise ExportError(f"trial {trial.number} of study {study_name!r} has no saved weights (it ran before "
                          "autocnn kept them); pass --retrain-epochs E to train it from scratch")
    if not path.is_file():
        raise ExportError(f"the weights of trial {trial.number} are missing ({path}); restore them or pass "
                          "--retrain-epochs E to train the architecture from scratch")
    return path


def _search_metrics(trial) -> dict[str, float]:
    """Figures of the saved weights (the best epoch's; the last one's in trials recorded before autocnn kept the
    best): validation and test metric, and the other val/test values."""
    from autocnn.search import records

    attrs = trial.user_attrs
    metric = attrs.get(records.METRIC, "accuracy")
    out: dict[str, float] = {}
    curve = attrs.get(records.VAL_CURVE) or []
    if curve:
        out[f"val_{metric}"] = float(curve[attrs.get(records.BEST_EPOCH, len(curve)) - 1])
    if attrs.get(records.TEST_METRIC) is not None:
        out[f"test_{metric}"] = float(attrs[records.TEST_METRIC])
    for split in ("val_", "test_"):
        for key, value in sorted(attrs.items()):
            if key.startswith(split) and key not in out and key not in (records.VAL_CURVE, records.TEST_METRIC) \
                    and isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = float(value)
    return out


def _load_data(config, dataset: str | None, data_root: str | None):
    """The study's data as its trials saw it (the same decoding, so the same normalisation and image size)."""
    from autocnn.data import load_dataset
    from autocnn.search.engine import load_data

    name = dataset or (config.dataset if config else None)
    if name is None:
        raise ExportError("the study stores no dataset; pass --dataset NAME for the normalisation and class names")
    if config is not None:
        return load_data(config, name, data_root)
    return load_dataset(name, data_root)


def _check_data_fits(data, genotype, what: str, fix: str) -> None:
    if (data.num_classes, data.in_chans) != (genotype.num_classes, genotype.in_chans):
        raise ExportError(f"dataset {data.name!r} has {data.num_classes} classes of {data.in_chans}-channel images "
                          f"but {what} takes {genotype.num_classes} classes of {genotype.in_chans}-channel images; "
                          f"{fix}")


def retrain(genotype, data, config, epochs: int, number: int, *, device: str | None = None,
            on_epoch: Callable | None = None, start: dict | None = None
            ) -> tuple[torch.nn.Module, dict[str, float], dict[str, Any]]:
    """Train `genotype` on train+val with the study's recipe, from scratch or (fine-tuning) from the weights
    `start`; returns (model, metrics, training)."""
    from autocnn.builder import build_model
    from autocnn.search.engine import train_config_for
    from autocnn.training import train

    merged = dataclasses.replace(data, train=data.train.join(data.val))
    train_config = train_config_for(config.replace(epochs=epochs), number, device)
    model = build_model(genotype)
    if start is not None:
        model.load_state_dict(start)
    result = train(model, merged, train_config, resolution=genotype.resolution, on_epoch=on_epoch, keep_best=False)
    metrics = {f"test_{result.metric_name}": float(result.test_metric)}
    metrics.update({k: float(v) for k, v in result.extra.items() if k.startswith("test_")})
    training = {**train_config.recipe, "epochs": epochs, "data": "train+val", "lr": train_config.resolved_lr,
                "seed": train_config.seed, "limit": config.limit}
    if start is not None:
        training["started_from"] = "the trial's saved weights"
    return model.to("cpu"), metrics, training


def export_trial(study_name: str, storage: str | None = None, trial: Any = "best",
                 out: str | os.PathLike | None = None, retrain_epochs: int | None = None,
                 dataset: str | None = None, force: bool = False, *, data_root: str | None = None,
                 device: str | None = None, formats: Sequence[str] = FORMATS,
                 on_epoch: Callable[[int, Any], None] | None = None,
                 on_trial: Callable[[int, dict], None] | None = None, finetune_epochs: int | None = None) -> Path:
    """Export trial `trial` ("best", "pareto" or a number) of `study_name` to the folder `out`; returns it.

    "best" is the best trial (multi-objective: the Pareto-front member best on the first objective);
    "pareto" writes `out/trial-<N>/` for every Pareto-optimal trial plus `index.json` and `README.md`.
    `retrain_epochs` retrains from scratch on train+val first (`on_epoch(trial_number, EpochReport)` sees
    each epoch); `finetune_epochs` instead trains the trial's saved weights on (a oneshot trial's inherited
    ones: a supernet's sub-network is usually a few epochs short of its accuracy when trained alone); `dataset`/`data_root` override the study's data (normalisation, class names, retraining).
    """
    from autocnn.artifacts import study_artifact_root
    from autocnn.search.engine import StudyError, load_study
    from autocnn.search.config import CONFIG_ATTR, SearchConfig

    if out is None:
        raise ExportError("export_trial needs out, the folder to write")
    if retrain_epochs is not None and retrain_epochs < 1:
        raise ExportError(f"--retrain-epochs must be >= 1, got {retrain_epochs}")
    if finetune_epochs is not None and finetune_epochs < 1:
        raise ExportError(f"--finetune-epochs must be >= 1, got {finetune_epochs}")
    if finetune_epochs is not None and retrain_epochs is not None:
        raise ExportError("--finetune-epochs trains the saved weights on, --retrain-epochs starts afresh; pass one")
    folder = OutputFolder(out, force)  # an existing --out fails here, before any work
    study = load_study(study_name, storage, heartbeat=False)
    raw = study.user_attrs.get(CONFIG_ATTR)
    config = SearchConfig.from_dict(raw) if raw else None
    if (retrain_epochs or finetune_epochs) is not None and config is None:
        raise StudyError(f"study {study_name!r} stores no training recipe (not created by autocnn); "
                         "export it without --retrain-epochs or --finetune-epochs")
    pareto = _parse_trial(trial) == "pareto"
    from autocnn.search import records

    root = study_artifact_root(config, storage)  # the study's own, wherever this process runs
    members = [_Member(t, records.genotype_of(t), _weights_of(t, root, study_name, retrain_epochs is not None))
               for t in select_trials(study, trial)]
    data = _load_data(config, dataset, data_root)
    for m in members:
        _check_data_fits(data, m.genotype, f"trial {m.number}'s network", "pass the study's --dataset")

    with folder as tmp:
        index = []
        for m in members:
            if retrain_epochs is not None or finetune_epochs is not None:
                def epoch_hook(report, number=m.number):
                    if on_epoch is not None:
                        on_epoch(number, report)
                start = None
                if finetune_epochs is not None:
                    from autocnn.weights import read_state_dict

                    start = reference_model(m.genotype, read_state_dict(m.weights),
                                            origin=f"the saved weights of trial {m.number} ({m.weights})").state_dict()
                model, m.metrics, m.training = retrain(m.genotype, data, config, retrain_epochs or finetune_epochs,
                                                       m.number, device=device, on_epoch=epoch_hook, start=start)
                model = reference_model(model, None)
            else:
                from autocnn.weights import read_state_dict

                m.metrics = _search_metrics(m.trial)
                m.training = _search_training(m.trial, config)
                model = reference_model(m.genotype, read_state_dict(m.weights),
                                        origin=f"the saved weights of trial {m.number} ({m.weights})")
            meta = {
                "name": f"{study_name}-trial{m.number}", "mean": data.mean, "std": data.std,
                "image_size": data.native_resolution,
                "class_names": list(data.class_names), "metrics": m.metrics, "study": study_name,
                "trial": m.number, "dataset": data.name, "training": m.training,
                "objectives": dict(zip(config.objectives if config else
                                       [f"objective_{i}" for i in range(len(m.trial.values))], m.trial.values)),
                "latency_ms": m.trial.user_attrs.get(records.LATENCY),
            }
            target = tmp / f"trial-{m.number}" if pareto else tmp
            target.mkdir(exist_ok=True)
            written = write_model_folder(target, model, meta, formats=formats)
            if on_trial is not None:
                on_trial(m.number, written)
            index.append({"trial": m.number, "folder": target.name if pareto else ".",
                          "values": meta["objectives"], "metrics": m.metrics, "params": written["params"],
                          "flops": written["flops"], "arch": written["arch"]})
        if pareto:
            _write_index(tmp, study, config, index)
    return folder.path


def _search_training(trial, config) -> dict[str, Any] | None:
    from autocnn.search import records
    from autocnn.search.engine import train_config_for

    if config is None:
        return None
    attrs = trial.user_attrs
    if attrs.get(records.EVALUATION) == "oneshot":  # weights inherited from a supernet, never trained alone
        return {"evaluation": "oneshot", "supernet": attrs.get(records.SUPERNET),
                "supernet_epochs": attrs.get(records.SUPERNET_EPOCHS), "data": "train (BatchNorm recalibration)",
                "epochs": 0, "limit": config.limit}
    train_config = train_config_for(config, trial.number, device="cpu")
    epochs = attrs.get(records.EPOCHS_RUN, config.epochs)
    return {**train_config.recipe, "epochs": epochs, "weights_of_epoch": attrs.get(records.BEST_EPOCH, epochs),
            "data": "train", "lr": train_config.resolved_lr, "seed": train_config.seed, "limit": config.limit}


def _write_index(folder: Path, study, config, members: list[dict]) -> None:
    import json

    from autocnn.export.card import index_card

    objectives = list(config.objectives) if config else [f"objective_{i}" for i in range(len(study.directions))]
    index = {"format": INDEX_FORMAT, "format_version": FORMAT_VERSION, "study": study.study_name,
             "objectives": objectives, "directions": [d.name.lower() for d in study.directions], "members": members}
    (folder / "index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(index_card(index), encoding="utf-8")


def export(out: str | os.PathLike, *, study: str | None = None, trial: Any = "best", storage: str | None = None,
           retrain_epochs: int | None = None, model: Any = None, weights: Any = None, dataset: str | None = None,
           data_root: str | None = None, num_classes: int | None = None, in_chans: int | None = None,
           resolution: int | None = None, force: bool = False, formats: Sequence[str] = FORMATS,
           device: str | None = None) -> Path:
    """Export a study's trial (`study=`) or a model trained elsewhere (`model=`) to the folder `out`.

    `model` is an autocnn Network (its weights are used), or a preset name, genotype file, genotype
    string or Genotype with `weights` (a state_dict or a .safetensors / torch file); `num_classes`,
    `in_chans`, `resolution` adapt a preset to the weights and `dataset` supplies normalisation and
    class names. Returns the folder. The same as `autocnn export` on the command line.

    >>> import autocnn, tempfile, os
    >>> net = autocnn.create_model("lenet5", num_classes=10, in_chans=1, resolution=28)
    >>> folder = autocnn.export(os.path.join(tempfile.mkdtemp(), "lenet"), model=net, formats=())
    >>> (folder / "model.py").is_file()
    True
    """
    if (study is None) == (model is None):
        raise ExportError("export needs exactly one of --study NAME or --model PRESET_OR_GENOTYPE_FILE")
    if study is not None:
        if weights is not None or any(v is not None for v in (num_classes, in_chans, resolution)):
            raise ExportError("--weights, --num-classes, --in-chans and --resolution go with --model, not --study")
        return export_trial(study, storage, trial, out, retrain_epochs=retrain_epochs, dataset=dataset, force=force,
                            data_root=data_root, formats=formats, device=device)
    if retrain_epochs is not None or trial != "best":
        raise ExportError("--trial and --retrain-epochs go with --study; to train a model first run "
                          "'autocnn train --model NAME --study S', then export --study S")
    return export_weights(model, weights, out, dataset=dataset, data_root=data_root, num_classes=num_classes,
                          in_chans=in_chans, resolution=resolution, force=force, formats=formats)


def export_weights(model: Any, weights: Any, out: str | os.PathLike, *, dataset: str | None = None,
                   data_root: str | None = None, num_classes: int | None = None, in_chans: int | None = None,
                   resolution: int | None = None, force: bool = False, formats: Sequence[str] = FORMATS) -> Path:
    """`autocnn export --model ... --weights FILE`: a network trained elsewhere, checked against its weights."""
    from autocnn.builder import Network
    from autocnn.api import resolve_genotype
    from autocnn.weights import read_state_dict

    folder = OutputFolder(out, force)
    origin = "the weights"
    if isinstance(model, Network):
        genotype, state = model.genotype, (weights if weights is not None else model.state_dict())
    else:
        genotype = resolve_genotype(model)
        if weights is None:
            raise ExportError("--model needs --weights FILE, the trained state_dict (.safetensors or torch file)")
        state = weights
    changes = {k: v for k, v in (("num_classes", num_classes), ("in_chans", in_chans), ("resolution", resolution))
               if v is not None}
    if changes:
        genotype = genotype.replace(**changes)
    if isinstance(state, (str, os.PathLike)):
        origin = f"weights {os.fspath(state)}"
        state = read_state_dict(state)
    network = reference_model(genotype, state, origin=origin)
    from autocnn.presets import PRESETS

    meta: dict[str, Any] = {"name": model if isinstance(model, str) and model in PRESETS else None}
    if origin != "the weights":
        meta["source"] = {"weights": os.path.basename(origin.removeprefix("weights "))}
    if dataset is not None:
        data = _load_data(None, dataset, data_root)
        _check_data_fits(data, genotype, "the network", "pass the dataset it was trained on, or --num-classes "
                         "and --in-chans to match it")
        meta.update(mean=data.mean, std=data.std, class_names=list(data.class_names), dataset=data.name,
                    image_size=data.native_resolution)
    with folder as tmp:
        write_model_folder(tmp, network, meta, formats=formats)
    return folder.path
