"""The typed events of the prediction jobs, which the predict widget applies on the main
thread (:meth:`~.prediction_result.PredictionResult.apply`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


@dataclass(frozen=True)
class FrameWritten:
    """Frame ``position`` (in frame order) is complete in the result's stored labels, with
    ``count`` objects (ids 1..count)."""

    position: int
    count: int
