"""The main-thread half of the worker contract (:mod:`napari_live_unet.app.jobs`).

Every job a widget runs (train, predict, load a model, save, count objects) goes through a
:class:`JobRunner`: it starts the job's generator in a napari thread worker, hands each
event to the widget on the main thread, reports a :class:`JobFailed` as a napari
notification in one style, and tells the widget how the job ended.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils.notifications import show_error

# qtpy re-exports the binding's signal class as Signal; pyright misses the re-export.
from qtpy.QtCore import QObject, Signal  # pyright: ignore[reportPrivateImportUsage]
from qtpy.QtWidgets import QWidget

from ..app.jobs import JobFailed, failures_as_events
from .widget_lifetime import on_window_close


class JobOutcome(Enum):
    """How a job ended."""

    COMPLETED = "completed"
    STOPPED = "stopped"  # a stop was asked for before it ended (it may still have a result)
    FAILED = "failed"


@dataclass(frozen=True)
class JobEnd:
    """What :meth:`JobRunner.start`'s ``on_end`` receives."""

    outcome: JobOutcome
    failure: JobFailed | None = None


class JobRunner(QObject):
    """Runs one job at a time for ``widget`` and applies its events on the main thread.

    Parameters
    ----------
    widget : QWidget
        The dock widget that owns the jobs; closing its window shuts the runner down.
    title : str
        What the jobs do, for failure messages: ``"Prediction"`` gives "Prediction failed:
        ...".

    Signals
    -------
    finished(JobOutcome)
        After a job's ``on_end`` ran (not after :meth:`shutdown`).
    """

    finished = Signal(object)

    def __init__(self, widget: QWidget, title: str) -> None:
        super().__init__(widget)
        self._widget = widget
        self._title = title
        self._worker: GeneratorWorker | None = None
        self._stop = threading.Event()
        self._failure: JobFailed | None = None
        self._on_event: Callable[[Any], None] = _ignore
        self._on_end: Callable[[JobEnd], None] = _ignore
        self._closed = False

    @property
    def is_running(self) -> bool:
        """Whether a job is running (until its ``on_end`` has run)."""
        return self._worker is not None

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def start(
        self,
        job: Callable[[threading.Event], Iterable[Any]],
        on_event: Callable[[Any], None],
        on_end: Callable[[JobEnd], None] | None = None,
    ) -> bool:
        """Run ``job(stop)`` in a worker; False (and nothing started) if one is running.

        ``job`` receives the :class:`threading.Event` that :meth:`request_stop` sets and
        returns the event generator (a generator function's body runs in the worker only).
        ``on_event`` gets every event but a :class:`JobFailed`, which is reported here and
        passed to ``on_end`` instead.
        """
        if self._worker is not None or self._closed:
            return False
        self._stop = stop = threading.Event()
        self._failure = None
        self._on_event, self._on_end = on_event, on_end or _ignore
        worker = create_worker(failures_as_events, job(stop), _start_thread=False)
        assert isinstance(worker, GeneratorWorker)
        worker.yielded.connect(self._yielded)
        worker.finished.connect(self._finished)
        self._worker = worker
        on_window_close(self._widget, self.shutdown)
        worker.start()
        return True

    def request_stop(self) -> None:
        """Ask the job to end at its next check; it still ends through ``on_end``."""
        self._stop.set()

    def shutdown(self) -> None:
        """The window is closing: stop the job and apply nothing more. Does not block; the
        worker ends at its next check of the stop flag."""
        self._closed = True
        self._stop.set()
        if self._worker is not None:
            self._worker.quit()
            self._worker = None

    def _yielded(self, event: Any) -> None:
        if self._closed:
            return
        if isinstance(event, JobFailed):
            self._failure = event
            self._report(event)
        else:
            self._on_event(event)

    def _finished(self, *_args: object) -> None:
        if self._closed:
            return
        self._worker = None
        if self._failure is not None:
            end = JobEnd(JobOutcome.FAILED, self._failure)
        elif self._stop.is_set():
            end = JobEnd(JobOutcome.STOPPED)
        else:
            end = JobEnd(JobOutcome.COMPLETED)
        self._on_end(end)
        self.finished.emit(end.outcome)

    def _report(self, failure: JobFailed) -> None:
        if failure.bad_input:
            show_error(f"{self._title} failed: {failure.message}")
        else:  # a bug rather than bad input: keep the traceback for the report
            print(failure.details, file=sys.stderr)
            show_error(f"{self._title} failed: {failure.message} (details in the console)")


def _ignore(*_args: Any) -> None:
    pass
