"""Tying callbacks to a dock widget's lifetime: viewer events, shared signals, the window."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QWidget


class _WindowCloseHooks(QObject):
    """The one event filter of a top-level window: guards may veto a close the user asked
    for; callbacks run when the window does close."""

    def __init__(self, window: QWidget) -> None:
        super().__init__(window)
        self.guards: list[Callable[[], bool]] = []
        self.callbacks: list[Callable[[], None]] = []

    def eventFilter(self, a0, a1) -> bool:  # Qt names them (watched, event)
        event = a1
        if event is None or event.type() != QEvent.Type.Close:
            return False
        # Like napari's own confirmation, only a close the user asked for (window button,
        # the OS) may be vetoed; a script's viewer.close() is obeyed.
        if event.spontaneous() and not all(_call(guard, True) for guard in list(self.guards)):
            event.ignore()
            return True
        for callback in list(self.callbacks):
            _call(callback, None)
        return False


def _call(func: Callable[[], Any], default: Any) -> Any:
    try:
        return func()
    except RuntimeError:  # its widget was deleted already
        return default


def _window_hooks(widget: QWidget) -> _WindowCloseHooks | None:
    top = widget.window()
    if top is widget or top is None:  # not docked: nothing to watch
        return None
    hooks = top.findChild(_WindowCloseHooks)
    if hooks is None:
        hooks = _WindowCloseHooks(top)
        top.installEventFilter(hooks)
    return hooks


def on_window_close(widget: QWidget, callback: Callable[[], None]) -> None:
    """Call ``callback`` when ``widget``'s top-level window closes.

    Call it once the widget is docked (e.g. when work starts): the window is found through
    Qt's parent chain rather than napari's private attributes. Registering the same
    callback again does nothing; an undocked widget is its own window and is not watched.
    """
    hooks = _window_hooks(widget)
    if hooks is not None and callback not in hooks.callbacks:
        hooks.callbacks.append(callback)


def guard_window_close(widget: QWidget, allow_close: Callable[[], bool]) -> None:
    """Ask ``allow_close()`` before ``widget``'s window closes at the user's request; when
    it returns False the window stays open."""
    hooks = _window_hooks(widget)
    if hooks is not None and allow_close not in hooks.guards:
        hooks.guards.append(allow_close)


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
