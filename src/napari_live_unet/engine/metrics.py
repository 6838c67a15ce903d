"""Instance matching and average precision, as StarDist defines them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

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


def iou_pairs(
    gt: np.ndarray, pred: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """IoU of every overlapping (ground truth, prediction) pair of objects, sparsely.

    Returns ``rows, cols, iou, n_gt, n_pred``: row i is the i-th nonzero ground-truth id in
    increasing order, likewise for columns. Only pairs that share pixels are listed, so
    memory grows with the image, not with the product of the object counts.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"shapes differ: ground truth {gt.shape}, prediction {pred.shape}")
    gt_ids, gt_inv = np.unique(gt, return_inverse=True)
    pr_ids, pr_inv = np.unique(pred, return_inverse=True)
    gt_inv, pr_inv = gt_inv.ravel().astype(np.int64), pr_inv.ravel().astype(np.int64)
    n_pr = len(pr_ids)
    codes, overlap = np.unique(gt_inv * n_pr + pr_inv, return_counts=True)
    rows, cols = codes // n_pr, codes % n_pr
    area_gt = np.bincount(gt_inv, minlength=len(gt_ids))
    area_pr = np.bincount(pr_inv, minlength=n_pr)
    keep = (gt_ids[rows] != 0) & (pr_ids[cols] != 0)
    rows, cols, overlap = rows[keep], cols[keep], overlap[keep].astype(np.float64)
    iou = overlap / (area_gt[rows] + area_pr[cols] - overlap)
    # shift to indices among nonzero ids (id 0, when present, sorts first)
    rows -= int(gt_ids[0] == 0)
    cols -= int(pr_ids[0] == 0)
    n_gt = len(gt_ids) - int(gt_ids[0] == 0) if len(gt_ids) else 0
    n_pred = n_pr - int(pr_ids[0] == 0) if n_pr else 0
    return rows, cols, iou, n_gt, n_pred


def iou_matrix(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Dense IoU between every ground-truth object (rows) and predicted object (columns).

    For small object counts (inspection, tests); :func:`match_counts` works sparsely.
    """
    rows, cols, iou, n_gt, n_pred = iou_pairs(gt, pred)
    dense = np.zeros((n_gt, n_pred))
    dense[rows, cols] = iou
    return dense


def match_counts(
    gt: np.ndarray, pred: np.ndarray, thresholds: Iterable[float] = DEFAULT_THRESHOLDS
) -> list[MatchCounts]:
    """One-to-one matching of objects at each IoU threshold (match if IoU >= threshold)."""
    rows, cols, iou, n_gt, n_pr = iou_pairs(gt, pred)
    out = []
    for t in thresholds:
        hit = iou >= t
        if n_gt == 0 or n_pr == 0 or not hit.any():
            tp = 0
        elif t > 0.5:
            # Above 0.5 an object can overlap at most one partner that much: no assignment.
            tp = int(np.count_nonzero(hit))
        else:
            # The most one-to-one matches among pairs above the threshold.
            graph = csr_matrix(
                (np.ones(int(hit.sum())), (rows[hit], cols[hit])), shape=(n_gt, n_pr)
            )
            tp = int(np.count_nonzero(maximum_bipartite_matching(graph, perm_type="column") >= 0))
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
