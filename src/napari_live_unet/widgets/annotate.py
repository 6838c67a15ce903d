"""The Annotate dock widget: paint ground truth, mark annotated regions, save and load them."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import ComboBox
from napari.layers import Image, Labels, Shapes
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QWidget,
)

from ..app.jobs import one_shot
from ..engine.annotation_set import load_annotation_set, save_annotation_set
from ..engine.errors import InputError
from ..layers.annotation_layers import (
    ROLE_TITLES,
    add_ground_truth,
    add_regions_layer,
    annotated_item,
    annotation_counts,
)
from ..layers.layer_pairs import (
    REGIONS_SUFFIX,
    find_layer,
    ground_truth_of,
    layer_choices,
    spatial_shape,
)
from ..layers.region_depth import add_item_with_depth, set_feature_defaults, set_role
from ..layers.shape_regions import regions_from_shapes
from ._region_table import RegionTable
from .job_runner import JobEnd, JobRunner
from .region_depth import RegionDepthControls
from .scroll_layout import scroll_layout

if TYPE_CHECKING:
    import napari

_REFRESH_DELAY_MS = 300


class AnnotateState(Enum):
    """File work of the widget; the Save and Load buttons follow from it."""

    IDLE = "idle"
    SAVING = "saving"
    LOADING = "loading"


class AnnotateWidget(QWidget):
    """Paint ground truth for an image and mark which regions of it are annotated.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose layers are annotated.

    Notes
    -----
    The train widget reads the annotations through :attr:`image_layer`,
    :attr:`labels_layer`, :attr:`regions_layer` and :attr:`spatial_ndim`.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = AnnotateState.IDLE
        self._files = JobRunner(self, "Annotations")
        self._counting = JobRunner(self, "Counting objects")
        self._count_again = False
        self._watched: list = []

        self._image_combo = ComboBox(label="image", choices=layer_choices(napari_viewer, Image))
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
        self._depth = RegionDepthControls(napari_viewer)  # slices of 3D regions
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
        layout = scroll_layout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self._table)
        layout.addWidget(self._depth)
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
        self._save_button.clicked.connect(lambda: self._ask_folder(save=True))
        self._load_button.clicked.connect(lambda: self._ask_folder(save=False))
        self._image_combo.changed.connect(self._image_changed)
        self._ndim_combo.changed.connect(self._schedule_refresh)
        self._role_combo.changed.connect(self._role_changed)
        self._table.row_selected.connect(self._depth.select_region)
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
        """Whether a save, a load or a count of the annotated objects is running."""
        return self.state is not AnnotateState.IDLE or self._counting.is_running

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

    def save_to(self, folder: str | Path) -> bool:
        """Save the image, ground truth and regions into an annotation set folder, in a
        worker; returns whether saving started (problems are shown as notifications)."""
        image, labels = self.image_layer, self.labels_layer
        if self.state is not AnnotateState.IDLE:
            return False
        if image is None or labels is None:
            show_error("Nothing to save: create and paint the image's ground truth first.")
            return False
        try:
            item = annotated_item(image, labels, self.regions_layer, self.spatial_ndim)
        except InputError as exc:
            show_error(str(exc))
            return False
        self._run_file_job(
            AnnotateState.SAVING,
            lambda: save_annotation_set(folder, [item]),
            f"Saving to {folder} …",
            lambda _done: self._status.setText(f"Saved '{item.name}' to {folder}"),
        )
        return True

    def load_from(self, folder: str | Path) -> bool:
        """Load an annotation set in a worker: each image with its ground truth and regions
        layers (added on the main thread when it is read); returns whether loading started."""
        if self.state is not AnnotateState.IDLE:
            return False
        self._run_file_job(
            AnnotateState.LOADING,
            lambda: load_annotation_set(folder),
            f"Loading {folder} …",
            lambda done: self._add_items(done.value, folder),
        )
        return True

    def refresh(self) -> None:
        """Recount the objects in each region (or the whole image) in a worker, then redraw
        the table; a request while counting runs again when the count ends."""
        self._timer.stop()
        if self._counting.is_running:
            self._count_again = True
            return
        self._count_again = False
        image, labels, shapes = self.image_layer, self.labels_layer, self.regions_layer
        if image is None:
            self._show_counts([], "")
            return
        try:
            regions = (
                regions_from_shapes(shapes, self.spatial_ndim, image)
                if shapes is not None and len(shapes.data)
                else []
            )
        except InputError as exc:
            self._show_counts([], str(exc))
            return
        self._depth.show_for(image, shapes, self.spatial_ndim, regions)
        # The worker reads the ground truth's array (not the layer); a stroke painted while
        # it counts is counted by the refresh that stroke schedules.
        data = None if labels is None else labels.data
        shape, ndim = spatial_shape(image), self.spatial_ndim
        self._counting.start(
            lambda _stop: one_shot(annotation_counts, data, regions, shape, ndim),
            lambda done: self._show_counts(*done.value),
            self._counted,
        )

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
        self._depth.show_for(self.image_layer, shapes, self.spatial_ndim)
        if shapes is None:
            return
        roles = {shapes.features["role"].iloc[i] for i in shapes.selected_data}
        role = roles.pop() if len(roles) == 1 else shapes.feature_defaults["role"].iloc[0]
        if role in ROLE_TITLES and role != self._role_combo.value:
            with self._role_combo.changed.blocked():
                self._role_combo.value = role
            set_feature_defaults(shapes, role=role)

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

    def _run_file_job(self, state: AnnotateState, work, message: str, on_done) -> None:
        self._files.start(lambda _stop: one_shot(work), on_done, self._file_job_ended)
        self.state = state
        self._status.setText(message)
        self._update_enabled()

    def _file_job_ended(self, end: JobEnd) -> None:
        if end.failure is not None:
            self._status.setText(end.failure.message)
        self.state = AnnotateState.IDLE
        self._update_enabled()

    def _update_enabled(self) -> None:
        idle = self.state is AnnotateState.IDLE
        self._save_button.setEnabled(idle)
        self._load_button.setEnabled(idle)

    def _show_counts(self, rows: list[tuple[str, ...]], summary: str) -> None:
        self._table.set_rows(rows)
        self._summary.setText(summary)

    def _counted(self, _end: JobEnd) -> None:
        if self._count_again:
            self.refresh()

    def _add_items(self, items, folder) -> None:
        images = [add_item_with_depth(self.viewer, item) for item in items]
        self._image_combo.reset_choices()
        if images:
            self._image_combo.value = images[0]
            self._ndim_combo.value = items[0].spatial_ndim
        self._status.setText(f"Loaded {len(images)} annotated image(s) from {folder}")
        self._watch()
        self.refresh()

    def _ask_folder(self, save: bool) -> None:
        title = "Save annotations into folder" if save else "Load annotations from folder"
        folder = QFileDialog.getExistingDirectory(self, title)
        if folder:
            (self.save_to if save else self.load_from)(folder)

    def closeEvent(self, a0) -> None:  # Qt's name for the event
        self._files.shutdown()
        self._counting.shutdown()
        for emitter, callback in self._watched:
            emitter.disconnect(callback)
        self._watched = []
        self._timer.stop()
        super().closeEvent(a0)
