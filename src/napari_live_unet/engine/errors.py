"""The exception types for bad user input."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user.

    The message names the offending file, array or argument, says what is wrong and what to
    do about it. The CLI prints it without a traceback and exits with status 2.
    """


RECHUNK_ADVICE = "Rechunk the image smaller (e.g. 1024 x 1024 in y/x)"
"""What to do when an input's storage chunks are too large to read block by block."""


class MemoryLimitError(InputError):
    """A prediction does not fit the memory it may take.

    The engine states the problem in numbers and words that name no front end's controls;
    each front end says what to do in its own terms (:meth:`with_remedy`): the CLI "raise
    --memory-limit", the viewer "free some memory".

    Parameters
    ----------
    need : int
        Bytes needed, at least.
    limit : int
        Bytes allowed for it: the whole limit, or the share that the limit leaves a block.
    what : str
        The problem, a sentence or two without the remedy.
    rechunk : bool
        Whether storing the input in smaller chunks would help too.
    workers : int, optional
        Worker processes the limit was shared among (None: this process alone).
    """

    def __init__(
        self, need: int, limit: int, what: str, *, rechunk: bool = False, workers: int | None = None
    ) -> None:
        self.need = int(need)
        self.limit = int(limit)
        self.what = what
        self.rechunk = rechunk
        self.workers = workers
        super().__init__(f"{what} {RECHUNK_ADVICE}." if rechunk else what)

    def __reduce__(self):  # picklable across processes despite the keyword arguments
        return _rebuild, (self.need, self.limit, self.what, self.rechunk, self.workers)

    def with_remedy(self, more_memory: str) -> str:
        """The message with a front end's way to more memory, e.g. ``"raise --memory-limit"``
        (after the advice to rechunk, where that helps too)."""
        if self.rechunk:
            return f"{self.what} {RECHUNK_ADVICE}, or {more_memory}."
        return f"{self.what} {more_memory[:1].upper()}{more_memory[1:]}."


def _rebuild(need, limit, what, rechunk, workers) -> MemoryLimitError:
    return MemoryLimitError(need, limit, what, rechunk=rechunk, workers=workers)
