import numpy as np
from scipy import ndimage as ndi

from napari_live_unet.engine import PostprocessConfig, instances_from_outputs, match_counts
from napari_live_unet.engine.targets import (
    BOUNDARY,
    INTERIOR,
    TOUCHING_SCALE,
    boundary_classes,
    distance_target,
    normalized_distance,
    touching_pixels,
)

from .conftest import synthetic_nuclei, touching_pair


def test_boundary_classes_separate_touching_objects():
    labels = touching_pair()
    classes = boundary_classes(labels)
    assert ndi.label(labels > 0)[1] == 1  # a plain threshold merges them
    assert ndi.label(classes == INTERIOR)[1] == 2
    assert (classes[labels == 0] == 0).all()
    assert (classes[(labels == 1) & np.roll(labels == 2, -1, axis=1)] == BOUNDARY).all()


def test_normalized_distance_peaks_at_one_per_object():
    labels = touching_pair()
    dist = normalized_distance(labels)
    assert dist[labels == 0].max() == 0
    for k in (1, 2):
        assert np.isclose(dist[labels == k].max(), 1.0)
        assert dist[labels == k].min() > 0


def test_distance_target_lowers_only_pixels_touching_another_object():
    labels = touching_pair((64, 96)).astype(np.int32)
    labels[20:30, 80:90] = 3  # alone
    # Brute force: an object pixel with one of its 8 neighbours in another object.
    padded = np.pad(labels, 1)
    expected = np.zeros(labels.shape, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            other = padded[1 + dy : 1 + dy + labels.shape[0], 1 + dx : 1 + dx + labels.shape[1]]
            expected |= (other > 0) & (other != labels)
    expected &= labels > 0
    assert expected.sum() > 10
    np.testing.assert_array_equal(touching_pixels(labels), expected)

    plain, target = normalized_distance(labels), distance_target(labels)
    np.testing.assert_allclose(target[expected], TOUCHING_SCALE * plain[expected])
    np.testing.assert_array_equal(target[~expected], plain[~expected])
    for k in (1, 2, 3):
        assert np.isclose(target[labels == k].max(), 1.0)


def test_touching_pixels_are_found_on_both_sides_at_the_top_of_the_label_dtype():
    # uint8 annotations with 255 objects: no id above the highest exists to mark background.
    labels = np.zeros((4, 8), np.uint8)
    labels[1:3, 1:4] = 254
    labels[1:3, 4:7] = 255
    touching = touching_pixels(labels)
    assert touching[1:3, 3].all() and touching[1:3, 4].all()
    assert touching.sum() == 4


def _ideal_outputs(labels, mode):
    fg = (labels > 0).astype(np.float32)
    if mode == "distance":
        return np.stack([fg, distance_target(labels)])
    return np.stack([fg, (boundary_classes(labels) == BOUNDARY).astype(np.float32)])


def test_postprocess_splits_touching_objects_in_both_modes():
    labels = touching_pair()
    for mode in ("distance", "boundary"):
        pred = instances_from_outputs(_ideal_outputs(labels, mode), mode)
        assert pred.max() == 2, mode
        assert match_counts(labels, pred, [0.8])[0].tp == 2, mode


def test_postprocess_recovers_many_objects():
    _, labels = synthetic_nuclei((128, 128), n=12, seed=5)
    for mode in ("distance", "boundary"):
        pred = instances_from_outputs(
            _ideal_outputs(labels, mode), mode, PostprocessConfig(min_size=5)
        )
        counts = match_counts(labels, pred, [0.5])[0]
        assert counts.fn <= 1 and counts.fp <= 1, (mode, counts)


def test_min_size_removes_small_objects_and_thresholds_matter():
    labels = np.zeros((40, 40), np.int32)
    labels[2:12, 2:12] = 1
    labels[30:32, 30:32] = 2  # 4 pixels
    out = _ideal_outputs(labels, "distance")
    assert instances_from_outputs(out, "distance", PostprocessConfig(min_size=10)).max() == 1
    assert instances_from_outputs(out, "distance", PostprocessConfig(min_size=1)).max() == 2
    weak = out.copy()
    weak[0] *= 0.4
    assert instances_from_outputs(weak, "distance", PostprocessConfig(fg_threshold=0.5)).max() == 0


def test_foreground_without_seed_is_kept_as_object():
    out = np.zeros((2, 30, 30), np.float32)
    out[0, 5:15, 5:15] = 0.9  # foreground but distance never above the seed threshold
    labels = instances_from_outputs(out, "distance", PostprocessConfig(min_size=5))
    assert labels.max() == 1 and (labels > 0).sum() == 100
