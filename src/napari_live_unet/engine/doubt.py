"""Where to correct next: how much the model doubts each pixel and each object it found.

Two signals, both from the network's own outputs:

- **margin**: how close the foreground probability is to the threshold that decides it
  (1 at the threshold, 0 where the network is sure);
- **disagreement under flips**: the image is also predicted flipped (y, x, both), and
  each object is looked for in the flipped predictions' labels. An object that a flip
  finds split, merged with a neighbour or not at all is one the model is unsure of, even
  where its probabilities look confident (split/merge ambiguities show only here).

An object's score joins its mean margin and its instability (1 - the mean best IoU of its
matches under the flips) as a noisy-or, so either signal alone can rank it high. Regions
of clearly raised but sub-threshold foreground that no object covers are listed too, with
label 0, as possibly missed objects.

The list is ordered by what a correction is worth, not by doubt alone: the score times
the entry's size as a fraction of a typical object (the median predicted object, capped at
1). Scraps of a few pixels are often wrong but correcting one teaches the next training
run next to nothing, while a doubtful whole nucleus, a merge or a missed nucleus carries
real objects into the annotations (measured with ``benchmarks/hitl.py``).
"""

from __future__ import annotations

import csv
import io
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
from scipy import ndimage as ndi

from .atomic_write import write_bytes_atomic
from .image_adapter import AUTO_FIT, AdaptOptions
from .io import write_tiff_atomic

if TYPE_CHECKING:
    from .model import SegmentationModel

__all__ = ["DoubtReport", "ObjectDoubt", "assess_doubt", "doubt_from_outputs", "write_doubt"]

# Flips of the spatial y/x axes under which the model is asked again.
_FLIPS: tuple[tuple[int, ...], ...] = ((-1,), (-2,), (-2, -1))
_MISSED_FRACTION = 0.5  # a missed-object candidate has foreground above half the threshold


@dataclass(frozen=True)
class ObjectDoubt:
    """One entry of the ranked list.

    Attributes
    ----------
    label : int
        Id in the labels; 0 for a possibly missed object (no label yet).
    score : float
        In [0, 1]; higher is more doubtful.
    centroid : tuple of float
        Image pixel coordinates of the spatial axes (y, x or z, y, x).
    bbox : tuple of (int, int)
        Per spatial axis, (start, stop) in image pixels.
    area : int
        Pixels (voxels).
    reason : str
        Short words for the user: "unsure outline", "may be two objects", "may be merged
        with a neighbour", "unstable" or "possibly missed".
    priority : float
        In [0, 1], what correcting it is worth: ``score`` times the entry's area as a
        fraction of a typical object's (at most 1). The list is ordered by it.
    """

    label: int
    score: float
    centroid: tuple[float, ...]
    bbox: tuple[tuple[int, int], ...]
    area: int
    reason: str
    priority: float = 0.0


@dataclass(frozen=True)
class DoubtReport:
    """The doubt map and the ranked objects of one image.

    Attributes
    ----------
    map : ndarray of float32
        In [0, 1], the image's spatial shape.
    objects : tuple of ObjectDoubt
        Most worth correcting first (highest ``priority``).
    """

    map: np.ndarray
    objects: tuple[ObjectDoubt, ...]


def doubt_from_outputs(
    outputs: np.ndarray,
    labels: np.ndarray,
    mode: str,
    *,
    flipped_outputs: Sequence[np.ndarray] = (),
    flipped_labels: Sequence[np.ndarray] = (),
    fg_threshold: float = 0.5,
    min_size: int = 15,
) -> DoubtReport:
    """Doubt map and ranked objects from a prediction (the pure part of :func:`assess_doubt`).

    Parameters
    ----------
    outputs : ndarray, shape (2, *spatial)
        The network's outputs as the model gives them (channel 0: foreground probability).
    labels : ndarray of int
        The instance labels made from ``outputs``.
    mode : {"distance", "boundary"}
        The model's mode (the foreground channel is the same in both).
    flipped_outputs : sequence of ndarray
        Outputs of flipped copies of the image, flipped back to the image's orientation.
    flipped_labels : sequence of ndarray
        Instance labels of ``flipped_outputs``, same orientation; without them objects are
        ranked by their margin alone.
    fg_threshold : float
        The foreground threshold the labels were made with.
    min_size : int
        Smallest object (pixels) the labels keep: smaller missed-object candidates are
        not listed.

    Returns
    -------
    DoubtReport
    """
    if mode not in ("distance", "boundary"):
        raise ValueError(f"mode must be 'distance' or 'boundary', got {mode!r}")
    labels = np.asarray(labels)
    fg = np.asarray(outputs[0], np.float32)
    if fg.shape != labels.shape:
        raise ValueError(f"outputs of shape {fg.shape[1:]} for labels of shape {labels.shape}")
    doubt = _margin(fg, fg_threshold)
    if flipped_outputs:
        others = np.stack([np.asarray(o[0], np.float32) for o in flipped_outputs])
        doubt = np.maximum(doubt, np.clip(2 * np.abs(others - fg).max(axis=0), 0, 1))
    entries = _objects(labels, doubt, flipped_labels)
    entries += _missed(fg, labels, doubt, fg_threshold, min_size)
    entries = _prioritised(entries)
    entries.sort(key=lambda e: (-e.priority, -e.score, e.label))
    return DoubtReport(doubt.astype(np.float32), tuple(entries))


def assess_doubt(
    model: SegmentationModel,
    image: np.ndarray,
    *,
    channel_axis: int | None = None,
    adapt: AdaptOptions | None = AUTO_FIT,
    flips: bool = True,
    stop: threading.Event | None = None,
) -> tuple[np.ndarray, np.ndarray, DoubtReport] | None:
    """Predict ``image`` and say where the model doubts its result.

    Parameters
    ----------
    model : SegmentationModel
    image : ndarray
        As :meth:`SegmentationModel.segment` takes it.
    channel_axis, adapt :
        As for :meth:`SegmentationModel.predict_outputs`.
    flips : bool
        Also predict three flipped copies (4x the network's work) and rank objects by
        their stability under them; False: by the foreground margin alone.
    stop : threading.Event, optional
        Checked between batches of tiles; once set, the assessment ends early.

    Returns
    -------
    (outputs, labels, report) or None
        The outputs and labels are those :meth:`SegmentationModel.segment` gives; None if
        ``stop`` ended it.
    """
    kwargs = {"channel_axis": channel_axis, "adapt": adapt, "stop": stop}
    outputs = model.predict_outputs(image, **kwargs)
    if outputs is None:
        return None
    zoom = model.image_zoom(adapt.diameter if adapt else None, adapt.voxel_size if adapt else None)
    labels = model.instances(outputs, zoom=zoom)
    flipped_outputs, flipped_labels = [], []
    # Each flip predicted once: a model that averages flips would make them all alike.
    once = model.without_flip_average()
    if flips:
        data = np.asarray(image)
        spatial_axes = _spatial_axes(data, labels.shape, channel_axis)
        for axes in _FLIPS:
            if stop is not None and stop.is_set():
                return None
            flipped = np.flip(data, axis=tuple(spatial_axes[a] for a in axes)).copy()
            out = once.predict_outputs(flipped, **kwargs)
            if out is None:
                return None
            out = np.flip(out, axis=axes).copy()
            flipped_outputs.append(out)
            flipped_labels.append(model.instances(out, zoom=zoom))
    params, _, _ = model.postprocess_plan(zoom)
    report = doubt_from_outputs(
        outputs,
        labels,
        model.config.mode,
        flipped_outputs=flipped_outputs,
        flipped_labels=flipped_labels,
        fg_threshold=params.fg_threshold,
        min_size=params.min_size,
    )
    return outputs, labels, report


def write_doubt(report: DoubtReport, map_path: Path, csv_path: Path) -> None:
    """Write the map as a float32 TIFF and the ranked objects as CSV, each atomically.

    Columns: ``rank, label, score, priority, reason, area``, the centroid per axis
    (``centroid_z`` in 3D, ``centroid_y``, ``centroid_x``) and the box per axis
    (``start_y, stop_y, ...``). Label 0 rows are possibly missed objects.
    """
    axes = ("z", "y", "x")[-report.map.ndim :]
    header = ["rank", "label", "score", "priority", "reason", "area"]
    header += [f"centroid_{a}" for a in axes]
    header += [f"{end}_{a}" for a in axes for end in ("start", "stop")]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    for rank, entry in enumerate(report.objects, start=1):
        row: list = [rank, entry.label, f"{entry.score:.4f}", f"{entry.priority:.4f}"]
        row += [entry.reason, entry.area]
        row += [f"{c:.1f}" for c in entry.centroid]
        row += [v for box in entry.bbox for v in box]
        writer.writerow(row)
    write_tiff_atomic(map_path, report.map.astype(np.float32))
    write_bytes_atomic(csv_path, text.getvalue().encode())


def _margin(fg: np.ndarray, threshold: float) -> np.ndarray:
    """1 at the threshold, falling linearly to 0 at probability 0 and 1."""
    threshold = min(max(threshold, 1e-3), 1 - 1e-3)
    below = fg / threshold
    above = (1 - fg) / (1 - threshold)
    return np.clip(np.where(fg < threshold, below, above), 0, 1).astype(np.float32)


def _objects(labels, doubt, flipped_labels) -> list[ObjectDoubt]:
    entries = []
    for label, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        inside = labels[box] == label
        area = int(inside.sum())
        margin = float(doubt[box][inside].mean())
        instability, reason = 0.0, "unsure outline"
        if flipped_labels:
            ious, splits, merges = [], 0, 0
            for other in flipped_labels:
                iou, parts, shared = _best_match(inside, other[box], labels[box], label, other)
                ious.append(iou)
                splits += parts >= 2
                merges += shared
            instability = 1 - float(np.mean(ious))
            if instability > margin:
                reason = (
                    "may be two objects"
                    if splits > merges
                    else "may be merged with a neighbour"
                    if merges
                    else "unstable"
                )
        score = 1 - (1 - margin) * (1 - instability)
        entries.append(_entry(label, score, box, inside, area, reason))
    return entries


def _best_match(inside, other_box, labels_box, label, other_full) -> tuple[float, int, bool]:
    """Best IoU of the object with an object of ``other`` labels; how many of them cover
    a tenth of it or more; whether the best match also covers another object."""
    ids, counts = np.unique(other_box[inside], return_counts=True)
    keep = ids > 0
    ids, counts = ids[keep], counts[keep]
    if not len(ids):
        return 0.0, 0, False
    area = int(inside.sum())
    parts = int((counts >= 0.1 * area).sum())
    best = int(ids[np.argmax(counts)])
    overlap = int(counts.max())
    match_area = int((other_full == best).sum())
    iou = overlap / (area + match_area - overlap)
    # The match reaches into another object of these labels (in the box it covers ours).
    others_there = labels_box[(other_box == best) & ~inside]
    merged = bool((others_there > 0).sum() >= 0.1 * area) or match_area > 1.8 * area
    return iou, parts, merged


def _missed(fg, labels, doubt, threshold, min_size) -> list[ObjectDoubt]:
    candidate = (fg > _MISSED_FRACTION * threshold) & (fg < threshold) & (labels == 0)
    regions, _ = cast("tuple[np.ndarray, int]", ndi.label(candidate))  # (labels, count)
    entries = []
    for label, box in enumerate(ndi.find_objects(regions), start=1):
        if box is None:
            continue
        inside = regions[box] == label
        area = int(inside.sum())
        if area < max(min_size, 4):
            continue
        score = float(doubt[box][inside].mean())
        entries.append(_entry(0, score, box, inside, area, "possibly missed"))
    return entries


def _prioritised(entries: list[ObjectDoubt]) -> list[ObjectDoubt]:
    """Each entry with its priority: score times its area relative to a typical object."""
    areas = [e.area for e in entries if e.label > 0] or [e.area for e in entries]
    typical = float(np.median(areas)) if areas else 1.0
    return [replace(e, priority=e.score * min(1.0, e.area / max(typical, 1.0))) for e in entries]


def _entry(label, score, box, inside, area, reason) -> ObjectDoubt:
    centre = ndi.center_of_mass(inside)
    centroid = tuple(float(s.start + c) for s, c in zip(box, centre, strict=True))
    bbox = tuple((int(s.start), int(s.stop)) for s in box)
    score = 0.0 if math.isnan(score) else min(max(float(score), 0.0), 1.0)
    return ObjectDoubt(label, score, centroid, bbox, area, reason)


def _spatial_axes(
    image: np.ndarray, spatial_shape: tuple[int, ...], channel_axis: int | None
) -> list[int]:
    """The axes of ``image`` that hold ``spatial_shape``, whatever its channel axis."""
    if image.ndim == len(spatial_shape):
        return list(range(image.ndim))
    if channel_axis is None:
        last = image.shape[: len(spatial_shape)] == tuple(spatial_shape)
        channel_axis = image.ndim - 1 if last else 0
    channel_axis %= image.ndim
    return [a for a in range(image.ndim) if a != channel_axis]
