import numpy as np
import pytest

from napari_live_unet.engine import dataset_counts, match_counts
from napari_live_unet.engine.metrics import iou_matrix


def _squares(offsets, size=10, shape=(60, 60)):
    labels = np.zeros(shape, np.int32)
    for k, (y, x) in enumerate(offsets, start=1):
        labels[y : y + size, x : x + size] = k
    return labels


def test_identical_labels_give_ap_one():
    gt = _squares([(0, 0), (20, 20), (40, 40)])
    perm = np.array([0, 3, 1, 2])[gt]  # different ids, same objects
    for c in match_counts(gt, perm):
        assert (c.tp, c.fp, c.fn, c.ap) == (3, 0, 0, 1.0)


def test_shifted_object_matches_only_at_low_thresholds():
    gt = _squares([(0, 0)])
    pred = _squares([(0, 2)])  # IoU = 80 / 120 = 0.667
    assert np.isclose(iou_matrix(gt, pred)[0, 0], 80 / 120)
    c5, c6, c7 = match_counts(gt, pred, [0.5, 0.6, 0.7])
    assert (c5.tp, c6.tp, c7.tp) == (1, 1, 0)
    assert (c7.fp, c7.fn, c7.ap) == (1, 1, 0.0)


def test_missing_and_extra_objects_counted():
    gt = _squares([(0, 0), (20, 20)])
    pred = _squares([(0, 0), (40, 40), (40, 0)])
    c = match_counts(gt, pred, [0.5])[0]
    assert (c.tp, c.fp, c.fn) == (1, 2, 1)
    assert c.ap == pytest.approx(1 / 4)


def test_low_threshold_uses_one_to_one_assignment():
    gt = _squares([(0, 0)], size=20)
    pred = np.zeros_like(gt)
    pred[0:20, 0:10] = 1
    pred[0:20, 10:20] = 2  # two halves, IoU 0.5 each
    c = match_counts(gt, pred, [0.3])[0]
    assert (c.tp, c.fp, c.fn) == (1, 1, 0)


def test_dataset_counts_are_pooled_not_averaged():
    gt1, gt2 = _squares([(0, 0)]), _squares([(0, 0), (20, 20), (40, 40)])
    pred1, pred2 = np.zeros_like(gt1), gt2.copy()
    c = dataset_counts([gt1, gt2], [pred1, pred2], [0.5])[0]
    assert (c.tp, c.fp, c.fn) == (3, 0, 1)
    assert c.ap == pytest.approx(0.75)  # per-image mean would be 0.5


def test_empty_images():
    empty = np.zeros((10, 10), np.int32)
    assert match_counts(empty, empty, [0.5])[0].ap == 1.0
    assert match_counts(_squares([(0, 0)], shape=(10, 10)), empty, [0.5])[0].fn == 1


def test_matching_memory_grows_with_the_image_not_the_object_count():
    """33k objects once needed an 8 GiB dense IoU matrix; overlaps are now sparse."""
    import tracemalloc

    gt = np.arange(1, 5001, dtype=np.int32).reshape(50, 100)  # 5,000 one-pixel objects
    pred = np.roll(gt, 1, axis=1)
    pred[gt % 7 == 0] = 0
    tracemalloc.start()
    counts = match_counts(gt, gt, [0.5, 0.9])
    shifted = match_counts(gt, pred, [0.3])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [c.tp for c in counts] == [5000, 5000]
    kept = int(np.count_nonzero(pred))  # every remaining one-pixel object matches its twin
    assert shifted[0].tp == kept and shifted[0].fn == 5000 - kept
    assert peak < 20_000_000  # a dense 5,000 × 5,000 float64 matrix alone is 200 MB
