"""The settings form of the train widget: mode, model size, schedule, batch, patch, device."""

from __future__ import annotations

from functools import partial
from typing import cast

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ..engine.config import AugmentConfig, Mode, ModelConfig, TrainConfig
from ..engine.device import available_devices
from ..engine.presets import MODEL_SIZES as SIZE_PRESETS
from ..engine.presets import recommended_settings, volume_sizes

_SIZE_LABELS = {"small": "small (fast on a CPU)", "medium": "medium", "large": "large (GPU)"}
# shown name -> (base channels, depth): the same U-net at three widths.
MODEL_SIZES: dict[str, tuple[int, int]] = {
    _SIZE_LABELS[name]: size for name, size in SIZE_PRESETS.items()
}


class TrainSettings(QWidget):
    """Form whose values become a :class:`TrainConfig` and a :class:`ModelConfig`."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.form = form = QFormLayout()  # the Train widget puts "Start from" on top
        self.mode = QComboBox()
        self.mode.addItems(["distance", "boundary"])
        self.mode.setToolTip(
            "Auxiliary output that splits touching objects: distance to the object's edge, "
            "or a 3-class background / interior / boundary map"
        )
        form.addRow("Mode", self.mode)
        self.model_size = QComboBox()
        self.model_size.addItems(list(MODEL_SIZES))
        form.addRow("Model size", self.model_size)
        self.device = QComboBox()
        self.device.addItems(["auto", *available_devices()])
        self.device.setToolTip("Devices found on this machine")
        form.addRow("Device", self.device)

        self.by_time = QRadioButton("Time budget (s)")
        self.by_epochs = QRadioButton("Epochs")
        self.by_time.setChecked(True)
        self.time_budget = _spin_box(5, 24 * 3600, 120, step=30)
        self.epochs = _spin_box(1, 100_000, 50)
        self.by_time.toggled.connect(self._sync_schedule)
        form.addRow(self.by_time, self.time_budget)
        form.addRow(self.by_epochs, self.epochs)
        # The minimum, shown as "auto", lets the engine choose: 3e-3 for a new model, 1e-3
        # when fine-tuning, so a few images nudge a trained model rather than overwrite it.
        self.learning_rate = QDoubleSpinBox()
        self.learning_rate.setDecimals(5)
        self.learning_rate.setRange(0.0, 1.0)
        self.learning_rate.setValue(0.0)
        self.learning_rate.setSingleStep(1e-4)
        self.learning_rate.setSpecialValueText("auto")
        self.learning_rate.setToolTip(
            "Peak learning rate; auto: 0.003 for a new model, 0.001 when fine-tuning"
        )
        form.addRow("Learning rate", self.learning_rate)

        advanced = QWidget()
        adv_form = QFormLayout(advanced)
        # values set by apply_device_defaults below
        self.batch_size = _spin_box(1, 1024, 1)
        self.patch_size = _spin_box(16, 1024, 16, step=16)
        self.patch_size.setToolTip(
            "Largest patch edge in y/x; smaller images give smaller patches. Volumes: "
            "half of it (64 on a CPU) while the device's defaults are kept"
        )
        self.patch_size_z = _spin_box(4, 256, 4, step=4)
        self.patch_size_z.setToolTip("Largest patch depth in z (3D images only)")
        self.steps_per_epoch = _spin_box(1, 100_000, 50)
        adv_form.addRow("Batch size", self.batch_size)
        adv_form.addRow("Patch size", self.patch_size)
        adv_form.addRow("Patch depth (z)", self.patch_size_z)
        adv_form.addRow("Steps per epoch", self.steps_per_epoch)
        self.aug_flips = QCheckBox("flips and 90° rotations")
        self.aug_geometry = QCheckBox("small rotations and scaling")
        self.aug_intensity = QCheckBox("brightness, contrast, gamma, noise")
        aug = QVBoxLayout()
        for box in (self.aug_flips, self.aug_geometry, self.aug_intensity):
            box.setChecked(True)
            aug.addWidget(box)
        adv_form.addRow("Augmentation", aug)
        self.advanced = QCollapsible("Advanced")
        self.advanced.addWidget(advanced)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(self.advanced)
        self.device.currentTextChanged.connect(self.apply_device_defaults)
        self.apply_device_defaults(self.device.currentText())
        self._sync_schedule()

    def _sync_schedule(self) -> None:
        self.time_budget.setEnabled(self.by_time.isChecked())
        self.epochs.setEnabled(not self.by_time.isChecked())

    def apply_device_defaults(self, device: str) -> None:
        """Model size, batch and patch that suit the device (a CPU needs a small net)."""
        kind = "cuda" if device == "auto" and "cuda" in self.device_choices() else device
        kind = kind.split(":")[0] if kind != "auto" else "cpu"
        settings = recommended_settings(kind)
        for name, (base, depth) in MODEL_SIZES.items():
            if (base, depth) == (settings["base_channels"], settings["depth"]):
                self.model_size.setCurrentText(name)
        self.batch_size.setValue(settings["batch_size"])
        self.patch_size.setValue(settings["patch_size"])
        self.patch_size_z.setValue(recommended_settings(kind, 3)["patch_size_z"])
        self._device_kind = kind

    def _sizes(self, ndim: int) -> tuple[int, int]:
        """Batch and patch edge: for volumes, the device's 3D defaults while the form
        still holds its 2D ones (see :func:`~napari_live_unet.engine.presets.volume_sizes`)."""
        batch, patch = self.batch_size.value(), self.patch_size.value()
        return volume_sizes(self._device_kind, batch, patch) if ndim == 3 else (batch, patch)

    def device_choices(self) -> list[str]:
        return [self.device.itemText(i) for i in range(self.device.count())]

    def train_config(self, ndim: int = 2) -> TrainConfig:
        """The schedule and data settings for ``ndim``-D data (raises ValueError for
        inconsistent values)."""
        by_time = self.by_time.isChecked()
        batch, patch = self._sizes(ndim)
        return TrainConfig(
            epochs=None if by_time else self.epochs.value(),
            time_budget=float(self.time_budget.value()) if by_time else None,
            steps_per_epoch=self.steps_per_epoch.value(),
            batch_size=batch,
            patch_size=patch,
            patch_size_z=self.patch_size_z.value(),
            learning_rate=self.learning_rate_value(),
            val_ap_every=2,
            augment=AugmentConfig(
                flips=self.aug_flips.isChecked(),
                rot90=self.aug_flips.isChecked(),
                rotate_scale=self.aug_geometry.isChecked(),
                intensity=self.aug_intensity.isChecked(),
                noise_std=0.03 if self.aug_intensity.isChecked() else 0.0,
            ),
        )

    def learning_rate_value(self) -> float | None:
        """The learning rate, None for auto."""
        value = self.learning_rate.value()
        return None if value <= self.learning_rate.minimum() else value

    def model_config(self, ndim: int, in_channels: int) -> ModelConfig:
        """Architecture for a new model on data with this dimensionality and channels."""
        return self.architecture()(ndim, in_channels)

    def architecture(self) -> partial[ModelConfig]:
        """A ModelConfig maker ``(ndim, in_channels)`` with the form's mode and size, read now
        (so the training worker need not read the form)."""
        base, depth = MODEL_SIZES[self.model_size.currentText()]
        mode = cast(Mode, self.mode.currentText())  # the combo box offers only the modes
        return partial(ModelConfig, mode=mode, base_channels=base, depth=depth)

    def set_enabled_while_training(self, training: bool) -> None:
        """Freeze the form while a run uses its values."""
        self.setEnabled(not training)


def _spin_box(minimum: int, maximum: int, value: int, step: int = 1) -> QSpinBox:
    box = QSpinBox()
    box.setRange(minimum, maximum)
    box.setValue(value)
    box.setSingleStep(step)
    return box
