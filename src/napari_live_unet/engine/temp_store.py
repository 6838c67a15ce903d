"""Temporary directories for zarr stores, removed on a background thread.

A temporary zarr store can hold gigabytes (spilled network outputs, labels predicted block
by block); deleting it takes seconds, and its owner is closed on the GUI thread, which
must never wait on I/O. :func:`make_directory` makes such a directory and
:func:`remove_with` ties its removal to an owner object: once the owner is garbage
collected, or the returned finalizer is called (an owner's ``close()``), the directory is
handed to a single daemon worker thread (:func:`remove_later`). At interpreter exit,
whatever is still pending is removed synchronously, so nothing is left behind. Errors
while removing are ignored (``shutil.rmtree(..., ignore_errors=True)``).
:func:`wait_for_removals` waits until every removal handed over so far is done (tests,
shutdown).

Examples
--------
>>> owner = set()  # any object that takes weak references
>>> path = make_directory("live-unet-example-")
>>> remove = remove_with(owner, path)
>>> remove()  # returns at once: the worker removes the directory
>>> wait_for_removals(timeout=10)
True
>>> path.exists()
False
"""

from __future__ import annotations

import atexit
import os
import queue
import shutil
import tempfile
import threading
import traceback
import weakref
from pathlib import Path

_lock = threading.Condition()
_pending: set[str] = set()  # handed over and not removed yet (queued or in progress)
_queue: queue.SimpleQueue[str] = queue.SimpleQueue()
_worker: threading.Thread | None = None
_exiting = False


def make_directory(prefix: str, parent: str | os.PathLike[str] | None = None) -> Path:
    """Make a new temporary directory (for a zarr store).

    Parameters
    ----------
    prefix : str
        Start of the directory's name.
    parent : str or path-like, optional
        Where the directory is made (default: the system's temporary directory).

    Returns
    -------
    Path
        The new, empty directory.
    """
    return Path(tempfile.mkdtemp(prefix=prefix, dir=None if parent is None else os.fspath(parent)))


def remove_with(owner: object, path: str | os.PathLike[str]) -> weakref.finalize:
    """Remove ``path`` in the background once ``owner`` is garbage collected.

    Parameters
    ----------
    owner : object
        The object whose life the directory follows (weakly referenced).
    path : str or path-like
        The directory.

    Returns
    -------
    weakref.finalize
        Call it to hand the directory to the worker now (idempotent: only the first call
        does anything); ``alive`` is False once it was called or the owner collected. It
        also runs at interpreter exit.
    """
    return weakref.finalize(owner, remove_later, os.fspath(path))


def remove_later(path: str | os.PathLike[str]) -> None:
    """Remove the directory ``path`` on the worker thread; returns at once.

    Handing over a directory already pending does nothing. During interpreter exit the
    directory is removed at once, on the calling thread. Errors are ignored.

    Parameters
    ----------
    path : str or path-like
        The directory (removed with all it holds).
    """
    global _worker
    path = os.fspath(path)
    with _lock:
        exiting = _exiting
        if not exiting and path not in _pending:
            _pending.add(path)
            _queue.put(path)
            if _worker is None:
                _worker = threading.Thread(
                    target=_work, name="live-unet temporary store removal", daemon=True
                )
                _worker.start()
    if exiting:  # the daemon worker may be stopped before it gets to the directory
        _remove(path)


def wait_for_removals(timeout: float | None = None) -> bool:
    """Wait until every directory handed over so far is removed.

    Parameters
    ----------
    timeout : float, optional
        Most seconds to wait (default: no limit).

    Returns
    -------
    bool
        True when none is pending any more, False when ``timeout`` ran out first.
    """
    with _lock:
        return _lock.wait_for(lambda: not _pending, timeout)


def _remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _done(path: str) -> None:
    with _lock:
        _pending.discard(path)
        _lock.notify_all()


def _work() -> None:
    while True:
        path = _queue.get()
        try:
            _remove(path)
        except Exception:  # rmtree ignores OSErrors; a bug must not end the worker either
            traceback.print_exc()
        finally:
            _done(path)


@atexit.register
def _remove_pending_now() -> None:
    """At exit, remove what is still pending here: the daemon worker may never get to it.

    Finalizers that ``weakref.finalize`` runs at exit after this remove synchronously too
    (:func:`remove_later` sees ``_exiting``).
    """
    global _exiting
    with _lock:
        _exiting = True
        paths = sorted(_pending)
    for path in paths:
        _remove(path)  # the worker may be removing it too: rmtree ignores what has gone
        _done(path)
