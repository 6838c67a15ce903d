"""Where to correct next: the objects of the last prediction that the model doubts most.

A section of the Predict dock. With each prediction the worker also predicts flipped
copies of the image (:mod:`~napari_live_unet.app.doubt_job`); when it is done, the doubt
map goes into the ``<image> doubt`` layer and the objects into a ranked table. Clicking a
row (or N / Shift+N in the viewer, or the arrow keys in the table) centres the view on the
object, moves the sliders to its plane and frame, and selects its label in the predictions
layer, ready to correct.
"""

from __future__ import annotations

import contextlib
from typing import Any

from napari.layers import Labels
from qtpy.QtCore import QModelIndex, QRect, Qt
from qtpy.QtGui import QBrush, QColor, QPainter, QPalette
from qtpy.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QCheckBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from ..app.doubt_job import FrameDoubt, Job, doubt_skip_reason, rescore_job, with_doubt
from ..app.prediction_job import PredictionResult
from ..engine.output_cache import FrameOutputCache
from ..layers.doubt_layer import (
    DoubtEntry,
    DoubtSet,
    doubt_layer_name,
    focus_on,
    show_doubt_map,
)
from ..layers.layer_pairs import find_layer
from ..layers.prediction_layers import layer_names
from .job_runner import JobEnd, JobOutcome, JobRunner
from .widget_lifetime import connect_while_alive

MAX_ROWS = 200
"""Rows the table shows at most (the objects most worth correcting)."""

VISIBLE_ROWS = 7
FLIPS_MAX_BYTES = 256 * 2**20
"""Flipped outputs kept in memory to rank the objects again when thresholds change; more
spill to disk."""
NEXT_KEY, PREVIOUS_KEY = "N", "Shift-N"

EMPTY = "Predict an image to see the objects the model doubts most."
OFF = "Doubt is not assessed: tick the box above and predict again."
SCORE_COLUMN = 2


class _ScoreBar(QStyledItemDelegate):
    """Draws a score in [0, 1] as a bar behind its number."""

    def paint(self, painter: QPainter | None, option: QStyleOptionViewItem, index: QModelIndex):
        score = index.data(Qt.ItemDataRole.UserRole)
        if painter is None or not isinstance(score, float):
            super().paint(painter, option, index)
            return
        # The cell (selection included) without its text, then the bar, then the text on
        # top, so a selected row still shows its bar.
        # The stubs leave out QStyleOptionViewItem's attributes (text, rect, widget...).
        cell: Any = QStyleOptionViewItem(option)
        self.initStyleOption(cell, index)
        text, cell.text = cell.text, ""
        style = cell.widget.style() if cell.widget is not None else QApplication.style()
        assert style is not None
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, cell, painter, cell.widget)
        rect: QRect = cell.rect.adjusted(3, 4, -3, -4)
        width = round(rect.width() * min(max(score, 0.0), 1.0))
        # From amber (some doubt) to red (much doubt).
        colour = QColor.fromHsvF(max(0.0, 0.12 * (1 - score)), 0.85, 0.9, 0.8)
        painter.save()
        painter.fillRect(QRect(rect.left(), rect.top(), width, rect.height()), colour)
        painter.setPen(cell.palette.color(QPalette.ColorRole.Text))
        painter.drawText(cell.rect, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()


class DoubtList(QGroupBox):
    """The ranked list of doubtful objects and the doubt map of the last prediction.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer whose camera, sliders and layers a jump moves.

    Notes
    -----
    The Predict dock hands it each prediction: :meth:`wrap` (the job, before it starts),
    :meth:`on_event` (in the job's events), :meth:`show_result` or :meth:`drop` when it ends.
    """

    def __init__(self, viewer: Any) -> None:
        super().__init__("Where to correct next")
        self.viewer = viewer
        self.enabled = QCheckBox("Assess doubt with each prediction")
        self.enabled.setChecked(True)
        self.enabled.setToolTip(
            "Also predicts the image flipped left-right, up-down and both (4× the time) and "
            "ranks the objects by how unsure the model is of them and how much the flipped "
            "predictions disagree on them."
        )
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["#", "Object", "Doubt", "Why", "Frame"])
        self.table.setItemDelegateForColumn(SCORE_COLUMN, _ScoreBar(self.table))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        rows = self.table.verticalHeader()
        header = self.table.horizontalHeader()
        assert rows is not None and header is not None
        rows.hide()
        for column in range(5):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)  # Why
        row_height = rows.defaultSectionSize()
        self.table.setMinimumHeight(row_height * VISIBLE_ROWS + header.sizeHint().height() + 4)
        self.previous_button = QPushButton("◀ Previous")
        self.next_button = QPushButton("Next ▶")
        self.previous_button.setToolTip(
            f"The previous doubtful object ({PREVIOUS_KEY} in the viewer)"
        )
        self.next_button.setToolTip(f"The next doubtful object ({NEXT_KEY} in the viewer)")
        self.note = QLabel(EMPTY)
        self.note.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addWidget(self.enabled)
        layout.addWidget(self.note)
        layout.addWidget(self.table)
        buttons = QHBoxLayout()
        buttons.addWidget(self.previous_button)
        buttons.addWidget(self.next_button)
        layout.addLayout(buttons)

        self.entries: list[DoubtEntry] = []
        self.doubts: DoubtSet | None = None  # of the predictions shown
        self._pending: DoubtSet | None = None  # being filled by a running prediction
        self._skipped = ""  # why the running prediction's doubt is not assessed
        self._labels_name = ""  # the predictions layer the entries refer to
        self._current = -1  # row of the last jump
        self._corrected: set[int] = set()  # rows painted on after a jump
        self._painted: Any = None  # the labels layer whose paint events mark rows
        self._rescore = JobRunner(self, "Ranking doubtful objects")
        self._rescore_again: PredictionResult | None = None

        self.table.currentCellChanged.connect(lambda row, *_: self.go_to(row))
        self.table.cellClicked.connect(lambda row, _col: self.go_to(row))
        self.next_button.clicked.connect(lambda: self.step(1))
        self.previous_button.clicked.connect(lambda: self.step(-1))
        self.enabled.toggled.connect(self._on_toggled)
        viewer.bind_key(NEXT_KEY, lambda _viewer: self.step(1), overwrite=True)
        viewer.bind_key(PREVIOUS_KEY, lambda _viewer: self.step(-1), overwrite=True)
        self.destroyed.connect(lambda *_: _unbind_keys(viewer))
        connect_while_alive(self, viewer.layers.events.removed, self._on_layer_removed)
        self._show_entries([])

    # -- the prediction's side ----------------------------------------------------------

    def wrap(self, job: Job, model, data, result: PredictionResult, adapt) -> Job:
        """``job`` that also assesses doubt, when the box is ticked and the result allows
        (not block by block, not too many pixels); otherwise ``job`` itself."""
        self.drop()
        self._rescore.request_stop()  # its result would be of the earlier labels
        self._rescore_again = None
        if not self.enabled.isChecked():
            return job
        self._skipped = doubt_skip_reason(result.plan, result.blockwise, data)
        if self._skipped:
            return job
        self._pending = pending = DoubtSet(result.plan, FrameOutputCache(FLIPS_MAX_BYTES))
        return with_doubt(job, model, data, result, adapt, pending.flips)

    def on_event(self, event: Any) -> bool:
        """Take a :class:`FrameDoubt` of the running prediction; whether it was one."""
        if not isinstance(event, FrameDoubt):
            return False
        if self._pending is not None:
            self._pending.put(event.position, event.report)
        return True

    def show_result(self, result: PredictionResult, image_layer=None) -> None:
        """The prediction ended with ``result`` shown: show its doubt map and objects."""
        pending, self._pending = self._pending, None
        self._labels_name = layer_names(result)[0]
        self._watch_paint(self._labels_layer())
        if self.doubts is not None:
            self.doubts.close()
        if pending is None or not pending.complete:
            if pending is not None:
                pending.close()
            self.doubts = None
            self._remove_stale_map(result.image_name)
            self._show_entries(
                [], self._skipped or (OFF if not self.enabled.isChecked() else EMPTY)
            )
            return
        self.doubts = pending
        show_doubt_map(self.viewer, result, pending, image_layer)
        self._show_entries(pending.entries())

    def drop(self) -> None:
        """The running prediction ended without a result: forget its doubt."""
        if self._pending is not None:
            self._pending.close()
        self._pending, self._skipped = None, ""

    def model_changed(self) -> None:
        """A new current model (e.g. training ended): the list is of the earlier one."""
        if self.entries:
            self.note.setText(
                "The model changed: these objects are the earlier model's doubts. Press "
                "Predict to see where the new model doubts."
            )

    def labels_changed(self, result: PredictionResult) -> None:
        """The predictions were re-labelled with new thresholds: rank the new objects (in a
        worker; the network is not run again)."""
        doubts = self.doubts
        if doubts is None or doubts.flips is None or self._pending is not None:
            return
        if self._rescore.is_running:  # the latest labels win
            self._rescore_again = result
            self._rescore.request_stop()
            return
        labels = result.labels_array().copy()  # the layer's array may be painted on
        new = DoubtSet(doubts.plan)
        flips, params = doubts.flips, result.params
        self._rescore.start(
            lambda stop: rescore_job(result, flips, labels, params, stop),
            lambda event: new.put(event.position, event.report),
            lambda end: self._on_rescored(end, result, doubts, new),
        )
        self.note.setText("Ranking the new objects…")

    def _on_rescored(self, end: JobEnd, result, doubts: DoubtSet, new: DoubtSet) -> None:
        again, self._rescore_again = self._rescore_again, None
        if again is not None:
            self.labels_changed(again)
        elif end.outcome is JobOutcome.COMPLETED and doubts is self.doubts and new.complete:
            doubts.reports = new.reports  # the same outputs and flips: only objects moved
            show_doubt_map(self.viewer, result, doubts)
            self._show_entries(doubts.entries())
        elif end.failure is not None:
            self.note.setText(f"Ranking the objects failed: {end.failure.message}")

    @property
    def is_busy(self) -> bool:
        """Whether objects are being ranked again (after a threshold change)."""
        return self._rescore.is_running

    # -- moving between objects --------------------------------------------------------

    def step(self, delta: int) -> None:
        """Go to the next (``delta`` 1) or previous (-1) object of the list."""
        if not self.entries:
            return
        row = self._current + delta if self._current >= 0 else (0 if delta > 0 else -1)
        self.table.setCurrentCell(row % len(self.entries), 0)
        # setCurrentCell on the current row emits nothing: jump anyway.
        if self.table.currentRow() == self._current:
            self.go_to(self._current)

    def go_to(self, row: int) -> None:
        """Centre the view on the object of ``row`` and select its label."""
        if not 0 <= row < len(self.entries):
            return
        labels = self._labels_layer()
        if labels is None:
            self.note.setText(f"The layer '{self._labels_name}' is gone: predict again.")
            return
        self._current = row
        if self.table.currentRow() != row:  # called from a script or the viewer's keys
            self.table.blockSignals(True)
            self.table.setCurrentCell(row, 0)
            self.table.blockSignals(False)
        entry = self.entries[row]
        focus_on(self.viewer, labels, entry)
        if entry.missed:
            what = f"{entry.doubt.reason}: paint it with the new label {labels.selected_label}"
        else:
            what = f"label {entry.doubt.label}, {entry.doubt.reason}"
        self.note.setText(f"{row + 1} of {len(self.entries)}: {what}.")

    def _watch_paint(self, labels: Labels | None) -> None:
        """Mark the row last gone to as corrected when ``labels`` is painted on."""
        if self._painted is labels:
            return
        if self._painted is not None:
            with contextlib.suppress(Exception):
                self._painted.events.paint.disconnect(self._on_paint)
        self._painted = labels
        if labels is not None:
            connect_while_alive(self, labels.events.paint, self._on_paint)

    def _on_paint(self, *_args) -> None:
        row = self._current
        if not 0 <= row < len(self.entries) or row in self._corrected:
            return
        self._corrected.add(row)
        for column in range(self.table.columnCount()):
            item = self.table.item(row, column)
            if item is not None:
                item.setForeground(QBrush(QColor("#7f8c8d")))
        rank = self.table.item(row, 0)
        if rank is not None:
            rank.setText(f"✓ {self.entries[row].rank}")
            rank.setToolTip("Painted on after going to it")

    # -- helpers -------------------------------------------------------------------------

    def _labels_layer(self) -> Labels | None:
        return find_layer(self.viewer, self._labels_name, Labels)

    def _show_entries(self, entries: list[DoubtEntry], empty: str = EMPTY) -> None:
        self.entries, self._current = entries[:MAX_ROWS], -1
        self._corrected.clear()
        table = self.table
        table.blockSignals(True)  # filling is no jump
        table.clearSelection()
        table.setRowCount(len(self.entries))
        frames = any(entry.frame for entry in self.entries)
        for row, entry in enumerate(self.entries):
            doubt = entry.doubt
            cells = [
                str(entry.rank),
                "missed?" if entry.missed else str(doubt.label),
                f"{doubt.score:.2f}",
                doubt.reason,
                ", ".join(map(str, entry.frame)),
            ]
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if column == SCORE_COLUMN:
                    item.setData(Qt.ItemDataRole.UserRole, float(doubt.score))
                if column != 3:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                if entry.missed:
                    item.setForeground(QBrush(QColor("#8ab4f8")))
                item.setToolTip(
                    f"{doubt.reason} (area {doubt.area} px); ranked by doubt times size, "
                    "so whole objects come before scraps"
                )
                table.setItem(row, column, item)
        table.setColumnHidden(4, not frames)
        table.blockSignals(False)
        has = bool(self.entries)
        table.setVisible(has)
        self.next_button.setEnabled(has)
        self.previous_button.setEnabled(has)
        self.note.setText(self._summary() if has else empty)

    def _summary(self) -> str:
        doubts = self.doubts
        n = sum(len(r.objects) for r in doubts.reports.values()) if doubts is not None else 0
        missed = sum(entry.missed for entry in self.entries)
        shown = (
            f"the {len(self.entries)} most worth correcting of {n}"
            if n > len(self.entries)
            else str(n)
        )
        extra = f", {missed} possibly missed" if missed else ""
        return (
            f"{shown} object(s) ranked{extra}. Click one, or press {NEXT_KEY} / "
            f"{PREVIOUS_KEY.replace('-', '+')} in the viewer, to go to it."
        )

    def _remove_stale_map(self, image_name: str) -> None:
        name = doubt_layer_name(image_name)
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)

    def _on_toggled(self, checked: bool) -> None:
        if not self.entries:
            self.note.setText(EMPTY if checked else OFF)

    def _on_layer_removed(self, event) -> None:
        if event.value.name == self._labels_name and self.entries:
            self._show_entries([], EMPTY)


def _unbind_keys(viewer: Any) -> None:
    for key in (NEXT_KEY, PREVIOUS_KEY):
        with contextlib.suppress(Exception):  # the viewer may be gone already
            viewer.bind_key(key, None)
