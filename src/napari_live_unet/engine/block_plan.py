"""How an image too large for memory is cut into blocks for prediction under a memory cap.

Block-by-block prediction (:mod:`.block_predict`) reads each block with a margin (the
network's receptive radius plus the post-processing halo), predicts and post-processes it,
and writes only its core. This module decides which array axes are frames, channels and
space (:class:`FrameLayout`), what a block costs (:func:`block_bytes`), and the core
shape: whole storage chunks, as many as a block's share of the memory budget
(:class:`~napari_live_unet.engine.memory_budget.MemoryBudget`) allows (:func:`plan_core`),
so that blocks written in parallel never share an output chunk.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InputError, MemoryLimitError
from .memory_estimate import format_bytes

BYTES_PER_BLOCK_PIXEL = 64
"""Working memory per pixel of a block read with its margin, one channel, beside the
network's own share: the image as float32 and its normalised copy, float16 outputs,
post-processing's maps (about 45 bytes, see ``postprocess.instances_from_outputs``) and
the labels. Measured: 49-55 bytes per pixel of peak RSS (``VmHWM``) above the process's
start and the network's share, for one 2048² and one 3072² block of the starter model."""

BYTES_PER_CHANNEL_PIXEL = 8
"""Extra working memory per pixel for each input channel beyond the first."""

MAX_CORE_PIXELS = 2**22
"""Cores grow no larger than this (2048², or 64 x 256² in 3D) even when memory allows:
post-processing costs more per pixel on larger regions (8192²: 0.40 µs per pixel whole,
0.16 block by block), and smaller blocks keep the network busy while the previous one is
post-processed. One 8192² image: 2.29 MP/s with 2048² cores against 1.48 with the whole
image as one block (``benchmarks/large_predict.py``)."""


@dataclass(frozen=True)
class FrameLayout:
    """Which axes of a stored image are frames, channels and the model's spatial axes.

    Attributes
    ----------
    axes : str
        One letter per array axis (``t c z y x``, ``q`` unknown).
    frame_axes : tuple of int
        Axes iterated over, one frame at a time (time; z for a 2D model; unknown axes).
    channel_axis : int or None
        The channel axis, if any.
    spatial_axes : tuple of int
        The model's spatial axes, in array order.
    """

    axes: str
    frame_axes: tuple[int, ...]
    channel_axis: int | None
    spatial_axes: tuple[int, ...]

    @classmethod
    def of(cls, axes: str, ndim: int, name: str = "image") -> FrameLayout:
        """The layout of an image with ``axes`` for a model of ``ndim`` spatial axes.

        A 3D model takes z; without a z axis, the unknown axis (``q``) just before y is
        read as z. A 2D model segments every z slice (and time point) as a frame.

        Raises
        ------
        InputError
            If the image lacks the model's spatial axes or has its axes out of order.
        """
        axes = axes.lower()
        wanted = "zyx"[3 - ndim :]
        letters = list(axes)
        if ndim == 3 and "z" not in letters and "y" in letters:
            before = letters.index("y") - 1
            if before >= 0 and letters[before] == "q":
                letters[before] = "z"
        missing = [a for a in wanted if a not in letters]
        if missing or len(axes) != len(set(a for a in axes if a != "q")) + axes.count("q"):
            raise InputError(
                f"{name} has axes '{axes}', but the model segments {ndim}D images "
                f"(axes '{wanted}'): "
                + ("use a 2D model" if ndim == 3 else "the image needs y and x axes")
            )
        spatial = tuple(letters.index(a) for a in wanted)
        if list(spatial) != sorted(spatial):
            raise InputError(
                f"{name} has axes '{axes}': the spatial axes must be stored in the order "
                f"'{wanted}'; re-save the image with that order"
            )
        channel = letters.index("c") if "c" in letters else None
        frames = tuple(i for i in range(len(letters)) if i not in spatial and i != channel)
        return cls(axes, frames, channel, spatial)

    def spatial_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The spatial part of an array shape."""
        return tuple(int(shape[a]) for a in self.spatial_axes)

    def frames(self, shape: Sequence[int]) -> Iterator[tuple[int, ...]]:
        """Index of every frame into the frame axes, in order (one empty index when none)."""
        return itertools.product(*(range(int(shape[a])) for a in self.frame_axes))

    def index(self, frame: Sequence[int], box: Sequence[slice]) -> tuple:
        """Array index of ``box`` (spatial slices) in ``frame``, all channels."""
        index: list = [slice(None)] * len(self.axes)
        for a, i in zip(self.frame_axes, frame, strict=True):
            index[a] = int(i)
        for a, s in zip(self.spatial_axes, box, strict=True):
            index[a] = s
        return tuple(index)

    def read(self, array, frame: Sequence[int], box: Sequence[slice]) -> tuple[np.ndarray, int]:
        """Read one block: the data with its channels first or (RGB) last, and the channel
        axis of the result to pass to ``SegmentationModel.adapt_image``."""
        data = np.asarray(array[self.index(frame, box)])
        if self.channel_axis is None:
            return data[np.newaxis], 0
        position = sum(1 for a in self.kept_axes if a < self.channel_axis)
        if position == data.ndim - 1 and data.shape[-1] in (3, 4):
            return data, data.ndim - 1  # colour last: read as RGB(A)
        return np.moveaxis(data, position, 0), 0

    @property
    def kept_axes(self) -> tuple[int, ...]:
        """The array axes a block read keeps (channel and space), in array order."""
        return tuple(i for i in range(len(self.axes)) if i not in self.frame_axes)

    def n_channels(self, shape: Sequence[int]) -> int:
        return 1 if self.channel_axis is None else int(shape[self.channel_axis])


def block_bytes(read_shape: Sequence[int], channels: int = 1) -> int:
    """Working memory of one block read with shape ``read_shape`` (spatial)."""
    per_pixel = BYTES_PER_BLOCK_PIXEL + BYTES_PER_CHANNEL_PIXEL * max(0, channels - 1)
    return math.prod(read_shape) * per_pixel


def plan_core(
    spatial: Sequence[int],
    chunks: Sequence[int],
    margins: Sequence[int],
    budget: int,
    channels: int = 1,
    name: str = "image",
    read_chunks: Sequence[int] | None = None,
    itemsize: int = 1,
) -> tuple[int, ...]:
    """The core shape of the blocks: whole chunks, grown while a block fits ``budget``.

    Parameters
    ----------
    spatial : sequence of int
        The image's spatial shape.
    chunks : sequence of int
        Output chunk shape per spatial axis; cores are multiples of it.
    margins : sequence of int
        What each block reads beyond its core on each side, per axis.
    budget : int
        Working memory one block may take (:func:`block_bytes` of its read shape).
    channels : int
        Input channels.
    name : str
        The image, for messages.
    read_chunks : sequence of int, optional
        The input's storage chunks per spatial axis (default ``chunks``): a block read
        decodes every chunk it touches whole.
    itemsize : int
        Bytes per input pixel and channel.

    Returns
    -------
    tuple of int
        The core shape, at most :data:`MAX_CORE_PIXELS` unless one chunk is larger; the
        last blocks along an axis may be smaller.

    Raises
    ------
    MemoryLimitError
        If one chunk with its margins does not fit the budget.
    """
    spatial = tuple(int(s) for s in spatial)
    chunks = tuple(min(int(c), s) for c, s in zip(chunks, spatial, strict=True))
    stored = tuple(min(int(c), s) for c, s in zip(read_chunks or chunks, spatial, strict=True))

    def cost(core: tuple[int, ...]) -> int:
        read = [min(s, c + 2 * m) for s, c, m in zip(spatial, core, margins, strict=True)]
        # The chunks a read touches (at worst one more per axis) are decoded whole.
        decoded = [
            min(s, (-(-r // c) + 1) * c) for s, r, c in zip(spatial, read, stored, strict=True)
        ]
        return block_bytes(read, channels) + math.prod(decoded) * itemsize * channels

    core = chunks
    if cost(core) > budget:
        raise MemoryLimitError(
            cost(core),
            budget,
            f"{name}: its storage chunks {stored} need {format_bytes(cost(core))} per block "
            f"with margins, more than the {format_bytes(budget)} the memory limit leaves a "
            "block.",
            rechunk=True,
        )
    while True:
        grown = [
            (*core[:a], min(spatial[a], core[a] + chunks[a]), *core[a + 1 :])
            for a in range(len(core))
            if core[a] < spatial[a]
        ]
        grown = [g for g in grown if cost(g) <= budget and math.prod(g) <= MAX_CORE_PIXELS]
        if not grown:
            return core
        core = min(grown, key=lambda g: (max(g), cost(g)))


def default_chunks(spatial: Sequence[int]) -> tuple[int, ...]:
    """Output chunks for inputs without a useful chunking (TIFF strips, numpy arrays)."""
    edge = (64, 256, 256) if len(spatial) == 3 else (1024, 1024)
    return tuple(min(e, int(s)) for e, s in zip(edge, spatial, strict=True))
