"""Doubt assessed in the prediction worker: after each frame is predicted, its flipped copies
are predicted too and the engine (:func:`~napari_live_unet.engine.doubt.doubt_from_outputs`)
says how much the model doubts each pixel and each object.

No Qt here, and no layer is read or written: :func:`with_doubt` wraps a prediction job (a
generator of events, :mod:`.prediction_job`) into one that also yields a
:class:`FrameDoubt` per frame, and :func:`rescore_job` ranks the objects again after a
threshold change from the kept outputs; the predict widget applies their events on the
main thread.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine.config import PostprocessConfig
from ..engine.doubt import DoubtReport, doubt_from_outputs
from ..engine.image_adapter import AdaptOptions
from ..engine.model import SegmentationModel
from ..engine.output_cache import FrameOutputCache
from ..engine.predict import TilesDone
from .prediction_job import FramePlan, FramePredicted, PredictionProgress
from .prediction_result import PredictionResult

Job = Callable[[threading.Event], Iterator[Any]]

FLIPS: tuple[tuple[int, ...], ...] = ((-1,), (-2,), (-2, -1))
"""The flips of a frame's y and x axes predicted for its doubt, as
:func:`~napari_live_unet.engine.doubt.assess_doubt` flips (x, y, both)."""

DOUBT_MAX_PIXELS = 2**25
"""Most pixels (all frames together) whose doubt is assessed: the doubt map of all frames is
one float32 array in the viewer (128 MiB at this size)."""


@dataclass(frozen=True)
class FrameDoubt:
    """The doubt report of frame ``position`` (in frame order)."""

    position: int
    report: DoubtReport


def doubt_skip_reason(plan: FramePlan, blockwise: bool, data: Any = None) -> str:
    """Why the doubt of a prediction is not assessed ("" when it is)."""
    if data is not None and not isinstance(data, np.ndarray) and plan.n_frames > 1:
        # Doubt reads each frame again to flip it: a lazily read (dask, Zarr) series
        # would be read from storage twice.
        return (
            "Doubt not assessed: the frames are read from storage as they are predicted; "
            "predict a frame or a crop held in memory to see where the model doubts."
        )
    if blockwise:
        return (
            "Doubt not assessed: the image was predicted block by block (too large to hold "
            "whole); predict a crop of it to see where the model doubts."
        )
    pixels = plan.n_frames * math.prod(plan.spatial)
    if pixels > DOUBT_MAX_PIXELS:
        return (
            f"Doubt not assessed: {pixels / 1e6:.0f} million pixels is more than "
            f"{DOUBT_MAX_PIXELS / 1e6:.0f} million; predict fewer frames or a crop."
        )
    return ""


def frame_doubt(
    result: PredictionResult,
    outputs: np.ndarray,
    labels: np.ndarray,
    flipped: Sequence[np.ndarray],
    params: PostprocessConfig,
) -> DoubtReport:
    """One frame's doubt: its outputs and ``labels`` against the ``flipped`` outputs
    (flipped back), whose labels are made here with the same thresholds ``params``."""
    scaled = result.instance_params(params)  # sizes in the image's pixels
    return doubt_from_outputs(
        outputs,
        labels,
        result.mode,
        flipped_outputs=flipped,
        flipped_labels=[result.frame_labels(other, params, None) for other in flipped],
        fg_threshold=scaled.fg_threshold,
        min_size=scaled.min_size,
    )


def with_doubt(
    job: Job,
    model: SegmentationModel,
    data: Any,
    result: PredictionResult,
    adapt: AdaptOptions | None,
    flips: FrameOutputCache | None = None,
) -> Job:
    """``job`` (a :func:`~.prediction_job.prediction_job` filling ``result``) that also
    assesses each frame's doubt, in the same worker.

    After each :class:`FramePredicted`, the frame is read again and its :data:`FLIPS` are
    predicted (one stream, so their tiles share batches); :func:`frame_doubt` compares
    them with the frame's outputs and a :class:`FrameDoubt` follows. Progress counts the
    flipped tiles too, so the bar keeps moving. The frame's outputs come from the event,
    or from the result's output cache when the job put them there. With ``flips``, the
    flipped outputs are kept there (stacked, per frame) for :func:`rescore_job`.
    """
    plan, params = result.plan, result.params
    first = 1 if plan.channel_axis == 0 else 0  # spatial axes of a frame as it is read
    spatial = tuple(range(first, first + model.config.ndim))
    share = 1 + len(FLIPS)  # predictions per frame

    def run(stop: threading.Event) -> Iterator[Any]:
        extra = 0  # flipped tiles done so far
        done, total = 0, 1  # the plain prediction's progress
        for event in job(stop):
            if isinstance(event, PredictionProgress):
                done, total = event.done, event.total
                yield PredictionProgress(done + extra, total * share)
                continue
            yield event
            if not isinstance(event, FramePredicted) or stop.is_set():
                continue
            frame = np.asarray(data[event.index])
            copies = (np.flip(frame, tuple(spatial[a] for a in axes)).copy() for axes in FLIPS)
            flipped: list[np.ndarray] = []
            before = extra
            # Each flip predicted once: a model that averages flips would make them alike.
            for item in model.without_flip_average().predict_stream(
                copies, channel_axis=plan.channel_axis, adapt=adapt, stop=stop
            ):
                if isinstance(item, TilesDone):
                    extra = before + item.done
                    yield PredictionProgress(done + extra, max(done + extra, total * share))
                elif isinstance(item, np.ndarray):  # (2, *spatial): flipped back
                    flipped.append(np.ascontiguousarray(np.flip(item, FLIPS[len(flipped)])))
            if stop.is_set() or len(flipped) < len(FLIPS):
                return
            if flips is not None:
                flips.put(event.position, np.stack(flipped))
            outputs = event.outputs
            if outputs is None:
                outputs = result.outputs.get(event.position)
            report = frame_doubt(result, outputs, event.labels, flipped, params)
            yield FrameDoubt(event.position, report)

    return run


def rescore_job(
    result: PredictionResult,
    flips: FrameOutputCache,
    labels: np.ndarray,
    params: PostprocessConfig,
    stop: threading.Event,
) -> Iterator[FrameDoubt]:
    """The doubt of every frame of ``result`` again, for its new ``labels`` (all frames, a
    copy the main thread made) made with thresholds ``params``; a job for a worker.

    Nothing is predicted: each frame's outputs and its kept flipped outputs are read back
    from their caches (:func:`with_doubt` filled ``flips``), and only the flipped labels
    are made again. Ends early once ``stop`` is set.
    """
    plan = result.plan
    for position in range(plan.n_frames):
        if stop.is_set():
            return
        outputs, flipped = result.outputs.get(position), list(flips.get(position))
        frame_labels = labels[plan.index(position)]
        yield FrameDoubt(position, frame_doubt(result, outputs, frame_labels, flipped, params))
