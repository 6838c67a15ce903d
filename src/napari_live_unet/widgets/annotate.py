"""The Annotate dock widget: paint ground truth, mark annotated regions, save and load them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import ComboBox
from napari.layers import Image, Labels, Shapes
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..engine.annotation_set import load_annotation_set, save_annotation_set
from ..engine.data import TrainingPair
from ..engine.errors import InputError
from ..layers.annotation_layers import (
    REGIONS_SUFFIX,
    ROLE_TITLES,
    add_annotated_item,
    add_ground_truth,
    add_regions_layer,
    annotated_item,
    find_layer,
    region_rows,
    set_role,
    whole_image_summary,
)
from ..layers.layer_pairs import ground_truth_of, pairs_from_layers
from ._region_table import RegionTable

if TYPE_CHECKING:
    import napari
    from napari.qt.threading import FunctionWorker

_REFRESH_DELAY_MS = 300


def _input_errors_returned(func, *args):
    """Run ``func``, returning an :class:`InputError` instead of raising it.

    Bad input is then reported as a plain message, while bugs still reach napari's error
    notifications with their traceback.
    """
    try:
        return func(*args)
    except InputError as exc:
        return exc


class AnnotateWidget(QWidget):
    """Paint ground truth for an image and mark which regions of it are annotated.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose layers are annotated.

    Notes
    -----
    The train widget reads the annotations through :attr:`image_layer`,
    :attr:`labels_layer`, :attr:`regions_layer`, :attr:`spatial_ndim` or
    :meth:`training_pairs`.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._workers: set[FunctionWorker] = set()
        self._watched: list = []

        self._image_combo = ComboBox(label="image", choices=self._image_choices)
        self._ndim_combo = ComboBox(
            choices=[("2D images (leading axes are frames)", 2), ("3D volumes", 3)], value=2
        )
        self._role_combo = ComboBox(
            choices=[(title, role) for role, title in ROLE_TITLES.items()], value="train"
        )
        self._gt_button = QPushButton("New ground truth")
        self._gt_button.setToolTip("Add a labels layer for this image and start painting")
        self._regions_button = QPushButton("Regions")
        self._regions_button.setToolTip(
            "Mark annotated rectangles: only pixels inside them are used for training. "
            "Without regions, the whole image counts as annotated."
        )
        self._table = RegionTable()
        self._summary = QLabel()
        self._summary.setWordWrap(True)
        self._save_button = QPushButton("Save annotations…")
        self._load_button = QPushButton("Load annotations…")
        self._status = QLabel()
        self._status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self._image_combo.native)
        form.addRow("treat as", self._ndim_combo.native)
        form.addRow("new regions are", self._role_combo.native)
        buttons = QHBoxLayout()
        buttons.addWidget(self._gt_button)
        buttons.addWidget(self._regions_button)
        files = QHBoxLayout()
        files.addWidget(self._save_button)
        files.addWidget(self._load_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self._table)
        layout.addWidget(self._summary)
        layout.addLayout(files)
        layout.addWidget(self._status)

        # Painting fires many events; counting objects waits until the brush rests.
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(_REFRESH_DELAY_MS)
        self._timer.timeout.connect(self.refresh)

        self._gt_button.clicked.connect(self.new_ground_truth)
        self._regions_button.clicked.connect(self.show_regions)
        self._save_button.clicked.connect(self._ask_save)
        self._load_button.clicked.connect(self._ask_load)
        self._image_combo.changed.connect(self._image_changed)
        self._ndim_combo.changed.connect(self._schedule_refresh)
        self._role_combo.changed.connect(self._role_changed)
        self._image_changed()

    # ------------------------------------------------------------------ public accessors

    @property
    def image_layer(self) -> Image | None:
        """The image being annotated, or ``None`` if the viewer holds no image."""
        layer = self._image_combo.value
        return layer if layer is not None and layer in self.viewer.layers else None

    @property
    def labels_layer(self) -> Labels | None:
        """The ground truth of :attr:`image_layer`: ``"<image> ground truth"``, or the only
        labels layer of its shape (as the bundled sample names it), if any."""
        image = self.image_layer
        if image is None:
            return None
        return ground_truth_of(self.viewer.layers, image)

    @property
    def regions_layer(self) -> Shapes | None:
        """The annotated regions of :attr:`image_layer` (``"<image> regions"``), if any."""
        image = self.image_layer
        if image is None:
            return None
        return find_layer(self.viewer, image.name + REGIONS_SUFFIX, Shapes)

    @property
    def spatial_ndim(self) -> int:
        """2 or 3: how many trailing axes of the image are spatial; the others are frames."""
        image = self.image_layer
        return 2 if image is None or image.ndim < 3 else self._ndim_combo.value

    @property
    def is_busy(self) -> bool:
        """Whether a save or load is running."""
        return bool(self._workers)

    def training_pairs(self) -> tuple[list[TrainingPair], list[TrainingPair]]:
        """Copies of the annotated data as (train, val) pairs; call on the main thread.

        Raises
        ------
        InputError
            If there is no image or ground truth, or nothing annotated holds an object.
        """
        image, labels = self.image_layer, self.labels_layer
        if image is None:
            raise InputError("open an image first")
        if labels is None:
            raise InputError(
                f"{image.name}: no ground truth yet. Press 'New ground truth' and paint objects."
            )
        return pairs_from_layers(image, labels, self.regions_layer, self.spatial_ndim)

    def reset_choices(self, *_) -> None:
        """Update the image list; napari calls this when layers change."""
        self._image_combo.reset_choices()
        self._watch()
        self._schedule_refresh()

    # ----------------------------------------------------------------------- actions

    def new_ground_truth(self) -> Labels | None:
        """Select the image's ground truth, creating an empty one if there is none yet.

        An existing ground-truth layer is never replaced, so no annotation is lost.
        """
        image = self.image_layer
        if image is None:
            show_info("Open an image first, then create its ground truth.")
            return None
        labels = self.labels_layer or add_ground_truth(self.viewer, image)
        self.viewer.layers.selection.active = labels
        labels.selected_label = max(labels.selected_label, 1)
        labels.mode = "paint"
        self._status.setText(f"Brush ready: paint objects in '{labels.name}'.")
        self._watch()
        return labels

    def show_regions(self) -> Shapes | None:
        """Select the image's regions layer (created if needed) to draw rectangles."""
        image = self.image_layer
        if image is None:
            show_info("Open an image first, then mark its annotated regions.")
            return None
        shapes = self.regions_layer or add_regions_layer(self.viewer, image, self._role_combo.value)
        self.viewer.layers.selection.active = shapes
        shapes.mode = "add_rectangle"
        self._status.setText(
            "Draw rectangles around what you annotated completely; select one and change "
            "'new regions are' to change its role."
        )
        self._watch()
        return shapes

    def save_to(self, folder: str | Path) -> FunctionWorker | None:
        """Save the image, ground truth and regions into an annotation set folder.

        Runs in a worker thread; returns it (already started), or ``None`` on bad input.
        """
        image, labels = self.image_layer, self.labels_layer
        if image is None or labels is None:
            show_error("Nothing to save: create and paint the image's ground truth first.")
            return None
        try:
            item = annotated_item(image, labels, self.regions_layer, self.spatial_ndim)
        except InputError as exc:
            show_error(str(exc))
            return None
        worker = create_worker(
            _input_errors_returned, save_annotation_set, folder, [item], _ignore_errors=True
        )
        return self._start(
            worker,
            f"Saving to {folder} …",
            lambda _: self._status.setText(f"Saved '{item.name}' to {folder}"),
        )

    def load_from(self, folder: str | Path) -> FunctionWorker:
        """Load an annotation set: each image with its ground truth and regions layers.

        Runs in a worker thread; layers are added on the main thread when it returns.
        """
        worker = create_worker(
            _input_errors_returned, load_annotation_set, folder, _ignore_errors=True
        )
        return self._start(
            worker, f"Loading {folder} …", lambda items: self._add_items(items, folder)
        )

    def refresh(self) -> None:
        """Recount the objects in each region (or the whole image) and redraw the table."""
        self._timer.stop()
        image, labels, shapes = self.image_layer, self.labels_layer, self.regions_layer
        rows, summary = [], ""
        try:
            if shapes is not None and len(shapes.data):
                rows = region_rows(labels, shapes, image, self.spatial_ndim)
            elif labels is not None:
                summary = whole_image_summary(labels, self.spatial_ndim)
            elif image is not None:
                summary = "No ground truth yet: press 'New ground truth'."
        except InputError as exc:
            summary = str(exc)
        self._table.set_rows(rows)
        self._summary.setText(summary)

    def table_rows(self) -> list[tuple[str, ...]]:
        """The region table's text, row by row (what the user sees)."""
        return self._table.rows()

    @property
    def summary_text(self) -> str:
        """The line under the table, e.g. ``"whole image: 12 objects"``."""
        return self._summary.text()

    @property
    def status_text(self) -> str:
        """The last status message: saved, loaded, brush ready or what went wrong."""
        return self._status.text()

    # --------------------------------------------------------------------- internals

    def _image_choices(self, _widget=None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _image_changed(self, *_) -> None:
        image = self.image_layer
        self._ndim_combo.enabled = image is not None and image.ndim >= 3
        self._watch()
        self._schedule_refresh()

    def _role_changed(self, role: str) -> None:
        shapes = self.regions_layer
        if shapes is not None:
            set_role(shapes, role)
            self._schedule_refresh()

    def _sync_role(self, *_) -> None:
        """Show the role of the selected regions (or the default) in the role combo."""
        shapes = self.regions_layer
        if shapes is None:
            return
        roles = {shapes.features["role"].iloc[i] for i in shapes.selected_data}
        role = roles.pop() if len(roles) == 1 else shapes.feature_defaults["role"].iloc[0]
        if role in ROLE_TITLES and role != self._role_combo.value:
            with self._role_combo.changed.blocked():
                self._role_combo.value = role
            shapes.feature_defaults = {"role": role}

    def _watch(self) -> None:
        """Listen to the current ground truth and regions layers only."""
        for emitter, callback in self._watched:
            emitter.disconnect(callback)
        self._watched = []
        labels, shapes = self.labels_layer, self.regions_layer
        if labels is not None:  # paint: end of a stroke; set_data: also after undo
            for emitter in (labels.events.paint, labels.events.data, labels.events.set_data):
                self._watched.append((emitter, self._schedule_refresh))
        if shapes is not None:
            for emitter in (shapes.events.data, shapes.events.features):
                self._watched.append((emitter, self._schedule_refresh))
            for emitter in (
                shapes.events.feature_defaults,
                shapes.selected_data.events.items_changed,
            ):
                self._watched.append((emitter, self._sync_role))
        for emitter, callback in self._watched:
            emitter.connect(callback)

    def _schedule_refresh(self, *_) -> None:
        self._timer.start()

    def _start(self, worker: FunctionWorker, message: str, on_success) -> FunctionWorker:
        self._workers.add(worker)

        def returned(result) -> None:
            if isinstance(result, InputError):
                self._status.setText(str(result))
                show_error(str(result))
            else:
                on_success(result)

        worker.returned.connect(returned)
        # Unexpected errors reach napari's notifications (with traceback) by themselves.
        worker.errored.connect(lambda exc: self._status.setText(f"{type(exc).__name__}: {exc}"))
        worker.finished.connect(lambda: self._finished(worker))
        self._save_button.setEnabled(False)
        self._load_button.setEnabled(False)
        self._status.setText(message)
        worker.start()
        return worker

    def _finished(self, worker: FunctionWorker) -> None:
        self._workers.discard(worker)
        if not self._workers:
            self._save_button.setEnabled(True)
            self._load_button.setEnabled(True)

    def _add_items(self, items, folder) -> None:
        images = [add_annotated_item(self.viewer, item) for item in items]
        self._image_combo.reset_choices()
        if images:
            self._image_combo.value = images[0]
            self._ndim_combo.value = items[0].spatial_ndim
        self._status.setText(f"Loaded {len(images)} annotated image(s) from {folder}")
        self._watch()
        self.refresh()

    def _ask_save(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save annotations into folder")
        if folder:
            self.save_to(folder)

    def _ask_load(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Load annotations from folder")
        if folder:
            self.load_from(folder)

    def closeEvent(self, event) -> None:
        for emitter, callback in self._watched:
            emitter.disconnect(callback)
        self._watched = []
        self._timer.stop()
        super().closeEvent(event)
