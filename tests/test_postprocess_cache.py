"""The faster post-processing gives exactly the labels of the plain whole-image method."""

import itertools

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from napari_live_unet.engine import PostprocessConfig, instances_from_outputs
from napari_live_unet.engine.postprocess import boundary_elevation, remove_small_labels
from napari_live_unet.engine.targets import normalized_distance

from .conftest import synthetic_nuclei


def reference(outputs, mode, params):
    """The straightforward method: h-maxima and watershed over the whole image."""
    fg_prob = np.asarray(outputs[0], np.float32)
    aux = np.asarray(outputs[1], np.float32)
    foreground = fg_prob > params.fg_threshold
    if mode == "boundary":
        elevation = boundary_elevation(aux)
        seeds, _ = ndi.label((fg_prob - aux > params.seed_threshold) & foreground)
        if params.min_size > 1:
            seeds = remove_small_labels(seeds, max(1, params.min_size // 4))
    else:
        aux = ndi.gaussian_filter(aux, params.smoothing) if params.smoothing else aux
        elevation = -aux
        high = (aux > params.seed_threshold) & foreground
        if params.seed_prominence > 0:
            high &= h_maxima(aux, params.seed_prominence).astype(bool)
        seeds, _ = ndi.label(high)
    labels = watershed(elevation, markers=seeds, mask=foreground)
    orphans, n_orphans = ndi.label(foreground & (labels == 0))
    if n_orphans:
        orphans[orphans > 0] += labels.max()
        labels = np.where(labels > 0, labels, orphans)
    if params.min_size > 1:
        labels = remove_small_labels(labels, params.min_size)
    ids = np.unique(labels[labels > 0])
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[ids] = np.arange(1, len(ids) + 1)
    return lut[labels]


def maps():
    """Realistic noisy maps, coarse maps full of ties, and a 3D volume."""
    rng = np.random.default_rng(0)
    _, labels = synthetic_nuclei((96, 96), n=14, seed=2)
    fg = ndi.gaussian_filter((labels > 0).astype(np.float32), 1.0)
    for aux in (normalized_distance(labels), ndi.gaussian_filter(labels % 3 == 0, 1.0)):
        noisy = np.stack([fg, aux]) + rng.normal(0, 0.05, (2, 96, 96))
        yield np.clip(noisy, 0, 1).astype(np.float16)
    coarse = np.round(ndi.gaussian_filter(rng.random((2, 80, 80)), (0, 2, 2)) * 40) / 40
    coarse -= coarse.min(axis=(1, 2), keepdims=True)
    yield (coarse / coarse.max(axis=(1, 2), keepdims=True)).astype(np.float32)
    volume = ndi.gaussian_filter(rng.random((2, 12, 40, 40)), (0, 2, 2, 2))
    volume -= volume.min(axis=(1, 2, 3), keepdims=True)
    yield (volume / volume.max(axis=(1, 2, 3), keepdims=True)).astype(np.float16)


def test_same_labels_as_the_whole_image_method_with_and_without_cache():
    grid = list(itertools.product([0.3, 0.5], [0.2, 0.5], [0, 20], [0.0, 0.03, 0.1], [0.0, 1.0]))
    for outputs, mode in itertools.product(list(maps()), ["distance", "boundary"]):
        cache: dict = {}
        for fg, seed, min_size, prominence, smoothing in grid:
            if mode == "boundary" and (prominence, smoothing) != (0.0, 0.0):
                continue  # not read in boundary mode
            params = PostprocessConfig(fg, seed, min_size, prominence, smoothing)
            expected = reference(outputs, mode, params)
            cached = instances_from_outputs(outputs, mode, params, cache)
            fresh = instances_from_outputs(outputs, mode, params)
            np.testing.assert_array_equal(cached, expected, err_msg=f"{mode} {params}")
            np.testing.assert_array_equal(fresh, expected, err_msg=f"{mode} {params}")
            assert cached.dtype == np.int32
