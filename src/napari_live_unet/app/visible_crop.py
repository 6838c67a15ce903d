"""The crop of the view that the live preview segments while the model trains.

The main thread records which part of which image is on screen; the training worker asks
for that crop between epochs (the engine's ``preview`` hook), and the main thread puts the
resulting labels into a preview layer. The worker never reads a layer: it only slices the
array the main thread handed over.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine.config import ModelConfig
from ..engine.normalize import channel_percentiles
from ..engine.train import PreviewRequest

MAX_PREVIEW_VOXELS = 2**19
"""Largest 3D preview crop: a 3D U-net segments it in about half a second on a CPU."""

MIN_CONTEXT = 4
"""Fewest slices on each side of the shown one: a network that never pools z still
convolves across it."""


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
    max_voxels : int
        Largest number of voxels in a 3D crop (a slab or a sub-volume), for the same reason.
    """

    def __init__(self, max_size: int = 384, max_voxels: int = MAX_PREVIEW_VOXELS) -> None:
        self.max_size = max_size
        self.max_voxels = max_voxels
        self._lock = threading.Lock()
        self._data: Any = None
        self._window: PreviewWindow | None = None
        self._rgb = False
        self._ranges: dict = {}

    def set_view(self, data: Any, window: PreviewWindow | None, rgb: bool = False) -> None:
        """Main thread: the array to crop from (numpy or dask) and the current window."""
        with self._lock:
            self._data, self._window, self._rgb = data, window, rgb

    @property
    def window(self) -> PreviewWindow | None:
        """The window previewed now (None: nothing)."""
        with self._lock:
            return self._window

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


def preview_context(config: ModelConfig | None, spatial_ndim: int = 3) -> tuple[int, ...]:
    """Slices on each side of the shown one that a preview of a 3D model takes in.

    Parameters
    ----------
    config : ModelConfig or None
        The architecture being trained; None: the default architecture.
    spatial_ndim : int
        Spatial axes of the model (used when ``config`` is None).

    Returns
    -------
    tuple of int
        Per spatial axis, the network's size multiple along it (its coarsest pooling:
        ``config.size_multiples`` where the config has it, else ``2 ** depth``), and at
        least :data:`MIN_CONTEXT`.
    """
    if config is None:
        config = ModelConfig(ndim=spatial_ndim)
    multiples = getattr(config, "size_multiples", None)
    if multiples is None:
        multiples = (2**config.depth,) * config.ndim
    return tuple(max(MIN_CONTEXT, int(m)) for m in multiples)


def visible_window(
    corner_pixels: np.ndarray,
    point: np.ndarray,
    shape: tuple[int, ...],
    spatial_ndim: int,
    displayed: tuple[int, ...],
    max_size: int,
    context: int | Sequence[int] = MIN_CONTEXT,
    max_voxels: int = MAX_PREVIEW_VOXELS,
) -> PreviewWindow:
    """The crop to preview in a 2D view, given a layer's visible corners and the point.

    Displayed spatial axes take ``max_size`` pixels (the whole axis when it is shorter)
    around the field of view's centre, whatever the zoom, so the preview keeps its size
    while the user zooms (see also :func:`steady_window`).
    A spatial axis that is not displayed (the z of a 3D model seen slice by slice) spans
    the shown slice and ``context`` slices on each side, clipped to the image (a thin
    volume is taken whole, never padded). When the crop has more than ``max_voxels``, the
    displayed axes are cut further around the centre; the slab keeps its depth.

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
        Layer axes shown on screen.
    max_size : int
        Largest crop edge along a displayed axis.
    context : int or sequence of int
        Slices taken on each side of the current one along a spatial axis that is not
        displayed; one value per spatial axis, or one for all (see :func:`preview_context`).
    max_voxels : int
        Largest crop size in voxels.

    Returns
    -------
    PreviewWindow
        The frame (leading axes at the current point) and the spatial box.
    """
    ndim = len(shape)
    view = {}
    for axis in range(ndim - spatial_ndim, ndim):
        if axis in displayed:
            lo = int(np.clip(corner_pixels[0, axis], 0, shape[axis]))
            hi = int(np.clip(corner_pixels[1, axis] + 1, lo + 1, shape[axis]))
            view[axis] = ((lo + hi) // 2, min(shape[axis], max_size))
    return _window(point, shape, spatial_ndim, view, context, max_voxels)


def volume_window(
    centre: np.ndarray,
    point: np.ndarray,
    shape: tuple[int, ...],
    spatial_ndim: int,
    displayed: tuple[int, ...],
    max_size: int,
    context: int | Sequence[int] = MIN_CONTEXT,
    max_voxels: int = MAX_PREVIEW_VOXELS,
) -> PreviewWindow:
    """The crop to preview in a 3D view: a sub-volume around the camera's centre.

    The whole view of a volume is often far more than a CPU segments between epochs, so
    the displayed spatial axes are cut around ``centre`` to at most ``max_size`` each and
    ``max_voxels`` in all (the smaller axes kept whole when they fit, the others cut
    evenly); a spatial axis that is not displayed is treated as in :func:`visible_window`.

    Parameters
    ----------
    centre : ndarray, shape (ndim,)
        The camera's centre in the layer's data coordinates (non-displayed axes: the
        current point).
    point : ndarray, shape (ndim,)
        The current viewer point in the layer's data coordinates.
    shape, spatial_ndim, displayed, max_size, context, max_voxels
        As for :func:`visible_window`.

    Returns
    -------
    PreviewWindow
        The frame (leading axes at the current point) and the spatial box.
    """
    ndim = len(shape)
    view = {
        axis: (round(float(centre[axis])), min(shape[axis], max_size))
        for axis in range(ndim - spatial_ndim, ndim)
        if axis in displayed
    }
    return _window(point, shape, spatial_ndim, view, context, max_voxels)


def _window(
    point: np.ndarray,
    shape: tuple[int, ...],
    spatial_ndim: int,
    view: dict[int, tuple[int, int]],
    context: int | Sequence[int],
    max_voxels: int,
) -> PreviewWindow:
    """Place the crop: ``view`` maps displayed spatial axes to (centre, wanted extent);
    the other spatial axes get the slab around the current point."""
    ndim = len(shape)
    lead = ndim - spatial_ndim
    frame = tuple(int(np.clip(round(float(point[a])), 0, shape[a] - 1)) for a in range(lead))
    halves = [context] * spatial_ndim if isinstance(context, int) else list(context)
    # Aligned on the last axes: a 3-axis context for a 2D model gives its y and x.
    halves = ([MIN_CONTEXT] * spatial_ndim + halves)[-spatial_ndim:]
    start, stop = [0] * spatial_ndim, [0] * spatial_ndim
    slab = 1
    for i, axis in enumerate(range(lead, ndim)):
        if axis not in view:
            size = shape[axis]
            at = int(np.clip(round(float(point[axis])), 0, size - 1))
            start[i], stop[i] = max(0, at - halves[i]), min(size, at + halves[i] + 1)
            slab *= stop[i] - start[i]
    shown = sorted(view)
    extents = _capped([view[a][1] for a in shown], max_voxels / slab)
    for axis, extent in zip(shown, extents, strict=True):
        size, centre = shape[axis], view[axis][0]
        a = int(np.clip(centre - extent // 2, 0, max(0, size - extent)))
        start[axis - lead], stop[axis - lead] = a, min(size, a + extent)
    return PreviewWindow(frame, tuple(start), tuple(stop))


def steady_window(
    previous: PreviewWindow | None,
    new: PreviewWindow,
    displayed: Sequence[int],
    tolerance: float = 0.25,
) -> PreviewWindow:
    """``previous`` while the view has moved less than ``tolerance`` of the crop, else
    ``new``.

    Moving or resizing the preview layer costs napari far more than redrawing it in place
    (its extent, the viewer's dimensions and the transforms; 15-20 ms of the GUI thread
    while training), so small pans leave the preview where it is. The frame and the axes
    that are not displayed (the slab around the shown slice) must match exactly.

    Parameters
    ----------
    previous : PreviewWindow or None
        The window previewed now.
    new : PreviewWindow
        The window for the current view.
    displayed : sequence of int
        Indices of the displayed axes among the window's spatial axes.
    tolerance : float
        Largest shift kept, as a fraction of the crop's extent along each displayed axis.
    """
    if previous is None or previous.frame != new.frame:
        return new
    for i, (a0, b0, a1, b1) in enumerate(
        zip(previous.start, previous.stop, new.start, new.stop, strict=True)
    ):
        if b0 - a0 != b1 - a1:
            return new
        if i in displayed:
            if abs(a1 - a0) >= tolerance * (b1 - a1):
                return new
        elif a0 != a1:
            return new
    return previous


def _capped(extents: list[int], budget: float) -> list[int]:
    """``extents`` cut so their product is at most ``budget``: extents below the even
    share are kept, the larger ones share what is left evenly (at least 1 each)."""
    out = list(extents)
    remaining = max(1.0, budget)
    order = sorted(range(len(out)), key=lambda i: out[i])
    for n, i in enumerate(order):
        share = math.floor(remaining ** (1 / (len(order) - n)) + 1e-9)
        out[i] = max(1, min(out[i], share))
        remaining /= out[i]
    return out
