"""Network outputs to instance labels."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from .config import PostprocessConfig


def instances_from_outputs(
    outputs: np.ndarray,
    mode: str,
    params: PostprocessConfig | None = None,
    cache: dict | None = None,
) -> np.ndarray:
    """Instance labels from the two activated output maps.

    Parameters
    ----------
    outputs : ndarray, shape (2, *spatial)
        Foreground probability and the auxiliary map (boundary probability in boundary
        mode, normalised distance in distance mode), as returned by prediction.
    mode : {"boundary", "distance"}
        How to read the auxiliary map.
    params : PostprocessConfig, optional
        Thresholds and minimum size.
    cache : dict, optional
        Reused across calls on the same outputs (one dict per image) to keep intermediate
        maps that only some parameters change: makes threshold searches several times
        faster.

    Returns
    -------
    ndarray of int32, shape spatial
        0 for background, 1..N for objects.

    Notes
    -----
    Boundary mode: seeds are connected regions whose interior probability (foreground minus
    boundary) exceeds ``seed_threshold``; they grow back over the foreground by watershed
    on the boundary probability. Distance mode: seeds are maxima of the (lightly smoothed)
    distance that are higher than ``seed_threshold`` and rise at least ``seed_prominence``
    above the saddle to any higher maximum; they grow by watershed on the negative
    distance. Foreground components that hold no seed become objects of their own.
    """
    params = params or PostprocessConfig()
    fg_prob = np.asarray(outputs[0], np.float32)
    aux = np.asarray(outputs[1], np.float32)
    foreground = fg_prob > params.fg_threshold
    if mode == "boundary":
        elevation = aux
        seeds, _ = ndi.label((fg_prob - aux > params.seed_threshold) & foreground)
        if params.min_size > 1:
            # Tiny seeds are noise that would split one object in two.
            seeds = remove_small_labels(seeds, max(1, params.min_size // 4))
    elif mode == "distance":
        cache = {} if cache is None else cache
        key = ("smoothed", params.smoothing)
        if key not in cache:
            cache[key] = ndi.gaussian_filter(aux, params.smoothing) if params.smoothing else aux
        aux = cache[key]
        elevation = -aux
        high = (aux > params.seed_threshold) & foreground
        if params.seed_prominence > 0:
            key = ("maxima", params.smoothing, params.seed_prominence)
            if key not in cache:
                cache[key] = h_maxima(aux, params.seed_prominence).astype(bool)
            high &= cache[key]
        seeds, _ = ndi.label(high)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    labels = watershed(elevation, markers=seeds, mask=foreground)
    orphans, n_orphans = ndi.label(foreground & (labels == 0))
    if n_orphans:
        orphans[orphans > 0] += labels.max()
        labels = np.where(labels > 0, labels, orphans)
    if params.min_size > 1:
        labels = remove_small_labels(labels, params.min_size)
    return _relabel(labels)


def remove_small_labels(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Set labels with fewer than ``min_size`` pixels to 0 (returns a new array)."""
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    return np.where(small[labels], 0, labels) if small.any() else labels


def _relabel(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return lut[labels]
