"""A bounded store of per-frame network outputs, for re-thresholding long series.

Re-running post-processing with new thresholds needs every frame's network outputs (float16,
4 bytes per pixel: 1.6 GB per 100 frames of 2048 x 2048). :class:`FrameOutputCache` keeps
the most recently used frames in memory, up to a byte budget, and spills the others to a
zarr array in a temporary directory, read back one frame at a time. Nothing it holds in
memory grows with the number of frames; the directory goes when the cache is closed, or
when it is garbage collected (or the interpreter exits) if its owner forgets, removed on a
background thread (:mod:`~napari_live_unet.engine.temp_store`): closing never waits on the
disk.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from . import temp_store

DTYPE = np.dtype(np.float16)
"""Outputs are stored as float16 (what the network returns)."""

CHUNK_MAX_BYTES = 64 * 2**20
"""Largest zarr chunk on disk: a frame bigger than this (a large volume) is split into blocks
along its largest axes."""


class FrameOutputCache:
    """Network outputs of numbered frames: recent ones in memory, the rest on disk.

    Parameters
    ----------
    max_bytes : int
        Most bytes of outputs held in memory. Frames beyond it, least recently used first,
        are written to disk; a frame larger than the budget alone goes straight to disk.
    directory : str or Path, optional
        Where the temporary directory for spilled frames is made (default: the system's
        temporary directory). It is made at the first spill only.

    Notes
    -----
    All frames must have one shape (they are the outputs of one layer's frames). The cache
    is thread-safe: a worker can fill it while another reads it. :meth:`get` returns the
    stored array itself (read-only) when the frame is in memory, else a fresh array read
    from disk.

    Examples
    --------
    >>> with FrameOutputCache(max_bytes=2**20) as cache:
    ...     cache.put(0, np.zeros((2, 64, 64), np.float16))
    ...     cache.get(0).shape
    (2, 64, 64)
    """

    def __init__(self, max_bytes: int, directory: str | Path | None = None) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._parent = None if directory is None else str(directory)
        self._memory: OrderedDict[int, np.ndarray] = OrderedDict()
        self._memory_bytes = 0
        self._on_disk: set[int] = set()  # positions whose disk copy is current
        self._positions: set[int] = set()
        self._shape: tuple[int, ...] | None = None
        self._array: Any = None  # the zarr array, made at the first spill
        self._directory: str | None = None
        self._finalizer: weakref.finalize | None = None
        self._lock = threading.RLock()
        self._closed = False

    # -- sizes ---------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of frames stored (in memory or on disk)."""
        return len(self._positions)

    def __contains__(self, position: object) -> bool:
        return position in self._positions

    @property
    def memory_bytes(self) -> int:
        """Bytes of outputs held in memory now (at most ``max_bytes``)."""
        return self._memory_bytes

    @property
    def in_memory(self) -> tuple[int, ...]:
        """Positions of the frames held in memory, least recently used first."""
        with self._lock:
            return tuple(self._memory)

    @property
    def spilled(self) -> tuple[int, ...]:
        """Positions of the frames that are on disk only, in order."""
        with self._lock:
            return tuple(sorted(self._positions - self._memory.keys()))

    @property
    def frame_shape(self) -> tuple[int, ...] | None:
        """Shape of one frame's outputs; None while the cache is empty."""
        return self._shape

    @property
    def directory(self) -> Path | None:
        """The temporary directory of spilled frames; None until the first spill."""
        return None if self._directory is None else Path(self._directory)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- frames --------------------------------------------------------------------------

    def put(self, position: int, outputs: np.ndarray) -> None:
        """Store the outputs of frame ``position`` (replacing any earlier ones).

        Parameters
        ----------
        position : int
            The frame's number (0 or more).
        outputs : ndarray
            The frame's outputs; stored as float16 (no copy when they are float16 already).

        Raises
        ------
        ValueError
            If the frame's shape differs from the frames stored before, or the cache is
            closed.
        """
        position = int(position)
        if position < 0:
            raise ValueError(f"frame position must be 0 or more, not {position}")
        frame = np.asarray(outputs).astype(DTYPE, copy=False)
        with self._lock:
            self._check_open()
            if self._shape is None:
                self._shape = tuple(frame.shape)
            elif tuple(frame.shape) != self._shape:
                raise ValueError(
                    f"frame {position} has shape {tuple(frame.shape)}, but the cache holds "
                    f"frames of shape {self._shape}"
                )
            self._drop_from_memory(position)
            self._on_disk.discard(position)
            self._positions.add(position)
            if frame.nbytes > self.max_bytes:
                self._write(position, frame)
                return
            frame = frame.view()
            frame.flags.writeable = False
            self._keep(position, frame)

    def get(self, position: int) -> np.ndarray:
        """The outputs of frame ``position``, float16 (read back from disk if spilled).

        A frame read from disk is kept in memory again when it fits, as the most recently
        used one.

        Raises
        ------
        KeyError
            If no frame ``position`` was stored.
        ValueError
            If the cache is closed.
        """
        position = int(position)
        with self._lock:
            self._check_open()
            if position in self._memory:
                self._memory.move_to_end(position)
                return self._memory[position]
            if position not in self._positions:
                raise KeyError(position)
            frame = np.asarray(self._array[position], dtype=DTYPE)
            if frame.nbytes <= self.max_bytes:
                frame.flags.writeable = False
                self._keep(position, frame)
            return frame

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Drop the frames and have the temporary directory removed in the background
        (idempotent; :func:`~napari_live_unet.engine.temp_store.wait_for_removals` waits for
        it)."""
        with self._lock:
            self._closed = True
            self._memory.clear()
            self._memory_bytes = 0
            self._positions.clear()
            self._on_disk.clear()
            self._array = None
            if self._finalizer is not None:
                self._finalizer()

    def __enter__(self) -> FrameOutputCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"FrameOutputCache({len(self)} frames, {self._memory_bytes} of {self.max_bytes} "
            f"bytes in memory, {len(self.spilled)} on disk)"
        )

    # -- internals -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the output cache is closed")

    def _keep(self, position: int, frame: np.ndarray) -> None:
        """Hold ``frame`` in memory as the most recent, spilling the oldest beyond the
        budget."""
        self._memory[position] = frame
        self._memory_bytes += frame.nbytes
        while self._memory_bytes > self.max_bytes and len(self._memory) > 1:
            oldest, old = next(iter(self._memory.items()))
            if oldest not in self._on_disk:
                self._write(oldest, old)
            self._drop_from_memory(oldest)

    def _drop_from_memory(self, position: int) -> None:
        frame = self._memory.pop(position, None)
        if frame is not None:
            self._memory_bytes -= frame.nbytes

    def _write(self, position: int, frame: np.ndarray) -> None:
        array = self._disk_array(position)
        array[position] = frame
        self._on_disk.add(position)

    def _disk_array(self, position: int) -> Any:
        """The zarr array on disk, made or grown to hold row ``position``."""
        import zarr

        assert self._shape is not None
        if self._array is None:
            directory = temp_store.make_directory("live-unet-outputs-", self._parent)
            self._directory = str(directory)
            self._finalizer = temp_store.remove_with(self, directory)
            rows = max(position + 1, 16)
            self._array = zarr.create_array(
                store=str(Path(self._directory) / "outputs.zarr"),
                shape=(rows, *self._shape),
                chunks=(1, *chunk_shape(self._shape, DTYPE.itemsize)),
                dtype=DTYPE,
                fill_value=0,
                zarr_format=3,
            )
        elif position >= self._array.shape[0]:
            rows = max(position + 1, 2 * self._array.shape[0])
            self._array.resize((rows, *self._shape))
        return self._array


def chunk_shape(shape: tuple[int, ...], itemsize: int, limit: int = CHUNK_MAX_BYTES) -> tuple:
    """A block of ``shape`` of at most ``limit`` bytes: the largest axes halved in turn.

    Parameters
    ----------
    shape : tuple of int
        Shape of one frame.
    itemsize : int
        Bytes per element.
    limit : int
        Most bytes per block.

    Returns
    -------
    tuple of int
        The whole frame when it fits, else a block of it.
    """
    block = [max(1, int(s)) for s in shape]
    while math.prod(block) * itemsize > limit and max(block) > 1:
        axis = int(np.argmax(block))
        block[axis] = math.ceil(block[axis] / 2)
    return tuple(block)
