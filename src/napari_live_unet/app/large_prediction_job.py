"""Predict an image layer whose frames are too large to predict whole, block by block.

A frame predicted whole holds the image, its network outputs (4 bytes per pixel), the
post-processing maps and the labels at once: about
:data:`~napari_live_unet.engine.block_plan.BYTES_PER_BLOCK_PIXEL` bytes per pixel. When
that is more than the memory budget of a prediction in the viewer (:func:`viewer_budget`:
:func:`~napari_live_unet.app.prediction_result.memory_cap` shared out as the CLI shares
its limit), the layer is predicted as the CLI predicts stored images
(:func:`~napari_live_unet.engine.large_image.segment_stored`): block by block from the
layer's lazy level-0 array, into uint32 labels in a zarr array in a temporary directory
(:class:`~.stored_labels.StoredLabels`), which the predictions layer then shows lazily.
Such a result keeps no network outputs: changing thresholds means predicting again.

No Qt here, and no layer is touched by the job; :func:`start_prediction` picks the whole or
the block path for the predict widget.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..engine.block_plan import FrameLayout
from ..engine.config import PostprocessConfig
from ..engine.errors import InputError, MemoryLimitError
from ..engine.image_adapter import AdaptOptions
from ..engine.large_image import ImagePlan
from ..engine.memory_budget import MemoryBudget
from ..engine.memory_estimate import format_bytes
from ..engine.model import SegmentationModel
from ..engine.predictor import (
    BlockDone,
    FrameDone,
    FrameFitted,
    LabelsSink,
    Predictor,
    StoredFrames,
)
from . import prediction_result
from .frame_plan import FramePlan
from .prediction_events import FrameWritten, InputFitted, PredictionProgress
from .prediction_job import PredictionResult, new_result, prediction_job
from .stored_labels import BlockPredictionResult, StoredLabels

Job = Callable[[threading.Event], Iterator[Any]]


def viewer_budget() -> MemoryBudget:
    """The memory budget of a new prediction in the viewer, built once per prediction:
    :func:`~napari_live_unet.app.prediction_result.memory_cap` (a share of the memory
    free now) as :meth:`~napari_live_unet.engine.memory_budget.MemoryBudget.for_viewer`
    shares it out."""
    return MemoryBudget.for_viewer(prediction_result.memory_cap())


def memory_message(exc: InputError, name: str, cap: int) -> str:
    """Why a layer cannot be predicted within ``cap`` bytes, in the viewer's words: what
    the viewer can do about a :class:`MemoryLimitError` is free some memory."""
    reason = exc.with_remedy("free some memory") if isinstance(exc, MemoryLimitError) else exc
    return (
        f"'{name}' is too large to predict whole in the memory a prediction may take now "
        f"({format_bytes(cap)}), and cannot be cut into blocks that fit: {reason}"
    )


def storage_chunks(data: Any, layout: FrameLayout) -> tuple[int, ...] | None:
    """The spatial chunks a lazy array is stored in (dask ``chunksize``, zarr ``chunks``),
    or None for an in-memory array."""
    chunks = getattr(data, "chunksize", None)
    if chunks is None:
        chunks = getattr(data, "chunks", None)
    if not isinstance(chunks, tuple) or not all(isinstance(c, int | np.integer) for c in chunks):
        return None
    return layout.spatial_shape(chunks)


def plan_blocks(
    model: SegmentationModel,
    data: Any,
    plan: FramePlan,
    adapt: AdaptOptions,
    budget: MemoryBudget,
    name: str = "image",
) -> tuple[ImagePlan, tuple[int, ...]] | None:
    """The block plan of a layer's data whose frames are too large to predict whole under
    ``budget`` (:func:`viewer_budget`), and the spatial chunks of its labels; None when
    each frame fits whole.

    A frame goes block by block when the predictor says so
    (:meth:`~napari_live_unet.engine.predictor.Predictor.whole`: it does not fit the
    budget whole), the CLI's rule. Output chunks start at the CLI's default and are
    halved until a block with its margins fits (``plan_image(fit_chunks=True)``).

    Raises
    ------
    InputError
        When the layer's storage chunks are too large to read block by block (worded for
        the viewer: :func:`memory_message`).
    """
    layout = plan.layout
    source = StoredFrames(data, layout, f"'{name}'")
    try:
        image_plan = Predictor(model, memory=budget, adapt=adapt).plan(
            source,
            read_chunks=storage_chunks(data, layout),
            voxel_size=adapt.voxel_size,
            fit_chunks=True,
        )
    except InputError as exc:
        raise InputError(memory_message(exc, name, budget.result_bytes)) from exc
    if image_plan is None:
        return None
    chunks = tuple(min(c, s) for c, s in zip(image_plan.chunks, plan.spatial, strict=True))
    return image_plan, chunks


def new_block_result(
    image_name: str,
    plan: FramePlan,
    image_plan: ImagePlan,
    chunks: tuple[int, ...],
    model: SegmentationModel,
    params: PostprocessConfig,
    zoom: float | tuple[float, ...],
    sampling: tuple[float, ...] | None,
) -> BlockPredictionResult:
    """An empty block result whose labels will be stored one frame deep in spatial
    ``chunks`` (block cores are whole chunks, so no two blocks write to one chunk)."""
    return BlockPredictionResult(
        image_name,
        plan,
        model.config.mode,
        params,
        zoom=zoom,
        sampling=sampling,
        ndim=model.config.ndim,
        model=None,
        cache_bytes=0,
        store=StoredLabels(plan.labels_shape, (1,) * len(plan.leading) + chunks),
        blocks=image_plan.blocks_per_frame * len(image_plan.frames),
    )


def block_prediction_job(
    model: SegmentationModel,
    data: Any,
    plan: FramePlan,
    image_plan: ImagePlan,
    store: StoredLabels,
    stop: threading.Event,
    device: str | None = None,
    name: str = "image",
) -> Iterator[PredictionProgress | InputFitted | FrameWritten]:
    """Write the labels of every frame of ``data`` into ``store``, block by block; a job for
    a worker.

    Yields :class:`PredictionProgress` after each block (of all frames' blocks), then
    :class:`InputFitted` and :class:`FrameWritten` as each frame is complete: the events of
    :meth:`~napari_live_unet.engine.predictor.Predictor.run`, yielded in the worker's
    thread. Ends early, after the block in progress, once ``stop`` is set; nothing is
    written to the store after the job has ended.
    """
    if device is not None and model.device.type != device:
        model.to(device)
    layout = plan.layout
    source = StoredFrames(data, layout, name)
    predictor = Predictor(model, memory=None, adapt=image_plan.options)
    note = ""
    for event in predictor.run(source, LabelsSink(store.open()), stop, plan=image_plan):
        if isinstance(event, BlockDone):
            yield PredictionProgress(event.done, event.total)
        elif isinstance(event, FrameFitted):
            note = event.note
        elif isinstance(event, FrameDone):
            yield InputFitted(note)
            yield FrameWritten(plan.position(event.index), event.count)


def start_prediction(
    model: SegmentationModel,
    data: Any,
    plan: FramePlan,
    params: PostprocessConfig,
    adapt: AdaptOptions,
    name: str,
    device: str | None,
    budget: MemoryBudget | None = None,
) -> tuple[PredictionResult, Job]:
    """The empty result and the job that fills it, for predicting a layer's ``data``
    within ``budget`` (default: :func:`viewer_budget`).

    Frames that fit the budget (:func:`plan_blocks`) are predicted whole
    (:func:`~.prediction_job.prediction_job`: outputs kept for live thresholds); larger
    ones block by block (:func:`block_prediction_job`, with ``params`` as the model's
    thresholds).

    Raises
    ------
    InputError
        When the layer does not fit the model, or cannot be cut into blocks.
    """
    voxel = adapt.voxel_size
    zoom = model.image_zoom(adapt.diameter, voxel)
    sampling = voxel or model.config.voxel_size
    tuned = dataclasses.replace(model, postprocess=params)
    budget = viewer_budget() if budget is None else budget
    blocks = plan_blocks(tuned, data, plan, adapt, budget, name)
    if blocks is not None:
        image_plan, chunks = blocks
        result = new_block_result(name, plan, image_plan, chunks, tuned, params, zoom, sampling)
        store = result.store
        assert store is not None
        return result, lambda stop: block_prediction_job(
            tuned, data, plan, image_plan, store, stop, device, name
        )
    # Outputs beyond a share of the free memory spill to disk (in the worker).
    result = new_result(name, plan, model, params, zoom, sampling, budget.result_bytes)
    outputs, cache_bytes = result.outputs, result.cache_bytes
    return result, lambda stop: prediction_job(
        model, data, plan, params, stop, device, adapt, outputs, cache_bytes
    )
