"""`autocnn export`: a study's winner (or a model trained elsewhere) as a folder that needs only PyTorch."""
from __future__ import annotations

import json
import warnings

import click
from rich.console import Console
from rich.table import Table

from autocnn.cli import cli


def _figures(config: dict) -> str:
    metrics = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in (config.get("metrics") or {}).items()
                        if isinstance(v, float) and not k.endswith("loss"))
    return (f"{metrics + ', ' if metrics else ''}{config['params']:,} params, "
            f"{config['flops'] / 1e6:.1f} MFLOPs")


@cli.command(name="export")
@click.option("--study", default=None, help="Study to export a trial of.")
@click.option("--trial", default="best", show_default=True,
              help="best, a trial number, or pareto (one folder per Pareto-optimal trial plus an index).")
@click.option("--retrain-epochs", type=int, default=None,
              help="First retrain the architecture from scratch on train+val for this many epochs (study's recipe).")
@click.option("--finetune-epochs", type=int, default=None,
              help="First fine-tune the trial's saved weights (a oneshot trial's inherited ones) on train+val for "
                   "this many epochs (study's recipe).")
@click.option("--dataset", default=None, help="Dataset for normalisation, class names and retraining (default: the study's).")
@click.option("--data-root", type=click.Path(), default=None, help="Folder holding the dataset.")
@click.option("--storage", default=None, help="SQLAlchemy URL (default sqlite:///studies/autocnn.db).")
@click.option("--model", "model_name", default=None,
              help="Instead of --study: preset name, genotype file or genotype string of weights trained elsewhere.")
@click.option("--weights", type=click.Path(), default=None, help="With --model: the state_dict file (.safetensors/.pt).")
@click.option("--num-classes", type=int, default=None, help="With --model: classes the weights were trained for.")
@click.option("--in-chans", type=int, default=None, help="With --model: input channels of the weights.")
@click.option("--resolution", type=int, default=None, help="With --model: input resolution.")
@click.option("--device", default=None, help="Device for --retrain-epochs (default: the study's).")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Folder to write; must not exist without --force.")
@click.option("--force", is_flag=True, help="Replace an existing export folder at --out.")
@click.option("--formats", "formats_text", default="pt2,onnx", show_default=True,
              help="Files beside model.py and the weights: pt2, onnx (the slowest to write), comma-separated, or none.")
@click.option("--json", "as_json", is_flag=True, help="Print the written config.json data as JSON.")
def export_command(study, trial, retrain_epochs, finetune_epochs, dataset, data_root, storage, model_name, weights, num_classes,
                   in_chans, resolution, device, out_dir, force, formats_text, as_json) -> None:
    """Export a trained network as a standalone folder: model.py (torch only), weights.safetensors,
    model.pt2 and model.onnx (see --formats), config.json and a README.md model card.

    \b
      autocnn export --study NAME [--trial best|N|pareto] [--retrain-epochs E | --finetune-epochs E] --out DIR
      autocnn export --model PRESET_OR_GENOTYPE_FILE --weights FILE --out DIR
    """
    from autocnn.export.errors import ExportError
    from autocnn.export.trials import export_trial, export_weights
    from autocnn.export.writer import parse_formats

    formats = parse_formats(formats_text)  # before any retraining
    err = Console(stderr=True)
    written: list[tuple[int | None, dict]] = []
    if (study is None) == (model_name is None):
        raise ExportError("pass exactly one of --study NAME or --model PRESET_OR_GENOTYPE_FILE")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="torch")  # tracing chatter; export's own warnings still show
        warnings.filterwarnings("ignore", module="onnxscript")
        if study is not None:
            if weights is not None or any(v is not None for v in (num_classes, in_chans, resolution)):
                raise ExportError("--weights, --num-classes, --in-chans and --resolution go with --model, not --study")

            what, epochs = ("fine-tune", finetune_epochs) if finetune_epochs else ("retrain", retrain_epochs)

            def on_epoch(number, report):
                err.print(f"{what} trial {number}: epoch {report.epoch}/{epochs} "
                          f"train loss {report.train_loss:.4f}")

            folder = export_trial(study, storage, trial, out_dir, retrain_epochs=retrain_epochs,
                                  finetune_epochs=finetune_epochs, dataset=dataset,
                                  force=force, data_root=data_root, device=device, on_epoch=on_epoch, formats=formats,
                                  on_trial=lambda number, config: written.append((number, config)))
        else:
            if retrain_epochs is not None or finetune_epochs is not None or trial != "best":
                raise ExportError("--trial, --retrain-epochs and --finetune-epochs go with --study; to train a model first run "
                                  "'autocnn train --model NAME --study S', then 'autocnn export --study S'")
            if weights is None:
                raise ExportError("--model needs --weights FILE, the trained state_dict (.safetensors or torch file)")
            folder = export_weights(model_name, weights, out_dir, dataset=dataset, data_root=data_root,
                                    num_classes=num_classes, in_chans=in_chans, resolution=resolution, force=force,
                                    formats=formats)
            written.append((None, json.loads((folder / "config.json").read_text(encoding="utf-8"))))

    if as_json:
        click.echo(json.dumps([c for _, c in written] if len(written) > 1 or trial == "pareto" else written[0][1],
                              indent=2))
        return
    console = Console()
    if len(written) == 1 and trial != "pareto":
        number, config = written[0]
        what = f"trial {number} of study {study}" if number is not None else config["name"]
        epochs = retrain_epochs or finetune_epochs
        if epochs:
            metric = next(iter(config["metrics"].items()), None)
            if metric:
                done = "retrained" if retrain_epochs else "fine-tuned"
                console.print(f"{done} {epochs} epoch{'s' if epochs != 1 else ''} on train+val: "
                              f"{metric[0].replace('_', ' ')} {metric[1]:.4f}")
        console.print(f"exported {what} to {folder}: {_figures(config)}", soft_wrap=True)
        console.print("files: " + ", ".join(sorted(p.name for p in folder.iterdir())), soft_wrap=True)
        return
    table = Table(title=f"{study}: Pareto front exported to {folder}")
    for col in ("trial", "folder", "figures"):
        table.add_column(col)
    for number, config in written:
        table.add_row(str(number), f"trial-{number}", _figures(config))
    console.print(table)
