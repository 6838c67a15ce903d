"""Typed events of a prediction (plain data: no Qt, no napari).

:meth:`~napari_live_unet.engine.predictor.Predictor.run` yields them in one thread, in
this order for each frame: a :class:`FrameFitted` when the frame was fitted to the
network, progress (:class:`TilesDone` after each batch of tiles when frames are predicted
whole, :class:`BlockDone` after each block when they go block by block), then a
:class:`FrameDone` once the frame's outputs or labels are complete. Frames predicted whole
in one stream share batches of tiles, so a frame's :class:`FrameFitted` may come before
the previous frame's :class:`FrameDone`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .image_adapter import Adaptation


@dataclass(frozen=True)
class TilesDone:
    """Progress of a tiled prediction: ``done`` tiles of the ``total`` planned so far."""

    done: int
    total: int


@dataclass(frozen=True)
class BlockDone:
    """Progress block by block: ``done`` blocks of the ``total`` of all frames."""

    done: int
    total: int


@dataclass(frozen=True)
class FrameFitted:
    """Frame ``position`` (in frame order) was fitted to the network.

    ``adaptation`` says what was done (None for images already in the network's terms);
    ``note`` says it for people (e.g. "inverted"), "" when nothing was done.
    """

    position: int
    note: str
    adaptation: Adaptation | None = None


@dataclass(frozen=True)
class FrameDone:
    """Frame ``position`` (in frame order; ``index`` into the frame axes) is complete.

    ``outputs`` are its network outputs, shape (2, *spatial), float16 (None when the frame
    went block by block); ``labels`` its instance labels (None when they were written to
    the sink, or when the predictor does not post-process); ``count`` its object count
    (0 when not post-processed).
    """

    position: int
    index: tuple[int, ...]
    outputs: Any
    labels: Any
    count: int = 0


PredictionEvent = TilesDone | BlockDone | FrameFitted | FrameDone
