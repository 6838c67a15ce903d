"""Ctrl-C (SIGINT) and SIGTERM stop training cooperatively in the command line."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

# What signal.signal takes and returns: a handler, SIG_DFL/SIG_IGN, or None (not set from
# Python).
_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class StopOnSignal:
    """Context manager: the first SIGINT/SIGTERM asks to stop, a second one quits at once.

    ``bool(instance)`` (or :meth:`requested`) tells the training loop to stop at its next
    step; it then keeps the best model so far, which the caller writes. A second signal
    raises :class:`KeyboardInterrupt` immediately (files are written atomically, so none is
    left half-written).
    """

    def __init__(self, message: str) -> None:
        self.message = message
        self.signal: int | None = None
        self._previous: dict[int, _Handler] = {}

    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        print(f"\n{self.message}", file=sys.stderr, flush=True)

    def __enter__(self) -> StopOnSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
