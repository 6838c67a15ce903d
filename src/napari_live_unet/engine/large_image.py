"""Segment one stored image frame by frame and block by block under a memory limit.

:func:`segment_stored` ties the pieces together for one image: it takes a memory budget
(:class:`~napari_live_unet.engine.memory_budget.MemoryBudget`), sizes the blocks to whole
output chunks (:func:`~napari_live_unet.engine.block_plan.plan_core`), and for each frame
surveys the fit, labels every block (in this process or on a cluster), merges the pieces
across block faces and writes the final ids. Nothing here holds a whole frame.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .block_plan import FrameLayout, plan_core
from .block_predict import (
    BlockJob,
    FrameFit,
    LocalBlocks,
    check_label_room,
    final_ids,
    plan_job,
    survey_frame,
)
from .blockwise import BlockLabels
from .errors import MemoryLimitError
from .image_adapter import AUTO_FIT, AdaptOptions
from .memory_budget import MemoryBudget
from .memory_estimate import format_bytes
from .model import SegmentationModel
from .prediction_events import BlockDone, FrameDone, FrameFitted

SMALLEST_CHUNK = 64
"""Output chunks chosen to fit the memory limit (``plan_image(fit_chunks=True)``) are
not halved below this edge."""


class BlockRunner(Protocol):
    """Where block tasks run: :class:`~.block_predict.LocalBlocks` or a dask cluster."""

    def label_frame(
        self,
        job: BlockJob,
        frame: tuple[int, ...],
        fit: FrameFit,
    ) -> Iterator[BlockLabels]: ...

    def relabel_frame(self, frame, cores, luts) -> None: ...


@dataclass(frozen=True)
class ImagePlan:
    """The blocks of one image and what each frame shares."""

    job: BlockJob
    frames: list[tuple[int, ...]]
    options: AdaptOptions
    chunks: tuple[int, ...] = ()
    """The output chunks the cores are made of (``out_chunks``, or smaller ones that fit
    when :func:`plan_image` may choose them)."""

    @property
    def blocks_per_frame(self) -> int:
        return len(self.job.cores())


def plan_image(
    model: SegmentationModel,
    shape: tuple[int, ...],
    layout: FrameLayout,
    memory: MemoryBudget,
    out_chunks: tuple[int, ...],
    *,
    read_chunks: tuple[int, ...] | None = None,
    itemsize: int = 1,
    adapt: AdaptOptions = AUTO_FIT,
    voxel_size: tuple[float, ...] | None = None,
    tile_shape: tuple[int, ...] | None = None,
    batch_size: int = 8,
    name: str = "image",
    fit_chunks: bool = False,
) -> ImagePlan:
    """Plan the blocks of an image of ``shape`` (the stored array's) before reading it.

    With ``fit_chunks`` the output chunks are the caller's choice, not the input's storage
    (e.g. for a TIFF): when one with its margins does not fit a block's share, they are
    halved (down to :data:`SMALLEST_CHUNK`) until one does. When even the smallest do
    not, the error says whether the input's storage chunks are to blame ("Rechunk") or
    the limit itself.

    Raises
    ------
    InputError
        If the image does not fit the model's dimensions.
    MemoryLimitError
        If one output or input chunk with its margins does not fit the budget's share for a
        block.
    """
    options = dataclasses.replace(adapt, voxel_size=voxel_size or adapt.voxel_size)
    model.voxel_zoom(options.voxel_size)  # refuses a wrong number of axes
    zoom = model.image_zoom(options.diameter, options.voxel_size)
    spatial = layout.spatial_shape(shape)
    probe = plan_job(model, layout, spatial, spatial, zoom, options.voxel_size)
    reach = tuple(h + m for h, m in zip(probe.halo, probe.margin, strict=True))
    chunks = tuple(int(c) for c in out_chunks)
    while True:
        try:
            core = plan_core(
                spatial,
                chunks,
                reach,
                memory.per_block,
                layout.n_channels(shape),
                name,
                read_chunks=read_chunks or out_chunks,
                itemsize=itemsize,
            )
            break
        except MemoryLimitError as exc:
            if not fit_chunks:
                raise
            if max(chunks) <= SMALLEST_CHUNK:
                if read_chunks is not None and _fits(
                    spatial, chunks, reach, memory, layout.n_channels(shape), itemsize
                ):
                    raise  # small blocks would fit but the input's storage chunks do not
                raise MemoryLimitError(
                    exc.need,
                    memory.per_block,
                    f"{name}: even its smallest blocks ({' x '.join(map(str, chunks))} pixels "
                    "with the margins the model needs) do not fit what the memory limit "
                    f"leaves a block ({format_bytes(memory.per_block)}).",
                ) from None
            chunks = tuple(max(min(c, SMALLEST_CHUNK), c // 2) for c in chunks)
    job = dataclasses.replace(
        probe,
        core=core,
        tile_shape=tile_shape,
        batch_size=batch_size,
        max_tile_bytes=memory.network,
    )
    return ImagePlan(job, list(layout.frames(shape)), options, chunks)


def _fits(spatial, chunks, reach, memory: MemoryBudget, channels: int, itemsize: int) -> bool:
    """Whether blocks of ``chunks`` would fit if the input were stored in such chunks."""
    try:
        plan_core(spatial, chunks, reach, memory.per_block, channels, itemsize=itemsize)
    except MemoryLimitError:
        return False
    return True


def segment_stored(
    model: SegmentationModel,
    array: Any,
    plan: ImagePlan,
    out: Any,
    *,
    runner: BlockRunner | None = None,
    stop: threading.Event | None = None,
    name: str = "image",
) -> Iterator[BlockDone | FrameFitted | FrameDone]:
    """Write instance labels of every frame of ``array`` into ``out``, frame by frame.

    The block path of :class:`~napari_live_unet.engine.predictor.Predictor`.

    Parameters
    ----------
    model : SegmentationModel
        The model (used here for the survey of each frame; the runner has its own copy).
    array : array-like
        The stored image (numpy slicing, read block by block).
    plan : ImagePlan
        From :func:`plan_image`.
    out : array-like
        Unsigned integer array of shape ``frame axes + spatial`` (a zarr array), written
        block by block: local ids first, final ids 1..N per frame after each frame.
    runner : BlockRunner, optional
        Where blocks run; by default in this process.
    stop : threading.Event, optional
        Checked after each block; once set, the generator ends after the block in
        flight (nothing is written after it ends; the frame in progress is left with
        local ids, and no :class:`FrameDone` says it is complete).
    name : str
        The image, for messages.

    Yields
    ------
    FrameFitted, BlockDone, FrameDone
        Each frame's fit (decided before its first block), a :class:`BlockDone` after
        each block (counting the blocks of all frames), and a :class:`FrameDone` (with
        its object count; no outputs or labels) once the frame is complete in ``out``.
    """
    local = LocalBlocks(model, array, out) if runner is None else None
    runner = runner or local
    assert runner is not None
    job = plan.job
    cores = job.cores()
    total, done = len(cores) * len(plan.frames), 0
    try:
        for position, frame in enumerate(plan.frames):
            if stop is not None and stop.is_set():
                return
            fit = survey_frame(model, array, job.layout, frame, cores, plan.options)
            yield FrameFitted(position, fit.note, fit.adaptation)
            summaries = []
            blocks = runner.label_frame(job, frame, fit)
            try:
                for summary in blocks:
                    if stop is not None and stop.is_set():
                        return
                    summaries.append(summary)
                    done += 1
                    yield BlockDone(done, total)
                    if stop is not None and stop.is_set():
                        return
            finally:
                close = getattr(blocks, "close", None)
                if close is not None:  # waits for the block in flight
                    close()
            ordered, luts, count = final_ids(summaries, job.params.min_size)
            check_label_room(count, out, name)
            runner.relabel_frame(frame, ordered, luts)
            release_freed_memory()
            yield FrameDone(position, frame, None, None, count)
    finally:
        if local is not None:
            local.close()


def release_freed_memory() -> None:
    """Hand memory freed by the last frame back to the operating system.

    glibc keeps freed blocks in its heap arenas for reuse; after each frame's blocks (each
    tens of MB, allocated and freed in two threads) that left a 100-frame series peaking
    about 150 MB above a 10-frame one. Elsewhere than glibc this does nothing.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def labels_shape(shape: tuple[int, ...], layout: FrameLayout) -> tuple[int, ...]:
    """Shape of the labels of an image: its frame axes, then its spatial axes."""
    return tuple(int(shape[a]) for a in layout.frame_axes) + layout.spatial_shape(shape)


def labels_axes(layout: FrameLayout) -> str:
    """Axis letters of the labels (frame axes then spatial), e.g. ``tyx``."""
    letters = [layout.axes[a] for a in layout.frame_axes]
    spatial = "zyx"[3 - len(layout.spatial_axes) :]
    return "".join(letters) + spatial
