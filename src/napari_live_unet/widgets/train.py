"""Train widget: start, stop and continue training in a worker, with live loss curves."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path

import torch
from napari.layers import Image
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..app.current_model import current_model, describe_model
from ..engine import events as ev
from ..engine.errors import InputError
from ..engine.model import SegmentationModel
from ..layers.layer_pairs import layer_image_data
from ..layers.training_job import (
    AnnotationWarning,
    LayerSource,
    StartChoice,
    StartNote,
    TrainingSettings,
    replaces_current_model,
    training_job,
)
from .close_question import RunCloseGuard
from .input_controls import InputControls
from .job_runner import JobEnd, JobOutcome, JobRunner
from .live_preview import LivePreviewController
from .loss_plot import LossPlot
from .model_file_actions import ModelFileActions
from .scroll_layout import folded, scroll_layout
from .train_settings import TrainSettings
from .train_start import StartFrom
from .training_data import TrainingDataPicker
from .widget_lifetime import connect_while_alive

# The first optimiser torch builds imports its compiler stack (~1.5 s holding the GIL). In
# the training worker that froze the viewer at the first Start; building a throwaway one
# here moves the cost to when the plugin opens.
torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])


class TrainState(Enum):
    """What the widget is doing; the buttons follow from it (:meth:`_update_enabled`)."""

    IDLE = "idle"
    PREPARING = "preparing data"
    TRAINING = "training"
    STOPPING = "stopping"
    SAVING = "saving"


class TrainWidget(QWidget):
    """Choose data and settings, train in the background, watch the curves, save the model."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = TrainState.IDLE
        self._jobs = JobRunner(self, "Training")
        self.model_files = ModelFileActions(self, self._writing_model)
        self.preview = LivePreviewController(napari_viewer, self)
        self._sources: list[LayerSource] = []
        self._start_note = ""
        self._started_at = 0.0
        self.close_guard = RunCloseGuard(self, self._is_running, self.stop, self.shutdown)

        self.data = TrainingDataPicker(napari_viewer)
        self.inputs = InputControls(self.data.labels_to_measure)
        self.start_from = StartFrom()
        self.settings = TrainSettings()
        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop")
        self.continue_button = QPushButton("Continue")
        self.save_button = self.model_files.save_button
        self.export_button = self.model_files.export_button
        self.start_button.setToolTip("Train, starting from the choice in 'Start from'")
        self.stop_button.setToolTip("End at the next step and keep the best model so far")
        self.continue_button.setToolTip("Fine-tune the current model on the (corrected) labels")
        self.start_button.clicked.connect(lambda: self.start(continue_training=False))
        self.continue_button.clicked.connect(lambda: self.start(continue_training=True))
        self.stop_button.clicked.connect(self.stop)
        self.preview_check = QCheckBox("Live preview of the visible area, every")
        self.preview_check.setChecked(True)
        self.preview_every = QSpinBox()
        self.preview_every.setRange(1, 100)
        self.preview_every.setValue(2)
        self.preview_every.setSuffix(" epochs")
        self.progress = QProgressBar()
        self.progress.setMaximum(1000)
        self.progress.setTextVisible(True)
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
        layout = scroll_layout(self)
        layout.addWidget(self.data)
        layout.addWidget(folded("Input: channel, polarity, object size", self.inputs))
        layout.addWidget(self.settings)
        layout.addLayout(preview_row)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.plot)
        layout.addWidget(self.model_label)
        layout.addWidget(self.save_button)
        layout.addWidget(self.export_button)
        layout.addStretch()

        self.inputs.message.connect(lambda text, _error: self.status.setText(text))
        self.data.image.changed.connect(self._update_channels)
        self.data.from_layers.toggled.connect(self._update_channels)
        self.start_from.choice_changed.connect(self._update_channels)
        connect_while_alive(self, current_model.changed, self._show_model)
        connect_while_alive(self, self.viewer.layers.events.removed, self._layer_removed)
        self._show_model(current_model.model, current_model.source)

    # -- public API ---------------------------------------------------------------------

    def reset_choices(self) -> None:
        """Refresh layer pickers (napari calls this when layers change)."""
        self.data.reset_choices()

    @property
    def is_busy(self) -> bool:
        """Whether training or saving runs."""
        return self.state is not TrainState.IDLE

    def start(self, continue_training: bool = False) -> bool:
        """Start training from the "Start from" choice, or (``continue_training``) fine-tune
        the current model; returns whether it started.

        Problems with the data or settings are shown as a notification before any work.
        """
        if self.state is not TrainState.IDLE:
            return False
        if continue_training and current_model.model is None:
            show_warning("No model to continue: train one (Start) or open a model file first.")
            return False
        try:
            start = (
                StartChoice("continue", model=current_model.model)
                if continue_training
                else self.start_from.choice()
            )
            sources, folder = self.data.snapshot()
            adapt = self.inputs.adapt_options()
            settings = TrainingSettings(
                self.settings.train_config(sources[0].spatial_ndim if sources else 2),
                self.settings.architecture(),
                self.settings.mode.currentText(),
                self.settings.device.currentText(),
            )
        except (InputError, ValueError) as exc:
            show_error(f"Cannot start training: {exc}")
            return False
        self._sources = sources
        ndim = sources[0].spatial_ndim if sources else 2
        architecture = start.model.config if start.model is not None else None
        self.preview.start(
            self._preview_image_for(sources),
            ndim,
            architecture or settings.model_config(ndim, 1),
        )
        crop = self.preview.crop if self.preview.image is not None else None
        pacing = self.preview.pacing if crop is not None else None
        every = self.preview_every.value()
        self.plot.start_run(continue_previous=continue_training)
        self._start_note = ""
        self._started_at = time.monotonic()
        self._jobs.start(
            lambda stop: training_job(
                sources, folder, settings, start, stop, crop, every, adapt, pacing
            ),
            self._on_event,
            self._on_end,
        )
        self.close_guard.arm()
        self.status.setText("Preparing data…")
        self._set_state(TrainState.PREPARING)
        return True

    def stop(self) -> None:
        """Ask the worker to end at the next step; the best model so far is kept."""
        if self.state in (TrainState.PREPARING, TrainState.TRAINING):
            self._jobs.request_stop()
            self._set_state(TrainState.STOPPING)
            self.status.setText("Stopping after this step (keeping the best model)…")

    def shutdown(self) -> None:
        """End training now (the viewer is closing): no thresholds, no model update.

        Does not block: the worker ends at its next step and nothing it yields is applied.
        """
        self._jobs.shutdown()
        self.model_files.shutdown()
        self.preview.stop()
        self.state = TrainState.IDLE  # abandoned: nothing more will be applied

    def closeEvent(self, a0) -> None:  # Qt's name for the event
        self.shutdown()
        super().closeEvent(a0)

    def _is_running(self) -> bool:
        return self.state in (TrainState.PREPARING, TrainState.TRAINING, TrainState.STOPPING)

    def save_to(self, path: str | Path) -> bool:
        """Save the current model to ``path`` in a worker (disk I/O off the GUI thread);
        returns whether saving started."""
        return self.state is TrainState.IDLE and self.model_files.save_to(path)

    def export_to(self, path: str | Path) -> bool:
        """Export the current model as a BioImage Model Zoo package in a worker; returns
        whether exporting started."""
        return self.state is TrainState.IDLE and self.model_files.export_to(path)

    def _writing_model(self, busy: bool) -> None:
        self._set_state(TrainState.SAVING if busy else TrainState.IDLE)

    # -- worker events (main thread) -------------------------------------------------------

    def _on_event(self, event) -> None:
        if isinstance(event, AnnotationWarning):
            show_warning(event.message)
            self.status.setText(event.message)
        elif isinstance(event, StartNote):
            self._start_note = event.message
            self.status.setText(event.message)
        elif isinstance(event, ev.TrainingStarted):
            if self.state is TrainState.PREPARING:
                self._set_state(TrainState.TRAINING)
            val = (
                f"validating on {event.n_val}"
                if event.n_val
                else "no validation data (mark a validation region to see validation loss)"
            )
            recipe = f"{event.recipe[:1].upper()}{event.recipe[1:]}." if event.recipe else ""
            self.status.setText(
                (f"{self._start_note} " if self._start_note else "")
                + f"Training on {event.n_train} image(s), {val}; {event.device}, "
                f"{event.n_parameters:,} parameters; {event.describe_sizes()}. {recipe}"
            )
            self._start_note = f"{self._start_note} {recipe}".strip()  # kept for "Done"
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
            self._on_training_finished(event)

    def _on_training_finished(self, event: ev.TrainingFinished) -> None:
        self.progress.setValue(self.progress.maximum())
        if not replaces_current_model(event):
            self.status.setText(
                f"Stopped before the first epoch ended: the current model is unchanged. "
                f"{self._start_note}".strip()
            )
            return
        current_model.set(event.model, f"trained at {time.strftime('%H:%M')}")
        kept = (
            "Kept the starting model: fine-tuning did not improve validation AP. "
            if event.kept_start
            else ""
        )
        flips = (
            "Predictions average each tile's flips (better on validation; 4x slower, the "
            "Predict dock's 'Average flips' box turns it off). "
            if event.model.flip_average
            else ""
        )
        self.status.setText(
            f"{kept}Done ({event.reason}): {event.epochs} epochs, {event.steps} steps in "
            f"{event.elapsed:.0f} s. {flips}{self._start_note}".strip()
        )

    def _on_end(self, end: JobEnd) -> None:
        self.preview.stop()
        self._set_state(TrainState.IDLE)
        note = self.close_guard.run_ended()
        if note:
            self.status.setText(f"{self.status.text()} {note}")
        if end.outcome is JobOutcome.FAILED and end.failure is not None:
            self.status.setText(f"Training stopped: {end.failure.message}")

    def _show_progress(self, progress: float, elapsed: float, epoch: int, loss: float) -> None:
        # QProgressBar repaints at once on a new value (a window composition: ~20 ms on a
        # software-rendered display); with updates off it is drawn with the next paint.
        self.progress.setUpdatesEnabled(False)
        self.progress.setValue(int(progress * self.progress.maximum()))
        left = elapsed * (1 - progress) / progress if progress > 0.01 else None
        remaining = f", {_clock(left)} left" if left is not None else ""
        self.progress.setFormat(f"epoch {epoch} · loss {loss:.3f}{remaining}")
        self.progress.setUpdatesEnabled(True)

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
        if not self._is_running():
            return
        if layer is self.preview.image:
            self.preview.stop()
        if any(layer.name in s.layer_names for s in self._sources):
            show_warning(
                f"Layer '{layer.name}' was removed while training. Training goes on with the "
                "data copied when it started; the live preview of it stops."
            )

    # -- state ---------------------------------------------------------------------------

    def _set_state(self, state: TrainState) -> None:
        self.state = state
        self._update_enabled()

    def _update_enabled(self) -> None:
        """Enable the controls the current state allows (the one place that decides)."""
        idle, has_model = self.state is TrainState.IDLE, current_model.model is not None
        running = self.state in (TrainState.PREPARING, TrainState.TRAINING)
        self.start_button.setEnabled(idle)
        self.continue_button.setEnabled(idle and has_model)
        self.stop_button.setEnabled(running)
        self.model_files.set_enabled(idle and has_model)
        self.settings.set_enabled_while_training(not idle)
        for widget in (self.data, self.inputs, self.start_from):
            widget.setEnabled(idle)

    def _show_model(self, model: SegmentationModel | None, source: str) -> None:
        self.model_label.setText(f"Current model: {describe_model(model, source)}")
        self._update_enabled()
        self._update_channels()

    def _update_channels(self, *_args) -> None:
        """Offer the channels of the chosen image (unknown for a folder: up to 8)."""
        luminance = self.start_from.one_channel()
        if self.data.from_folder.isChecked():
            self.inputs.set_channels(None, luminance=luminance)
            return
        layer = self.data.image.value
        count = layer_image_data(layer).shape[-1] if layer is not None and layer.rgb else 1
        rgb = layer is not None and layer.rgb
        self.inputs.set_channels(count, rgb=rgb, luminance=luminance)


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60:d}:{seconds % 60:02d}"
