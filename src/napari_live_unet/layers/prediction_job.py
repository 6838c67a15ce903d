"""What the predict widget runs in its workers: no Qt, no layers.

The generators here run in napari thread workers and yield plain tuples; the widget applies
them to layers on the main thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine.config import ModelConfig, PostprocessConfig
from ..engine.errors import InputError
from ..engine.image_adapter import AUTO_FIT, AdaptOptions, scale_postprocess
from ..engine.model import SegmentationModel
from ..engine.postprocess import instances_from_outputs

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
    zoom: float = 1.0  # the zoom the image got before the network (thresholds scale by it)
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


def predict_events(
    model: SegmentationModel,
    data: Any,
    plan: FramePlan,
    params: PostprocessConfig,
    stop: threading.Event,
    device: str | None = None,
    adapt: AdaptOptions | None = AUTO_FIT,
) -> Iterator[tuple]:
    """Predict every frame; for a napari generator worker.

    Yields ``("progress", done, total)`` (tiles), ``("adapted", text)`` when a frame was
    fitted to the model (``text`` from :meth:`Adaptation.describe`) and ``("frame", index,
    outputs, labels, cache)`` per frame, in order. ``adapt`` says how frames are fitted to
    the model (None: they are in its terms already); ``params`` are applied as
    :meth:`SegmentationModel.instances` applies them with ``adapt.diameter``. Ends early once
    ``stop`` is set (checked between batches of tiles). Frames are read one at a time with
    ``np.asarray``, so a lazy (dask) array is computed frame by frame here, off the GUI
    thread.

    The engine reports progress through a callback, so prediction runs in a helper thread
    and its events are relayed from a queue: the worker can yield progress in the middle of
    a single large frame.
    """
    events: queue.Queue = queue.Queue()
    keep_caches = plan.n_frames * int(np.prod(plan.spatial)) <= CACHE_MAX_PIXELS
    read = 0
    diameter = adapt.diameter if adapt is not None else None
    scaled = scale_postprocess(params, model.zoom_for(diameter), model.config.ndim)

    def frames() -> Iterator[np.ndarray]:
        nonlocal read
        for index in plan.frames():
            frame = np.asarray(data[index])
            read += 1
            yield frame

    def progress(done: int, total: int) -> None:
        # The engine counts the tiles of the frames it has read so far; frames are alike.
        events.put(("progress", done, max(done, round(total * plan.n_frames / max(1, read)))))

    def run() -> None:
        try:
            if device is not None and model.device.type != device:
                model.to(device)
            outputs_iter = model.predict_outputs_many(
                frames(),
                channel_axis=plan.channel_axis,
                adapt=adapt,
                progress=progress,
                should_stop=stop.is_set,
                on_adapted=lambda adaptation: events.put(("adapted", adaptation.describe())),
            )
            for index, outputs in zip(plan.frames(), outputs_iter, strict=False):
                cache: dict | None = {} if keep_caches else None
                labels = instances_from_outputs(outputs, model.config.mode, scaled, cache)
                events.put(("frame", index, outputs, labels, cache))
                if stop.is_set():
                    break
            events.put(("end",))
        except BaseException as exc:  # handed to the worker thread, which raises it
            events.put(("raise", exc))

    helper = threading.Thread(target=run, name="live-unet-predict", daemon=True)
    helper.start()
    try:
        while True:
            event = events.get()
            if event[0] == "end":
                return
            if event[0] == "raise":
                raise event[1]
            yield event
    finally:
        stop.set()  # also when the worker is closed early
        helper.join()


def repostprocess_events(
    result: PredictionResult, params: PostprocessConfig, superseded: Callable[[], bool]
) -> Iterator[tuple]:
    """Labels of every frame from the cached outputs with new thresholds.

    Yields ``("frame", i, labels)``; stops early (yielding nothing more) once
    ``superseded()`` is true, since a newer request will follow.
    """
    for i, outputs in enumerate(result.outputs):
        if superseded():
            return
        cache = result.caches[i] if i < len(result.caches) else None
        labels = instances_from_outputs(outputs, result.mode, result.instance_params(params), cache)
        yield ("frame", i, labels)


def guarded(events: Callable[..., Iterator[tuple]], *args: Any) -> Iterator[tuple]:
    """Run an event generator, turning an exception into a final ``("error", exc)`` event,
    so the widget reports it once (napari would otherwise add its own traceback popup)."""
    try:
        yield from events(*args)
    except Exception as exc:
        yield ("error", exc)


def load_model_guarded(path: str) -> tuple:
    """``("ok", model)`` or ``("error", exc)``; for a napari function worker (which treats a
    returned exception object as an error of its own)."""
    from ..engine.model_file import load_model

    try:
        return ("ok", load_model(path))
    except Exception as exc:
        return ("error", exc)


def error_text(exc: BaseException) -> str:
    """A one-line message: InputError messages are written for users; others get a type."""
    return str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
