"""A plain hand-written Optuna TPE loop over a small CNN space: the baseline of scripts/bench_anytime.py.

What a user writes in an afternoon: a few conv layers with sampled width, depth and learning rate, each
trained a few epochs with Adam, stopped by Optuna's timeout. Same data splits as autocnn (its loaders),
one CPU thread; every trial records its test accuracy beside its validation accuracy.

    python scripts/handwritten_optuna.py --dataset digits --timeout 90 --seed 0 --storage sqlite:///hand.db
"""
import argparse

import optuna
import torch
from torch import nn

from autocnn.data import load_dataset


def accuracy(model, images, labels):
    """The share of images classified right, exactly (as autocnn's trainer reports it): a float32 mean rounds
    358/360 down and 359/360 up, which decided ties on digits' 360 validation images."""
    model.eval()
    with torch.no_grad():
        return (model(images).argmax(1) == labels).sum().item() / len(labels)


def objective(trial, data, epochs):
    width = trial.suggest_int("width", 8, 64, log=True)
    depth = trial.suggest_int("depth", 1, 3)
    lr = trial.suggest_float("lr", 1e-3, 1e-2, log=True)
    layers, channels = [], data.in_chans
    for i in range(depth):
        layers += [nn.Conv2d(channels, width * 2 ** i, 3, padding=1), nn.BatchNorm2d(width * 2 ** i), nn.ReLU(),
                   nn.MaxPool2d(2, ceil_mode=True)]
        channels = width * 2 ** i
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, data.num_classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = data.train.inputs(), data.train.labels  # normalised float32 (the splits store uint8 pixels)
    for epoch in range(epochs):
        model.train()
        for batch in torch.randperm(len(y)).split(32):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
        val = accuracy(model, data.val.inputs(), data.val.labels)
        trial.report(val, epoch)
    trial.set_user_attr("test_metric", accuracy(model, data.test.inputs(), data.test.labels))
    return val


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-root", default=None)
    p.add_argument("--timeout", type=float, required=True, help="seconds; Optuna stops starting trials after it")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--storage", default=None)
    p.add_argument("--study", default="handwritten")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    data = load_dataset(args.dataset, args.data_root, seed=args.seed)
    study = optuna.create_study(study_name=args.study, storage=args.storage, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=args.seed))
    study.optimize(lambda trial: objective(trial, data, args.epochs), timeout=args.timeout)
    print(f"best val {study.best_value:.4f} test {study.best_trial.user_attrs['test_metric']:.4f} "
          f"({len(study.trials)} trials)")


if __name__ == "__main__":
    main()
