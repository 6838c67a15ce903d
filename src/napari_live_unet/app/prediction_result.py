"""What a prediction keeps for re-thresholding, under a memory cap: the network outputs of
every frame (a :class:`~napari_live_unet.engine.output_cache.FrameOutputCache`, spilling to
disk beyond its budget), the instance labels (one array for napari, in the smallest integer
type that holds them, at least uint16: :func:`~napari_live_unet.engine.label_dtype.label_dtype`)
and post-processing caches while they fit.

No Qt here, and no layer is touched: the predict widget hands these to napari.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..engine.config import PostprocessConfig
from ..engine.image_adapter import scale_postprocess
from ..engine.label_dtype import label_dtype
from ..engine.memory_budget import UNKNOWN_VIEWER_CAP, VIEWER_SHARE, viewer_memory_cap
from ..engine.memory_estimate import available_memory_bytes
from ..engine.output_cache import FrameOutputCache
from ..engine.postprocess import instances_from_outputs
from .frame_plan import FramePlan
from .prediction_events import FramePredicted, FrameWritten, InputFitted

if TYPE_CHECKING:
    from ..engine.model import SegmentationModel

CACHE_BYTES_PER_PIXEL = 10
"""Bytes a frame's post-processing cache holds per pixel (intermediate maps)."""


def memory_cap(fraction: float = VIEWER_SHARE) -> int:
    """Bytes a new prediction in the viewer may take: ``fraction`` of the free memory.

    Returns
    -------
    int
        :func:`~napari_live_unet.engine.memory_budget.viewer_memory_cap` of
        :func:`~napari_live_unet.engine.memory_estimate.available_memory_bytes` on the CPU.
    """
    return viewer_memory_cap(available_memory_bytes(torch.device("cpu")), fraction)


class LabelStack:
    """The instance labels of a series, filled frame by frame into one array.

    Parameters
    ----------
    plan : FramePlan
        How the layer splits into frames; the array has ``plan.labels_shape``.

    Notes
    -----
    Frames are numbered independently (1..n in each), so the largest id is the largest of
    the frames' counts; the array starts as uint16 and becomes uint32 only if a frame
    needs it (one copy).
    """

    def __init__(self, plan: FramePlan) -> None:
        self.plan = plan
        self.array: np.ndarray | None = None
        self.counts: dict[int, int] = {}

    def put(self, position: int, labels: np.ndarray) -> None:
        """Store frame ``position``'s labels (in frame order: see ``plan.frames()``)."""
        count = int(labels.max(initial=0))
        self.counts[int(position)] = count
        # Not uint8: the layer is corrected by hand, and 255 ids run out fast.
        dtype = label_dtype(max(self.counts.values()), at_least=np.uint16)
        if self.array is None:
            self.array = np.zeros(self.plan.labels_shape, dtype)
        elif self.array.dtype != dtype:
            self.array = self.array.astype(dtype)
        self.array[self.plan.index(position)] = labels

    def put_count(self, position: int, count: int) -> None:
        """Record frame ``position``'s object count whose labels are stored elsewhere (a
        result predicted block by block writes them to disk): no array is made."""
        self.counts[int(position)] = int(count)

    @property
    def count(self) -> int:
        """Objects in all frames."""
        return sum(self.counts.values())

    @property
    def complete(self) -> bool:
        """Whether every frame has its labels."""
        return len(self.counts) == self.plan.n_frames

    def __len__(self) -> int:
        return len(self.counts)


@dataclass
class PredictionResult:
    """Network outputs of every frame, kept to re-run post-processing cheaply.

    ``outputs`` holds the frames' outputs (within its byte budget in memory, the rest on
    disk); post-processing caches (``caches``, one per frame, None where not kept) take at
    most ``cache_bytes``; ``labels`` fills as frames arrive. ``model`` post-processes
    frames without a cache (large ones block by block); without it,
    :func:`instances_from_outputs` does. :func:`new_result` splits a memory cap between
    outputs and caches.
    """

    image_name: str
    plan: FramePlan
    mode: str
    params: PostprocessConfig
    outputs: FrameOutputCache = field(
        default_factory=lambda: FrameOutputCache(UNKNOWN_VIEWER_CAP // 2)
    )
    caches: list[dict | None] = field(default_factory=list)
    # The zoom the image got before the network, one or per axis (thresholds scale by it).
    zoom: float | tuple[float, ...] = 1.0
    sampling: tuple[float, ...] | None = None  # voxel size of the outputs, when known
    ndim: int = 2
    adaptations: list[str] = field(default_factory=list)  # distinct descriptions, in order
    model: SegmentationModel | None = None
    cache_bytes: int = UNKNOWN_VIEWER_CAP // 2
    labels: LabelStack = field(init=False)

    def __post_init__(self) -> None:
        self.labels = LabelStack(self.plan)

    def instance_params(self, params: PostprocessConfig) -> PostprocessConfig:
        """``params`` as applied to these outputs (sizes scaled by the zoom)."""
        return scale_postprocess(params, self.zoom, self.ndim)

    def frame_labels(
        self, outputs: np.ndarray, params: PostprocessConfig, cache: dict | None
    ) -> np.ndarray:
        """One frame's instance labels with ``params`` (as the model gives them)."""
        return frame_instances(
            outputs, params, self.mode, self.zoom, self.ndim, self.sampling, cache, self.model
        )

    @property
    def blockwise(self) -> bool:
        """Whether the frames were predicted block by block (no outputs kept); see
        :class:`~napari_live_unet.app.stored_labels.BlockPredictionResult`."""
        return False

    # What the predict widget may do with a result, decided here by its kind: the widget
    # asks, and never branches on how the prediction was made.

    @property
    def method_note(self) -> str:
        """How the frames are predicted, for the status line ("" when whole)."""
        return ""

    @property
    def outputs_note(self) -> str:
        """Why the network outputs can be neither shown nor re-thresholded live; "" when
        the result keeps them."""
        return ""

    @property
    def copy_note(self) -> str:
        """Why the labels cannot be copied to ground truth; "" when they can."""
        return ""

    def apply(self, event: object) -> bool:
        """Apply a prediction job's frame event on the main thread (labels, counts, how a
        frame was fitted); returns whether ``event`` was one."""
        if isinstance(event, FramePredicted):
            self.labels.put(event.position, event.labels)
            self.caches.append(event.cache)
        elif isinstance(event, FrameWritten):
            self.labels.put_count(event.position, event.count)
        elif isinstance(event, InputFitted):
            if event.text not in self.adaptations:
                self.adaptations.append(event.text)
        else:
            return False
        return True

    def release_unless_shown(self, shown: Callable[[Any], bool]) -> None:
        """Free what a replaced result holds on disk unless ``shown(array)`` says a layer
        still shows it (nothing here: outputs in memory go with the result)."""

    def summary(self) -> str:
        """Objects found, and how the image was fitted to the model, for the status line."""
        note = self.input_note()
        text = f"'{self.image_name}': {self.labels.count} object(s)."
        return text + (f" Input: {note}." if note else "")

    def input_note(self) -> str:
        """What was done to fit the image, for the status line ("" if unknown)."""
        if not self.adaptations:
            return ""
        more = " (first frame; frames differ)" if len(self.adaptations) > 1 else ""
        return self.adaptations[0] + more

    def labels_array(self) -> np.ndarray:
        """The labels of all frames, one array (the one napari shows; not a copy)."""
        array = self.labels.array
        if array is None:
            raise ValueError("no frame has labels yet")
        return array

    def output_arrays(self) -> tuple[Any, Any]:
        """Foreground probability and auxiliary map of all frames, float32, as lazy dask
        arrays: each frame is read from the output cache when it is looked at."""
        return (
            lazy_outputs(self.outputs, self.plan, 0),
            lazy_outputs(self.outputs, self.plan, 1),
        )

    def close(self) -> None:
        """Drop the outputs and their files on disk (for a result that is never shown)."""
        self.outputs.close()


def frame_instances(
    outputs: np.ndarray,
    params: PostprocessConfig,
    mode: str,
    zoom: float | tuple[float, ...],
    ndim: int,
    sampling: tuple[float, ...] | None,
    cache: dict | None = None,
    model: SegmentationModel | None = None,
) -> np.ndarray:
    """Instance labels of one frame's ``outputs``, as :meth:`SegmentationModel.instances`
    gives them.

    With a post-processing ``cache`` (kept for small frames only), or without a ``model``,
    :func:`instances_from_outputs` on the whole frame, with the sizes in ``params`` scaled
    by ``zoom``; otherwise ``model.instances``, which post-processes large frames block by
    block.
    """
    if cache is not None or model is None:
        scaled = scale_postprocess(params, zoom, ndim)
        return instances_from_outputs(outputs, mode, scaled, cache, sampling=sampling)
    return model.instances(outputs, params, zoom=zoom, voxel_size=sampling)


def lazy_outputs(cache: FrameOutputCache, plan: FramePlan, channel: int) -> Any:
    """Channel ``channel`` of the outputs of all frames as a dask array, float32, with one
    chunk per frame read from ``cache`` when computed."""
    import dask.array as da

    leading, spatial = plan.leading, plan.spatial

    def read(block_id: tuple[int, ...] | None = None) -> np.ndarray:
        assert block_id is not None  # dask passes it
        position = plan.position(tuple(block_id[: len(leading)]))
        frame = np.asarray(cache.get(position)[channel], np.float32)
        return frame.reshape((1,) * len(leading) + frame.shape)

    chunks = tuple((1,) * n for n in leading) + tuple((s,) for s in spatial)
    return da.map_blocks(
        read,
        chunks=chunks,
        dtype=np.float32,
        meta=np.empty((0,) * (len(leading) + len(spatial)), np.float32),
        name=f"live-unet-outputs-{channel}-{uuid.uuid4().hex}",
    )


def new_result(
    image_name: str,
    plan: FramePlan,
    model: SegmentationModel,
    params: PostprocessConfig,
    zoom: float | tuple[float, ...],
    sampling: tuple[float, ...] | None,
    cap: int | None = None,
) -> PredictionResult:
    """An empty result for predicting ``plan``'s frames with ``model``.

    Parameters
    ----------
    cap : int, optional
        Bytes the result may keep in memory (default: :func:`memory_cap`): half for the
        outputs held in memory (the others spill to disk), half for post-processing caches.
    """
    cap = memory_cap() if cap is None else max(0, int(cap))
    return PredictionResult(
        image_name,
        plan,
        model.config.mode,
        params,
        FrameOutputCache(cap - cap // 2),
        zoom=zoom,
        sampling=sampling,
        ndim=model.config.ndim,
        model=model,
        cache_bytes=cap // 2,
    )
