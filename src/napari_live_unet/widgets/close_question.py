"""What to do with a running training when its window or dock is closed."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QMessageBox, QWidget

from .widget_lifetime import guard_window_close

_UNDOCKED: set[QWidget] = set()
"""Widgets whose dock was closed while a run they were asked to finish goes on."""


class WhileTraining(Enum):
    """The user's answer when closing during training."""

    STOP_AND_KEEP = "stop and keep the best model"
    KEEP_TRAINING = "keep training until done"
    DISCARD = "discard the run"


def ask_while_training(parent: QWidget, closing: str) -> WhileTraining:
    """Ask whether to stop (keeping the best model so far), keep training, or discard the
    run; ``closing`` names what is being closed ("the viewer", "the Train panel")."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Question)
    box.setWindowTitle("Training is running")
    box.setText(f"A model is training. What should happen to it before closing {closing}?")
    box.setInformativeText(
        "Stop: training ends at the next step and the best model so far becomes the current "
        "model (save it with 'Save model…'). Keep training: it runs to the end first. "
        "Discard: the run and its model are lost."
    )
    buttons = {
        box.addButton("Stop, keep the best model", QMessageBox.ButtonRole.AcceptRole): (
            WhileTraining.STOP_AND_KEEP
        ),
        box.addButton("Keep training", QMessageBox.ButtonRole.RejectRole): (
            WhileTraining.KEEP_TRAINING
        ),
        box.addButton("Discard the run", QMessageBox.ButtonRole.DestructiveRole): (
            WhileTraining.DISCARD
        ),
    }
    box.setDefaultButton(next(iter(buttons)))
    box.exec()
    clicked = box.clickedButton()
    return next((c for b, c in buttons.items() if b is clicked), WhileTraining.KEEP_TRAINING)


class RunCloseGuard(QObject):
    """Asks before a running job is closed away, with the viewer window or with its dock.

    Parameters
    ----------
    widget : QWidget
        The dock widget that runs the job.
    is_running, stop, discard : callable
        Whether a run is going, ask it to stop (keeping its result), and drop it.

    Closing the viewer while a run goes asks :meth:`ask`: stopping or keeping on cancels
    the close. Closing the dock (napari takes the widget out of its window) asks too: the
    widget then lives on, hidden, until the run ends and its result is applied.
    """

    def __init__(
        self,
        widget: QWidget,
        is_running: Callable[[], bool],
        stop: Callable[[], None],
        discard: Callable[[], None],
    ) -> None:
        super().__init__(widget)
        self._widget = widget
        self._is_running, self._stop, self._discard = is_running, stop, discard
        self._note = ""
        widget.installEventFilter(self)

    def ask(self, closing: str) -> WhileTraining:
        """The question to the user (tests replace it)."""
        return ask_while_training(self._widget, closing)

    def arm(self) -> None:
        """Watch the viewer window (call when a run starts: the widget is docked by then)."""
        guard_window_close(self._widget, self.allow_window_close)

    def allow_window_close(self) -> bool:
        """Whether the viewer may close now; asks while a run goes."""
        if not self._is_running():
            return True
        choice = self.ask("the viewer")
        if choice is WhileTraining.STOP_AND_KEEP:
            self._stop()
            self._note = "Save the model with 'Save model…' before closing the viewer."
        return choice is WhileTraining.DISCARD

    def run_ended(self) -> str:
        """The run ended: forget it; returns a note for the status line ("" if none)."""
        _UNDOCKED.discard(self._widget)
        note, self._note = self._note, ""
        return note

    def eventFilter(self, a0, a1) -> bool:  # Qt names them (watched, event)
        undocked = a1 is not None and a1.type() == QEvent.Type.ParentChange
        if undocked and self._widget.parent() is None and self._is_running():
            QTimer.singleShot(0, self._undocked_while_running)
        return False

    def _undocked_while_running(self) -> None:
        if not self._is_running() or self._widget.parent() is not None:
            return
        if self._widget in _UNDOCKED:
            return
        choice = self.ask("the Train panel")
        if choice is WhileTraining.DISCARD:
            self._discard()
            return
        _UNDOCKED.add(self._widget)  # kept alive until run_ended()
        if choice is WhileTraining.STOP_AND_KEEP:
            self._stop()
