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


def _pair_with_shallow_narrow_valley():
    """Two touching discs whose distance peaks (1.0 and 0.99) are parted by a valley about
    one pixel wide, 0.025 below the lower peak: only a low seed prominence sees it, and
    only unsmoothed."""
    shape = (32, 36)
    yy, xx = np.indices(shape)
    union = ((yy - 16) ** 2 + (xx - 11) ** 2 <= 64) | ((yy - 16) ** 2 + (xx - 23) ** 2 <= 64)
    labels = np.where(union, np.where(xx <= 17, 1, 2), 0).astype(np.int32)
    edge = np.minimum(1.0, ndi.distance_transform_edt(union) / 4.0)
    notch = 1.0 - 0.035 * np.exp(-((xx - 17.0) ** 2) / (2 * 0.5**2))
    height = np.where(labels == 2, 0.99, 1.0)  # real peaks never tie
    distance = (edge * notch * height * (labels > 0)).astype(np.float32)
    return np.stack([(labels > 0).astype(np.float32), distance]), labels


def test_tuning_changes_seed_prominence_and_smoothing_together_when_only_both_split():
    cache = _validation([_pair_with_shallow_narrow_valley() for _ in range(3)])
    start = PostprocessConfig(seed_prominence=0.05, smoothing=1.0)
    assert cache.counts(start, (0.5,))[0].fn == 3  # each pair merged into one object
    for alone in (
        PostprocessConfig(seed_prominence=0.02, smoothing=1.0),
        PostprocessConfig(seed_prominence=0.05, smoothing=0.0),
    ):
        assert cache.counts(alone, (0.5,))[0].fn == 3  # one change alone does not split
    tuned, counts = tune_postprocess(cache, start)
    assert tuned.seed_prominence < 0.05 and tuned.smoothing < 1.0
    assert counts[0].ap == 1.0


def test_post_processing_uses_no_more_threads_than_torch_may(monkeypatch):
    # The viewer trains with a core left to its GUI thread (torch.set_num_threads); the
    # threshold search after training must not take that core back.
    import threading

    import torch

    from napari_live_unet.engine import evaluation

    threads: set[int] = set()
    real = evaluation.instances_from_outputs

    def recording(*args, **kwargs):
        threads.add(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "instances_from_outputs", recording)
    cache = _validation([_big_and_small_touching(seed) for seed in range(6)])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(3):
            cache.caches = [{} for _ in cache.pairs]
            cache.counts(PostprocessConfig())
    finally:
        torch.set_num_threads(before)
    assert len(threads) == 1
