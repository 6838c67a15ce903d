"""The crop of the view that the live preview segments while the model trains.

The main thread records which part of which image is on screen; the training worker asks
for that crop between epochs (the engine's ``preview`` hook), and the main thread puts the
resulting labels into a preview layer. The worker never reads a layer: it only slices the
array the main thread handed over.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine.normalize import channel_percentiles
from ..engine.train import PreviewRequest


@dataclass(frozen=True)
class PreviewWindow:
    """A crop of one image: ``frame`` indexes the leading non-spatial axes."""

    frame: tuple[int, ...]
    start: tuple[int, ...]
    stop: tuple[int, ...]


class VisibleCrop:
    """Thread-safe holder of the crop to preview; callable from the training worker.

    Parameters
    ----------
    max_size : int
        Largest edge of a preview crop in pixels (the crop is centred in the view), so a
        preview costs a fraction of a second even on a CPU.
    """

    def __init__(self, max_size: int = 384) -> None:
        self.max_size = max_size
        self._lock = threading.Lock()
        self._data: Any = None
        self._window: PreviewWindow | None = None
        self._rgb = False
        self._ranges: dict = {}

    def set_view(self, data: Any, window: PreviewWindow | None, rgb: bool = False) -> None:
        """Main thread: the array to crop from (numpy or dask) and the current window."""
        with self._lock:
            self._data, self._window, self._rgb = data, window, rgb

    def clear(self) -> None:
        """Stop previewing (e.g. the image layer was removed)."""
        self.set_view(None, None)

    def __call__(self) -> PreviewRequest | None:
        """Worker thread: the crop (channel-first if RGB) keyed by its window, with the
        whole frame's intensity range; None when there is nothing to preview."""
        with self._lock:
            data, window, rgb = self._data, self._window, self._rgb
        if data is None or window is None:
            return None
        box = tuple(slice(a, b) for a, b in zip(window.start, window.stop, strict=True))
        crop = np.asarray(data[(*window.frame, *box)])
        if rgb:
            crop = np.moveaxis(crop, -1, 0)
        return PreviewRequest(crop, window, self._frame_range(data, window.frame, rgb))

    def _frame_range(self, data: Any, frame: tuple[int, ...], rgb: bool):
        """Percentiles of the whole frame, so a zoomed-in crop is scaled like the image."""
        key = (id(data), frame)
        if key not in self._ranges:
            whole = data[frame] if frame else data
            channels = [whole[..., c] for c in range(whole.shape[-1])] if rgb else [whole]
            # channel_percentiles only iterates channels: a list of (lazy) arrays will do.
            self._ranges = {key: channel_percentiles(channels)}  # pyright: ignore[reportArgumentType]
        return self._ranges[key]


def visible_window(
    corner_pixels: np.ndarray,
    point: np.ndarray,
    shape: tuple[int, ...],
    spatial_ndim: int,
    displayed: tuple[int, ...],
    max_size: int,
    depth: int = 32,
) -> PreviewWindow:
    """The crop to preview given a layer's visible corners and the current point.

    Parameters
    ----------
    corner_pixels : ndarray, shape (2, ndim)
        The layer's ``corner_pixels`` (data coordinates of the visible field of view).
    point : ndarray, shape (ndim,)
        The current viewer point in the layer's data coordinates.
    shape : tuple of int
        Layer shape without an RGB axis.
    spatial_ndim : int
        How many trailing axes the model treats as spatial (2 or 3).
    displayed : tuple of int
        Axes shown on screen.
    max_size : int
        Largest crop edge; a larger view is cropped around its centre.
    depth : int
        Extent along a spatial axis that is not displayed (a 3D model seen slice by slice).
    """
    ndim = len(shape)
    lead = ndim - spatial_ndim
    frame = tuple(int(np.clip(round(float(point[a])), 0, shape[a] - 1)) for a in range(lead))
    start, stop = [], []
    for axis in range(lead, ndim):
        size = shape[axis]
        if axis in displayed:
            lo = int(np.clip(corner_pixels[0, axis], 0, size))
            hi = int(np.clip(corner_pixels[1, axis] + 1, lo + 1, size))
            centre, extent = (lo + hi) // 2, min(hi - lo, max_size)
        else:
            centre, extent = round(float(point[axis])), min(depth, size)
        a = int(np.clip(centre - extent // 2, 0, max(0, size - extent)))
        start.append(a)
        stop.append(min(size, a + extent))
    return PreviewWindow(frame, tuple(start), tuple(stop))
