"""Before fine-tuning: are the annotated areas painted completely?

Inside an annotated region (or a whole image without regions) every unpainted pixel is
taught as background, so an object the user did not paint teaches the model to miss such
objects. The starting model's prediction shows where objects are: when it sees much more
foreground than was painted, the user is warned before training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .data import TrainingPair
from .image_adapter import AUTO_FIT, AdaptOptions
from .model import SegmentationModel

MIN_PAINTED_FRACTION = 0.5
"""Warn when less than this fraction of the predicted foreground is painted."""
MIN_PREDICTED_PIXELS = 64
"""Ignore areas where the model sees less foreground than this (a speck, not objects)."""
MAX_PIXELS = 4_000_000
"""Check pairs up to this many pixels in all, so the check costs seconds, not minutes."""


@dataclass(frozen=True)
class SparseAnnotation:
    """An annotated area where the starting model sees far more objects than were painted."""

    name: str
    painted: int  # labelled pixels in the annotated area
    predicted: int  # pixels the starting model calls foreground there

    def describe(self) -> str:
        share = self.painted / max(1, self.predicted)
        return (
            f"{self.name}: only {share:.0%} of what the model sees as objects is painted. "
            "Unpainted objects inside an annotated area are taught as background: paint "
            "them, or draw the region around the painted objects only."
        )


def sparse_annotations(
    model: SegmentationModel,
    pairs: Sequence[TrainingPair],
    adapt: AdaptOptions | None = AUTO_FIT,
    min_fraction: float = MIN_PAINTED_FRACTION,
    max_pixels: int = MAX_PIXELS,
) -> list[SparseAnnotation]:
    """The training pairs whose painted pixels cover less than ``min_fraction`` of the
    foreground ``model`` predicts in their annotated area.

    Parameters
    ----------
    model : SegmentationModel
        The model training starts from; its foreground threshold decides what counts.
    pairs : sequence of TrainingPair
        Training pairs before fitting (raw, channel-first images).
    adapt : AdaptOptions or None
        How to fit the images to the model, as for prediction.
    min_fraction : float
        Painted share of the predicted foreground below which a pair is reported.
    max_pixels : int
        Pairs are checked in order until this many pixels have been predicted.
    """
    found: list[SparseAnnotation] = []
    checked = 0
    for pair in pairs:
        size = int(np.prod(pair.spatial_shape))
        if checked and checked + size > max_pixels:
            break
        checked += size
        outputs = next(
            model.predict_outputs_many(
                [pair.image],
                channel_axis=0,
                adapt=adapt,
                intensity_ranges=[pair.intensity_range],
            )
        )
        area = np.ones(pair.spatial_shape, bool) if pair.annotated is None else pair.annotated
        predicted = int(np.count_nonzero((outputs[0] > model.postprocess.fg_threshold) & area))
        painted = int(np.count_nonzero((pair.labels > 0) & area))
        if predicted >= MIN_PREDICTED_PIXELS and painted < min_fraction * predicted:
            found.append(SparseAnnotation(pair.name, painted, predicted))
    return found
