"""Instance labels for images larger than memory: predict and post-process block by block.

Each frame of a stored image (a zarr array, a TIFF read through tifffile's zarr store, or
any array with numpy slicing) is cut into blocks of whole output chunks
(:func:`~napari_live_unet.engine.block_plan.plan_core`). One block task reads its core with
a margin (the network's receptive radius plus the post-processing halo), runs the network
on it, post-processes the core plus halo (:func:`~napari_live_unet.engine.blockwise.
segment_block`), writes the core's local ids into the output and returns a small summary.
Summaries of a frame are merged across block faces
(:func:`~napari_live_unet.engine.blockwise.merge_blocks`), and a last pass rewrites each
block with final ids 1..N. What is fitted per image in the whole-image path (polarity,
normalisation percentiles) is decided once per frame from a strided sample read chunk by
chunk (:func:`survey_frame`), so every block sees the same fit.

The tasks are plain functions of picklable arguments: :class:`LocalBlocks` runs them in
this process (the network on one block while a thread post-processes the previous one);
:mod:`.dask_blocks` runs the same tasks on a ``dask.distributed`` cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .block_plan import FrameLayout
from .blockwise import BlockLabels, block_grid, merge_blocks, segment_block
from .config import PostprocessConfig
from .errors import InputError
from .image_adapter import Adaptation, AdaptOptions, invert_range
from .model import SegmentationModel
from .normalize import channel_percentiles
from .tile_plan import context_margin
from .voxel_zoom import combined_zoom

SURVEY_SAMPLES = 4_000_000
"""Pixels of the strided sample from which a frame's polarity and percentiles are taken
(as ``channel_percentiles`` samples a whole image)."""


@dataclass(frozen=True)
class FrameFit:
    """How every block of one frame is fitted to the network (decided once per frame)."""

    options: AdaptOptions
    intensity_range: tuple[np.ndarray, np.ndarray]
    zoom: float | tuple[float, ...]
    note: str
    adaptation: Adaptation | None = None


@dataclass(frozen=True)
class BlockJob:
    """What every block task of one image needs; picklable, sent once per task.

    Attributes
    ----------
    layout : FrameLayout
        Frames, channels and spatial axes of the stored image.
    spatial : tuple of int
        The frame's spatial shape.
    core : tuple of int
        Core shape of the blocks (whole output chunks).
    margin : tuple of int
        What a block reads beyond its core for the network (its receptive radius).
    halo : tuple of int
        What a block post-processes beyond its core.
    mode : str
        The model's output mode.
    params : PostprocessConfig
        Thresholds, sizes scaled to the image's pixels.
    sampling : tuple of float or None
        Voxel size of the outputs.
    tile_shape, batch_size, max_tile_bytes
        Network tiling inside a block (see ``predict_stream``).
    """

    layout: FrameLayout
    spatial: tuple[int, ...]
    core: tuple[int, ...]
    margin: tuple[int, ...]
    halo: tuple[int, ...]
    mode: str
    params: PostprocessConfig
    sampling: tuple[float, ...] | None
    tile_shape: tuple[int, ...] | None = None
    batch_size: int = 8
    max_tile_bytes: int | None = None

    def cores(self) -> list[tuple[slice, ...]]:
        """Every block's core, in raster order."""
        return block_grid(self.spatial, self.core)


def plan_job(
    model: SegmentationModel,
    layout: FrameLayout,
    spatial: tuple[int, ...],
    core: tuple[int, ...],
    fit_zoom: float | tuple[float, ...],
    voxel_size: tuple[float, ...] | None,
    **tiling: Any,
) -> BlockJob:
    """The :class:`BlockJob` for an image whose blocks are ``core`` large.

    ``fit_zoom`` is the zoom the image gets before the network (object size and voxel
    size); ``tiling`` holds ``tile_shape``, ``batch_size`` and ``max_tile_bytes``.
    """
    params, sampling, halo = model.postprocess_plan(fit_zoom, voxel_size)
    margin = block_margins(model, fit_zoom)
    return BlockJob(
        layout,
        spatial,
        core,
        margin,
        tuple(min(halo, s) for s in spatial),
        model.config.mode,
        params,
        sampling,
        **tiling,
    )


def block_margins(model: SegmentationModel, zoom: float | tuple[float, ...]) -> tuple[int, ...]:
    """The network's receptive radius per axis in the image's pixels (zoom undone)."""
    multiples = model.config.size_multiples
    ndim = model.config.ndim
    multiples = (multiples,) * ndim if isinstance(multiples, int) else tuple(multiples)
    radius = context_margin(model.network, multiples)
    zooms = (zoom,) * ndim if isinstance(zoom, int | float) else tuple(zoom)
    return tuple(int(np.ceil(r / z)) for r, z in zip(radius, zooms, strict=True))


def survey_frame(
    model: SegmentationModel,
    array: Any,
    layout: FrameLayout,
    frame: tuple[int, ...],
    cores: Sequence[tuple[slice, ...]],
    options: AdaptOptions,
) -> FrameFit:
    """Decide polarity and normalisation of one frame from a strided sample.

    The sample takes every ``s``-th pixel along each spatial axis (``s`` so that it holds
    about :data:`SURVEY_SAMPLES` pixels), read block by block over ``cores``: memory stays
    that of one block plus the sample.
    """
    spatial = layout.spatial_shape(array.shape)
    stride = max(1, int(np.ceil((np.prod(spatial) / SURVEY_SAMPLES) ** (1 / len(spatial)))))
    pieces: list[tuple[tuple[int, ...], np.ndarray]] = []
    channel_axis = 0
    for core in cores:
        first = [(-c.start) % stride for c in core]
        box = tuple(slice(c.start + f, c.stop, stride) for c, f in zip(core, first, strict=True))
        if any(b.start >= b.stop for b in box):
            continue
        data, channel_axis = layout.read(array, frame, box)
        pieces.append((tuple((b.start // stride) for b in box), data))
    shape = tuple(-(-s // stride) for s in spatial)
    sample_shape, spatial_at = _sample_shape(pieces[0][1], shape, channel_axis)
    sample = np.zeros(sample_shape, pieces[0][1].dtype)
    for start, data in pieces:
        index: list = [slice(None)] * sample.ndim
        for axis, s, n in zip(spatial_at, start, _spatial_of(data, channel_axis), strict=True):
            index[axis] = slice(s, s + n)
        sample[tuple(index)] = data
    data, _, adaptation = model.adapt_image(sample, options, channel_axis=channel_axis)
    fitted = replace(options, polarity=adaptation.polarity)
    low, high = channel_percentiles(data, model.normalization)
    # Blocks get the range before inversion: adapt_image inverts it with the block.
    stats = invert_range((low, high)) if adaptation.inverted else (low, high)
    assert stats is not None
    zoom = combined_zoom(adaptation.zoom, adaptation.voxel_zoom, model.config.ndim)
    return FrameFit(fitted, stats, zoom, adaptation.describe(), adaptation)


def _sample_shape(piece: np.ndarray, spatial: tuple[int, ...], channel_axis: int):
    """Shape of the whole sample and where its spatial axes are, given one piece."""
    if channel_axis == 0:
        return (piece.shape[0], *spatial), tuple(range(1, 1 + len(spatial)))
    return (*spatial, piece.shape[-1]), tuple(range(len(spatial)))


def _spatial_of(data: np.ndarray, channel_axis: int) -> tuple[int, ...]:
    return tuple(data.shape[1:]) if channel_axis == 0 else tuple(data.shape[:-1])


def predict_block(
    model: SegmentationModel,
    array: Any,
    job: BlockJob,
    frame: tuple[int, ...],
    fit: FrameFit,
    core: tuple[slice, ...],
) -> np.ndarray:
    """Network outputs of one block's core plus halo, shape (2, *region), float16."""
    reach = tuple(h + m for h, m in zip(job.halo, job.margin, strict=True))
    read_box = _grow(core, reach, job.spatial)
    data, channel_axis = job.layout.read(array, frame, read_box)
    stream = model.predict_stream(
        [data],
        channel_axis=channel_axis,
        adapt=fit.options,
        intensity_ranges=[fit.intensity_range],
        tile_shape=job.tile_shape,
        batch_size=job.batch_size,
        max_tile_bytes=job.max_tile_bytes,
    )
    [outputs] = [item for item in stream if isinstance(item, np.ndarray)]
    keep = _grow(core, job.halo, job.spatial)
    inside = tuple(
        slice(k.start - r.start, k.stop - r.start) for k, r in zip(keep, read_box, strict=True)
    )
    return np.ascontiguousarray(outputs[(slice(None), *inside)])


def label_block(
    outputs: np.ndarray,
    job: BlockJob,
    frame: tuple[int, ...],
    core: tuple[slice, ...],
    out: Any,
) -> BlockLabels:
    """Post-process one block's outputs (core plus halo), write the core's local ids into
    ``out`` at ``frame`` and return the summary for merging (``labels`` None, ``core`` in
    the frame's coordinates)."""
    keep = _grow(core, job.halo, job.spatial)
    local_core = tuple(
        slice(c.start - k.start, c.stop - k.start) for c, k in zip(core, keep, strict=True)
    )
    block = segment_block(
        outputs, local_core, job.halo, job.mode, job.params, sampling=job.sampling
    )
    assert block.labels is not None
    out[(*frame, *core)] = block.labels.astype(out.dtype, copy=False)
    return replace(block, core=core, labels=None)


def relabel_block(out: Any, frame: tuple[int, ...], core: tuple[slice, ...], lut: np.ndarray):
    """Rewrite one block of ``out`` from local ids to final ids."""
    index = (*frame, *core)
    out[index] = lut[np.asarray(out[index])].astype(out.dtype, copy=False)


def final_ids(
    blocks: Iterable[BlockLabels], min_size: int
) -> tuple[list[tuple[slice, ...]], list[np.ndarray], int]:
    """Merge one frame's block summaries: the cores, their lookup tables, the count.

    Blocks are put in raster order first, so the ids do not depend on the order in which
    tasks finished (a cluster returns them as they come).
    """
    ordered = sorted(blocks, key=lambda b: tuple(s.start for s in b.core))
    luts, count = merge_blocks(ordered, min_size)
    return [b.core for b in ordered], luts, count


def _grow(core: tuple[slice, ...], reach: Sequence[int], spatial: Sequence[int]):
    return tuple(
        slice(max(0, c.start - r), min(n, c.stop + r))
        for c, r, n in zip(core, reach, spatial, strict=True)
    )


class LocalBlocks:
    """Runs block tasks in this process: the network on one block while a thread
    post-processes the previous one (scikit-image and scipy release the GIL).

    One post-processing thread serves every frame (:meth:`close` ends it): a new thread
    per frame made glibc spread freed memory over new arenas, and a 100-frame series
    peaked 290 MB above a 10-frame one.
    """

    def __init__(self, model: SegmentationModel, array: Any, out: Any) -> None:
        self.model, self.array, self.out = model, array, out
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="post-processing")

    def close(self) -> None:
        """End the post-processing thread."""
        self._pool.shutdown()

    def label_frame(
        self,
        job: BlockJob,
        frame: tuple[int, ...],
        fit: FrameFit,
    ) -> Iterator[BlockLabels]:
        """Summaries of every block of ``frame``, in raster order, each as soon as it is
        written. Closing the iterator early waits for the block in flight, so nothing is
        written after it is closed."""
        pending: Future[BlockLabels] | None = None
        try:
            for core in job.cores():
                outputs = predict_block(self.model, self.array, job, frame, fit, core)
                future = self._pool.submit(label_block, outputs, job, frame, core, self.out)
                del outputs
                if pending is not None:
                    yield pending.result()
                pending = future
            if pending is not None:
                yield pending.result()
                pending = None
        finally:
            if pending is not None:  # stopped early: no write may follow the caller's exit
                pending.exception()

    def relabel_frame(self, frame, cores, luts) -> None:
        """Write the final ids of every block of ``frame``."""
        for core, lut in zip(cores, luts, strict=True):
            relabel_block(self.out, frame, core, lut)


def check_label_room(count: int, out: Any, name: str) -> None:
    """Raise :class:`InputError` when ``out`` cannot hold ``count`` labels."""
    top = np.iinfo(np.dtype(out.dtype)).max
    if count > top:
        raise InputError(f"{name}: {count} objects do not fit the output's {out.dtype} labels")
