"""Data-parallel supernet training on the CPU: two real processes joined over gloo
(`autocnn.supernet.distributed`), each training on its half of every batch, end an epoch with identical
weights and BatchNorm statistics; the CLI's `--processes 2` trains, records and resumes a supernet."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from autocnn.data import load_dataset
from autocnn.spaces import load_space
from autocnn.supernet import ElasticSpace, Supernet, train_supernet
from autocnn.supernet.distributed import launch, world
from autocnn.supernet.trainer import network_inputs
from conftest import run_cli

TINY = Path(__file__).with_name("tiny_supernet.yaml")


def _train_one_epoch(out: str) -> None:
    """One replica: a supernet from the same seed, one epoch of sandwich steps, its state saved by rank."""
    rank, replicas = world()
    data = load_dataset("digits", seed=0, limit=200)
    space = ElasticSpace(load_space(TINY))
    x, y = network_inputs(data.train, 16), data.train.labels  # the space's base_resolution
    torch.manual_seed(100 + rank)  # different initial weights: DDP must start every replica from the first's
    net = Supernet(space.largest())
    history = train_supernet(net, space, x, y, epochs=1, batch_size=32, seed=3)
    torch.save({"state": net.state_dict(), "history": history, "replicas": replicas}, Path(out) / f"rank{rank}.pt")


def test_two_gloo_processes_end_an_epoch_with_identical_weights(tmp_path):
    launch(_train_one_epoch, 2, str(tmp_path))
    first, second = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert first["replicas"] == second["replicas"] == 2
    assert first["history"] == second["history"] and torch.isfinite(torch.tensor(first["history"])).all()
    a, b = first["state"], second["state"]
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different  # parameters and running statistics alike
    torch.manual_seed(100)
    untrained = Supernet(ElasticSpace(load_space(TINY)).largest()).state_dict()
    changed = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], untrained[k])]
    assert len(changed) > len(a) // 2  # it trained: most tensors moved from the first replica's initial weights


def test_cli_trains_in_two_processes_and_resumes_in_one(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[2]),
                                                     os.environ.get("PYTHONPATH")) if p)}
    common = ("supernet", "train", "--space", str(TINY), "--name", "ddp", "--limit", "200", "--batch-size", "32",
              "--storage", storage)
    two = run_cli(*common, "--epochs", "1", "--processes", "2", cwd=tmp_path, env=env)
    assert two.returncode == 0, two.stderr
    assert "training in 2 processes (gloo)" in two.stderr and "epoch 1/1 loss" in two.stderr
    one = run_cli(*common, "--epochs", "2", cwd=tmp_path, env=env)
    assert one.returncode == 0, one.stderr
    record = json.loads((tmp_path / "supernets" / "ddp" / "supernet.json").read_text())
    assert record["epochs_done"] == 2 and len(record["losses"]) == 2
    assert [(r["started_at_epoch"], r["epochs_done"], r["processes"]) for r in record["runs"]] == [(0, 1, 2), (1, 2, 1)]
