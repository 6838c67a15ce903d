"""Issue 22: where to correct next. The Predict dock's doubt map and ranked list of
doubtful objects, in a real napari viewer."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from qtpy.QtCore import Qt
from scipy import ndimage as ndi

from napari_live_unet.app import doubt_job
from napari_live_unet.app.current_model import current_model
from napari_live_unet.engine import ModelConfig, SegmentationModel
from napari_live_unet.engine.predict import TilesDone
from napari_live_unet.layers.doubt_layer import DoubtEntry, camera_of, focus_on
from napari_live_unet.widgets.doubt_list import EMPTY, OFF
from napari_live_unet.widgets.predict import PredictWidget

from .conftest import synthetic_nuclei
from .test_predict_widget import ideal_outputs, wait_idle

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("no_current_model")]


class LopsidedNetwork:
    """Stands in for ``SegmentationModel.predict_stream``: ideal outputs for the bright
    objects of the image it is given, except those in its left third. A flipped copy of the
    image therefore loses other objects than the image itself, so the flips disagree on
    some objects and not on others. Records the threads it ran on."""

    def __init__(self, threshold: float = 100):
        self.threshold = threshold
        self.calls = 0
        self.threads: list[threading.Thread] = []

    def labels_of(self, image: np.ndarray) -> np.ndarray:
        labels, _ = ndi.label(image > self.threshold)
        left = image.shape[-1] // 3
        for i, box in enumerate(ndi.find_objects(labels), start=1):
            if box is not None and (box[-1].start + box[-1].stop) / 2 < left:
                labels[labels == i] = 0
        return labels

    def __call__(self, images, *, stop=None, **_):
        self.calls += 1
        self.threads.append(threading.current_thread())
        for image in images:
            if stop is not None and stop.is_set():
                return
            yield TilesDone(1, 1)
            yield ideal_outputs(self.labels_of(np.asarray(image, np.float32)))


def nuclei_image(shape=(96, 96), seed=4):
    image, _ = synthetic_nuclei(shape, n=10, radius=(5, 8), seed=seed, touching=False)
    return image


@pytest.fixture
def predictor(make_napari_viewer):
    """A viewer with a docked Predict widget whose model runs a :class:`LopsidedNetwork`."""

    def make(ndim=2, show=False):
        viewer = make_napari_viewer(show=show)
        widget = PredictWidget(viewer)
        viewer.window.add_dock_widget(widget)
        model = SegmentationModel.create(ModelConfig(ndim=ndim, base_channels=4, depth=2))
        network = LopsidedNetwork()
        model.predict_stream = network
        current_model.set(model, "test model")
        widget.min_size.setValue(5)
        return viewer, widget, network

    return make


def predict(qtbot, widget, layer):
    widget.image_combo.value = layer
    assert widget.predict()
    wait_idle(qtbot, widget)


def scores(widget) -> list[float]:
    """The listed objects' priorities, in the table's order."""
    return [entry.doubt.priority for entry in widget.doubt.entries]


def test_prediction_shows_a_doubt_map_and_objects_ranked_by_doubt(predictor, qtbot):
    viewer, widget, network = predictor()
    doubt = widget.doubt
    assert doubt.note.text() == EMPTY and not doubt.table.isVisibleTo(doubt)
    assert not doubt.next_button.isEnabled()
    image = nuclei_image()
    layer = viewer.add_image(image, name="cells", scale=(0.5, 2.0), translate=(10, -4))
    predict(qtbot, widget, layer)

    shown = viewer.layers["cells doubt"]
    assert shown.data.shape == image.shape and shown.data.dtype == np.float32
    assert tuple(shown.scale) == (0.5, 2.0) and tuple(shown.translate) == (10, -4)
    assert shown.data.min() >= 0 and shown.data.max() <= 1
    # Below the predictions: the labels stay on top.
    names = [x.name for x in viewer.layers]
    assert names.index("cells doubt") < names.index("cells predictions")
    # The flipped copies disagree on the objects of the left third (found only when the
    # image is flipped left-right), not on those of the middle third: the map says so.
    predictions = viewer.layers["cells predictions"].data
    objects, _ = ndi.label(image > network.threshold)
    centres = {
        i: (box[1].start + box[1].stop) / 2 for i, box in enumerate(ndi.find_objects(objects), 1)
    }
    left = np.isin(objects, [i for i, c in centres.items() if c < 32])
    middle = np.isin(objects, [i for i, c in centres.items() if 36 < c < 60])
    assert left.any() and middle.any() and predictions.max() > 0
    assert shown.data[left].mean() > shown.data[middle].mean() + 0.2

    ranked = scores(widget)
    assert len(ranked) >= 2 and ranked == sorted(ranked, reverse=True)
    assert len(set(ranked)) > 1  # not all alike: a ranking
    assert doubt.table.rowCount() == len(ranked) and doubt.table.isVisibleTo(doubt)
    assert [doubt.table.item(r, 0).text() for r in range(len(ranked))] == [
        str(r + 1) for r in range(len(ranked))
    ]
    assert float(doubt.table.item(0, 2).text()) == pytest.approx(ranked[0], abs=0.005)
    labelled = [e for e in doubt.entries if not e.missed]
    assert {e.doubt.label for e in labelled} <= set(np.unique(predictions)) - {0}
    assert "ranked" in doubt.note.text()
    assert network.calls == 2  # the image, then its flipped copies in one stream


def test_clicking_an_entry_centres_the_view_and_selects_its_label(predictor, qtbot):
    viewer, widget, _ = predictor()
    layer = viewer.add_image(nuclei_image(), name="cells", scale=(0.5, 2.0), translate=(10, -4))
    predict(qtbot, widget, layer)
    doubt, labels = widget.doubt, viewer.layers["cells predictions"]
    viewer.layers.selection.active = layer
    rows = [r for r, e in enumerate(doubt.entries) if not e.missed]
    assert len(rows) >= 2
    for row in rows[:2]:
        entry = doubt.entries[row]
        rect = doubt.table.visualItemRect(doubt.table.item(row, 1))
        qtbot.mouseClick(doubt.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
        y, x = entry.doubt.centroid
        np.testing.assert_allclose(camera_of(viewer).center[-2:], (10 + 0.5 * y, -4 + 2.0 * x))
        assert labels.selected_label == entry.doubt.label
        assert viewer.layers.selection.active is labels
        assert labels.data[round(y), round(x)] == entry.doubt.label  # the object is there
        assert f"{row + 1} of" in doubt.note.text()


def test_next_and_previous_keys_walk_the_list(predictor, qtbot):
    viewer, widget, _ = predictor(show=True)
    layer = viewer.add_image(nuclei_image(), name="cells")
    predict(qtbot, widget, layer)
    doubt = widget.doubt
    entries = doubt.entries
    assert len(entries) >= 3
    canvas = viewer.window._qt_viewer.canvas.native

    def centre_of(entry: DoubtEntry):
        return tuple(float(c) for c in entry.doubt.centroid)

    visited = []
    for key, modifier in (
        (Qt.Key.Key_N, Qt.KeyboardModifier.NoModifier),
        (Qt.Key.Key_N, Qt.KeyboardModifier.NoModifier),
        (Qt.Key.Key_N, Qt.KeyboardModifier.ShiftModifier),
    ):
        qtbot.keyClick(canvas, key, modifier)
        visited.append(tuple(np.round(camera_of(viewer).center[-2:], 3)))
    expected = [centre_of(entries[i]) for i in (0, 1, 0)]
    np.testing.assert_allclose(visited, expected, atol=1e-3)
    assert doubt.table.currentRow() == 0

    # The buttons and the table's arrow keys do the same; Previous from the first wraps.
    doubt.previous_button.click()
    np.testing.assert_allclose(camera_of(viewer).center[-2:], centre_of(entries[-1]))
    doubt.table.setCurrentCell(0, 0)
    qtbot.keyClick(doubt.table, Qt.Key.Key_Down)
    np.testing.assert_allclose(camera_of(viewer).center[-2:], centre_of(entries[1]))


def test_volume_entries_move_the_sliders_to_the_object_plane(predictor, qtbot):
    viewer, widget, _ = predictor(ndim=3)
    planes = [nuclei_image((48, 48), seed=s) for s in range(3)]
    volume = np.stack([np.zeros_like(planes[0])] * 2 + planes + [np.zeros_like(planes[0])] * 2)
    layer = viewer.add_image(volume, name="vol", scale=(3.0, 1.0, 1.0))
    predict(qtbot, widget, layer)
    assert viewer.layers["vol doubt"].data.shape == volume.shape
    doubt, labels = widget.doubt, viewer.layers["vol predictions"]
    assert doubt.entries and all(len(e.doubt.centroid) == 3 for e in doubt.entries)
    entry = next(e for e in doubt.entries if not e.missed)
    viewer.dims.set_point(0, 0)
    doubt.go_to(doubt.entries.index(entry))
    z, y, x = entry.doubt.centroid
    assert viewer.dims.point[0] == pytest.approx(3.0 * round(z), abs=1.5)
    np.testing.assert_allclose(camera_of(viewer).center[-2:], (y, x))
    assert labels.selected_label == entry.doubt.label

    viewer.dims.ndisplay = 3  # in a 3D view the camera centre is the object's, all three axes
    doubt.go_to(doubt.entries.index(entry))
    np.testing.assert_allclose(camera_of(viewer).center, (3.0 * z, y, x))


def test_predicting_again_updates_the_doubt_layer_in_place(predictor, qtbot):
    viewer, widget, network = predictor()
    layer = viewer.add_image(nuclei_image(seed=4), name="cells")
    predict(qtbot, widget, layer)
    shown = viewer.layers["cells doubt"]
    shown.visible = False  # the user's choices stay
    first, n_layers = shown.data.copy(), len(viewer.layers)
    layer.data = nuclei_image(seed=9)
    predict(qtbot, widget, layer)
    assert len(viewer.layers) == n_layers
    assert viewer.layers["cells doubt"] is shown and not shown.visible
    assert not np.array_equal(shown.data, first)
    assert scores(widget) == sorted(scores(widget), reverse=True)

    # Unticked: no flipped predictions, and the stale map goes.
    calls = network.calls
    widget.doubt.enabled.setChecked(False)
    predict(qtbot, widget, layer)
    assert network.calls == calls + 1
    assert "cells doubt" not in viewer.layers
    assert widget.doubt.entries == [] and widget.doubt.note.text() == OFF


def test_doubt_is_assessed_in_the_worker_never_on_the_gui_thread(predictor, qtbot, monkeypatch):
    viewer, widget, network = predictor()
    threads = []
    real = doubt_job.doubt_from_outputs

    def recording(*args, **kwargs):
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(doubt_job, "doubt_from_outputs", recording)
    series = np.stack([nuclei_image((48, 64), seed=s) for s in range(3)])
    layer = viewer.add_image(series, name="movie")
    predict(qtbot, widget, layer)
    assert len(threads) == 3  # one report per frame
    assert threading.main_thread() not in threads + network.threads
    assert viewer.layers["movie doubt"].data.shape == series.shape
    # A series' entries say their frame; a jump moves the time slider there.
    entry = widget.doubt.entries[0]
    assert not widget.doubt.table.isColumnHidden(4)
    widget.doubt.go_to(0)
    assert viewer.dims.point[0] == entry.frame[0]


def test_changing_the_model_says_the_list_is_the_earlier_models(predictor, qtbot):
    viewer, widget, _ = predictor()
    layer = viewer.add_image(nuclei_image(), name="cells")
    predict(qtbot, widget, layer)
    assert widget.doubt.entries
    current_model.set(SegmentationModel.create(ModelConfig(base_channels=4, depth=2)), "new")
    assert "model changed" in widget.doubt.note.text()
    viewer.layers.remove("cells predictions")
    assert widget.doubt.entries == [] and widget.doubt.note.text() == EMPTY


def test_a_missed_object_entry_selects_a_new_label_to_paint_it(make_napari_viewer):
    from napari_live_unet.engine.doubt import ObjectDoubt

    viewer = make_napari_viewer()
    data = np.zeros((2, 40, 50), np.uint16)
    data[1, 5:10, 5:10] = 7
    data[0, 5:10, 5:10] = 3
    labels = viewer.add_labels(data, name="p", scale=(1, 2, 2), translate=(0, 5, 5))
    missed = ObjectDoubt(0, 0.8, (30.0, 40.0), ((28, 33), (38, 43)), 20, "possibly missed")
    focus_on(viewer, labels, DoubtEntry(1, (1,), missed))
    assert labels.selected_label == 8  # the next free label of its frame
    assert viewer.dims.point[0] == 1
    np.testing.assert_allclose(camera_of(viewer).center[-2:], (5 + 60, 5 + 80))
    assert viewer.layers.selection.active is labels


def test_new_thresholds_rank_the_new_objects_without_predicting_again(predictor, qtbot):
    viewer, widget, network = predictor()
    layer = viewer.add_image(nuclei_image(), name="cells")
    predict(qtbot, widget, layer)
    predictions = viewer.layers["cells predictions"]
    before = {e.doubt.label for e in widget.doubt.entries if not e.missed}
    assert before and network.calls == 2
    big = max(np.bincount(predictions.data.ravel())[1:])
    widget.min_size.setValue(int(big) + 1)  # every object is now too small to keep
    qtbot.waitUntil(lambda: predictions.data.max() == 0, timeout=30_000)
    wait_idle(qtbot, widget)
    assert not any(not e.missed for e in widget.doubt.entries)
    widget.min_size.setValue(5)
    qtbot.waitUntil(lambda: predictions.data.max() > 0, timeout=30_000)
    wait_idle(qtbot, widget)
    after = [e for e in widget.doubt.entries if not e.missed]
    assert {e.doubt.label for e in after} == before
    assert scores(widget) == sorted(scores(widget), reverse=True)
    assert network.calls == 2


def test_painting_after_a_jump_marks_the_object_as_corrected(predictor, qtbot):
    viewer, widget, _ = predictor()
    layer = viewer.add_image(nuclei_image(), name="cells")
    predict(qtbot, widget, layer)
    doubt, labels = widget.doubt, viewer.layers["cells predictions"]
    row = next(r for r, e in enumerate(doubt.entries) if not e.missed)
    doubt.go_to(row)
    assert not doubt.table.item(row, 0).text().startswith("✓")
    y, x = (round(c) for c in doubt.entries[row].doubt.centroid)
    labels.paint((y, x), 0)  # erase a pixel of it, as the eraser does
    assert doubt.table.item(row, 0).text() == f"✓ {row + 1}"
    assert all(not doubt.table.item(r, 0).text().startswith("✓") for r in range(row))
