"""Which data to train on: image / ground-truth layer pairs, or a folder on disk.

What is read from layers is read here, on the main thread, when training starts (the labels
are copied so painting during training cannot race the worker); turning it into training
pairs happens in the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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

from ..engine.annotation_set import pairs_from_annotation_set
from ..engine.data import TrainingPair, load_folder_pairs
from ..engine.errors import InputError
from ..engine.regions import Region, pairs_from_regions
from ..layers.layer_pairs import (
    ground_truth_candidates,
    ground_truth_of,
    layer_image_data,
    regions_from_shapes,
)

_NO_REGIONS = "(whole images)"


@dataclass
class LayerSource:
    """A snapshot of one image / ground-truth pair taken when training starts."""

    name: str
    image: Any  # the image layer's array (numpy or dask), not copied
    labels: np.ndarray  # a copy
    regions: list[Region]
    spatial_ndim: int
    channel_axis: int | None
    layer_names: tuple[str, ...]


def build_pairs(
    sources: list[LayerSource], folder: str | None
) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """(train, val) pairs from layer snapshots and/or a folder; runs in the worker."""
    train, val = [], []
    for s in sources:
        t, v = pairs_from_regions(
            s.name, s.image, s.labels, s.regions, s.spatial_ndim, channel_axis=s.channel_axis
        )
        train += t
        val += v
    if folder:
        root = Path(folder)
        if (root / "regions.json").exists():
            t, v = pairs_from_annotation_set(root)
        elif (root / "images").is_dir() and (root / "labels").is_dir():
            t, v = load_folder_pairs(root / "images", root / "labels"), []
        else:
            raise InputError(
                f"{folder}: expected an annotation set (saved by the Annotate widget) or a "
                "folder with images/ and labels/ subfolders"
            )
        train += t
        val += v
    if not train:
        raise InputError("no training data: add an image with its ground truth, or a folder")
    return train, val


class TrainingDataPicker(QWidget):
    """Pick layer pairs (several may be added to a list) or a folder to train on."""

    def __init__(self, viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.from_layers = QRadioButton("Layers", checked=True)
        self.from_folder = QRadioButton("Folder")
        group = QButtonGroup(self)
        group.addButton(self.from_layers)
        group.addButton(self.from_folder)
        self.image = ComboBox(choices=self._layers_of(Image))
        self.labels = ComboBox(choices=self._ground_truth_choices)
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
        self.folder = QLineEdit(placeholderText="annotation set, or a folder with images/ labels/")
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

    def _layers_of(self, kind: type):
        def choices(_widget=None):
            return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, kind)]

        return choices

    def _ground_truth_choices(self, _widget=None):
        # Predictions and live previews are the model's output, never ground truth.
        return [(layer.name, layer) for layer in ground_truth_candidates(self.viewer.layers)]

    def _regions_choices(self, _widget=None):
        return [(_NO_REGIONS, None), *self._layers_of(Shapes)()]

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
        name = f"{image.name} regions"
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
        image_shape = tuple(layer_image_data(image).shape)
        image_shape = image_shape[:-1] if image.rgb else image_shape
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
        return [_snapshot(*entry) for entry in entries], None

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

    def layers_in_use(self) -> list:
        """Every layer the current selection would read."""
        entries = self._added or [(self.image.value, self.labels.value, self.regions.value, 0)]
        return [layer for entry in entries for layer in entry[:3] if layer is not None]


def _snapshot(image: Image, labels: Labels, regions: Shapes | None, spatial_ndim: int):
    rgb = bool(getattr(image, "rgb", False))
    image_shape = tuple(image.data.shape[:-1] if rgb else image.data.shape)
    if tuple(labels.data.shape) != image_shape:
        raise InputError(
            f"ground truth '{labels.name}' has shape {tuple(labels.data.shape)} but image "
            f"'{image.name}' has {image_shape}; create the ground truth from the image in the "
            "Annotate widget"
        )
    if len(image_shape) < spatial_ndim:
        raise InputError(f"image '{image.name}' is {len(image_shape)}D; it cannot be trained as 3D")
    return LayerSource(
        name=image.name,
        image=image.data,
        labels=np.array(labels.data, copy=True),
        regions=(
            regions_from_shapes(regions, spatial_ndim, image_layer=image)
            if regions is not None
            else []
        ),
        spatial_ndim=spatial_ndim,
        channel_axis=-1 if rgb else None,
        layer_names=tuple(x.name for x in (image, labels, regions) if x is not None),
    )
