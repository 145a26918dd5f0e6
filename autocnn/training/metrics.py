"""Classification metrics computed with torch on the device, so evaluation needs no host round trips."""
from __future__ import annotations

import torch


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-class AP (N×K scores, N×K 0/1 targets): mean precision at the rank of each positive.

    Classes without positives get NaN. Ties are broken by sort order (sklearn groups them instead;
    the two agree whenever scores are distinct).
    """
    order = scores.argsort(dim=0, descending=True)
    hits = targets.gather(0, order).float()
    ranks = torch.arange(1, len(scores) + 1, device=scores.device, dtype=torch.float32).unsqueeze(1)
    precision = hits.cumsum(0) / ranks
    positives = hits.sum(0)
    return (precision * hits).sum(0) / positives.where(positives > 0, torch.nan)


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Macro mAP over classes with at least one positive; NaN when no class has one."""
    ap = average_precision(scores, targets)
    return float(ap.nanmean()) if bool((~ap.isnan()).any()) else float("nan")


def micro_f1(logits: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5) -> float:
    """Micro-averaged F1 of `sigmoid(logits) > threshold`; 0 when there is nothing to find or predict."""
    pred = logits.sigmoid() > threshold
    truth = targets > 0.5
    tp = (pred & truth).sum()
    wrong = (pred ^ truth).sum()
    denom = 2 * tp + wrong
    return float(2 * tp / denom) if int(denom) > 0 else 0.0


def macro_f1(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Macro-averaged F1 of single-label predictions (class indices): the mean of per-class F1 over classes
    that occur in `labels` or in `predicted` (sklearn's `f1_score(average="macro")`; a class absent from
    both has no F1 and is left out)."""
    tp = torch.bincount(labels[predicted == labels], minlength=num_classes).float()
    pred_count = torch.bincount(predicted, minlength=num_classes).float()
    true_count = torch.bincount(labels, minlength=num_classes).float()
    denom = pred_count + true_count
    seen = denom > 0
    return float((2 * tp[seen] / denom[seen]).mean()) if bool(seen.any()) else 0.0


def subset_accuracy(logits: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5) -> float:
    """Multi-label accuracy as sklearn's `accuracy_score`: the share of samples whose every label is right."""
    exact = ((logits.sigmoid() > threshold) == (targets > 0.5)).all(dim=1)
    return float(exact.float().mean()) if len(exact) else 0.0
