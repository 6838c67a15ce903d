"""Where to correct next: the doubt map and the ranked objects."""

import csv
import threading

import numpy as np
import pytest

from napari_live_unet.engine import (
    ModelConfig,
    SegmentationModel,
    TrainConfig,
    assess_doubt,
    doubt_from_outputs,
    make_pair,
    run_training,
    write_doubt,
)
from napari_live_unet.engine.io import read_tiff

from .conftest import synthetic_nuclei


def _disc(shape, centre, radius):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def _scene():
    """Outputs and labels of three objects: sure, faint, and one a flip sees as two."""
    shape = (64, 96)
    fg = np.full(shape, 0.02, np.float32)
    labels = np.zeros(shape, np.int32)
    for label, centre, p in ((1, (20, 16), 0.98), (2, (20, 48), 0.56), (3, (44, 80), 0.97)):
        disc = _disc(shape, centre, 8)
        fg[disc], labels[disc] = p, label
    faint_missed = _disc(shape, (50, 20), 6)
    fg[faint_missed] = 0.35
    outputs = np.stack([fg, np.zeros(shape, np.float32)])
    flipped = labels.copy()
    left = flipped == 3
    left[:, 80:] = False
    flipped[left] = 4  # a flipped prediction splits object 3 down the middle
    return outputs, labels, flipped


def test_faint_and_unstable_objects_rank_above_sure_ones():
    outputs, labels, flipped = _scene()
    report = doubt_from_outputs(
        outputs, labels, "distance", flipped_outputs=[outputs], flipped_labels=[flipped]
    )
    assert report.map.shape == labels.shape and report.map.dtype == np.float32
    assert report.map.min() >= 0 and report.map.max() <= 1
    by_label = {e.label: e for e in report.objects if e.label}
    assert set(by_label) == {1, 2, 3}
    sure, faint, split = by_label[1], by_label[2], by_label[3]
    assert faint.score > sure.score and split.score > sure.score
    assert split.reason == "may be two objects" and faint.reason == "unsure outline"
    priorities = [e.priority for e in report.objects]
    assert priorities == sorted(priorities, reverse=True)
    assert all(0 <= e.priority <= e.score for e in report.objects)
    missed = [e for e in report.objects if e.label == 0]
    assert len(missed) == 1 and missed[0].reason == "possibly missed"
    assert missed[0].centroid == pytest.approx((50, 20), abs=0.5)
    assert sure.bbox == ((12, 29), (8, 25)) and sure.area == int((labels == 1).sum())


def test_a_doubtful_scrap_ranks_below_a_doubtful_whole_object():
    """Correcting a few-pixel scrap teaches little: equally doubtful, the whole object
    a user would repaint comes first."""
    labels = np.zeros((80, 80), np.int32)
    yy, xx = np.ogrid[:80, :80]
    labels[(yy - 20) ** 2 + (xx - 20) ** 2 <= 100] = 1  # sure
    labels[(yy - 20) ** 2 + (xx - 60) ** 2 <= 100] = 2  # sure
    labels[(yy - 60) ** 2 + (xx - 20) ** 2 <= 100] = 3  # doubtful, whole
    labels[58:61, 58:61] = 4  # doubtful scrap of 9 pixels
    fg = np.where(labels > 0, 0.97, 0.02).astype(np.float32)
    fg[labels >= 3] = 0.55
    report = doubt_from_outputs(np.stack([fg, fg]), labels, "distance")
    by_label = {e.label: e for e in report.objects}
    assert by_label[4].score == pytest.approx(by_label[3].score, abs=0.01)
    assert report.objects[0].label == 3
    assert by_label[4].priority < 0.2 * by_label[3].priority


def test_without_flips_objects_are_ranked_by_their_margin():
    outputs, labels, _ = _scene()
    report = doubt_from_outputs(outputs, labels, "boundary")
    ranked = [e.label for e in report.objects if e.label]
    assert ranked[0] == 2  # the faint one
    with pytest.raises(ValueError, match="mode"):
        doubt_from_outputs(outputs, labels, "cells")


@pytest.fixture(scope="module")
def small_model() -> SegmentationModel:
    pairs = [make_pair(*synthetic_nuclei((64, 64), n=6, seed=i), name=f"p{i}") for i in range(3)]
    config = TrainConfig(
        epochs=2,
        steps_per_epoch=4,
        batch_size=4,
        patch_size=32,
        val_ap_every=0,
        recipe="standard",
    )
    return run_training(pairs, config, model_config=ModelConfig(base_channels=4, depth=2))


def test_assess_doubt_gives_the_labels_segment_gives(small_model):
    image, _ = synthetic_nuclei((64, 80), n=6, seed=7)
    result = assess_doubt(small_model, image)
    assert result is not None
    outputs, labels, report = result
    assert np.array_equal(labels, small_model.segment(image))
    assert outputs.shape == (2, 64, 80) and report.map.shape == (64, 80)
    listed = {e.label for e in report.objects if e.label}
    assert listed == set(np.unique(labels[labels > 0]).tolist())
    quick = assess_doubt(small_model, image, flips=False)
    assert quick is not None and np.array_equal(quick[1], labels)
    assert assess_doubt(small_model, image, stop=_set_event()) is None


def test_assess_doubt_reads_colour_images_channels_last(small_model):
    image, _ = synthetic_nuclei((64, 80), n=6, seed=8)
    rgb = np.stack([image, image, image], axis=-1)
    result = assess_doubt(small_model, rgb)
    assert result is not None and result[2].map.shape == (64, 80)


def test_doubt_in_3d(tmp_path):
    shape = (12, 32, 32)
    labels = np.zeros(shape, np.int32)
    zz, yy, xx = np.ogrid[:12, :32, :32]
    labels[(zz - 6) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2 <= 16] = 1
    labels[(zz - 6) ** 2 + (yy - 22) ** 2 + (xx - 22) ** 2 <= 16] = 2
    fg = np.where(labels == 1, 0.95, np.where(labels == 2, 0.6, 0.05)).astype(np.float32)
    report = doubt_from_outputs(np.stack([fg, fg]), labels, "distance")
    assert report.map.shape == shape and report.objects[0].label == 2
    assert len(report.objects[0].centroid) == 3
    write_doubt(report, tmp_path / "m.tif", tmp_path / "m.csv")
    header = (tmp_path / "m.csv").read_text().splitlines()[0].split(",")
    assert header[6:9] == ["centroid_z", "centroid_y", "centroid_x"]


def test_written_map_and_csv_match_the_report(tmp_path):
    outputs, labels, flipped = _scene()
    report = doubt_from_outputs(
        outputs, labels, "distance", flipped_outputs=[outputs], flipped_labels=[flipped]
    )
    write_doubt(report, tmp_path / "a_doubt.tif", tmp_path / "a_doubt.csv")
    assert np.array_equal(read_tiff(tmp_path / "a_doubt.tif"), report.map)
    with open(tmp_path / "a_doubt.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["rank"]) for r in rows] == list(range(1, len(report.objects) + 1))
    assert [int(r["label"]) for r in rows] == [e.label for e in report.objects]
    assert [float(r["score"]) for r in rows] == pytest.approx(
        [e.score for e in report.objects], abs=1e-4
    )
    assert [float(r["priority"]) for r in rows] == pytest.approx(
        [e.priority for e in report.objects], abs=1e-4
    )
    first = report.objects[0]
    assert (int(rows[0]["start_y"]), int(rows[0]["stop_y"])) == first.bbox[0]
    assert not list(tmp_path.glob("*.tmp*"))  # nothing left half-written


def _set_event():
    stop = threading.Event()
    stop.set()
    return stop
