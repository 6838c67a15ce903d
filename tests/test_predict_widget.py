"""The predict dock widget in a real napari viewer."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

import napari_live_unet
from napari_live_unet.app.current_model import current_model
from napari_live_unet.engine import ModelConfig, PostprocessConfig, SegmentationModel, save_model
from napari_live_unet.engine.image_adapter import InputSpec, estimate_diameter
from napari_live_unet.engine.predict import TilesDone
from napari_live_unet.engine.sample_data import load_sample
from napari_live_unet.engine.targets import normalized_distance
from napari_live_unet.widgets.predict import PredictState, PredictWidget

from .conftest import synthetic_nuclei

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("no_current_model")]
WAIT_MS = 30_000


def tiny_model(mode="distance"):
    return SegmentationModel.create(ModelConfig(base_channels=4, depth=2, mode=mode))


def ideal_outputs(labels):
    """What a perfect distance-mode network would output for these labels."""
    fg = ndi.gaussian_filter((labels > 0).astype(np.float32), 0.5)
    return np.stack([fg, normalized_distance(labels)]).astype(np.float16)


class FakeNetwork:
    """Stands in for SegmentationModel.predict_stream: ideal outputs, tile progress, counted
    calls, optional delay."""

    def __init__(self, labels_of, slow=False, fail=False):
        self.labels_of, self.slow, self.fail = labels_of, slow, fail
        self.calls = 0
        self.started = threading.Event()
        self.stopped = threading.Event()  # the caller asked to stop and was obeyed

    def __call__(self, images, *, channel_axis=None, stop=None, **_):
        self.calls += 1
        for image in images:
            self.started.set()
            if self.fail:
                raise RuntimeError("the GPU caught fire")
            steps = 500 if self.slow else 1
            for step in range(steps):
                if stop is not None and stop.is_set():
                    self.stopped.set()
                    return
                yield TilesDone(step + 1, steps)
                if self.slow:
                    time.sleep(0.01)
            yield ideal_outputs(self.labels_of(np.asarray(image)))


@pytest.fixture
def setup(make_napari_viewer):
    def make(model=None, show=False):
        viewer = make_napari_viewer(show=show)
        widget = PredictWidget(viewer)
        viewer.window.add_dock_widget(widget)
        if model is not None:
            current_model.set(model, "test model")
        return viewer, widget

    return make


def run_prediction(qtbot, widget, layer):
    widget.image_combo.value = layer
    widget.predict_button.click()
    wait_idle(qtbot, widget)


def wait_idle(qtbot, widget):
    """Until no worker runs and no threshold change is waiting to be applied."""
    qtbot.waitUntil(lambda: not widget.is_busy and not widget._debounce.isActive(), timeout=WAIT_MS)


def test_predicts_2d_image_and_time_series_with_the_image_geometry(setup, qtbot):
    viewer, widget = setup(tiny_model())
    image, _ = synthetic_nuclei((64, 64), seed=1)
    layer = viewer.add_image(image, name="cells", scale=(0.5, 0.5), translate=(10, 20))
    widget.show_outputs.setChecked(True)
    run_prediction(qtbot, widget, layer)
    labels = viewer.layers["cells predictions"]
    assert labels.data.shape == (64, 64)
    assert np.issubdtype(labels.data.dtype, np.integer)
    assert tuple(labels.scale) == (0.5, 0.5) and tuple(labels.translate) == (10, 20)
    assert viewer.layers["cells foreground"].data.shape == (64, 64)
    assert viewer.layers["cells distance"].data.shape == (64, 64)

    series = np.stack([synthetic_nuclei((48, 40), seed=s)[0] for s in range(3)])
    movie = viewer.add_image(series, name="movie")
    run_prediction(qtbot, widget, movie)
    assert viewer.layers["movie predictions"].data.shape == (3, 48, 40)

    # Predicting again updates the layer instead of adding another.
    n_layers = len(viewer.layers)
    run_prediction(qtbot, widget, movie)
    assert len(viewer.layers) == n_layers


def test_predicts_volumes_and_rgb_images(setup, qtbot):
    viewer, widget = setup(SegmentationModel.create(ModelConfig(ndim=3, base_channels=4, depth=2)))
    volume = viewer.add_image(np.random.default_rng(0).random((8, 24, 24), np.float32), name="vol")
    run_prediction(qtbot, widget, volume)
    assert viewer.layers["vol predictions"].data.shape == (8, 24, 24)

    current_model.set(
        SegmentationModel.create(ModelConfig(in_channels=3, base_channels=4, depth=2)), "rgb"
    )
    rgb = viewer.add_image(np.zeros((32, 24, 3), np.uint8), name="rgb", rgb=True)
    run_prediction(qtbot, widget, rgb)
    assert viewer.layers["rgb predictions"].data.shape == (32, 24)

    # A 2D image cannot go through a 3D model: a clear message, nothing added.
    current_model.set(SegmentationModel.create(ModelConfig(ndim=3, base_channels=4)), "3d")
    flat = viewer.add_image(np.zeros((32, 32), np.float32), name="flat")
    run_prediction(qtbot, widget, flat)
    assert "flat predictions" not in viewer.layers
    assert "3D" in widget.status.text()


def test_threshold_change_updates_labels_without_running_the_network(setup, qtbot):
    model = tiny_model()
    _, truth = synthetic_nuclei((96, 96), n=8, seed=3)
    fake = FakeNetwork(lambda image: truth)
    model.predict_stream = fake
    viewer, widget = setup(model)
    layer = viewer.add_image(np.zeros((96, 96), np.float32), name="img")
    widget.min_size.setValue(5)
    run_prediction(qtbot, widget, layer)
    predictions = viewer.layers["img predictions"]
    assert predictions.data.max() == truth.max()
    predicted = fake.calls  # the image, and its flipped copies for the doubt map

    widget.min_size.setValue(100_000)  # every object is smaller
    qtbot.waitUntil(lambda: predictions.data.max() == 0, timeout=WAIT_MS)
    widget.fg_threshold.setValue(0.2)
    widget.min_size.setValue(5)  # the latest request wins
    qtbot.waitUntil(lambda: predictions.data.max() == truth.max(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not widget.is_busy, timeout=WAIT_MS)
    assert fake.calls == predicted
    assert "object" in widget.status.text()


def test_thresholds_set_back_before_the_delay_do_not_post_process_again(setup, qtbot, monkeypatch):
    """A threshold changed and set back (or changed just before predicting) leaves the
    labels as they were: the delayed request finds nothing to do."""
    from napari_live_unet.widgets import predict as predict_module

    model = tiny_model()
    _, truth = synthetic_nuclei((64, 64), n=6, seed=3)
    model.predict_stream = FakeNetwork(lambda image: truth)
    viewer, widget = setup(model)
    layer = viewer.add_image(np.zeros((64, 64), np.float32), name="img")
    run_prediction(qtbot, widget, layer)
    relabelled = []
    real = predict_module.relabel_job
    monkeypatch.setattr(predict_module, "relabel_job", lambda *a: relabelled.append(1) or real(*a))
    before = widget.min_size.value()
    widget.min_size.setValue(before + 7)
    widget.min_size.setValue(before)  # back, before the delay runs out
    wait_idle(qtbot, widget)
    assert relabelled == []
    assert viewer.layers["img predictions"].data.max() == truth.max()


def start_slow_prediction(setup, qtbot, name):
    """A widget predicting a 32×32 image with a network that takes 5 s unless stopped."""
    model = tiny_model()
    fake = FakeNetwork(lambda image: np.zeros(image.shape, np.int32), slow=True)
    model.predict_stream = fake
    viewer, widget = setup(model)
    layer = viewer.add_image(np.zeros((32, 32), np.float32), name=name)
    widget.image_combo.value = layer
    widget.predict_button.click()
    assert fake.started.wait(10)
    return viewer, widget, layer


def test_cancel_stops_and_leaves_no_prediction_layer(setup, qtbot):
    viewer, widget, _ = start_slow_prediction(setup, qtbot, "img")
    qtbot.waitUntil(lambda: widget.progress.value() > 0, timeout=WAIT_MS)
    assert not widget.predict_button.isEnabled()
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.is_busy, timeout=WAIT_MS)
    assert "img predictions" not in viewer.layers
    assert "cancelled" in widget.status.text().lower()
    assert widget.predict_button.isEnabled()


def test_deleting_the_image_while_predicting_drops_the_result_with_a_message(setup, qtbot):
    viewer, widget, layer = start_slow_prediction(setup, qtbot, "doomed")
    viewer.layers.remove(layer)
    qtbot.waitUntil(lambda: not widget.is_busy, timeout=WAIT_MS)
    assert "doomed predictions" not in viewer.layers
    assert "'doomed'" in widget.status.text() and "deleted" in widget.status.text()


def test_worker_error_is_reported_and_widget_returns_to_idle(setup, qtbot):
    model = tiny_model()
    model.predict_stream = FakeNetwork(lambda image: image, fail=True)
    viewer, widget = setup(model)
    layer = viewer.add_image(np.zeros((32, 32), np.float32), name="img")
    run_prediction(qtbot, widget, layer)
    assert "Prediction failed" in widget.status.text() and "caught fire" in widget.status.text()
    assert "img predictions" not in viewer.layers
    assert widget.predict_button.isEnabled()


def test_copy_to_ground_truth_asks_before_overwriting(setup, qtbot, monkeypatch):
    model = tiny_model()
    truth = np.zeros((40, 40), np.int32)
    truth[5:15, 5:15] = 1
    truth[25:35, 25:35] = 2
    model.predict_stream = FakeNetwork(lambda image: truth)
    viewer, widget = setup(model)
    layer = viewer.add_image(np.zeros((40, 40), np.float32), name="img")
    widget.min_size.setValue(5)
    run_prediction(qtbot, widget, layer)
    gt_data = np.zeros((40, 40), np.int32)
    gt_data[0:20, 0:20] = 4
    gt = viewer.add_labels(gt_data.copy(), name="ground truth")
    widget.gt_combo.value = gt

    widget.overwrite.setChecked(True)
    asked = []
    monkeypatch.setattr(
        widget.copier, "_confirm_overwrite", lambda name: asked.append(name) or False
    )
    widget.copy_button.click()
    assert asked == ["ground truth"]
    np.testing.assert_array_equal(gt.data, gt_data)
    assert "nothing changed" in widget.status.text()

    # Without overwrite, only the unannotated object is copied, inside a drawn rectangle.
    widget.overwrite.setChecked(False)
    shapes = viewer.add_shapes([np.array([[20, 20], [39, 39]])], shape_type="rectangle")
    widget.region_combo.setCurrentIndex(2)
    widget.shapes_combo.value = shapes
    widget.copy_button.click()
    assert (gt.data[truth == 2] == 5).all()
    np.testing.assert_array_equal(gt.data[0:20, 0:20], gt_data[0:20, 0:20])
    assert "copied 1 object" in widget.status.text()
    gt.undo()
    np.testing.assert_array_equal(gt.data, gt_data)
    wait_idle(qtbot, widget)


def test_copy_leaves_validation_regions_alone_unless_confirmed(setup, qtbot, monkeypatch):
    """Issue 11 (11): predictions copied into a validation region would score the model on
    its own output: they are left out unless the user confirms; objects copied outside
    every training region are reported."""
    from napari_live_unet.engine.regions import Region
    from napari_live_unet.layers.annotation_layers import add_regions_layer

    model = tiny_model()
    truth = np.zeros((60, 60), np.int32)
    truth[5:15, 5:15] = 1  # in the training region
    truth[35:45, 5:15] = 2  # in the validation region
    truth[35:45, 40:50] = 3  # in no region
    model.predict_stream = FakeNetwork(lambda image: truth)
    viewer, widget = setup(model)
    layer = viewer.add_image(np.zeros((60, 60), np.float32), name="img")
    widget.min_size.setValue(5)
    run_prediction(qtbot, widget, layer)
    square = np.array([[0, 0], [0, 29], [29, 29], [29, 0]], float)
    below = square + np.array([30, 0])
    add_regions_layer(
        viewer, layer, "train", [Region("train", (), square), Region("val", (), below)]
    )
    gt = viewer.add_labels(np.zeros((60, 60), np.int32), name="img ground truth")
    widget.gt_combo.value = gt
    asked = []
    monkeypatch.setattr(widget.copier, "_confirm_validation_copy", lambda: asked.append(1) or False)
    widget.copy_button.click()
    assert asked == [1]
    assert (gt.data[truth == 1] > 0).all() and (gt.data[truth == 3] > 0).all()
    assert not gt.data[30:60, 0:30].any()  # the validation region is untouched
    text = widget.status.text()
    assert "validation regions left as they were" in text
    assert "1 object(s) were copied outside the training regions" in text

    gt.undo()
    monkeypatch.setattr(widget.copier, "_confirm_validation_copy", lambda: True)
    widget.copy_button.click()
    assert (gt.data[truth == 2] > 0).all()  # confirmed: copied there too
    wait_idle(qtbot, widget)


def test_copy_visible_field_of_view_only(setup, qtbot):
    model = tiny_model()
    truth = np.zeros((200, 300), np.int32)
    truth[10:20, 10:20] = 1  # in view after zooming on the top left
    truth[170:180, 270:280] = 2  # out of view
    model.predict_stream = FakeNetwork(lambda image: truth)
    viewer, widget = setup(model, show=True)
    layer = viewer.add_image(np.zeros((200, 300), np.float32), name="img")
    widget.min_size.setValue(5)
    run_prediction(qtbot, widget, layer)
    gt = viewer.add_labels(np.zeros((200, 300), np.int32), name="gt")
    widget.gt_combo.value = gt
    viewer.camera.zoom = 4
    viewer.camera.center = (0, 30, 30)
    qtbot.waitUntil(lambda: 0 < gt.corner_pixels[1, 0] < 150, timeout=WAIT_MS)  # redrawn
    widget.region_combo.setCurrentIndex(1)
    widget.copy_button.click()
    assert (gt.data[truth == 1] > 0).all()
    assert not gt.data[truth == 2].any()


def test_load_model_file_sets_the_current_model(setup, qtbot, tmp_path):
    _, widget = setup()
    assert "No model" in widget.model_label.text()
    path = save_model(tiny_model("boundary"), tmp_path / "nuclei.pt")
    widget.load_model_file(path)
    qtbot.waitUntil(lambda: current_model.model is not None, timeout=WAIT_MS)
    assert current_model.source == str(path)
    assert current_model.model.config.mode == "boundary"
    assert "nuclei.pt" in widget.model_label.text() and "boundary" in widget.model_label.text()
    assert not widget.seed_prominence.isEnabled()  # a distance-mode setting

    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a model")
    widget.load_model_file(bad)
    qtbot.waitUntil(lambda: not widget.is_busy, timeout=WAIT_MS)
    assert "Could not load" in widget.status.text()
    assert current_model.source == str(path)


def test_closing_the_viewer_stops_prediction(setup, qtbot):
    viewer, _, _ = start_slow_prediction(setup, qtbot, "img")
    fake = current_model.model.predict_stream
    viewer.close()
    # The fake network needs 5 s to finish; the stop flag ends it at the next tile.
    qtbot.waitUntil(lambda: fake.stopped.is_set(), timeout=2_000)


def test_cancel_during_a_model_load_keeps_the_current_model(setup, qtbot, monkeypatch):
    """Issue 10 (3): Cancel while a model loads: the loaded model is dropped, the widget
    goes back to idle and the current model stays."""
    from napari_live_unet.widgets import model_chooser

    release = threading.Event()
    real_load = model_chooser.load_model_source

    def slow_load(path, outputs=None):
        assert release.wait(10)
        return real_load(path, outputs=outputs)

    monkeypatch.setattr(model_chooser, "load_model_source", slow_load)
    current = tiny_model()
    _, widget = setup(current)
    widget.models.choose("nuclei (built-in)")
    assert widget.state is PredictState.LOADING
    assert widget.cancel_button.isEnabled() and not widget.predict_button.isEnabled()
    widget.cancel_button.click()
    release.set()
    qtbot.waitUntil(lambda: not widget.is_busy, timeout=WAIT_MS)
    assert current_model.model is current
    assert "cancelled" in widget.status.text().lower()
    assert widget.predict_button.isEnabled() and not widget.cancel_button.isEnabled()


def load_builtin(qtbot, widget, name="nuclei (built-in)"):
    """Choose a built-in model in the model box and wait until it is the current model."""
    widget.models.choose(name)
    qtbot.waitUntil(lambda: not widget.is_busy, timeout=WAIT_MS)
    assert current_model.source == name, widget.status.text()


def package_files() -> dict[str, int]:
    """Every file of the installed package (bytecode caches aside) with its mtime."""
    root = Path(napari_live_unet.__file__).parent
    return {
        str(p.relative_to(root)): p.stat().st_mtime_ns
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_builtin_model_predicts_the_sample_and_writes_nothing_into_the_package(setup, qtbot):
    viewer, widget = setup()
    entries = [widget.model_combo.itemText(i) for i in range(widget.model_combo.count())]
    assert entries[0] == "current model" and "nuclei (built-in)" in entries
    assert entries[-1] == "model file…"
    before = package_files()
    viewer.open_sample("napari-live-unet", "nuclei")
    image = viewer.layers["nuclei (DSB2018 sample)"]
    widget.reset_choices()
    load_builtin(qtbot, widget)  # no file dialog: loaded from the package
    assert widget.model_combo.currentText() == "nuclei (built-in)"
    assert "nuclei (built-in)" in widget.model_label.text()
    assert widget.min_size.value() == current_model.model.postprocess.min_size
    run_prediction(qtbot, widget, image)
    predictions = viewer.layers["nuclei (DSB2018 sample) predictions"]
    assert predictions.data.shape == image.data.shape
    assert predictions.data.max() > 0
    assert "Input:" in widget.status.text()  # how the image was fitted to the model
    assert package_files() == before


def test_rgb_image_predicts_with_the_one_channel_builtin(setup, qtbot):
    viewer, widget = setup()
    _, grey, _ = load_sample("test")[0]
    colour = np.stack([255 - grey] * 3, axis=-1)  # dark nuclei on a bright background
    layer = viewer.add_image(colour, name="colour", rgb=True)
    single = viewer.add_image(grey, name="grey")
    widget.reset_choices()
    widget.image_combo.value = single
    assert not widget.inputs.channel.isEnabled()  # one channel: nothing to choose
    load_builtin(qtbot, widget)
    widget.image_combo.value = layer
    assert widget.inputs.channel.currentText() == "auto (luminance)"
    assert widget.inputs.channel.isEnabled() and widget.inputs.channel.count() == 4

    run_prediction(qtbot, widget, layer)
    assert viewer.layers["colour predictions"].data.shape == grey.shape
    status = widget.status.text()
    assert "RGB -> luminance" in status and "inverted" in status, status

    widget.inputs.set_channel(1)
    widget.inputs.polarity.setCurrentIndex(widget.inputs.polarity.findData("dark"))
    run_prediction(qtbot, widget, layer)
    assert "channel 1 of 3" in widget.status.text() and "as chosen" in widget.status.text()
    assert viewer.layers["colour predictions"].data.shape == grey.shape


def test_measure_sets_the_diameter_and_predictions_use_it(setup, qtbot):
    model = tiny_model()
    model.input = InputSpec(diameter=8.0)  # the network knows objects 8 px across
    _, truth = synthetic_nuclei((96, 96), n=8, radius=(7, 9), seed=2, touching=False)
    fake = FakeNetwork(lambda image: truth)
    model.predict_stream = fake
    viewer, widget = setup(model)
    layer = viewer.add_image(np.zeros((96, 96), np.float32), name="cells")
    widget.reset_choices()
    widget.image_combo.value = layer
    widget.inputs.measure_button.click()  # no ground truth yet
    assert "ground truth" in widget.status.text()
    assert widget.inputs.diameter.text() == "auto"

    viewer.add_labels(truth, name="cells ground truth")
    widget.inputs.measure_button.click()  # measured in a worker
    qtbot.waitUntil(lambda: widget.inputs.diameter.text() != "auto", timeout=WAIT_MS)
    diameter = estimate_diameter(truth)
    assert widget.inputs.diameter.value() == pytest.approx(diameter, abs=0.05)
    assert widget.inputs.adapt_options().diameter == pytest.approx(diameter, abs=0.05)
    assert "px" in widget.status.text()

    # The zoom the diameter implies scales the sizes in the thresholds, on every re-run.
    widget.min_size.setValue(100)
    run_prediction(qtbot, widget, layer)
    predicted, result = fake.calls, widget._result
    assert result.zoom == pytest.approx(8.0 / widget.inputs.diameter.value())
    outputs = result.outputs.get(0)
    expected = model.instances(outputs, widget.params(), diameter=widget.inputs.diameter.value())
    np.testing.assert_array_equal(viewer.layers["cells predictions"].data, expected)
    widget.min_size.setValue(20)
    wait_idle(qtbot, widget)
    expected = model.instances(outputs, widget.params(), diameter=widget.inputs.diameter.value())
    np.testing.assert_array_equal(viewer.layers["cells predictions"].data, expected)
    assert fake.calls == predicted


def test_thresholds_are_empty_until_a_model_sets_them(make_napari_viewer):
    """Issue 11 (15): no "0.00" thresholds before any model is loaded."""
    widget = PredictWidget(make_napari_viewer())
    spins = widget.thresholds._spins()
    assert all(not s.isEnabled() and s.text() == "–" for s in spins)
    model = tiny_model()
    model.postprocess = PostprocessConfig(fg_threshold=0.45, seed_threshold=0.3, min_size=0)
    current_model.set(model, "test")
    assert all(s.isEnabled() for s in spins)
    assert widget.thresholds.fg_threshold.value() == pytest.approx(0.45)
    assert widget.thresholds.min_size.text() == "0"  # a real 0, not the empty sign
