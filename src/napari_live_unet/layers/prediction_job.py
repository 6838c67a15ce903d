"""The prediction jobs: segment an image layer's data frame by frame, and re-label cached
outputs with new thresholds.

The jobs run in workers (see :mod:`.jobs`) and yield the typed events below; the predict
widget applies them to layers on the main thread. No Qt here, and no layer is read or
written: the widget hands over the layer's array.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine.config import ModelConfig, PostprocessConfig
from ..engine.errors import InputError
from ..engine.image_adapter import AUTO_FIT, Adaptation, AdaptOptions, scale_postprocess
from ..engine.model import SegmentationModel
from ..engine.postprocess import instances_from_outputs
from ..engine.predict import TilesDone

CACHE_MAX_PIXELS = 64_000_000
"""Keep per-frame post-processing caches only up to this many pixels in all (about 10 bytes
per pixel); above it, threshold changes recompute every intermediate map."""


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


@dataclass
class PredictionResult:
    """Network outputs of every frame, kept to re-run post-processing cheaply."""

    image_name: str
    plan: FramePlan
    mode: str
    params: PostprocessConfig
    outputs: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    caches: list[dict | None] = field(default_factory=list)
    # The zoom the image got before the network, one or per axis (thresholds scale by it).
    zoom: float | tuple[float, ...] = 1.0
    sampling: tuple[float, ...] | None = None  # voxel size of the outputs, when known
    ndim: int = 2
    adaptations: list[str] = field(default_factory=list)  # distinct descriptions, in order

    def instance_params(self, params: PostprocessConfig) -> PostprocessConfig:
        """``params`` as applied to these outputs (sizes scaled by the zoom)."""
        return scale_postprocess(params, self.zoom, self.ndim)

    def input_note(self) -> str:
        """What was done to fit the image, for the status line ("" if unknown)."""
        if not self.adaptations:
            return ""
        more = " (first frame; frames differ)" if len(self.adaptations) > 1 else ""
        return self.adaptations[0] + more

    def labels_array(self) -> np.ndarray:
        return _stack(self.labels, self.plan)

    def output_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Foreground probability and auxiliary map of all frames, float32."""
        return (
            _stack([o[0] for o in self.outputs], self.plan, np.float32),
            _stack([o[1] for o in self.outputs], self.plan, np.float32),
        )


def _stack(frames: list[np.ndarray], plan: FramePlan, dtype=None) -> np.ndarray:
    if not plan.leading:
        return np.asarray(frames[0], dtype)
    out = np.empty(plan.labels_shape, dtype or frames[0].dtype)
    for index, frame in zip(plan.frames(), frames, strict=True):
        out[index] = frame
    return out


@dataclass(frozen=True)
class PredictionProgress:
    """Tiles done of the (estimated) total for all frames."""

    done: int
    total: int


@dataclass(frozen=True)
class InputFitted:
    """A frame was fitted to the model; ``text`` says how (e.g. "inverted")."""

    text: str


@dataclass(frozen=True)
class FramePredicted:
    """One frame's network outputs, instance labels and post-processing cache."""

    index: tuple[int, ...]
    outputs: np.ndarray
    labels: np.ndarray
    cache: dict | None


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
) -> Iterator[PredictionEvent]:
    """Predict every frame of ``data``; a job for a worker.

    Yields :class:`PredictionProgress` after each batch of tiles (also within one large
    frame), :class:`InputFitted` when a frame was fitted to the model, and a
    :class:`FramePredicted` per frame, in order. ``adapt`` says how frames are fitted to
    the model (None: they are in its terms already); ``params`` are applied as
    :meth:`SegmentationModel.instances` applies them with ``adapt.diameter``. Ends early
    once ``stop`` is set (checked between batches of tiles). Frames are read one at a time
    with ``np.asarray``, so a lazy (dask) array is computed frame by frame, in the worker.
    """
    keep_caches = plan.n_frames * int(np.prod(plan.spatial)) <= CACHE_MAX_PIXELS
    read = 0
    zoom = model.image_zoom(adapt.diameter, adapt.voxel_size) if adapt is not None else 1.0
    scaled = scale_postprocess(params, zoom, model.config.ndim)
    sampling = (adapt.voxel_size if adapt is not None else None) or model.config.voxel_size

    def frames() -> Iterator[np.ndarray]:
        nonlocal read
        for index in plan.frames():
            frame = np.asarray(data[index])
            read += 1
            yield frame

    if device is not None and model.device.type != device:
        model.to(device)
    stream = model.predict_stream(
        frames(), channel_axis=plan.channel_axis, adapt=adapt, should_stop=stop.is_set
    )
    indices = plan.frames()
    for item in stream:
        if isinstance(item, TilesDone):
            # The engine counts the tiles of the frames read so far; frames are alike.
            total = round(item.total * plan.n_frames / max(1, read))
            yield PredictionProgress(item.done, max(item.done, total))
        elif isinstance(item, Adaptation):
            yield InputFitted(item.describe())
        else:
            cache: dict | None = {} if keep_caches else None
            labels = instances_from_outputs(
                item, model.config.mode, scaled, cache, sampling=sampling
            )
            yield FramePredicted(next(indices), item, labels, cache)
            if stop.is_set():
                return


def relabel_job(
    result: PredictionResult, params: PostprocessConfig, stop: threading.Event
) -> Iterator[FrameRelabelled]:
    """Labels of every frame from the cached outputs with new thresholds; a job for a
    worker. Ends early (yielding nothing more) once ``stop`` is set: a newer request
    follows."""
    for i, outputs in enumerate(result.outputs):
        if stop.is_set():
            return
        cache = result.caches[i] if i < len(result.caches) else None
        labels = instances_from_outputs(
            outputs, result.mode, result.instance_params(params), cache, sampling=result.sampling
        )
        yield FrameRelabelled(i, labels)
