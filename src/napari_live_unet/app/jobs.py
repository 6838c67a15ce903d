"""The one contract between the widgets and their workers.

A job is a generator run in a napari thread worker. It yields typed event dataclasses (the
engine's training events, the prediction events of :mod:`.prediction_job`, the
:class:`Done` of a one-shot job) and never touches a layer or a widget: the main thread
applies each event as it arrives (``napari_live_unet.widgets.job_runner``). A job does not
raise: :func:`failures_as_events` turns an exception into a final :class:`JobFailed`, so
every failure reaches the user the same way, once.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from ..engine.errors import InputError

Event = TypeVar("Event")


@dataclass(frozen=True)
class JobFailed:
    """The job ended with an error; nothing after it is yielded.

    Attributes
    ----------
    message : str
        One line for the user: an :class:`InputError`'s own text (written for users), or
        the exception's type and text for anything else.
    bad_input : bool
        True for an :class:`InputError` (the user can fix it); False for a bug.
    details : str
        The traceback of a bug, for the console and for reports; empty for bad input.
    """

    message: str
    bad_input: bool
    details: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> JobFailed:
        if isinstance(exc, InputError):
            return cls(str(exc), True)
        details = "".join(traceback.format_exception(exc))
        return cls(f"{type(exc).__name__}: {exc}", False, details)


@dataclass(frozen=True)
class Done:
    """The result of a one-shot job (load a model, save a file, count objects)."""

    value: Any


def failures_as_events(job: Iterable[Event]) -> Iterator[Event | JobFailed]:
    """Yield the job's events; an exception ends it with a :class:`JobFailed` instead."""
    try:
        yield from job
    except Exception as exc:  # every failure is reported as an event, once
        yield JobFailed.from_exception(exc)


def one_shot(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[Done]:
    """A job of one call: yields ``Done(func(*args, **kwargs))``."""
    yield Done(func(*args, **kwargs))
