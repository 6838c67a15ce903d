"""Dock widgets that fit a 1080p screen: content in a scroll area, optional parts folded."""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtWidgets import QDockWidget, QFrame, QMainWindow, QScrollArea, QVBoxLayout, QWidget
from superqt import QCollapsible

MIN_HEIGHT = 120  # a dock squeezed below its content still shows a few rows
MAX_HINT_HEIGHT = 640  # what a dock asks for at most; more content scrolls


class _FittingScrollArea(QScrollArea):
    """Asks for its content's height (up to a cap) but can shrink to a few rows, so the
    main window shares its height among docks by what they hold."""

    def sizeHint(self) -> QSize:
        inner = self.widget()
        if inner is None:
            return super().sizeHint()
        hint = inner.sizeHint()
        scrollbar = self.verticalScrollBar()
        extra = scrollbar.sizeHint().width() if scrollbar is not None else 0
        return QSize(hint.width() + extra, min(hint.height(), MAX_HINT_HEIGHT))

    def minimumSizeHint(self) -> QSize:
        inner = self.widget()
        width = inner.minimumSizeHint().width() if inner is not None else 0
        return QSize(width, MIN_HEIGHT)


def scroll_layout(widget: QWidget) -> QVBoxLayout:
    """Give ``widget`` a vertical scroll area and return the layout to fill inside it.

    Three docks stacked on a 1920x1080 screen leave each a few hundred pixels: with its
    content in a scroll area a dock can shrink to that and every control stays reachable.
    """
    inner = QWidget()
    area = _FittingScrollArea()
    area.setWidget(inner)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)
    widget.installEventFilter(_ShareHeightWhenShown(widget))
    return QVBoxLayout(inner)


class _ShareHeightWhenShown(QObject):
    def eventFilter(self, a0, a1) -> bool:  # Qt names them (watched, event)
        if a1 is not None and a1.type() == QEvent.Type.Show:
            QTimer.singleShot(0, self._share)
        return False

    def _share(self) -> None:
        widget = self.parent()
        if isinstance(widget, QWidget):
            share_dock_height(widget)


def share_dock_height(widget: QWidget) -> None:
    """Share the height of ``widget``'s dock area among its docks by what they ask for.

    Qt gives a new dock only its minimum height next to docks already open; this resizes
    the docks stacked with ``widget``'s (Qt's public ``QMainWindow.resizeDocks``).
    """
    dock = widget.parent()
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parent()
    window = widget.window()
    if not isinstance(dock, QDockWidget) or not isinstance(window, QMainWindow):
        return
    area = window.dockWidgetArea(dock)
    docks = [
        d
        for d in window.findChildren(QDockWidget)
        if d.isVisible() and not d.isFloating() and window.dockWidgetArea(d) == area
    ]
    wanted = [max(d.sizeHint().height(), d.minimumSizeHint().height()) for d in docks]
    heights = _water_fill(wanted, sum(d.height() for d in docks))
    window.resizeDocks(docks, heights, Qt.Orientation.Vertical)


def _water_fill(wanted: list[int], total: int) -> list[int]:
    """Give each its wanted height where it fits, the rest an equal share of what is left."""
    heights = [0] * len(wanted)
    left, open_ = total, len(wanted)
    for i in sorted(range(len(wanted)), key=wanted.__getitem__):
        heights[i] = min(wanted[i], left // open_)
        left -= heights[i]
        open_ -= 1
    return heights


def folded(title: str, content: QWidget, expanded: bool = False) -> QCollapsible:
    """``content`` under a title that folds it away (folded by default)."""
    section = QCollapsible(title)
    section.addWidget(content)
    if expanded:
        section.expand(animate=False)
    else:
        section.collapse(animate=False)
    return section
