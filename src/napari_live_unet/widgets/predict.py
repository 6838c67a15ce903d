"""Predict dock widget: segment an image layer with the current model, tune thresholds live,
and copy predictions into the ground truth for the next round of training."""

from __future__ import annotations

import dataclasses
from enum import Enum
from pathlib import Path

from magicgui.widgets import ComboBox
from napari.layers import Image
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QWidget,
)

from ..app.current_model import current_model
from ..app.large_prediction_job import start_prediction
from ..app.prediction_job import (
    LabelStack,
    PredictionProgress,
    PredictionResult,
    plan_frames,
    relabel_job,
)
from ..engine.config import PostprocessConfig
from ..engine.device import available_devices
from ..engine.errors import InputError
from ..layers.layer_pairs import ground_truth_of, layer_choices, layer_image_data
from ..layers.prediction_layers import layer_names, release_result, show_labels, show_outputs
from ..layers.voxel_size import layer_voxel_size
from .copy_controls import CopyControls
from .doubt_list import DoubtList
from .flip_average_box import FlipAverageBox
from .input_controls import InputControls
from .job_runner import JobEnd, JobOutcome, JobRunner
from .model_chooser import ModelChooser
from .postprocess_controls import PostprocessControls
from .scroll_layout import folded, scroll_layout
from .widget_lifetime import connect_while_alive


class PredictState(Enum):
    """What the widget is doing; the buttons follow from it (:meth:`_update_enabled`)."""

    IDLE = "idle"
    LOADING = "loading a model"
    PREDICTING = "predicting"
    CANCELLING = "cancelling"


class PredictWidget(QWidget):
    """Segment an image layer with the current model; see the module docstring."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = PredictState.IDLE
        self._result: PredictionResult | None = None  # last complete prediction
        self._pending: PredictionResult | None = None  # prediction being filled
        self._image_layer = None  # layer being predicted
        self._stop_reason = ""  # why a stop was asked for: shown when the run ends
        self._jobs = JobRunner(self, "Prediction")
        self._relabel = JobRunner(self, "Post-processing")
        self._relabel_again = False

        self.models = ModelChooser()
        self.model_combo, self.model_label = self.models.combo, self.models.label
        self.image_combo = ComboBox(choices=layer_choices(napari_viewer, Image))
        self.inputs = InputControls(self._labels_to_measure)
        self.device_combo = QComboBox()
        self.device_combo.addItems(available_devices())
        self.predict_button = QPushButton("Predict")
        self.cancel_button = QPushButton("Cancel")
        self.progress = QProgressBar()
        self.show_outputs = QCheckBox("Show network outputs")
        self.flip_average = FlipAverageBox()
        self.thresholds = PostprocessControls()
        # Short names for the controls (tests and scripts set them directly).
        self.fg_threshold, self.seed_threshold, self.seed_prominence, self.min_size = (
            self.thresholds._spins()
        )
        self.copier = CopyControls(napari_viewer)
        self.gt_combo, self.region_combo = self.copier.gt_combo, self.copier.region_combo
        self.shapes_combo, self.overwrite = self.copier.shapes_combo, self.copier.overwrite
        self.copy_button = self.copier.copy_button
        self.doubt = DoubtList(napari_viewer)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self._debounce = self.thresholds.debounce
        self._build_layout()

        for source in (self.models, self.inputs):
            source.message.connect(lambda text, error: self._say(text, error=error))
        self.models.loading.connect(self._on_loading)
        self.image_combo.changed.connect(self._update_channels)
        self.predict_button.clicked.connect(self.predict)
        self.cancel_button.clicked.connect(self.cancel)
        self.show_outputs.toggled.connect(self._on_show_outputs)
        self.thresholds.changed.connect(self.repostprocess)
        self.copier.copy_requested.connect(self.copy_to_ground_truth)
        self.copier.message.connect(
            lambda text, kind: self._say(text, error=kind == "error", info=kind == "info")
        )
        connect_while_alive(self, self.viewer.layers.events.removed, self._on_layer_removed)
        connect_while_alive(self, current_model.changed, self._on_model_changed)
        self._on_model_changed(current_model.model, current_model.source)

    def _build_layout(self) -> None:
        buttons = QWidget()
        row = QHBoxLayout(buttons)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.predict_button)
        row.addWidget(self.cancel_button)
        groups = {
            "Model": [self.models],
            "Predict": [("Image", self.image_combo.native), ("Device", self.device_combo)],
        }
        groups["Predict"] += [buttons, self.progress, self.flip_average, self.show_outputs]
        layout = scroll_layout(self)
        for title, rows in groups.items():
            box = QGroupBox(title)
            form = QFormLayout(box)
            for item in rows:
                form.addRow(*item) if isinstance(item, tuple) else form.addRow(item)
            layout.addWidget(box)
            if title == "Model":
                layout.addWidget(folded("Input: channel, polarity, object size", self.inputs))
            if title == "Predict":
                layout.addWidget(self.thresholds)
                layout.addWidget(self.doubt)
        layout.addWidget(self.copier)
        layout.addWidget(self.status)
        layout.addStretch()
        self._update_enabled()

    # -- layers and model ------------------------------------------------------------

    def reset_choices(self, *_args) -> None:
        """Refresh the layer pickers (napari calls this when layers change)."""
        self.image_combo.reset_choices()
        self.copier.reset_choices()

    def _on_layer_removed(self, event) -> None:
        self.reset_choices()
        if self._image_layer is not None and event.value is self._image_layer:
            name = event.value.name
            self._stop_running(
                f"Prediction dropped: the image layer '{name}' was deleted while it was being "
                "predicted.",
            )
            self._say(f"Image layer '{name}' was deleted: stopping prediction…")

    def _on_model_changed(self, model, source: str) -> None:
        if model is not None:
            self.thresholds.show_params(model.postprocess)  # no re-run
        self.flip_average.follow(model)
        self._update_channels()
        self._update_enabled()
        self.doubt.model_changed()

    def _update_channels(self, *_args) -> None:
        """Offer the channels of the chosen image layer (the model says what is spatial)."""
        model = current_model.model
        ndim, channels = (2, 1) if model is None else (model.config.ndim, model.config.in_channels)
        self.inputs.show_layer(self.image_combo.value, ndim, luminance=channels == 1)

    def _labels_to_measure(self) -> list[tuple]:
        """The Ground truth chosen below, else the one paired with the image (name, shape)."""
        layer, model = self.image_combo.value, current_model.model
        gt = self.gt_combo.value
        if gt is None and layer is not None:
            gt = ground_truth_of(self.viewer.layers, layer)
        if gt is None:
            raise InputError("no ground truth for this image: choose one under Ground truth")
        return [(gt.data, model.config.ndim if model is not None else 2)]

    def params(self, base: PostprocessConfig | None = None) -> PostprocessConfig:
        """Thresholds from the controls; the rest (smoothing) from ``base``, by default the
        settings the shown predictions were made with."""
        if base is None and self._result is not None:
            base = self._result.params
        if base is None and current_model.model is not None:
            base = current_model.model.postprocess
        return self.thresholds.params(base)

    def load_model_file(self, path: str | Path) -> None:
        """Load a model file in a worker and make it the current model."""
        self.models.load(path)

    # -- prediction ------------------------------------------------------------------

    @property
    def is_busy(self) -> bool:
        """Whether a prediction, a threshold update or a model load is running."""
        return self.state is not PredictState.IDLE or self._relabel.is_running or self.doubt.is_busy

    def predict(self) -> bool:
        """Predict the chosen image layer with the current model in a worker; returns
        whether it started (problems are shown in the status line)."""
        model, layer = current_model.model, self.image_combo.value
        if self.state is not PredictState.IDLE:
            return False
        if model is None or layer is None:
            self._say("Choose an image layer and train or load a model first.", error=True)
            return False
        model = self.flip_average.applied(model)
        data = layer_image_data(layer)
        try:
            adapt = self.inputs.adapt_options()
            voxel_size = layer_voxel_size(layer, model.config.ndim)
            adapt = dataclasses.replace(adapt, voxel_size=voxel_size)
            plan = plan_frames(data.shape, layer.rgb, model.config, layer.name, adapt.channel)
            # Whole frames, or block by block for frames beyond the memory cap.
            device, params = self.device_combo.currentText(), self.params(model.postprocess)
            pending, job = start_prediction(model, data, plan, params, adapt, layer.name, device)
            job = self.doubt.wrap(job, model, data, pending, adapt)  # and where it doubts
        except InputError as exc:
            self._say(str(exc), error=True)
            return False
        self._pending, self._image_layer = pending, layer
        self._jobs.start(job, self._on_predict_event, self._on_predict_end)
        self.progress.setRange(0, 0)
        self._say(f"Predicting '{layer.name}' ({plan.n_frames} frame(s)){pending.method_note}…")
        self._set_state(PredictState.PREDICTING)
        return True

    def cancel(self) -> None:
        """Stop the prediction at the next tile (no layer is changed), or drop the model
        that is loading (the current model stays)."""
        if self.state is PredictState.LOADING:
            self.models.cancel()
        elif self.state is PredictState.PREDICTING:
            self._stop_running("Prediction cancelled; no layer was changed.")
            self._say("Cancelling…")

    def _stop_running(self, reason: str) -> None:
        self._stop_reason = reason
        self._jobs.request_stop()
        self._set_state(PredictState.CANCELLING)

    def _on_predict_event(self, event) -> None:
        pending = self._pending
        assert pending is not None
        if self.doubt.on_event(event):
            return
        if isinstance(event, PredictionProgress):
            self.progress.setRange(0, max(1, event.total))
            self.progress.setValue(event.done)
        else:
            pending.apply(event)  # frame labels, counts, how a frame was fitted

    def _on_predict_end(self, end: JobEnd) -> None:
        pending, layer = self._pending, self._image_layer
        assert pending is not None
        self._pending = self._image_layer = None
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self._set_state(PredictState.IDLE)
        if end.failure is not None:
            self.status.setText(f"Prediction failed: {end.failure.message}")
        elif end.outcome is JobOutcome.STOPPED or layer not in self.viewer.layers:
            reason = self._stop_reason or "Prediction stopped; no layer was changed."
            self._say(reason, warn="deleted" in reason)
        elif not pending.labels.complete:
            self._say("Prediction ended early; no layer was changed.", warn=True)
        else:
            replaced, self._result = self._result, pending
            note = show_labels(self.viewer, pending, layer)
            self.doubt.show_result(pending, layer)
            release_result(self.viewer, replaced)  # stored labels no layer shows
            self._update_enabled()
            if self.show_outputs.isChecked():
                self._on_show_outputs(True)
            self._say(pending.summary() + note)
            if self.params() != pending.params:  # thresholds moved while predicting
                self.repostprocess()
        if pending is not self._result:  # dropped: free its outputs (and files) now
            pending.close()
            self.doubt.drop()
        self._stop_reason = ""

    def _on_show_outputs(self, checked: bool) -> None:
        if checked and self._result is not None and not self._result.outputs_note:
            show_outputs(self.viewer, self._result)

    # -- re-post-processing ----------------------------------------------------------

    def repostprocess(self) -> None:
        """Re-run post-processing on the cached outputs with the current thresholds.

        One run at a time (the per-frame caches are not shared between threads); a request
        during a run stops it between frames and starts again: the latest request wins.
        """
        result = self._result
        if result is None or result.outputs_note:
            if result is not None:  # nothing kept to re-threshold
                self._say(result.outputs_note)
            return
        if self._relabel.is_running:
            self._relabel_again = True
            self._relabel.request_stop()
            return
        self._relabel_again = False
        params = self.params()
        if params == result.params:  # the labels were made with these thresholds
            return
        labels = LabelStack(result.plan)
        self._relabel.start(
            lambda stop: relabel_job(result, params, stop),
            lambda event: labels.put(event.position, event.labels),
            lambda end: self._on_relabel_end(end, result, params, labels),
        )
        self._say("Updating labels…")

    def _on_relabel_end(self, end: JobEnd, result, params, labels) -> None:
        if end.failure is not None:
            self.status.setText(f"Post-processing failed: {end.failure.message}")
        elif end.outcome is JobOutcome.COMPLETED and result is self._result and labels.complete:
            result.labels, result.params = labels, params
            show_labels(self.viewer, result)
            self.doubt.labels_changed(result)
            self._say(result.summary())
        if self._relabel_again:
            self.repostprocess()

    # -- copy to ground truth ----------------------------------------------------------

    def copy_to_ground_truth(self) -> None:
        """Copy the predictions layer's objects into the chosen ground-truth layer."""
        result = self._result
        name = layer_names(result)[0] if result is not None else None
        layers = self.viewer.layers
        predictions = layers[name] if name is not None and name in layers else None
        if result is None:
            self.copier.copy(None, "", 2, 0)
            return
        if result.copy_note:
            self._say(result.copy_note, error=True)
            return
        leading = len(result.plan.leading)
        self.copier.copy(predictions, result.image_name, result.ndim, leading)

    # -- helpers ---------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop work in flight (the viewer is closing); its results will not be applied."""
        self._jobs.shutdown()
        self._relabel.shutdown()
        self.models.shutdown()

    def closeEvent(self, a0) -> None:  # Qt's name for the event
        self.shutdown()
        super().closeEvent(a0)

    def _on_loading(self, loading: bool) -> None:
        if loading or self.state is PredictState.LOADING:
            self._set_state(PredictState.LOADING if loading else PredictState.IDLE)

    def _set_state(self, state: PredictState) -> None:
        self.state = state
        self._update_enabled()

    def _update_enabled(self, *_args) -> None:
        """Enable the controls the current state allows (the one place that decides)."""
        idle = self.state is PredictState.IDLE
        self.predict_button.setEnabled(idle)
        self.cancel_button.setEnabled(self.state in (PredictState.PREDICTING, PredictState.LOADING))
        self.models.combo.setEnabled(idle)
        model = current_model.model
        self.thresholds.set_mode(None if model is None else model.config.mode)
        result = self._result
        no_outputs = "" if result is None else result.outputs_note
        no_copy = "" if result is None else result.copy_note
        for control, why in ((self.show_outputs, no_outputs), (self.copy_button, no_copy)):
            control.setEnabled(not why)
            control.setToolTip(why)
        self.thresholds.setToolTip(no_outputs)

    def _say(self, text: str, error: bool = False, warn: bool = False, info: bool = False) -> None:
        self.status.setText(text)
        if error:
            show_error(text)
        elif warn:
            show_warning(text)
        elif info:
            show_info(text)
