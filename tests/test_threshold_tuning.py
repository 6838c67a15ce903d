"""Choosing post-processing thresholds on validation outputs."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_live_unet.engine.config import PostprocessConfig
from napari_live_unet.engine.evaluation import CachedValidation, tune_postprocess


class _Pair:
    annotated = None


def _validation(outputs_and_labels) -> CachedValidation:
    """A CachedValidation over given outputs (no network needed)."""
    cache = CachedValidation.__new__(CachedValidation)
    cache.mode, cache.sampling = "distance", None
    cache.pairs = [_Pair() for _ in outputs_and_labels]
    cache.outputs = [o for o, _ in outputs_and_labels]
    cache.gts = [labels for _, labels in outputs_and_labels]
    cache.caches = [{} for _ in outputs_and_labels]
    return cache


def _big_and_small_touching(seed: int):
    """Large nuclei, each with a small one touching it: a wide smoothing of the distance
    map flattens the small one's peak into its neighbour's slope, and the two merge."""
    rng = np.random.default_rng(seed)
    shape = (96, 96)
    labels = np.zeros(shape, np.int32)
    yy, xx = np.indices(shape)
    n = 0
    for cy in range(16, 96, 32):
        for cx in range(16, 96, 32):
            big, small, angle = rng.uniform(9, 11), rng.uniform(3, 4.5), rng.uniform(0, 2 * np.pi)
            n += 1
            labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= big * big] = n
            sy = cy + (big + small - 1) * np.sin(angle)
            sx = cx + (big + small - 1) * np.cos(angle)
            n += 1
            labels[((yy - sy) ** 2 + (xx - sx) ** 2 <= small * small) & (labels == 0)] = n
    distance = np.zeros(shape, np.float32)
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        inside = labels[box] == i
        d = ndi.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]
        distance[box][inside] = (d / d.max())[inside]
    return np.stack([(labels > 0).astype(np.float32), distance]), labels


def test_tuning_chooses_the_smoothing_that_keeps_touching_nuclei_apart():
    cache = _validation([_big_and_small_touching(seed) for seed in range(3)])
    start = PostprocessConfig(smoothing=3.0)
    assert cache.counts(start, (0.5,))[0].ap < 0.7  # merged pairs
    tuned, counts = tune_postprocess(cache, start)
    assert tuned.smoothing < 3.0
    assert counts[0].ap >= 0.95  # counts[0]: AP@0.5
