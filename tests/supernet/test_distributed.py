"""Data-parallel supernet training on the CPU: two real processes joined over gloo
(`autocnn.supernet.distributed`), each training on its half of every batch, end an epoch with identical
weights and BatchNorm statistics; the CLI's `--processes 2` trains, records and resumes a supernet, here and
as Ray Train workers on the session's Ray cluster."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import torch
from safetensors.torch import load_file

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


def test_ray_train_workers_train_as_local_processes_do(tmp_path, ray_cluster):
    """`--backend ray`: the same two gloo replicas as Ray Train workers end with the weights `--processes 2`
    reaches on this machine, and a local run continues the supernet."""
    storage = f"sqlite:///{tmp_path / 's.db'}"
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[2]),
                                                     os.environ.get("PYTHONPATH")) if p)}
    # --device cpu: the test cluster advertises 2 logical GPUs, which --device auto would train on
    common = ("supernet", "train", "--space", str(TINY), "--limit", "200", "--batch-size", "32", "--storage", storage,
              "--device", "cpu", "--processes", "2")
    on_ray = run_cli(*common, "--name", "ray", "--epochs", "1", "--backend", "ray", "--address", ray_cluster,
                     cwd=tmp_path, env=env)
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    assert "training in 2 Ray Train workers (gloo)" in on_ray.stderr and "epoch 1/1 loss" in on_ray.stderr
    here = run_cli(*common, "--name", "here", "--epochs", "1", cwd=tmp_path, env=env)
    assert here.returncode == 0, here.stderr[-3000:]
    ray_weights, local_weights = (load_file(tmp_path / "supernets" / n / "weights.safetensors") for n in ("ray", "here"))
    assert ray_weights.keys() == local_weights.keys()
    assert all(torch.allclose(ray_weights[k], local_weights[k], atol=1e-6) for k in ray_weights)
    records = {n: json.loads((tmp_path / "supernets" / n / "supernet.json").read_text()) for n in ("ray", "here")}
    assert records["ray"]["losses"] == pytest.approx(records["here"]["losses"], abs=1e-6)
    assert [(r["processes"], r["backend"]) for r in records["ray"]["runs"]] == [(2, "ray")]
    again = run_cli(*common[:-2], "--name", "ray", "--epochs", "2", cwd=tmp_path, env=env)  # one local process
    assert again.returncode == 0, again.stderr[-3000:]
    record = json.loads((tmp_path / "supernets" / "ray" / "supernet.json").read_text())
    assert record["epochs_done"] == 2 and [r["backend"] for r in record["runs"]] == ["ray", "local"]
