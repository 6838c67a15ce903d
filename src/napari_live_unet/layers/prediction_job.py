"""The prediction jobs: segment an image layer's data frame by frame, and re-label cached
outputs with new thresholds.

The jobs run in workers (see :mod:`.jobs`) and yield the typed events below; the predict
widget applies them to layers on the main thread. No Qt here, and no layer is read or
written: the widget hands over the layer's array.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine.blockwise import postprocesses_in_blocks
from ..engine.config import ModelConfig, PostprocessConfig
from ..engine.errors import InputError
from ..engine.image_adapter import AUTO_FIT, AdaptOptions
from ..engine.model import SegmentationModel
from ..engine.output_cache import FrameOutputCache
from ..engine.predictor import FrameDone, FrameFitted, Images, Predictor, TilesDone
from .prediction_result import (
    CACHE_BYTES_PER_PIXEL,
    LabelStack,
    PredictionResult,
    frame_instances,
    new_result,
)

__all__ = [
    "CACHE_MAX_BYTES",
    "FramePlan",
    "FramePredicted",
    "FrameRelabelled",
    "InputFitted",
    "LabelStack",
    "PredictionProgress",
    "PredictionResult",
    "new_result",
    "plan_frames",
    "prediction_job",
    "relabel_job",
]

CACHE_MAX_BYTES = 64_000_000 * CACHE_BYTES_PER_PIXEL
"""Post-processing caches a job keeps when not told its budget (64 million pixels' worth);
beyond the budget, threshold changes recompute every intermediate map of a frame."""


@dataclass(frozen=True)
class FramePlan:
    """How an image layer's data splits into frames the model segments one by one.

    Attributes
    ----------
    data_shape : tuple of int
        Shape of the layer's data.
    leading : tuple of int
        Shape of the axes iterated over (time, stack); empty for a single image.
    spatial : tuple of int
        Shape of one frame's labels.
    channel_axis : int or None
        Channel axis of a frame (after the leading axes are removed), or None.
    kept_axes : tuple of int
        The layer dimensions the labels keep (all but a non-RGB channel axis), to copy
        scale and translate from.
    """

    data_shape: tuple[int, ...]
    leading: tuple[int, ...]
    spatial: tuple[int, ...]
    channel_axis: int | None
    kept_axes: tuple[int, ...]

    @property
    def n_frames(self) -> int:
        return int(np.prod(self.leading, dtype=np.int64))

    @property
    def labels_shape(self) -> tuple[int, ...]:
        return self.leading + self.spatial

    def frames(self) -> Iterator[tuple[int, ...]]:
        """Index of each frame into the leading axes, in order."""
        return iter(np.ndindex(*self.leading))

    def position(self, index: tuple[int, ...]) -> int:
        """Number of the frame at ``index`` in :meth:`frames` order."""
        return int(np.ravel_multi_index(index, self.leading)) if self.leading else 0

    def index(self, position: int) -> tuple[int, ...]:
        """Index into the leading axes of frame number ``position``."""
        if not self.leading:
            return ()
        return tuple(int(i) for i in np.unravel_index(position, self.leading))


def plan_frames(
    shape: Sequence[int],
    rgb: bool,
    config: ModelConfig,
    name: str = "image",
    channel: int | None = None,
) -> FramePlan:
    """Split a layer's data of ``shape`` into frames for a model with ``config``.

    RGB layers carry their channels last (a one-channel model reads their luminance, or
    ``channel``); a non-RGB layer for a multi-channel model, or one whose ``channel`` is
    chosen, must hold the channels just before the spatial axes, (..., C, *spatial). Any
    axes before are frames: a 2D model segments a (T, Y, X) series frame by frame.

    Raises
    ------
    InputError
        When the layer cannot be read by the model, with what to do instead.
    """
    ndim, in_channels = config.ndim, config.in_channels
    shape = tuple(int(s) for s in shape)
    layer_ndim = len(shape) - (1 if rgb else 0)
    if channel is not None and in_channels != 1:
        raise InputError(
            f"the model reads {in_channels} channels: a single channel of '{name}' cannot be "
            "chosen for it; set Channel to auto"
        )
    if rgb:
        fits = in_channels in (1, shape[-1]) or (in_channels, shape[-1]) == (3, 4)
        if channel is None and not fits:
            raise InputError(
                f"'{name}' is an RGB(A) image with {shape[-1]} channels but the model reads "
                f"{in_channels} channel(s); choose a channel or train on images like these"
            )
        n_channels = shape[-1]
        channel_axis: int | None = -1
    elif in_channels > 1 or channel is not None:
        n_channels = shape[-ndim - 1] if layer_ndim >= ndim + 1 else 0
        if channel is None and n_channels != in_channels:
            raise InputError(
                f"the model reads {in_channels} channels but '{name}' (shape {shape}) has no "
                f"axis of {in_channels} just before its {ndim} spatial axes"
            )
        channel_axis = 0
    else:
        n_channels, channel_axis = 1, None
    if channel is not None and channel >= n_channels:
        raise InputError(
            f"'{name}' (shape {shape}) has no channel {channel}: the axis before its {ndim} "
            f"spatial axes holds {n_channels} channel(s)"
        )
    n_channel_axes = 0 if channel_axis is None else 1
    n_leading = len(shape) - ndim - n_channel_axes
    if n_leading < 0:
        raise InputError(
            f"'{name}' has {layer_ndim} dimension(s) but the model segments {ndim}D images"
            + ("; open the volume as one 3D layer" if ndim == 3 else "")
        )
    spatial = shape[len(shape) - ndim - (1 if rgb else 0) :][:ndim]
    kept = tuple(range(n_leading)) + tuple(
        range(n_leading + (0 if rgb else n_channel_axes), layer_ndim)
    )
    return FramePlan(shape, shape[:n_leading], spatial, channel_axis, kept)


@dataclass(frozen=True)
class PredictionProgress:
    """Work done of the (estimated) total for all frames: tiles when frames are predicted
    whole, blocks when they are predicted block by block (``large_prediction_job``)."""

    done: int
    total: int


@dataclass(frozen=True)
class InputFitted:
    """A frame was fitted to the model; ``text`` says how (e.g. "inverted")."""

    text: str


@dataclass(frozen=True)
class FramePredicted:
    """One frame's instance labels and post-processing cache, and its network outputs
    (None when the job put them into an output cache: events queued for the main thread
    then hold no outputs)."""

    index: tuple[int, ...]
    outputs: np.ndarray | None
    labels: np.ndarray
    cache: dict | None
    position: int = 0  # number of the frame, in frame order


@dataclass(frozen=True)
class FrameRelabelled:
    """New instance labels of frame ``position`` (in frame order) after a threshold change."""

    position: int
    labels: np.ndarray


PredictionEvent = PredictionProgress | InputFitted | FramePredicted


def prediction_job(
    model: SegmentationModel,
    data: Any,
    plan: FramePlan,
    params: PostprocessConfig,
    stop: threading.Event,
    device: str | None = None,
    adapt: AdaptOptions | None = AUTO_FIT,
    outputs: FrameOutputCache | None = None,
    cache_bytes: int = CACHE_MAX_BYTES,
) -> Iterator[PredictionEvent]:
    """Predict every frame of ``data``; a job for a worker.

    Yields :class:`PredictionProgress` after each batch of tiles (also within one large
    frame), :class:`InputFitted` when a frame was fitted to the model, and a
    :class:`FramePredicted` per frame, in order. ``adapt`` says how frames are fitted to
    the model (None: they are in its terms already); ``params`` are applied as
    :meth:`SegmentationModel.instances` applies them with ``adapt.diameter`` (large frames
    block by block). Frames are predicted whole by a
    :class:`~napari_live_unet.engine.predictor.Predictor` (outputs only: post-processing
    here keeps its caches). Ends early once ``stop`` is set (checked between batches of
    tiles).

    Frames are read one at a time with ``np.asarray(data[index])``, so a lazy (dask, zarr)
    array is computed frame by frame, in the worker. With an ``outputs`` cache, each
    frame's network outputs go into it (here, in the worker: spilling to disk is I/O)
    instead of into the events. A frame's post-processing cache (about
    :data:`CACHE_BYTES_PER_PIXEL` bytes per pixel) is kept while all kept so far fit in
    ``cache_bytes``, and never for frames post-processed block by block.
    """
    pixels = max(1, math.prod(plan.spatial))
    per_frame = pixels * CACHE_BYTES_PER_PIXEL
    cache_frames = 0 if postprocesses_in_blocks(plan.spatial) else cache_bytes // per_frame
    read = 0
    zoom = model.image_zoom(adapt.diameter, adapt.voxel_size) if adapt is not None else 1.0
    sampling = (adapt.voxel_size if adapt is not None else None) or model.config.voxel_size
    ndim = model.config.ndim

    def frames() -> Iterator[np.ndarray]:
        nonlocal read
        for index in plan.frames():
            frame = np.asarray(data[index])
            read += 1
            yield frame

    if device is not None and model.device.type != device:
        model.to(device)
    predictor = Predictor(model, adapt=adapt, postprocess=False)
    source = Images(frames(), channel_axis=plan.channel_axis)
    indices = plan.frames()
    for event in predictor.run(source, stop=stop):
        if isinstance(event, TilesDone):
            # The engine counts the tiles of the frames read so far; frames are alike.
            total = round(event.total * plan.n_frames / max(1, read))
            yield PredictionProgress(event.done, max(event.done, total))
        elif isinstance(event, FrameFitted):
            yield InputFitted(event.note)
        elif isinstance(event, FrameDone):
            item, position = event.outputs, event.position
            cache: dict | None = {} if position < cache_frames else None
            mode = model.config.mode
            labels = frame_instances(item, params, mode, zoom, ndim, sampling, cache, model)
            if outputs is not None:
                outputs.put(position, item)
            kept = item if outputs is None else None
            yield FramePredicted(next(indices), kept, labels, cache, position)
            if stop.is_set():
                return


def relabel_job(
    result: PredictionResult, params: PostprocessConfig, stop: threading.Event
) -> Iterator[FrameRelabelled]:
    """Labels of every frame from the cached outputs with new thresholds; a job for a
    worker. Frames are read back from the output cache one at a time. Ends early
    (yielding nothing more) once ``stop`` is set: a newer request follows."""
    for i in range(result.plan.n_frames):
        if stop.is_set():
            return
        cache = result.caches[i] if i < len(result.caches) else None
        labels = result.frame_labels(result.outputs.get(i), params, cache)
        yield FrameRelabelled(i, labels)
