"""Copying predicted objects into a ground-truth Labels layer (no viewer needed)."""

import numpy as np
import pytest

from napari_live_unet.layers.copy_predictions import copy_predictions
from napari_live_unet.layers.shape_regions import box_from_points

Labels = pytest.importorskip("napari.layers").Labels


def _scene():
    """Ground truth with one annotated object; predictions with three objects:
    one on the annotated object, one new, one barely touching the annotation."""
    gt = np.zeros((40, 40), np.int32)
    gt[5:15, 5:15] = 7  # annotated nucleus
    pred = np.zeros((40, 40), np.int32)
    pred[6:16, 6:16] = 1  # the same nucleus, predicted slightly shifted
    pred[25:35, 25:35] = 2  # a nucleus nobody annotated yet
    pred[12:22, 14:24] = 3  # a neighbour: overlaps the annotation on 3x1 pixels only
    return gt, pred


def test_copy_keeps_annotations_skips_same_objects_and_uses_fresh_ids():
    gt, pred = _scene()
    layer = Labels(gt.copy())
    report = copy_predictions(pred, layer, None, overwrite=False)
    out = layer.data
    # Annotated pixels never change.
    assert (out[gt > 0] == gt[gt > 0]).all()
    # Object 1 lies mostly on annotated object 7: skipped, none of its own pixels copied.
    assert (out[(pred == 1) & (gt == 0)] == 0).all()
    # Objects 2 and 3 are copied with fresh ids above the annotation's 7, distinct.
    new2 = np.unique(out[pred == 2])
    new3 = np.unique(out[(pred == 3) & (gt == 0)])
    assert len(new2) == 1 and len(new3) == 1
    assert new2[0] > 7 and new3[0] > 7 and new2[0] != new3[0]
    assert report.copied == 2 and report.skipped == 1
    assert report.pixels_written == int((pred == 2).sum() + ((pred == 3) & (gt == 0)).sum())


def test_undo_restores_exactly_in_one_step():
    gt, pred = _scene()
    layer = Labels(gt.copy())
    copy_predictions(pred, layer, None, overwrite=False)
    assert not np.array_equal(layer.data, gt)
    layer.undo()
    np.testing.assert_array_equal(layer.data, gt)

    copy_predictions(pred, layer, None, overwrite=True)
    assert not np.array_equal(layer.data, gt)
    layer.undo()
    np.testing.assert_array_equal(layer.data, gt)


def test_overwrite_replaces_the_region_only():
    gt, pred = _scene()
    gt[30:38, 2:8] = 9  # an annotation outside the region
    layer = Labels(gt.copy())
    region = (slice(0, 20), slice(0, 20))
    report = copy_predictions(pred, layer, region, overwrite=True)
    out = layer.data
    inside = np.zeros(gt.shape, bool)
    inside[region] = True
    # Outside the region nothing changes (object 2 and the right part of 3 are not copied).
    np.testing.assert_array_equal(out[~inside], gt[~inside])
    # Inside, the layer now shows exactly the predicted objects (with new ids).
    np.testing.assert_array_equal(out[inside] > 0, pred[inside] > 0)
    for k in (1, 3):
        ids = np.unique(out[inside & (pred == k)])
        assert len(ids) == 1 and ids[0] > 9
    assert 7 not in out  # the annotation inside the region was replaced
    assert report.skipped == 0 and report.copied == 2


def test_region_limits_copy_and_boxes_can_be_combined():
    gt, pred = _scene()
    layer = Labels(gt.copy())
    report = copy_predictions(pred, layer, [(slice(24, 40), slice(24, 40))], overwrite=False)
    assert report.copied == 1
    assert (layer.data[pred == 3] == gt[pred == 3]).all()  # outside the box: untouched
    assert (layer.data[pred == 2] > 7).all()


def test_copy_into_a_stack_frame_and_shape_mismatch():
    gt = np.zeros((3, 20, 20), np.uint8)
    pred = np.zeros((3, 20, 20), np.int32)
    pred[:, 2:8, 2:8] = 1
    layer = Labels(gt.copy())
    report = copy_predictions(pred, layer, (slice(1, 2), slice(0, 20), slice(0, 20)))
    assert report.copied == 1
    assert layer.data[1].any() and not layer.data[0].any() and not layer.data[2].any()
    assert layer.data.dtype == np.uint8
    with pytest.raises(ValueError, match="shape"):
        copy_predictions(pred[0], layer)


def test_box_from_points_takes_pixels_whose_centres_are_inside():
    assert box_from_points(np.array([[1.2, 2.0], [4.8, 6.0]]), (10, 10)) == (
        slice(2, 5),
        slice(2, 7),
    )
    # A rectangle drawn on frame 2 of a stack: the flat axis selects that frame.
    assert box_from_points(np.array([[2, 0, 0], [2, 3, 3]]), (5, 10, 10))[0] == slice(2, 3)
    assert box_from_points(np.array([[-5, -5], [-1, -1]]), (10, 10)) is None
