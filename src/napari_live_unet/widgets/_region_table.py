"""The read-only table of annotated regions shown by the Annotate widget."""

from __future__ import annotations

from collections.abc import Sequence

from qtpy.QtCore import QSize, Signal  # pyright: ignore[reportPrivateImportUsage]
from qtpy.QtWidgets import QHeaderView, QTableWidget, QTableWidgetItem

COLUMNS = ("#", "role", "frame", "size", "objects")
MIN_VISIBLE_ROWS = 5


class RegionTable(QTableWidget):
    """One row per region: number, role, frame, size and number of annotated objects.

    Clicking a row emits :attr:`row_selected` with its index (from 0).
    """

    row_selected = Signal(int)

    def __init__(self) -> None:
        super().__init__(0, len(COLUMNS))
        self.setHorizontalHeaderLabels(COLUMNS)
        vertical, horizontal = self.verticalHeader(), self.horizontalHeader()
        assert vertical is not None and horizontal is not None  # a table always has both
        vertical.setVisible(False)
        horizontal.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.cellClicked.connect(lambda row, _column: self.row_selected.emit(row))

    def minimumSizeHint(self) -> QSize:
        """Room for at least five regions without scrolling the table."""
        vertical, horizontal = self.verticalHeader(), self.horizontalHeader()
        assert vertical is not None and horizontal is not None
        header = max(horizontal.height(), horizontal.sizeHint().height())
        rows = MIN_VISIBLE_ROWS * vertical.defaultSectionSize()
        height = header + rows + 2 * self.frameWidth()
        return QSize(super().minimumSizeHint().width(), height)

    def sizeHint(self) -> QSize:
        hint = super().sizeHint()
        return QSize(hint.width(), max(hint.height(), self.minimumSizeHint().height()))

    def set_rows(self, rows: Sequence[Sequence[str]]) -> None:
        """Replace the table's content."""
        self.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                self.setItem(r, c, QTableWidgetItem(text))

    def rows(self) -> list[tuple[str, ...]]:
        """The table's text, row by row."""
        return [
            tuple(self._text(r, c) for c in range(self.columnCount()))
            for r in range(self.rowCount())
        ]

    def _text(self, row: int, column: int) -> str:
        item = self.item(row, column)
        assert item is not None  # set_rows fills every cell
        return item.text()
