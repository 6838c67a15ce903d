"""The prediction jobs: segment an image layer's data frame by frame, and re-label cached
outputs with new thresholds.

The jobs run in workers (see :mod:`.jobs`) and yield the typed events of
:mod:`.prediction_events`; the predict widget applies them on the main thread. Frame plans
(:mod:`.frame_plan`), events and results are re-exported here for the widgets. No Qt here,
and no layer is read or written: the widget hands over the layer's array.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..engine.blockwise import postprocesses_in_blocks
from ..engine.config import PostprocessConfig
from ..engine.image_adapter import AUTO_FIT, AdaptOptions
from ..engine.model import SegmentationModel
from ..engine.output_cache import FrameOutputCache
from ..engine.predictor import FrameDone, FrameFitted, Images, Predictor, TilesDone
from .frame_plan import FramePlan, plan_frames
from .prediction_events import (
    FramePredicted,
    FrameRelabelled,
    InputFitted,
    PredictionEvent,
    PredictionProgress,
)
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
