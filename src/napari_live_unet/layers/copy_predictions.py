"""Copy predicted objects into a ground-truth Labels layer (the correct-and-retrain step).

Plain functions on napari layers: no Qt, no dialogs; the predict widget asks the questions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .shape_regions import Box


@dataclass(frozen=True)
class CopyReport:
    """What a copy did.

    Attributes
    ----------
    copied : int
        Predicted objects written into the ground truth (wholly or in part).
    skipped : int
        Predicted objects left out because more than half of their area lies on one
        annotated object (the same object, already annotated). Always 0 with overwrite.
    pixels_written : int
        Ground-truth pixels whose value changed.
    protected_pixels : int
        Pixels left unwritten because they lie in ``protected`` (validation regions).
    outside_training : int
        Copied objects with no written pixel in ``training`` (they will not be trained on);
        0 when no training mask was given.
    """

    copied: int
    skipped: int
    pixels_written: int
    protected_pixels: int = 0
    outside_training: int = 0

    def describe(self) -> str:
        text = f"copied {self.copied} object(s), {self.pixels_written} pixel(s) written"
        if self.skipped:
            text += f"; skipped {self.skipped} already annotated"
        if self.protected_pixels:
            text += f"; {self.protected_pixels} pixel(s) in validation regions left as they were"
        if self.outside_training:
            text += (
                f". {self.outside_training} object(s) were copied outside the training "
                "regions and will not be used"
            )
        return text


def copy_predictions(
    predictions: np.ndarray,
    ground_truth,
    region: Box | Sequence[Box] | None = None,
    overwrite: bool = False,
    protected: np.ndarray | None = None,
    training: np.ndarray | None = None,
) -> CopyReport:
    """Copy predicted objects into the ground-truth Labels layer, undoable in one step.

    Parameters
    ----------
    predictions : ndarray of int
        Predicted instance labels, same shape as the ground truth's data.
    ground_truth : napari.layers.Labels
        The layer to write to. All writes go through one ``data_setitem`` call, so
        ``ground_truth.undo()`` reverts the whole copy.
    region : tuple of slices, list of them, or None
        Where to copy: a box in data coordinates, several boxes (their union), or None for
        the whole array (every frame of a stack). Objects crossing a box's edge are copied
        only inside it, and their area is counted inside it.
    overwrite : bool
        False: only pixels that are 0 in the ground truth are written, and a predicted
        object more than half of whose area lies on one annotated object is skipped (it is
        that object). True: the region's ground truth is replaced by the predictions,
        erasing annotations there.
    protected : ndarray of bool, optional
        Pixels never written (validation regions: the model must not be scored on its own
        predictions), same shape as the ground truth.
    training : ndarray of bool, optional
        The training regions, to count copied objects that lie wholly outside them.

    Returns
    -------
    CopyReport

    Notes
    -----
    Copied objects get fresh ids above the ground truth's largest id, so they never merge
    with annotated objects, inside or outside the region.
    """
    gt = ground_truth.data
    predictions = np.asarray(predictions)
    if predictions.shape != tuple(gt.shape):
        raise ValueError(
            f"predictions have shape {predictions.shape} but the ground truth "
            f"'{ground_truth.name}' has shape {tuple(gt.shape)}"
        )
    gt_max = int(np.max(gt)) if gt.size else 0
    # Work on the bounding box of the region only.
    crop, inside = crop_and_mask(gt.shape, region)
    gt_values = np.asarray(gt[crop])
    ids, inverse = np.unique(np.where(inside, predictions[crop], 0), return_inverse=True)
    inverse = inverse.reshape(gt_values.shape)
    objects = ids > 0
    if overwrite:
        keep = objects
    else:
        # Area of each predicted object, and its largest overlap with one annotated object.
        area = np.bincount(inverse[inside], minlength=len(ids))
        annotated = inside & (gt_values > 0)
        pairs = inverse[annotated].astype(np.int64) * (gt_max + 1) + gt_values[annotated].astype(
            np.int64
        )
        pair_ids, pair_counts = np.unique(pairs, return_counts=True)
        overlap = np.zeros(len(ids), np.int64)
        np.maximum.at(overlap, pair_ids // (gt_max + 1), pair_counts)
        keep = objects & ~(2 * overlap > area)
    if np.issubdtype(gt_values.dtype, np.integer):
        top = np.iinfo(gt_values.dtype).max
        if gt_max + int(keep.sum()) > top:
            raise ValueError(
                f"'{ground_truth.name}' stores labels as {gt_values.dtype} (ids up to {top}); "
                f"copying {int(keep.sum())} more objects after id {gt_max} would overflow"
            )
    new_ids = np.zeros(len(ids), np.int64)
    new_ids[keep] = np.arange(gt_max + 1, gt_max + 1 + int(keep.sum()))
    new_values = new_ids[inverse]
    # Without overwrite only unannotated pixels change.
    write = inside & (new_values != gt_values) if overwrite else (new_values > 0) & (gt_values == 0)
    protected_pixels = 0
    if protected is not None:
        blocked = write & np.asarray(protected[crop])
        protected_pixels = int(blocked.sum())
        write &= ~blocked
    written = new_values[write]
    outside = 0
    if training is not None and written.size:
        in_training = np.asarray(training[crop])[write]
        kept_ids = np.unique(written[written > 0])
        used_ids = np.unique(written[in_training & (written > 0)])
        outside = len(kept_ids) - len(used_ids)
    if written.size:
        offsets = [s.start for s in crop]
        indices = tuple(i + o for i, o in zip(np.nonzero(write), offsets, strict=True))
        ground_truth.data_setitem(indices, written.astype(gt_values.dtype))
    return CopyReport(
        copied=len(np.unique(written[written > 0])),
        skipped=int((objects & ~keep).sum()),
        pixels_written=int(written.size),
        protected_pixels=protected_pixels,
        outside_training=outside,
    )


def crop_and_mask(shape: Sequence[int], region) -> tuple[Box, np.ndarray]:
    """Bounding box of a copy region (see :func:`copy_predictions`) in an array of
    ``shape``, and the region's mask within that box."""
    shape = tuple(shape)
    if region is None:
        return tuple(slice(0, n) for n in shape), np.ones(shape, bool)
    # (start, stop) per axis of each box, clipped to the array.
    boxes = [
        [b.indices(n)[:2] for b, n in zip(box, shape, strict=True)] for box in _boxes(region, shape)
    ]
    boxes = [box for box in boxes if all(lo < hi for lo, hi in box)]
    if not boxes:
        return tuple(slice(0, 0) for _ in shape), np.zeros((0,) * len(shape), bool)
    low = np.min([[lo for lo, _ in box] for box in boxes], axis=0)
    high = np.max([[hi for _, hi in box] for box in boxes], axis=0)
    crop = tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high, strict=True))
    mask = np.zeros(tuple(high - low), bool)
    for box in boxes:
        mask[tuple(slice(lo - o, hi - o) for (lo, hi), o in zip(box, low, strict=True))] = True
    return crop, mask


def _boxes(region, shape) -> list[Box]:
    boxes = [region] if len(region) and isinstance(region[0], slice) else list(region)
    for box in boxes:
        if len(box) != len(shape):
            raise ValueError(f"region {box} does not have {len(shape)} dimensions")
    return boxes
