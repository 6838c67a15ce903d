"""The "copy predictions into the ground truth" controls of the Predict widget."""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import ComboBox
from napari.layers import Labels, Shapes

# qtpy re-exports the binding's signal class as Signal; pyright misses the re-export.
from qtpy.QtCore import Signal  # pyright: ignore[reportPrivateImportUsage]
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QMessageBox,
    QPushButton,
    QWidget,
)

from ..engine.errors import InputError
from ..layers.copy_predictions import copy_predictions, crop_and_mask
from ..layers.layer_pairs import layer_choices
from ..layers.prediction_layers import COPY_REGION_CHOICES, copy_region, region_masks


class CopyControls(QGroupBox):
    """Ground truth, region and overwrite choices, and the Copy button.

    Signals
    -------
    copy_requested()
        The Copy button was pressed; the Predict widget calls :meth:`copy` with its
        predictions layer.
    message(str, str)
        Text for the status line and its kind: "error", "info" or "" (status line only).
    """

    copy_requested = Signal()
    message = Signal(str, str)

    def __init__(self, viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__("Correct and retrain: copy predictions", parent)
        self.viewer = viewer
        self.gt_combo = ComboBox(choices=layer_choices(viewer, Labels), nullable=True)
        self.region_combo = QComboBox()
        self.region_combo.addItems(COPY_REGION_CHOICES)
        self.shapes_combo = ComboBox(choices=layer_choices(viewer, Shapes), nullable=True)
        self.overwrite = QCheckBox("Overwrite annotated pixels")
        self.copy_button = QPushButton("Copy predictions to ground truth")
        form = QFormLayout(self)
        form.addRow("Ground truth", self.gt_combo.native)
        form.addRow("Region", self.region_combo)
        form.addRow("Shapes layer", self.shapes_combo.native)
        form.addRow(self.overwrite)
        form.addRow(self.copy_button)
        self.region_combo.currentIndexChanged.connect(self._sync)
        self.copy_button.clicked.connect(self.copy_requested)
        self._sync()

    def reset_choices(self) -> None:
        self.gt_combo.reset_choices()
        self.shapes_combo.reset_choices()

    def copy(
        self, predictions: Labels | None, image_name: str, spatial_ndim: int, n_leading: int
    ) -> None:
        """Copy ``predictions``' objects into the chosen ground truth (undoable there).

        Validation regions of the image (its ``"<image> regions"`` layer) are left as they
        are unless the user confirms, and objects copied outside every training region are
        reported.
        """
        gt = self.gt_combo.value
        if predictions is None or predictions not in self.viewer.layers:
            self.message.emit("Predict an image first.", "error")
            return
        if gt is None or gt is predictions:
            self.message.emit("Choose the ground-truth Labels layer to copy into.", "error")
            return
        region = copy_region(
            self.viewer, self.region_combo.currentIndex(), gt, self.shapes_combo.value, n_leading
        )
        if not region:
            self.message.emit("The region is empty: draw rectangles in the Shapes layer.", "error")
            return
        overwrite = self.overwrite.isChecked()
        if overwrite and not self._confirm_overwrite(gt.name):
            self.message.emit("Copy cancelled; nothing changed.", "")
            return
        try:
            val, train = region_masks(self.viewer, image_name, tuple(gt.data.shape), spatial_ndim)
        except InputError as exc:
            self.message.emit(f"Cannot read the regions: {exc}", "error")
            return
        if val is not None and _overlaps(val, region) and self._confirm_validation_copy():
            val = None  # the user chose to copy into validation regions too
        try:
            data = np.asarray(predictions.data)
            report = copy_predictions(data, gt, region, overwrite, val, train)
        except ValueError as exc:
            self.message.emit(str(exc), "error")
            return
        text = f"'{gt.name}': {report.describe()}. Undo on that layer reverts it."
        self.message.emit(text, "info")

    def _confirm_overwrite(self, name: str) -> bool:
        answer = QMessageBox.question(
            self,
            "Overwrite annotations?",
            f"Replace the annotations of '{name}' inside the region by the predictions? "
            "Undo on that layer reverts it.",
        )
        return answer == QMessageBox.StandardButton.Yes

    def _confirm_validation_copy(self) -> bool:
        answer = QMessageBox.question(
            self,
            "Copy into validation regions?",
            "The copy region overlaps validation regions. Copying predictions there means the "
            "model is then scored on its own predictions. Copy into them too? (No: leave "
            "the validation regions as they are.)",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def _sync(self, *_args: Any) -> None:
        self.shapes_combo.enabled = self.region_combo.currentIndex() == 2


def _overlaps(mask: np.ndarray, region) -> bool:
    crop, inside = crop_and_mask(mask.shape, region)
    return bool((mask[crop] & inside).any())
