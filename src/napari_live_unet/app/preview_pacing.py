"""Pacing the training worker around the viewer's drawing of each live preview.

Putting a preview into its layer and redrawing the canvas is the longest piece of GUI-thread
work while a model trains (napari's layer refresh and, on a software-rendered display, a
canvas redraw of 20 ms or more). While the worker keeps training it takes a core and the
Python interpreter's lock from that work, which then takes two to three times as long and
the viewer stalls. So the worker waits, briefly, until the viewer has drawn each preview:
a few tens of milliseconds per preview, against stalls the user sees.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

DRAW_WAIT_SECONDS = 0.25
"""Longest the worker waits for one preview to be drawn (a busy or closed viewer never
holds training up for longer)."""


class PreviewPacing:
    """Counts previews handed to the main thread and previews drawn; thread-safe.

    The worker calls :meth:`wait_until_drawn` after handing over a preview; the main
    thread calls :meth:`drawn` once it has drawn one. Previews are drawn in the order they
    were handed over, so counts are enough to pair them, and a late acknowledgement (after
    a wait timed out) is never taken for the next preview's.

    Parameters
    ----------
    timeout : float
        Longest wait for one preview, in seconds.
    """

    def __init__(self, timeout: float = DRAW_WAIT_SECONDS) -> None:
        self.timeout = timeout
        self._condition = threading.Condition()
        self._handed_over = 0
        self._drawn = 0

    def reset(self) -> None:
        """Main thread: a new run starts; nothing is owed from the last one."""
        with self._condition:
            self._handed_over = self._drawn = 0
            self._condition.notify_all()

    def drawn(self) -> None:
        """Main thread: one more preview is on screen."""
        with self._condition:
            self._drawn += 1
            self._condition.notify_all()

    def wait_until_drawn(self, should_stop: Callable[[], bool] | None = None) -> bool:
        """Worker thread: wait until the preview just handed over has been drawn.

        Returns whether it was drawn (False: the wait timed out or a stop was requested;
        a stop is checked every 20 ms).
        """
        with self._condition:
            self._handed_over += 1
            target = self._handed_over
            deadline = time.monotonic() + self.timeout
            while self._drawn < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (should_stop is not None and should_stop()):
                    return False
                self._condition.wait(min(0.02, remaining))
            return True
