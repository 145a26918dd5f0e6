"""`autocnn models` and `autocnn show`: what the architecture core can build."""
from __future__ import annotations

import json

import click
import torch
from rich.console import Console
from rich.table import Table

from autocnn.api import list_models, resolve_genotype, shape_errors
from autocnn.builder import build_model
from autocnn.cli import cli
from autocnn.costs import count_params, genotype_costs


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def models(fmt: str) -> None:
    """List the preset architectures with params and GFLOPs at their default resolution."""
    from autocnn.presets import get_preset

    rows = []
    for name in list_models():
        g = get_preset(name)
        costs = genotype_costs(g)
        rows.append({"name": name, "params": costs["params"], "flops": costs["flops"],
                     "resolution": g.resolution, "in_chans": g.in_chans, "num_classes": g.num_classes})
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="autocnn presets")
    for col in ("name", "params", "GFLOPs", "resolution"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for r in rows:
        table.add_row(r["name"], f"{r['params']:,}", f"{r['flops'] / 1e9:.2f}", str(r["resolution"]))
    Console().print(table)


def _stage_table(g) -> Table:
    table = Table(title="stages")
    cols = ("#", "block", "repeats", "out", "stride", "kernel", "expansion", "conv", "attention", "ratio")
    for col in cols:
        table.add_column(col)
    for prefix, specs in (("stem", g.stem), ("", g.stages)):
        for i, s in enumerate(specs):
            attn = s.attention
            table.add_row(f"{prefix}{i}", s.block, str(s.repeats), str(s.out_chs or "same"), str(s.stride),
                          str(s.kernel), f"{s.expansion:g}", s.conv, attn, f"{s.ratio:g}" if attn != "none" else "")
    return table


@cli.command()
@click.argument("model")
@click.option("--depth", default=3, show_default=True, help="Module nesting shown in the layer table.")
def show(model: str, depth: int) -> None:
    """Stages and a per-layer table (output shape, params) of a preset or genotype file."""
    g = resolve_genotype(model)
    console = Console()
    console.print(f"[bold]{model}[/bold]  {g.to_string()}")
    console.print(_stage_table(g))
    with torch.device("meta"), shape_errors(g):
        net = build_model(g).eval()
    layers = Table(title=f"layers at {g.in_chans}x{g.resolution}x{g.resolution}")
    for col in ("module", "type", "output", "params"):
        layers.add_column(col, justify="right" if col == "params" else "left")
    rows = []

    def hook(name):
        def record(module, inputs, output):
            rows.append((name, type(module).__name__, "x".join(map(str, output.shape[1:])), count_params(module)))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in net.named_modules()
               if n and n.count(".") < depth]
    with torch.no_grad(), shape_errors(g):
        net(torch.empty(1, g.in_chans, g.resolution, g.resolution, device="meta"))
    for h in handles:
        h.remove()
    for name, kind, shape, params in sorted(rows, key=lambda r: _order(net, r[0])):
        layers.add_row(name, kind, shape, f"{params:,}")
    console.print(layers)
    console.print(f"total params: {count_params(net):,}   GFLOPs: {genotype_costs(g)['flops'] / 1e9:.3f}")


def _order(net, name, _cache={}):
    key = id(net)
    if key not in _cache:
        _cache.clear()
        _cache[key] = {n: i for i, (n, _) in enumerate(net.named_modules())}
    return _cache[key][name]
