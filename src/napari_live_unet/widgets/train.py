"""Train widget: start, stop and continue training in a worker, with live loss curves."""

from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path

# torch imports torch._dynamo (800 modules, ~1.5 s holding the GIL) the first time an
# optimiser is built. Doing that in the training worker froze the viewer for ~300 ms at the
# first Start; importing it with this widget moves the cost to when the plugin opens.
import torch._dynamo  # noqa: F401
from napari.layers import Image
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..engine import events as ev
from ..engine.errors import InputError
from ..engine.image_adapter import AdaptOptions
from ..engine.model import SegmentationModel
from ..engine.model_file import save_model
from ..engine.train import train
from ..layers.current_model import current_model, describe_model
from ..layers.layer_pairs import layer_image_data
from ..layers.visible_crop import PreviewSource
from .input_controls import InputControls
from .live_preview_layer import LivePreview
from .loss_plot import LossPlot
from .train_settings import TrainSettings
from .train_start import StartChoice, StartFrom, StartNote, starting_model
from .training_data import LayerSource, TrainingDataPicker, build_pairs
from .widget_lifetime import connect_while_alive, on_window_close


def training_job(
    sources: list[LayerSource],
    folder: str | None,
    settings: dict,
    start: StartChoice,
    stop: threading.Event,
    preview: PreviewSource | None,
    preview_every: int,
    adapt: AdaptOptions | None = None,
):
    """Worker body: build the pairs and the starting model, then relay the engine's
    training events (and a :class:`StartNote` when the run starts from scratch instead)."""
    pairs, val_pairs = build_pairs(sources, folder)
    ndim, channels = pairs[0].labels.ndim, pairs[0].image.shape[0]
    initial_model, note = starting_model(start, ndim, settings["mode"])
    if note is not None:
        yield StartNote(note)
    model_config = settings["model_config"](ndim, channels)
    return (
        yield from train(
            pairs,
            settings["train_config"],
            model_config=model_config,
            val_pairs=val_pairs or None,
            initial_model=initial_model,
            device=settings["device"],
            should_stop=stop.is_set,
            preview=preview,
            preview_every=preview_every,
            adapt=adapt,
        )
    )


class TrainWidget(QWidget):
    """Choose data and settings, train in the background, watch the curves, save the model."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: GeneratorWorker | None = None
        self._stop = threading.Event()
        self.preview = LivePreview(napari_viewer, self)
        self._sources: list[LayerSource] = []
        self._start_note = ""

        self.data = TrainingDataPicker(napari_viewer)
        self.inputs = InputControls(self.data.labels_to_measure)
        self.start_from = StartFrom()
        self.settings = TrainSettings()
        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop")
        self.continue_button = QPushButton("Continue")
        self.save_button = QPushButton("Save model…")
        self.start_button.setToolTip("Train, starting from the choice in 'Start from'")
        self.stop_button.setToolTip("End at the next step and keep the best model so far")
        self.continue_button.setToolTip("Fine-tune the current model on the (corrected) labels")
        self.start_button.clicked.connect(lambda: self.start(continue_training=False))
        self.continue_button.clicked.connect(lambda: self.start(continue_training=True))
        self.stop_button.clicked.connect(self.stop)
        self.save_button.clicked.connect(self._choose_save_path)
        self.preview_check = QCheckBox("Live preview of the visible area, every", checked=True)
        self.preview_every = QSpinBox(minimum=1, maximum=100, value=2, suffix=" epochs")
        self.progress = QProgressBar(maximum=1000, textVisible=True)
        self.status = QLabel("Paint some objects, then press Start.")
        self.status.setWordWrap(True)
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.plot = LossPlot()

        buttons = QHBoxLayout()
        for b in (self.start_button, self.stop_button, self.continue_button):
            buttons.addWidget(b)
        preview_row = QHBoxLayout()
        preview_row.addWidget(self.preview_check)
        preview_row.addWidget(self.preview_every)
        self.settings.form.insertRow(0, "Start from", self.start_from)
        layout = QVBoxLayout(self)
        for w in (self.data, self.inputs, self.settings):
            layout.addWidget(w)
        layout.addLayout(preview_row)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.plot)
        layout.addWidget(self.model_label)
        layout.addWidget(self.save_button)
        layout.addStretch()

        self.inputs.message.connect(lambda text, _error: self.status.setText(text))
        self.data.image.changed.connect(self._update_channels)
        self.data.from_layers.toggled.connect(self._update_channels)
        self.start_from.choice_changed.connect(self._update_channels)
        connect_while_alive(self, current_model.changed, self._show_model)
        connect_while_alive(self, self.viewer.layers.events.removed, self._layer_removed)
        self._show_model(current_model.model, current_model.source)
        self._set_running(False)

    # -- public API ---------------------------------------------------------------------

    def reset_choices(self) -> None:
        """Refresh layer pickers (napari calls this when layers change)."""
        self.data.reset_choices()

    @property
    def is_training(self) -> bool:
        return self.worker is not None

    def start(self, continue_training: bool = False) -> GeneratorWorker | None:
        """Start training from the "Start from" choice, or (``continue_training``) fine-tune
        the current model; returns the worker.

        Problems with the data or settings are shown as a notification and return None.
        """
        if self.is_training:
            return None
        if continue_training and current_model.model is None:
            show_warning("No model to continue: train one (Start) or open a model file first.")
            return None
        try:
            start = (
                StartChoice("continue", model=current_model.model)
                if continue_training
                else self.start_from.choice()
            )
            sources, folder = self.data.snapshot()
            adapt = self.inputs.adapt_options()
            settings = {
                "train_config": self.settings.train_config(),
                "model_config": self.settings.architecture(),
                "mode": self.settings.mode.currentText(),
                "device": self.settings.device.currentText(),
            }
        except (InputError, ValueError) as exc:
            show_error(f"Cannot start training: {exc}")
            return None
        self._sources = sources
        self._stop.clear()
        on_window_close(self, self.shutdown)  # the viewer closing ends the run
        self.preview.start(
            self._preview_image_for(sources), sources[0].spatial_ndim if sources else 2
        )
        self.plot.start_run(continue_previous=continue_training)
        self._start_note = ""
        self._started_at = time.monotonic()
        self.worker = create_worker(
            training_job,
            sources,
            folder,
            settings,
            start,
            self._stop,
            self.preview.source if self.preview.image is not None else None,
            self.preview_every.value(),
            adapt,
            _start_thread=False,
            _ignore_errors=True,  # _on_error tells the user; nothing re-raised in the GUI
        )
        self.worker.yielded.connect(self._on_event)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self._set_running(True)
        self.status.setText("Preparing data…")
        self.worker.start()
        return self.worker

    def stop(self) -> None:
        """Ask the worker to end at the next step; the best model so far is kept."""
        if self.is_training:
            self._stop.set()
            self.status.setText("Stopping after this step (keeping the best model)…")

    def shutdown(self, timeout: float = 30.0) -> None:
        """End training now (the viewer is closing): no thresholds, no model update.

        Blocks until the worker thread has ended, so nothing runs on after the window.
        """
        worker = self.worker
        if worker is None:
            return
        try:
            for signal in (worker.yielded, worker.returned, worker.errored, worker.finished):
                signal.disconnect()
        except (RuntimeError, TypeError):
            pass  # the worker already ended and Qt deleted its signals
        self._stop.set()
        worker.quit()  # the worker ends at the next event the engine yields
        self.preview.stop()
        deadline = time.monotonic() + timeout
        while worker.is_running and time.monotonic() < deadline:
            time.sleep(0.02)
        self.worker = None

    def save_to(self, path: str | Path) -> None:
        """Save the current model to ``path`` in a worker (disk I/O off the GUI thread)."""
        model = current_model.model
        if model is None:
            show_warning("No model to save yet: train one first.")
            return
        worker = create_worker(save_model, model, path, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda p: show_info(f"Model saved to {p}"))
        worker.returned.connect(lambda p: current_model.set(model, str(p)))
        worker.errored.connect(lambda exc: show_error(f"Could not save the model: {exc}"))
        worker.start()
        return worker

    # -- worker events (main thread) -------------------------------------------------------

    def _on_event(self, event) -> None:
        if isinstance(event, StartNote):
            self._start_note = event.message
            self.status.setText(event.message)
        elif isinstance(event, ev.TrainingStarted):
            val = (
                f"validating on {event.n_val}"
                if event.n_val
                else "no validation data (mark a validation region to see validation loss)"
            )
            self.status.setText(
                (f"{self._start_note} " if self._start_note else "")
                + f"Training on {event.n_train} image(s), {val}; {event.device}, "
                f"{event.n_parameters:,} parameters"
            )
        elif isinstance(event, ev.StepEnd):
            self._show_progress(event.progress, event.elapsed, event.epoch, event.loss)
        elif isinstance(event, ev.EpochEnd):
            self.plot.add_epoch(event.epoch, event.train_loss, event.val_loss)
            self._show_progress(event.progress, event.elapsed, event.epoch, event.train_loss)
        elif isinstance(event, ev.ValidationMetrics):
            self.plot.add_ap(event.epoch, event.ap.get(0.5, 0.0))
        elif isinstance(event, ev.PreviewReady):
            self.preview.show(event.labels, event.key)
        elif isinstance(event, ev.Notice):
            self.status.setText(event.message)
        elif isinstance(event, ev.ThresholdsChosen):
            ap = event.ap.get(0.5)
            self.status.setText(
                "Thresholds chosen on the validation data"
                + (f" (AP@0.5 {ap:.2f})" if ap is not None else "")
            )
        elif isinstance(event, ev.TrainingFinished):
            self.progress.setValue(self.progress.maximum())
            kept = (
                "Kept the starting model: fine-tuning did not improve validation AP. "
                if event.kept_start
                else ""
            )
            self.status.setText(
                f"{kept}Done ({event.reason}): {event.epochs} epochs, {event.steps} steps in "
                f"{event.elapsed:.0f} s. {self._start_note}".strip()
            )

    def _on_returned(self, model: SegmentationModel | None) -> None:
        if model is not None:
            current_model.set(model, f"trained at {time.strftime('%H:%M')}")

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, InputError):
            show_error(f"Training stopped: {exc}")
        else:  # a bug rather than bad input: keep the traceback for the report
            traceback.print_exception(exc)
            show_error(f"Training failed: {type(exc).__name__}: {exc} (details in the console)")
        self.status.setText(f"Training stopped: {exc}")

    def _on_finished(self) -> None:
        self.worker = None
        self.preview.stop()
        self._set_running(False)

    def _show_progress(self, progress: float, elapsed: float, epoch: int, loss: float) -> None:
        self.progress.setValue(int(progress * self.progress.maximum()))
        left = elapsed * (1 - progress) / progress if progress > 0.01 else None
        remaining = f", {_clock(left)} left" if left is not None else ""
        self.progress.setFormat(f"epoch {epoch} · loss {loss:.3f}{remaining}")

    def _preview_image_for(self, sources: list[LayerSource]) -> Image | None:
        """The image layer to preview: the first pair's, if live preview is on."""
        if not sources or not self.preview_check.isChecked():
            return None
        name = sources[0].name
        return next(
            (x for x in self.viewer.layers if x.name == name and isinstance(x, Image)), None
        )

    def _layer_removed(self, event) -> None:
        layer = event.value
        if self.data.forget_layer(layer):
            show_info(f"'{layer.name}' was removed and taken off the list of training pairs.")
        if not self.is_training:
            return
        if layer is self.preview.image:
            self.preview.stop()
        if any(layer.name in s.layer_names for s in self._sources):
            show_warning(
                f"Layer '{layer.name}' was removed while training. Training goes on with the "
                "data copied when it started; the live preview of it stops."
            )

    # -- state ---------------------------------------------------------------------------

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.continue_button.setEnabled(not running and current_model.model is not None)
        self.stop_button.setEnabled(running)
        self.save_button.setEnabled(not running and current_model.model is not None)
        self.settings.set_enabled_while_training(running)
        for widget in (self.data, self.inputs, self.start_from):
            widget.setEnabled(not running)

    def _show_model(self, model: SegmentationModel | None, source: str) -> None:
        self.model_label.setText(f"Current model: {describe_model(model, source)}")
        self._set_running(self.is_training)
        self._update_channels()

    def _update_channels(self, *_args) -> None:
        """Offer the channels of the chosen image (unknown for a folder: up to 8)."""
        luminance = self.start_from.one_channel()
        if self.data.from_folder.isChecked():
            self.inputs.set_channels(None, luminance=luminance)
            return
        layer = self.data.image.value
        rgb = layer is not None and layer.rgb
        count = layer_image_data(layer).shape[-1] if rgb else 1
        self.inputs.set_channels(count, rgb=rgb, luminance=luminance)

    def _choose_save_path(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save model", "model.pt", "Live U-net model (*.pt)"
        )
        if path:
            self.save_to(path)


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60:d}:{seconds % 60:02d}"
