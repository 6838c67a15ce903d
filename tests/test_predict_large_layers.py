"""The predict widget on long series, lazy and multiscale layers, under a memory cap
(issue 13, item 3), in a real napari viewer."""

import threading

import numpy as np
import pytest

from napari_live_unet.app import prediction_result
from napari_live_unet.app.current_model import current_model
from napari_live_unet.engine.metrics import match_counts
from napari_live_unet.engine.output_cache import FrameOutputCache
from napari_live_unet.engine.temp_store import wait_for_removals
from napari_live_unet.widgets.predict import PredictWidget

from .conftest import synthetic_nuclei
from .test_predict_widget import WAIT_MS, FakeNetwork, run_prediction, tiny_model, wait_idle
from .test_prediction_plan import nuclei_frame, pixel_model

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("no_current_model")]

FRAME_BYTES = 2 * 64 * 64 * 2  # one 64 x 64 frame's outputs, float16


@pytest.fixture
def widget_with(make_napari_viewer):
    def make(model):
        viewer = make_napari_viewer()
        widget = PredictWidget(viewer)
        viewer.window.add_dock_widget(widget)
        current_model.set(model, "test model")
        return viewer, widget

    return make


def series_model():
    """A model whose network gives ideal outputs for one of four label images, picked by
    the frame's first pixel."""
    truths = [synthetic_nuclei((64, 64), n=6, seed=s)[1] for s in range(4)]
    model = tiny_model()
    model.predict_stream = FakeNetwork(lambda image: truths[int(image.flat[0]) % 4])
    return model


def counted_gets(monkeypatch):
    """Frames read from any output cache, by position."""
    reads = []
    get = FrameOutputCache.get

    def counting_get(self, position):
        reads.append(position)
        return get(self, position)

    monkeypatch.setattr(FrameOutputCache, "get", counting_get)
    return reads


def test_a_long_series_spills_outputs_and_shows_them_lazily(widget_with, qtbot, monkeypatch):
    # A cap of 3 frames' outputs (and 3 frames' post-processing caches... of 10 B/pixel).
    cap = 2 * 3 * FRAME_BYTES
    monkeypatch.setattr(prediction_result, "memory_cap", lambda: cap)
    viewer, widget = widget_with(series_model())
    series = np.repeat(np.arange(100, dtype=np.float32), 64 * 64).reshape(100, 64, 64)
    layer = viewer.add_image(series, name="movie")
    run_prediction(qtbot, widget, layer)
    result = widget._result
    predictions = viewer.layers["movie predictions"]
    assert predictions.data.shape == (100, 64, 64) and predictions.data.dtype == np.uint16
    assert result.outputs.memory_bytes <= result.outputs.max_bytes <= 3 * FRAME_BYTES
    assert len(result.outputs) == 100 and len(result.outputs.spilled) >= 97
    before = np.array(predictions.data)
    assert before.max() > 0

    # Re-thresholding reads the spilled frames back: other labels, then the same again.
    min_size = widget.min_size.value()
    widget.min_size.setValue(100_000)
    qtbot.waitUntil(lambda: viewer.layers["movie predictions"].data.max() == 0, timeout=WAIT_MS)
    widget.min_size.setValue(min_size)
    wait_idle(qtbot, widget)
    qtbot.waitUntil(
        lambda: np.array_equal(viewer.layers["movie predictions"].data, before), timeout=WAIT_MS
    )
    assert result.outputs.memory_bytes <= result.outputs.max_bytes

    # The outputs layers are lazy: napari reads the frames it shows, not the series.
    reads = counted_gets(monkeypatch)
    widget.show_outputs.setChecked(True)
    foreground = viewer.layers["movie foreground"]
    assert not isinstance(foreground.data, np.ndarray)
    assert foreground.data.shape == (100, 64, 64) and foreground.data.dtype == np.float32
    assert 0 < len(reads) <= 10, reads
    viewer.dims.set_current_step(0, 42)
    assert 42 in reads and len(reads) <= 20
    np.testing.assert_array_equal(
        np.asarray(foreground.data[42]), result.outputs.get(42)[0].astype(np.float32)
    )


def test_a_dask_layer_is_read_one_frame_at_a_time(widget_with, qtbot):
    da = pytest.importorskip("dask.array")
    reads = []

    def frame(block, block_info=None):
        reads.append(block_info[0]["chunk-location"][0])
        return block

    source = np.repeat(np.arange(12, dtype=np.float32), 64 * 64).reshape(12, 64, 64)
    lazy = da.from_array(source, chunks=(1, 64, 64)).map_blocks(frame, dtype=np.float32)
    viewer, widget = widget_with(series_model())
    layer = viewer.add_image(lazy, name="lazy", contrast_limits=(0, 12))
    reads.clear()  # what napari read to show it
    run_prediction(qtbot, widget, layer)
    assert viewer.layers["lazy predictions"].data.shape == (12, 64, 64)
    # Each frame once (no whole-array compute in one go), in order.
    assert sorted(reads) == list(range(12))


def test_a_multiscale_layer_is_predicted_at_full_resolution(widget_with, qtbot):
    da = pytest.importorskip("dask.array")
    image, _ = synthetic_nuclei((128, 96), seed=4)
    level0 = da.from_array(image, chunks=(64, 48))
    level1 = da.from_array(image[::2, ::2], chunks=(64, 48))
    viewer, widget = widget_with(tiny_model())
    layer = viewer.add_image([level0, level1], name="pyramid", multiscale=True)
    assert layer.multiscale
    run_prediction(qtbot, widget, layer)
    predictions = viewer.layers["pyramid predictions"]
    assert predictions.data.shape == (128, 96)
    assert isinstance(layer.data[0], da.Array)  # the pyramid was left as it was


class RecordingArray:
    """A lazy (dask) image that records the size of every read made off the main thread
    (by the prediction, not by napari's display)."""

    def __init__(self, array):
        self.array = array
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.largest_read = 0

    def __getitem__(self, key):
        part = np.asarray(self.array[key])
        if threading.current_thread() is not threading.main_thread():
            self.largest_read = max(self.largest_read, part.size)
        return part

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[...], dtype)


def test_a_frame_beyond_the_memory_cap_is_predicted_block_by_block(widget_with, qtbot, monkeypatch):
    da = pytest.importorskip("dask.array")
    # 1024² predicted whole takes about 64 MiB; a 100 MiB cap leaves 2 blocks 18 MiB each.
    monkeypatch.setattr(prediction_result, "memory_cap", lambda: 100 * 2**20)
    model = pixel_model()
    frame = nuclei_frame((1024, 1024))
    lazy = RecordingArray(da.from_array(frame, chunks=(256, 256)))
    viewer, widget = widget_with(model)
    layer = viewer.add_image(lazy, name="big", contrast_limits=(0, 255))
    run_prediction(qtbot, widget, layer)
    result = widget._result
    assert result is not None and result.blockwise, widget.status.text()

    # Read block by block, never whole; the labels stay on disk and are shown lazily.
    assert 0 < lazy.largest_read <= frame.size // 4
    predictions = viewer.layers["big predictions"]
    assert predictions.data is result.store.array and predictions.data.shape == (1024, 1024)
    labels = np.asarray(predictions.data[:]).astype(np.int32)
    assert match_counts(model.segment(frame), labels, [0.5])[0].ap >= 0.99
    assert f"{labels.max()} object(s)" in widget.status.text()

    # What needs the network outputs or the labels in memory is off, and says why.
    for control in (widget.show_outputs, widget.copy_button):
        assert not control.isEnabled() and "block by block" in control.toolTip()
    widget.min_size.setValue(100_000)
    wait_idle(qtbot, widget)
    assert "re-run Predict after changing thresholds" in widget.status.text()
    assert np.array_equal(np.asarray(predictions.data[:]), labels)  # not re-thresholded
    widget.copy_to_ground_truth()
    assert "not available for images predicted block by block" in widget.status.text()

    # Corrections are painted into the stored labels.
    predictions.paint((3, 3), 4242, refresh=False)
    assert result.store.array[3, 3] == 4242

    # Predicting again replaces the stored labels: the first directory goes; closing the
    # result removes the second (both in the background).
    first = result.store.path
    widget.min_size.setValue(0)
    run_prediction(qtbot, widget, layer)
    second = widget._result.store.path
    assert second != first and second.is_dir() and wait_for_removals(timeout=10)
    assert not first.exists()
    assert viewer.layers["big predictions"].data is widget._result.store.array
    widget._result.close()
    assert wait_for_removals(timeout=10)
    assert not second.exists()


def test_a_large_pyramid_is_predicted_block_by_block_and_shown_as_one(
    widget_with, qtbot, monkeypatch
):
    da = pytest.importorskip("dask.array")
    monkeypatch.setattr(prediction_result, "memory_cap", lambda: 100 * 2**20)
    model = pixel_model()
    frame = nuclei_frame((1024, 1024))
    level0 = da.from_array(frame, chunks=(256, 256))
    viewer, widget = widget_with(model)
    layer = viewer.add_image([level0, level0[::2, ::2], level0[::4, ::4]], name="pyr")
    assert layer.multiscale
    run_prediction(qtbot, widget, layer)
    result = widget._result
    assert result is not None and result.blockwise and result.store is not None
    predictions = viewer.layers["pyr predictions"]
    assert predictions.multiscale and predictions.data[0] is result.store.array
    assert [level.shape for level in predictions.data] == [(1024, 1024), (512, 512), (256, 256)]
    np.testing.assert_array_equal(
        np.asarray(predictions.data[2]), np.asarray(result.store.array[::4, ::4])
    )
    # napari cannot paint a pyramid: the status says how to correct objects instead.
    assert "cannot paint" in widget.status.text() and not predictions.editable

    # A later whole-frame prediction replaces the pyramid with an ordinary layer, and the
    # stored labels no layer shows any more are removed.
    path = result.store.path
    monkeypatch.setattr(prediction_result, "memory_cap", lambda: 8 * 2**30)
    run_prediction(qtbot, widget, layer)
    assert not widget._result.blockwise
    predictions = viewer.layers["pyr predictions"]
    assert not predictions.multiscale and isinstance(predictions.data, np.ndarray)
    assert wait_for_removals(timeout=10)
    assert path is not None and not path.exists()
    assert widget.show_outputs.isEnabled() and widget.copy_button.isEnabled()


def test_cancelling_a_block_prediction_changes_no_layer_and_removes_its_labels(
    widget_with, qtbot, monkeypatch
):
    monkeypatch.setattr(prediction_result, "memory_cap", lambda: 100 * 2**20)
    viewer, widget = widget_with(pixel_model())
    layer = viewer.add_image(nuclei_frame((1024, 1024)), name="big")
    widget.image_combo.value = layer
    widget.predict_button.click()
    pending = widget._pending
    assert pending is not None and pending.blockwise and pending.store is not None
    widget.cancel()
    wait_idle(qtbot, widget)
    assert "big predictions" not in viewer.layers and widget._result is None
    assert "cancelled" in widget.status.text()
    # The job ended after its blocks: nothing writes the labels any more, and they are gone.
    qtbot.waitUntil(
        lambda: not any(t.name.startswith("live-unet blocks") for t in threading.enumerate()),
        timeout=1000,
    )
    assert wait_for_removals(timeout=10)
    assert pending.store.path is None or not pending.store.path.exists()
