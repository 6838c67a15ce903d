"""Instance matching and average precision, as StarDist defines them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class MatchCounts:
    """True positives, false positives and false negatives at one IoU threshold."""

    threshold: float
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def ap(self) -> float:
        """TP / (TP + FP + FN); 1.0 when there is nothing to find and nothing found."""
        total = self.tp + self.fp + self.fn
        return self.tp / total if total else 1.0

    def __add__(self, other: MatchCounts) -> MatchCounts:
        return MatchCounts(
            self.threshold, self.tp + other.tp, self.fp + other.fp, self.fn + other.fn
        )


def iou_matrix(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU between every ground-truth object (rows) and predicted object (columns).

    Labels are relabelled internally; row i is the i-th nonzero ground-truth id in
    increasing order, likewise for columns.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"shapes differ: ground truth {gt.shape}, prediction {pred.shape}")
    gt_ids, gt_inv = np.unique(gt, return_inverse=True)
    pr_ids, pr_inv = np.unique(pred, return_inverse=True)
    n_gt, n_pr = len(gt_ids), len(pr_ids)
    overlap = np.bincount(gt_inv.ravel() * n_pr + pr_inv.ravel(), minlength=n_gt * n_pr)
    overlap = overlap.reshape(n_gt, n_pr).astype(np.float64)
    area_gt, area_pr = overlap.sum(1, keepdims=True), overlap.sum(0, keepdims=True)
    iou = overlap / np.maximum(area_gt + area_pr - overlap, 1)
    gt_keep = gt_ids != 0
    pr_keep = pr_ids != 0
    return iou[np.ix_(gt_keep, pr_keep)]


def match_counts(
    gt: np.ndarray, pred: np.ndarray, thresholds: Iterable[float] = DEFAULT_THRESHOLDS
) -> list[MatchCounts]:
    """One-to-one matching of objects at each IoU threshold (match if IoU >= threshold)."""
    iou = iou_matrix(gt, pred)
    n_gt, n_pr = iou.shape
    out = []
    for t in thresholds:
        if n_gt == 0 or n_pr == 0:
            tp = 0
        elif t > 0.5:
            # Above 0.5 an object can overlap at most one partner that much: no assignment.
            tp = int(np.count_nonzero(iou >= t))
        else:
            cost = -(iou >= t).astype(np.float64) - iou / (2 * max(n_gt, n_pr))
            rows, cols = linear_sum_assignment(cost)
            tp = int(np.count_nonzero(iou[rows, cols] >= t))
        out.append(MatchCounts(float(t), tp, n_pr - tp, n_gt - tp))
    return out


def dataset_counts(
    gts: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
) -> list[MatchCounts]:
    """Counts summed over a dataset (pooled, not averaged per image)."""
    thresholds = tuple(thresholds)
    total = [MatchCounts(t) for t in thresholds]
    for gt, pred in zip(gts, preds, strict=True):
        total = [a + b for a, b in zip(total, match_counts(gt, pred, thresholds), strict=True)]
    return total


def format_counts(counts: Sequence[MatchCounts]) -> str:
    """A small table of AP, TP, FP, FN per threshold."""
    lines = ["IoU    AP      TP     FP     FN"]
    for c in counts:
        lines.append(f"{c.threshold:.1f}  {c.ap:.4f}  {c.tp:5d}  {c.fp:5d}  {c.fn:5d}")
    return "\n".join(lines)
