"""Scoring a model on labelled images and choosing post-processing thresholds."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import torch

from .config import PostprocessConfig
from .data import TrainingPair
from .metrics import DEFAULT_THRESHOLDS, MatchCounts, dataset_counts
from .model import SegmentationModel
from .postprocess import instances_from_outputs


def limit_pixels(pairs: Sequence[TrainingPair], max_pixels: int | None) -> list[TrainingPair]:
    """The first pairs whose pixels add up to at most ``max_pixels`` (at least one pair)."""
    if max_pixels is None:
        return list(pairs)
    chosen, total = [], 0
    for pair in pairs:
        n = int(np.prod(pair.spatial_shape))
        if chosen and total + n > max_pixels:
            continue
        chosen.append(pair)
        total += n
    return chosen


def _masked(labels: np.ndarray, annotated: np.ndarray | None) -> np.ndarray:
    return labels if annotated is None else np.where(annotated, labels, 0)


class CachedValidation:
    """Network outputs for validation pairs, kept so thresholds can be searched quickly."""

    def __init__(self, model: SegmentationModel, pairs: Sequence[TrainingPair]) -> None:
        self.mode = model.config.mode
        self.sampling = model.config.voxel_size  # pairs are fitted to the model's voxels
        self.pairs = list(pairs)
        self.outputs = list(
            model.predict_outputs_many(
                (p.image for p in self.pairs),
                channel_axis=0,
                adapt=None,  # training pairs are already fitted to the network
                intensity_ranges=[p.intensity_range for p in self.pairs],
            )
        )
        self.gts = [_masked(p.labels, p.annotated) for p in self.pairs]
        self.caches: list[dict] = [{} for _ in self.pairs]

    def counts(
        self, params: PostprocessConfig, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
    ) -> list[MatchCounts]:
        def one(i: int) -> np.ndarray:
            labels = instances_from_outputs(
                self.outputs[i], self.mode, params, self.caches[i], sampling=self.sampling
            )
            return _masked(labels, self.pairs[i].annotated)

        # scikit-image releases the GIL for most of the post-processing. As many threads
        # as torch may use: a viewer that trains leaves a core to its GUI thread.
        with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
            preds = list(pool.map(one, range(len(self.pairs))))
        return dataset_counts(self.gts, preds, thresholds)


def tuning_score(counts: list[MatchCounts]) -> float:
    """What the threshold search maximises: the mean AP over the given IoU thresholds."""
    # AP@0.5 is what users count objects by; AP@0.7 keeps the outlines honest.
    return float(np.mean([c.ap for c in counts]))


def tune_postprocess(
    cache: CachedValidation, start: PostprocessConfig
) -> tuple[PostprocessConfig, list[MatchCounts]]:
    """Coordinate search over foreground threshold, seed threshold and minimum size (and,
    in distance mode, seed prominence and the smoothing of the distance map).

    Maximises the mean of AP@0.5 and AP@0.7 on the cached validation outputs. Smoothing is
    searched because the right width depends on the data: touching nuclei whose distance
    peaks lie close together merge under a wide Gaussian, noisy maps split under a narrow
    one. Seed prominence and smoothing are searched together, as one coordinate: both
    decide which peaks split, so the pair that splits touching nuclei can need both
    changed at once (a 3D model's validation volume gained two nuclei from prominence
    0.05 → 0.02 with smoothing 1 → 0.5, and nothing from either alone).
    """
    # Each coordinate: the parameters it sets, and their values to try.
    coordinates: list[tuple[tuple[str, ...], list[tuple]]] = [
        (("fg_threshold",), [(v,) for v in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)]),
        (("seed_threshold",), [(v,) for v in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)]),
        (("min_size",), [(v,) for v in (0, 5, 10, 20, 40)]),
    ]
    if cache.mode == "distance":
        pairs = list(itertools.product((0.0, 0.02, 0.05, 0.1), (0.0, 0.5, 1.0, 2.0)))
        coordinates.append((("seed_prominence", "smoothing"), pairs))
    best = start
    best_score = tuning_score(cache.counts(best, (0.5, 0.7)))
    for _ in range(2):
        improved = False
        for names, grid in coordinates:
            for values in grid:
                candidate = replace(best, **dict(zip(names, values, strict=True)))
                if candidate == best:
                    continue
                score = tuning_score(cache.counts(candidate, (0.5, 0.7)))
                if score > best_score + 1e-9:
                    best, best_score, improved = candidate, score, True
        if not improved:
            break
    return best, cache.counts(best)


def required_gain(own_score: float, n_objects: int, *, validated: bool = False) -> float:
    """How much better tuned thresholds must score than the model's own to replace them.

    One object's worth of AP (1 / ``n_objects``) by default: on a validation set of a few
    dozen objects, smaller gains are noise (on DSB2018, re-tuning the starter's thresholds
    on one validation image for such a gain cost 0.016 test AP@0.5). ``validated``
    thresholds, chosen on the data a model was trained on and kept with its unchanged
    weights, must lose by two standard errors of their score,
    ``2 * sqrt(s * (1 - s) / n_objects)``: the search tries about forty candidates, so its
    best beats them on a few dozen objects by chance (the built-in starter's thresholds
    re-tuned on bands of three DSB images for a one-object gain cost 0.058 test AP@0.5).
    """
    n = max(n_objects, 1)
    one_object = 1.0 / n
    if not validated:
        return one_object
    score = min(max(own_score, 0.0), 1.0)
    return max(one_object, 2.0 * float(np.sqrt(score * (1.0 - score) / n)))


def tuned_thresholds(
    model: SegmentationModel, pairs: Sequence[TrainingPair], *, validated: bool = False
) -> tuple[PostprocessConfig, list[MatchCounts], float]:
    """Thresholds tuned on ``pairs``, the AP counts they give, and the tuning score.

    The model's own thresholds are kept unless the tuned ones score better by
    :func:`required_gain` (``validated``: the model's weights and thresholds are a trained
    model's, unchanged, so its thresholds need a clear loss to be replaced).
    """
    cache = CachedValidation(model, pairs)
    own = tuning_score(cache.counts(model.postprocess, (0.5, 0.7)))
    params, counts = tune_postprocess(cache, model.postprocess)
    score = tuning_score(cache.counts(params, (0.5, 0.7)))
    n_objects = sum(int(np.count_nonzero(np.unique(gt))) for gt in cache.gts)
    if score - own < required_gain(own, n_objects, validated=validated):
        params, score = model.postprocess, own
        counts = cache.counts(params)
    return params, counts, score


def validation_ap(
    model: SegmentationModel, val_pairs: Sequence[TrainingPair], max_pixels: int | None
) -> dict[float, float]:
    """AP@0.5 and AP@0.7 with the model's thresholds on up to ``max_pixels`` of validation."""
    cache = CachedValidation(model, limit_pixels(val_pairs, max_pixels))
    counts = cache.counts(model.postprocess, (0.5, 0.7))
    model.network.train()
    return {c.threshold: c.ap for c in counts}
