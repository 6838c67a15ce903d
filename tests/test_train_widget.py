"""The train widget in a real napari viewer: train, watch, stop, close, recover from errors."""

from __future__ import annotations

import time
import weakref

import numpy as np
import pytest
from qtpy.QtCore import QEvent, QThreadPool, QTimer

from napari_live_unet.app.current_model import current_model
from napari_live_unet.app.preview_pacing import PreviewPacing
from napari_live_unet.engine import ModelConfig, SegmentationModel
from napari_live_unet.engine.image_adapter import estimate_diameter
from napari_live_unet.engine.model_file import load_model, save_model
from napari_live_unet.widgets import job_runner
from napari_live_unet.widgets import train as train_module
from napari_live_unet.widgets.close_question import WhileTraining
from napari_live_unet.widgets.train import TrainState, TrainWidget
from napari_live_unet.widgets.train_start import SCRATCH

from .conftest import synthetic_nuclei

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("no_current_model")]


@pytest.fixture
def notices(monkeypatch):
    """Messages the widget shows as napari notifications, by kind."""
    shown = {"error": [], "warning": [], "info": []}
    for kind in shown:
        monkeypatch.setattr(train_module, f"show_{kind}", shown[kind].append)
    monkeypatch.setattr(job_runner, "show_error", shown["error"].append)  # failed jobs
    return shown


def make_widget(make_napari_viewer, epochs=3, shape=(160, 160), start=SCRATCH):
    viewer = make_napari_viewer()
    image, labels = synthetic_nuclei(shape, n=14, seed=1)
    viewer.add_image(image, name="nuclei")
    viewer.add_labels(labels, name="nuclei ground truth")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    tiny_settings(widget, epochs, start=start)
    widget.reset_choices()
    return viewer, widget


def tiny_settings(widget, epochs, steps=3, batch=2, start=SCRATCH):
    """A small CPU run: seconds, not minutes. ``start``: the "Start from" entry (None: keep
    the default, the built-in starter); a new small model by default."""
    if start is not None:
        widget.start_from.choose(start)
    s = widget.settings
    s.device.setCurrentText("cpu")
    s.model_size.setCurrentIndex(0)
    s.by_epochs.setChecked(True)
    s.epochs.setValue(epochs)
    s.steps_per_epoch.setValue(steps)
    s.patch_size.setValue(32)
    s.batch_size.setValue(batch)


def wait_done(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: not widget.is_busy, timeout=timeout)


def test_training_plots_every_epoch_and_sets_the_current_model(make_napari_viewer, qtbot):
    viewer, widget = make_widget(make_napari_viewer, epochs=3)
    assert widget.data.labels.value is viewer.layers["nuclei ground truth"]  # paired by name
    assert widget.start()
    assert widget.is_busy and not widget.start_button.isEnabled()
    wait_done(qtbot, widget)
    assert widget.plot.epochs == [1, 2, 3]
    assert len(widget.plot.val_loss) == 3  # a validation part was held out automatically
    assert all(np.isfinite(widget.plot.train_loss))
    model = current_model.model
    assert model is not None and len(model.history) == 3
    assert widget.start_button.isEnabled() and widget.continue_button.isEnabled()
    assert widget.progress.value() == widget.progress.maximum()
    # The live preview put the model's view of the image into a layer.
    preview = viewer.layers["nuclei live preview"]
    assert preview.data.shape == (160, 160)
    assert preview.data.max() >= 0


def test_continue_fine_tunes_the_current_model(make_napari_viewer, qtbot):
    viewer, widget = make_widget(make_napari_viewer, epochs=2)
    widget.start()
    wait_done(qtbot, widget)
    first = current_model.model
    viewer.layers["nuclei ground truth"].data[:10] = 0  # a correction
    widget.start(continue_training=True)
    wait_done(qtbot, widget)
    second = current_model.model
    assert second is not first
    # The first run's curve stays; the continued run follows from its last epoch (its
    # epoch 0, the model it started from), after a restart mark.
    assert widget.plot.epochs == [1, 2, 2, 3, 4] and widget.plot.restarts == [2]
    assert len(widget.plot.start_points()) == 2  # train and val loss of the restart
    axis = widget.plot.plot_widget.getPlotItem().getAxis("left")
    assert not axis.autoSIPrefix  # plain loss numbers, no "x0.001"
    assert len(second.history) == 5  # history continues from the first run, then epoch 0
    assert second.config == first.config


def test_stop_mid_training_keeps_a_usable_model(make_napari_viewer, qtbot):
    viewer, widget = make_widget(make_napari_viewer, epochs=10_000)
    widget.start()
    qtbot.waitUntil(lambda: len(widget.plot.epochs) >= 2, timeout=60_000)
    widget.stop()
    wait_done(qtbot, widget, timeout=60_000)
    model = current_model.model
    assert model is not None
    assert 2 <= len(model.history) < 100
    labels = model.segment(viewer.layers["nuclei"].data)
    assert labels.shape == (160, 160)


def test_viewer_stays_responsive_while_training(make_napari_viewer, qtbot):
    """From Start to the model being ready, the event loop never stalls for 100 ms."""
    _, widget = make_widget(make_napari_viewer, epochs=10)
    widget.settings.steps_per_epoch.setValue(10)  # a few seconds of training
    widget.preview_every.setValue(1)  # previews are the main thread's heaviest work
    ticks: list[float] = []
    timer = QTimer(interval=10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    widget.start()
    wait_done(qtbot, widget)
    timer.stop()
    assert current_model.model is not None
    gaps = np.diff(ticks)
    assert ticks[-1] - ticks[0] > 1.0 and len(gaps) > 50  # measured over a real run
    assert gaps.max() < 0.100, f"event loop stalled for {gaps.max() * 1000:.0f} ms"


def test_closing_the_viewer_ends_training(make_napari_viewer, qtbot):
    """Close during a run: the GUI does not wait for the worker, the worker ends soon after
    and nothing it still yields is applied."""
    viewer, widget = make_widget(make_napari_viewer, epochs=10_000)
    assert widget.start()
    qtbot.waitUntil(lambda: len(widget.plot.epochs) >= 1, timeout=60_000)
    assert widget.state is TrainState.TRAINING
    started = time.perf_counter()
    viewer.close()
    assert time.perf_counter() - started < 2.0  # no blocking wait on the worker
    pool = QThreadPool.globalInstance()
    qtbot.waitUntil(lambda: pool.activeThreadCount() == 0, timeout=30_000)
    qtbot.wait(200)  # any event still queued is delivered (and must be ignored)
    assert current_model.model is None  # the run was abandoned, not finished


class UserClose:
    """A close event as the window's close button sends it (spontaneous)."""

    def __init__(self):
        self.ignored = False

    def type(self):
        return QEvent.Type.Close

    def spontaneous(self):
        return True

    def ignore(self):
        self.ignored = True


def user_closes_window(viewer) -> bool:
    """Deliver a user's close to the plugin's window filter; True if the close went on."""
    from napari_live_unet.widgets.widget_lifetime import _WindowCloseHooks

    hooks = viewer.window._qt_window.findChild(_WindowCloseHooks)
    event = UserClose()
    blocked = hooks.eventFilter(viewer.window._qt_window, event)
    return not (blocked or event.ignored)


@pytest.mark.parametrize("answer", list(WhileTraining))
def test_closing_the_viewer_while_training_asks_first(
    make_napari_viewer, qtbot, monkeypatch, answer
):
    """Issue 11 (14): nothing is lost without a question."""
    viewer, widget = make_widget(make_napari_viewer, epochs=10_000)
    asked = []
    monkeypatch.setattr(widget.close_guard, "ask", lambda closing: asked.append(closing) or answer)
    assert widget.start()
    qtbot.waitUntil(lambda: len(widget.plot.epochs) >= 1, timeout=60_000)
    closes = user_closes_window(viewer)
    assert asked == ["the viewer"]
    assert closes == (answer is WhileTraining.DISCARD)
    if answer is WhileTraining.KEEP_TRAINING:
        assert widget.state is TrainState.TRAINING
        widget.stop()
    if answer is not WhileTraining.DISCARD:
        wait_done(qtbot, widget)
        assert current_model.model is not None  # the best model so far was kept
    if answer is WhileTraining.STOP_AND_KEEP:
        assert "Save model" in widget.status.text()


def test_closing_the_dock_while_training_can_finish_the_run(make_napari_viewer, qtbot, monkeypatch):
    """Issue 11 (14): the Train panel closed mid-run: "keep training" lets the run finish and
    its model become the current model."""
    viewer, widget = make_widget(make_napari_viewer, epochs=3)
    asked = []
    monkeypatch.setattr(
        widget.close_guard,
        "ask",
        lambda closing: asked.append(closing) or WhileTraining.KEEP_TRAINING,
    )
    assert widget.start()
    alive = weakref.ref(widget)
    qtbot.waitUntil(lambda: alive().state is TrainState.TRAINING, timeout=60_000)
    viewer.window.remove_dock_widget(widget)
    del widget  # the dock is gone: only the run keeps the widget alive
    qtbot.waitUntil(lambda: asked == ["the Train panel"], timeout=5_000)
    qtbot.waitUntil(lambda: current_model.model is not None, timeout=120_000)


def test_stop_before_the_first_epoch_keeps_the_current_model(make_napari_viewer, qtbot):
    """Issue 11 (10): Start then Stop at once leaves the good model in place, and says so."""
    _, widget = make_widget(make_napari_viewer, epochs=10_000)
    good = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    current_model.set(good, "good model")
    widget.settings.steps_per_epoch.setValue(10_000)  # the first epoch never ends in time
    assert widget.start()
    assert widget.state is TrainState.PREPARING
    assert widget.stop_button.isEnabled() and not widget.start_button.isEnabled()
    widget.stop()
    assert widget.state is TrainState.STOPPING and not widget.stop_button.isEnabled()
    wait_done(qtbot, widget)
    assert widget.state is TrainState.IDLE and widget.start_button.isEnabled()
    assert current_model.model is good and current_model.source == "good model"
    assert "current model is unchanged" in widget.status.text()


def test_deleting_a_training_layer_warns_and_training_goes_on(make_napari_viewer, qtbot, notices):
    viewer, widget = make_widget(make_napari_viewer, epochs=4)
    widget.start()
    qtbot.waitUntil(lambda: len(widget.plot.epochs) >= 1, timeout=60_000)
    viewer.layers.remove("nuclei ground truth")
    assert any("nuclei ground truth" in m and "removed" in m for m in notices["warning"])
    viewer.layers.remove("nuclei")
    wait_done(qtbot, widget)
    assert current_model.model is not None
    assert not notices["error"]


def test_bad_data_is_reported_and_the_widget_recovers(make_napari_viewer, qtbot, notices):
    viewer, widget = make_widget(make_napari_viewer, epochs=2)
    viewer.layers["nuclei ground truth"].data[:] = 0  # nothing annotated
    widget.start()
    wait_done(qtbot, widget)
    assert notices["error"], "the user must be told why training did not run"
    assert "object" in notices["error"][0].lower()
    assert widget.start_button.isEnabled()
    assert current_model.model is None
    # A mismatched ground truth is refused before any worker starts.
    viewer.add_labels(np.zeros((10, 10), np.uint16), name="wrong")
    widget.reset_choices()
    widget.data.labels.value = viewer.layers["wrong"]
    assert not widget.start()
    assert "(10, 10)" in notices["error"][-1] and "(160, 160)" in notices["error"][-1]


def test_saved_model_reloads_and_opens_in_napari(make_napari_viewer, qtbot, tmp_path):
    viewer, widget = make_widget(make_napari_viewer, epochs=1)
    widget.start()
    wait_done(qtbot, widget)
    trained = current_model.model
    path = tmp_path / "nuclei.pt"
    assert widget.save_to(path)
    assert widget.state is TrainState.SAVING and not widget.start_button.isEnabled()
    qtbot.waitUntil(lambda: path.exists() and not widget.is_busy, timeout=20_000)
    assert load_model(path).config == trained.config
    current_model.set(None, "")
    added = viewer.open(str(path), plugin="napari-live-unet")
    assert added == []  # a model is not a layer...
    assert current_model.model is not None  # ...it becomes the current model
    assert current_model.source == str(path)
    assert "nuclei.pt" in widget.model_label.text()


class RecordingPacing(PreviewPacing):
    """Pacing that records whether each wait ended with the preview drawn (a long timeout:
    a viewer that never acknowledged would hold each preview for 30 s and record False)."""

    def __init__(self) -> None:
        super().__init__(timeout=30.0)
        self.results: list[bool] = []

    def wait_until_drawn(self, should_stop=None) -> bool:
        drawn = super().wait_until_drawn(should_stop)
        self.results.append(drawn)
        return drawn


def test_trains_on_a_time_series_and_previews_the_current_frame(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    frames = [synthetic_nuclei((128, 128), n=10, seed=s) for s in range(3)]
    movie = np.stack([f[0] for f in frames])
    truth = np.zeros(movie.shape, np.uint16)
    truth[1] = frames[1][1]  # only frame 1 is annotated
    viewer.add_image(movie, name="movie")
    viewer.add_labels(truth, name="movie ground truth")
    viewer.dims.set_current_step(0, 2)  # looking at frame 2 while training
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.reset_choices()
    tiny_settings(widget, epochs=2)
    widget.preview_every.setValue(1)
    widget.preview.pacing = RecordingPacing()
    widget.start()
    wait_done(qtbot, widget)
    assert current_model.model is not None and current_model.model.config.ndim == 2
    preview = viewer.layers["movie live preview"]
    assert preview.data.shape == (1, 128, 128)
    assert preview.translate[0] == 2  # drawn on the frame that was on screen
    # The worker waited for each preview (one per epoch) until the viewer had drawn it.
    assert widget.preview.pacing.results == [True, True]


def test_trains_a_3d_model_on_a_volume(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, labels = synthetic_nuclei((64, 64), n=6, seed=3)
    volume = np.repeat(image[None], 16, axis=0)
    truth = np.repeat(labels[None], 16, axis=0)
    viewer.add_image(volume, name="volume")
    viewer.add_labels(truth, name="volume ground truth")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.reset_choices()
    widget.data.spatial.setCurrentIndex(1)  # 3D volumes
    tiny_settings(widget, epochs=1, steps=2, batch=1, start=None)
    widget.preview_every.setValue(1)
    widget.start()
    wait_done(qtbot, widget)
    model = current_model.model
    assert model is not None and model.config.ndim == 3
    # The 2D starter cannot start a 3D model: a new one was trained, and the user is told.
    assert "Starting from scratch" in widget.status.text()
    assert widget.plot.epochs[0] == 1
    assert viewer.layers["volume live preview"].data.ndim == 3


def test_defaults_to_the_builtin_starter_and_plots_its_score_as_epoch_0(make_napari_viewer, qtbot):
    viewer, widget = make_widget(make_napari_viewer, epochs=2, start=None)
    assert widget.start_from.currentText() == "nuclei (built-in)"
    assert widget.settings.learning_rate.text() == "auto"
    assert widget.settings.train_config().learning_rate is None  # the engine's 1e-3
    widget.inputs.polarity.setCurrentIndex(widget.inputs.polarity.findData("bright"))
    widget.inputs.measure_button.click()  # from the chosen ground truth, in a worker
    qtbot.waitUntil(lambda: widget.inputs.diameter.text() != "auto", timeout=20_000)
    measured = estimate_diameter(viewer.layers["nuclei ground truth"].data)
    assert widget.inputs.adapt_options().diameter == pytest.approx(measured, abs=0.05)
    widget.start()
    wait_done(qtbot, widget)
    # The starter is scored before the first step: epoch 0 comes first, with its AP.
    assert widget.plot.epochs == [0, 1, 2] and widget.plot.ap_epochs[0] == 0
    assert 0 in widget.plot.val_epochs and len(widget.plot.start_points()) == 2
    model = current_model.model
    assert model is not None
    assert (model.config.base_channels, model.config.depth) == (16, 4)  # the starter's net
    assert model.input.image_polarity == "bright"  # as chosen in the input controls
    assert model.input.image_diameter == pytest.approx(measured, abs=0.05)
    labels = model.segment(viewer.layers["nuclei"].data)
    assert labels.shape == (160, 160)


def test_a_run_that_does_not_beat_the_starter_keeps_it_and_says_so(make_napari_viewer, qtbot):
    _, widget = make_widget(make_napari_viewer, epochs=1, start=None)
    widget.settings.learning_rate.setValue(1.0)  # a user override that wrecks the weights
    assert widget.settings.train_config().learning_rate == 1.0
    widget.start()
    wait_done(qtbot, widget)
    assert current_model.model is not None
    assert "Kept the starting model: fine-tuning did not improve validation AP" in (
        widget.status.text()
    )


def test_starts_from_a_model_file_or_the_current_model(make_napari_viewer, qtbot, tmp_path):
    _, widget = make_widget(make_napari_viewer, epochs=1)
    widget.start()
    wait_done(qtbot, widget)
    first = current_model.model
    path = save_model(first, tmp_path / "mine.pt")
    current_model.set(None, "")
    widget.start_from.choose("current model")
    assert not widget.start()  # no current model: refused with a message
    widget.start_from.set_file(path)
    assert widget.start_from.currentText() == "model file: mine.pt"
    widget.start()
    wait_done(qtbot, widget)
    assert current_model.model.config == first.config
    assert widget.plot.epochs == [0, 1]
    widget.start_from.choose("current model")
    widget.start()
    wait_done(qtbot, widget)
    assert widget.plot.epochs == [0, 1]


@pytest.mark.parametrize("content", ["truncated", "foreign"])
def test_a_bad_model_file_dropped_on_the_viewer_gets_a_clear_message(
    make_napari_viewer, tmp_path, monkeypatch, content
):
    """Issue 11 (14): the plugin explains; the current model stays."""
    import torch

    from napari_live_unet.layers import model_reader

    path = tmp_path / "model.pt"
    if content == "truncated":
        save_model(SegmentationModel.create(ModelConfig(base_channels=4, depth=2)), path)
        path.write_bytes(path.read_bytes()[:500])
    else:
        torch.save({"weights": torch.zeros(3)}, path)  # another tool's checkpoint
    viewer = make_napari_viewer()
    before = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    current_model.set(before, "kept")
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    assert model_reader.get_reader(str(path)) is not None
    assert viewer.open(str(path), plugin="napari-live-unet") == []
    assert current_model.model is before
    expected = "not a readable model file" if content == "truncated" else "not a napari-live-unet"
    assert len(shown) == 1 and expected in shown[0] and "model.pt" in shown[0]


def test_unpainted_objects_are_warned_about_before_fine_tuning(make_napari_viewer, qtbot, notices):
    """Issue 11 (12): only one of the objects is painted in the whole-image annotation; the
    starting model sees the others and the user is warned before the run trains."""
    viewer, widget = make_widget(make_napari_viewer, epochs=1, start=None)  # built-in start
    truth = viewer.layers["nuclei ground truth"]
    truth.data = np.where(truth.data == 1, truth.data, 0)
    assert widget.start()
    wait_done(qtbot, widget)
    assert any("taught as background" in m for m in notices["warning"])
