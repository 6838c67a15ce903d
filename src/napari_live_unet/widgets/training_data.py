"""Which data to train on: image / ground-truth layer pairs, or a folder on disk.

What is read from layers is read on the main thread when training starts
(:func:`~napari_live_unet.layers.training_job.snapshot_pair`); turning it into training
pairs happens in the worker.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import ComboBox
from napari.layers import Image, Labels, Shapes
from qtpy.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from ..engine.errors import InputError
from ..layers.layer_pairs import REGIONS_SUFFIX, ground_truth_of, layer_choices, spatial_shape
from ..layers.training_job import LayerSource, snapshot_pair

_NO_REGIONS = "(whole images)"


class TrainingDataPicker(QWidget):
    """Pick layer pairs (several may be added to a list) or a folder to train on."""

    def __init__(self, viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.from_layers = QRadioButton("Layers")
        self.from_layers.setChecked(True)
        self.from_folder = QRadioButton("Folder")
        group = QButtonGroup(self)
        group.addButton(self.from_layers)
        group.addButton(self.from_folder)
        self.image = ComboBox(choices=layer_choices(viewer, Image))
        self.labels = ComboBox(choices=layer_choices(viewer, Labels))
        self.regions = ComboBox(choices=self._regions_choices)
        self.spatial = QComboBox()
        self.spatial.addItems(["2D (each slice or frame is an image)", "3D volumes"])
        self.pairs = QListWidget()
        self.pairs.setMaximumHeight(70)
        self.pairs.setToolTip("Pairs trained on together; empty: the pair selected above")
        self._added: list[tuple[Image, Labels, Shapes | None, int]] = []
        add, remove = QPushButton("Add pair"), QPushButton("Remove")
        add.clicked.connect(self.add_current_pair)
        remove.clicked.connect(self._remove_selected)
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("annotation set, or a folder with images/ labels/")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)

        form = QFormLayout()
        form.addRow("Image", self.image.native)
        form.addRow("Ground truth", self.labels.native)
        form.addRow("Regions", self.regions.native)
        form.addRow("Treat as", self.spatial)
        buttons = QHBoxLayout()
        buttons.addWidget(add)
        buttons.addWidget(remove)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder)
        folder_row.addWidget(browse)
        source_row = QHBoxLayout()
        source_row.addWidget(self.from_layers)
        source_row.addWidget(self.from_folder)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(source_row)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.pairs)
        layout.addLayout(folder_row)
        self.from_layers.toggled.connect(self._sync)
        self.image.changed.connect(self._guess_partners)
        self._sync()

    def _regions_choices(self, _widget=None):
        return [(_NO_REGIONS, None), *layer_choices(self.viewer, Shapes)()]

    def reset_choices(self) -> None:
        for combo in (self.image, self.labels, self.regions):
            combo.reset_choices()
        self._guess_partners()

    def _guess_partners(self, *_args) -> None:
        """Select the image's ground truth ('<image> ground truth', or the only labels layer
        of its shape, as in the bundled sample) and '<image> regions' when they exist."""
        image = self.image.value
        if image is None:
            return
        labels = ground_truth_of(self.viewer.layers, image)
        if labels is not None:
            self.labels.value = labels
        name = image.name + REGIONS_SUFFIX
        if name in self.viewer.layers:
            self.regions.value = self.viewer.layers[name]

    def _sync(self) -> None:
        layers = self.from_layers.isChecked()
        for w in (self.image.native, self.labels.native, self.regions.native, self.pairs):
            w.setEnabled(layers)
        self.folder.setEnabled(not layers)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Training data folder")
        if folder:
            self.folder.setText(folder)
            self.from_folder.setChecked(True)

    @property
    def spatial_ndim(self) -> int:
        return 2 if self.spatial.currentIndex() == 0 else 3

    def add_current_pair(self) -> None:
        """Append the selected image / ground truth / regions to the list of pairs."""
        image, labels = self.image.value, self.labels.value
        if image is None or labels is None:
            raise InputError("choose an image layer and its ground-truth labels layer first")
        image_shape = spatial_shape(image)
        if tuple(labels.data.shape) != image_shape:
            raise InputError(
                f"ground truth '{labels.name}' has shape {tuple(labels.data.shape)} but image "
                f"'{image.name}' has {image_shape}: they cannot be a pair"
            )
        entry = (image, labels, self.regions.value, self.spatial_ndim)
        self._added.append(entry)
        regions = f", {entry[2].name}" if entry[2] is not None else ""
        self.pairs.addItem(f"{image.name} + {labels.name}{regions} ({self.spatial_ndim}D)")

    def _remove_selected(self) -> None:
        row = self.pairs.currentRow()
        if row >= 0:
            self.pairs.takeItem(row)
            del self._added[row]

    def forget_layer(self, layer) -> bool:
        """Drop list entries that use a removed layer; True if any did."""
        keep = [i for i, entry in enumerate(self._added) if layer not in entry[:3]]
        dropped = len(keep) != len(self._added)
        for row in reversed(range(len(self._added))):
            if row not in keep:
                self.pairs.takeItem(row)
        self._added = [self._added[i] for i in keep]
        return dropped

    def snapshot(self) -> tuple[list[LayerSource], str | None]:
        """What to train on, read now on the main thread (labels copied)."""
        if self.from_folder.isChecked():
            folder = self.folder.text().strip()
            if not folder:
                raise InputError("choose a training data folder, or train from layers")
            return [], folder
        entries = list(self._added)
        if not entries:
            image, labels = self.image.value, self.labels.value
            if image is None or labels is None:
                raise InputError(
                    "choose an image layer and its ground-truth labels layer (the Annotate "
                    "widget creates one), or a folder"
                )
            entries = [(image, labels, self.regions.value, self.spatial_ndim)]
        return [snapshot_pair(*entry) for entry in entries], None

    def labels_to_measure(self) -> list[tuple[Any, int]]:
        """(ground-truth data, spatial ndim) of the selected pairs, to measure object sizes.

        Raises
        ------
        InputError
            When no ground-truth layer is chosen.
        """
        entries = self._added or [(None, self.labels.value, None, self.spatial_ndim)]
        found = [(e[1].data, e[3]) for e in entries if e[1] is not None]
        if not found:
            raise InputError("choose the ground-truth labels layer to measure")
        return found
