"""Tying callbacks to a dock widget's lifetime: viewer events, shared signals, the window."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QWidget


class _CloseFilter(QObject):
    def __init__(self, owner: QWidget, callback: Callable[[], None]) -> None:
        super().__init__(owner)
        self._callback = callback

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.Close:
            self._callback()
        return False


def on_window_close(widget: QWidget, callback: Callable[[], None]) -> None:
    """Call ``callback`` when ``widget``'s top-level window gets a close event.

    Call it once the widget is docked (e.g. when work starts): the window is found through
    Qt's parent chain rather than napari's private attributes. Calling it again for the same
    window does nothing; an undocked widget is its own window and is not watched.
    """
    top = widget.window()
    # Remember the window by id only: a reference would keep the viewer alive.
    if top is widget or getattr(widget, "_close_watched", None) == id(top):
        return
    top.installEventFilter(_CloseFilter(widget, callback))
    widget._close_watched = id(top)


def connect_while_alive(widget: QWidget, signal: Any, callback: Callable) -> None:
    """Connect ``callback`` to ``signal`` (psygnal, napari event or Qt) until ``widget`` is
    destroyed.

    Viewer events and the module-level current model outlive a dock widget; without the
    disconnection they would call into a widget whose Qt object is gone.
    """
    signal.connect(callback)

    def disconnect(*_args) -> None:
        with contextlib.suppress(ValueError, RuntimeError, TypeError):
            signal.disconnect(callback)

    widget.destroyed.connect(disconnect)
