"""Instance labels from network outputs, block by block, with seams resolved.

Whole-image post-processing (:func:`~napari_live_unet.engine.postprocess.instances_from_outputs`)
holds about 45 bytes per pixel at once. Here the image is cut into a grid of blocks; each
block is post-processed with a margin (the halo) read around it, and only its inner part
(the core) is kept. Objects cut by block borders then get one id each, as distributed
segmentation pipelines (cellpose's ``distributed_segmentation``, dask-image's
``ndmeasure.label``) do it: every block numbers its objects locally, the pieces that meet
across each block face are joined by union-find (connected components of a graph whose
nodes are (block, local id) pairs), and a last pass writes consecutive ids 1..N.

The work is split so that a caller can run the blocks in parallel: :func:`segment_block`
is a pure function of the outputs and one block, :func:`merge_blocks` needs only the small
summaries the blocks return (sizes and the label layers on each side of each face), and
:func:`instances_blockwise` ties them together sequentially, writing into any array that
takes numpy slicing (a numpy array, a memory map, a zarr array).

How close is this to whole-image post-processing? Everything the whole-image computation
does near a pixel depends on the outputs within a limited distance: the Gaussian smoothing
reaches ``4 * smoothing`` pixels, and which seed floods a pixel, and whether a distance
maximum is prominent enough to be a seed, depend on the objects around it. With a halo
wider than the largest object plus the smoothing reach, the labels inside each core are the
whole-image ones up to their ids (checked by the tests and by
``benchmarks/blockwise_postprocess.py``: AP@0.5 = 1.0 between the two, equal counts). A
narrower halo costs less (work grows as ``(1 + 2 * halo / block) ** ndim``) but lets
objects larger than the halo come out split or merged differently at block borders.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from numbers import Integral
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .config import PostprocessConfig
from .errors import InputError
from .postprocess import instances_from_outputs

POSTPROCESS_BLOCKS_ABOVE = 4096 * 4096
"""Outputs held in memory with more pixels (voxels) than this are post-processed block by
block (:func:`postprocesses_in_blocks`). A speed rule, not a memory one: outputs that
reach post-processing whole already fit the memory budget (the predictor's rule), and
blocks give the same objects faster from here on (8192²: 10.7 s against 26.8 s, and 0.6
GB against 4.3 GB, docs/benchmarks.md)."""


def postprocesses_in_blocks(spatial: Sequence[int]) -> bool:
    """Whether outputs of ``spatial`` shape are post-processed block by block."""
    return math.prod(spatial) > POSTPROCESS_BLOCKS_ABOVE


DEFAULT_HALO = 32
"""Halo in pixels when neither ``halo`` nor an object diameter is given: objects up to
about 26 pixels across with the default smoothing (see :func:`default_halo`)."""

Face = tuple[int, int]
"""(axis, side) of a block face: side 0 looks towards lower indices, 1 towards higher."""


@dataclass
class BlockLabels:
    """One block's post-processing result, numbered locally.

    Parameters
    ----------
    core : tuple of slice
        Where the block's core lies in the image.
    labels : ndarray of int32 or None
        Labels of the core, local ids (0 background); ``None`` once written out.
    n_ids : int
        Local ids run from 1 to ``n_ids`` (over core and halo; ids absent from the core
        belong to objects another block owns).
    sizes : ndarray of int64, shape (n_ids + 1,)
        Pixels of each local id inside the core (entry 0 is set to 0).
    inner : dict
        For each face with a neighbouring block, ``(axis, side)`` -> the core's outermost
        layer of labels on that side.
    outer : dict
        For the same faces, the block's own labels on the layer just beyond the core (read
        from its halo), that is, its view of the neighbour's outermost layer.
    """

    core: tuple[slice, ...]
    labels: np.ndarray | None
    n_ids: int
    sizes: np.ndarray
    inner: dict[Face, np.ndarray] = field(default_factory=dict)
    outer: dict[Face, np.ndarray] = field(default_factory=dict)


def default_halo(params: PostprocessConfig | None = None, diameter: float | None = None) -> int:
    """Halo (pixels per side) for blockwise post-processing.

    Parameters
    ----------
    params : PostprocessConfig, optional
        Its ``smoothing`` sigma widens the halo by the Gaussian's reach (4 sigma).
    diameter : float, optional
        Largest object diameter in pixels. Without it, :data:`DEFAULT_HALO` is used.

    Returns
    -------
    int
        ``ceil(diameter + 4 * smoothing) + 2``, or ``DEFAULT_HALO`` without a diameter.

    Notes
    -----
    A seed missing or cut at the outer edge of a block's halo changes the labels at most
    one object away from it, and smoothing shifts values within ``4 * smoothing`` of that
    edge, so a halo of one diameter plus the smoothing reach keeps the core exact in
    practice. Work and memory per block grow as ``(block + 2 * halo) ** ndim``.
    """
    if diameter is None:
        return DEFAULT_HALO
    smoothing = (params or PostprocessConfig()).smoothing
    return math.ceil(diameter + 4 * smoothing) + 2


def block_grid(shape: Sequence[int], block_shape: Sequence[int]) -> list[tuple[slice, ...]]:
    """The cores of a regular grid of blocks over ``shape``, in raster order (the last
    blocks along each axis may be smaller)."""
    starts = itertools.product(*(range(0, n, b) for n, b in zip(shape, block_shape, strict=True)))
    return [
        tuple(slice(s, min(s + b, n)) for s, b, n in zip(start, block_shape, shape, strict=True))
        for start in starts
    ]


def segment_block(
    outputs: Any,
    core: tuple[slice, ...],
    halo: Sequence[int],
    mode: str,
    params: PostprocessConfig | None = None,
    *,
    sampling: Sequence[float] | None = None,
) -> BlockLabels:
    """Post-process one block with its halo and keep its core, numbered locally.

    Parameters
    ----------
    outputs : array-like, shape (2, *spatial)
        Network outputs as for ``instances_from_outputs``; only the block and its halo are
        read (``outputs[:, box]``).
    core : tuple of slice
        The block's core in spatial coordinates.
    halo : sequence of int
        Margin read on each side, per spatial axis (clipped at the image edges).
    mode : {"boundary", "distance"}
        How to read the auxiliary map.
    params : PostprocessConfig, optional
        Thresholds; ``min_size`` only filters seeds here (boundary mode), as in the
        whole-image computation. Objects are filtered by size after merging.
    sampling : sequence of float, optional
        Voxel size of the outputs, as for ``instances_from_outputs``.

    Returns
    -------
    BlockLabels
    """
    params = params or PostprocessConfig()
    spatial = tuple(outputs.shape[1:])
    box = tuple(
        slice(max(0, c.start - h), min(n, c.stop + h))
        for c, h, n in zip(core, halo, spatial, strict=True)
    )
    maps = np.asarray(outputs[(slice(None), *box)])
    grown = _grown_labels(maps, mode, params, sampling)
    inside = tuple(
        slice(c.start - b.start, c.stop - b.start) for c, b in zip(core, box, strict=True)
    )
    labels = np.ascontiguousarray(grown[inside])
    n_ids = int(grown.max(initial=0))
    sizes = np.bincount(labels.ravel(), minlength=n_ids + 1).astype(np.int64)
    sizes[0] = 0
    inner: dict[Face, np.ndarray] = {}
    outer: dict[Face, np.ndarray] = {}
    for axis in range(len(core)):
        for side in (0, 1):
            beyond = inside[axis].start - 1 if side == 0 else inside[axis].stop
            if not 0 <= beyond < grown.shape[axis]:
                continue  # the image edge: no neighbour on this side
            layer = list(inside)
            layer[axis] = slice(beyond, beyond + 1)
            outer[(axis, side)] = grown[tuple(layer)].copy()
            edge = 0 if side == 0 else labels.shape[axis] - 1
            inner[(axis, side)] = np.take(labels, [edge], axis=axis)
    return BlockLabels(core, labels, n_ids, sizes, inner, outer)


def merge_blocks(blocks: Sequence[BlockLabels], min_size: int = 0) -> tuple[list[np.ndarray], int]:
    """Join pieces of one object across block faces; drop small objects; number 1..N.

    Parameters
    ----------
    blocks : sequence of BlockLabels
        All blocks of one grid, cores as :func:`block_grid` gives them (``labels`` may be
        ``None``).
    min_size : int
        Objects with fewer pixels than this, counted over all their pieces, are removed.

    Returns
    -------
    luts : list of ndarray of int64
        One per block: local id -> final id (0 for background and removed objects).
    count : int
        Number of objects, N.

    Notes
    -----
    Across each face, every pixel of the two layers that touch it has two labels: the one
    of the block owning it (its core) and the one the other block gave it from its halo.
    Each such pair of pieces votes once per pixel; every piece is joined to the piece on
    the other side that it shares most pixels with. Taking the largest vote, rather than
    any vote, keeps a watershed line shifted by a pixel between the two blocks from joining
    two touching objects. Pieces of one object meet across faces only (objects are
    face-connected), so an object across a block corner is joined through its pieces in
    the blocks that share that corner. Final ids follow each object's first piece in block
    order, so a single block keeps the whole-image numbering.
    """
    offsets = np.cumsum([0] + [b.n_ids + 1 for b in blocks])
    n_nodes = int(offsets[-1])
    sizes = np.concatenate([b.sizes for b in blocks]) if blocks else np.zeros(0, np.int64)
    by_start = {tuple(s.start for s in b.core): i for i, b in enumerate(blocks)}
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for i, low in enumerate(blocks):
        for axis in range(len(low.core)):
            if (axis, 1) not in low.inner:
                continue
            start = [s.start for s in low.core]
            start[axis] = low.core[axis].stop
            j = by_start[tuple(start)]
            high = blocks[j]
            a = np.concatenate([low.outer[(axis, 1)].ravel(), low.inner[(axis, 1)].ravel()])
            b = np.concatenate([high.inner[(axis, 0)].ravel(), high.outer[(axis, 0)].ravel()])
            ga = a.astype(np.int64) + offsets[i]
            gb = b.astype(np.int64) + offsets[j]
            # Ids seen only in a halo belong to objects outside that block's core: no node.
            valid = (a > 0) & (b > 0) & (sizes[ga] > 0) & (sizes[gb] > 0)
            if not valid.any():
                continue
            pairs, votes = np.unique(np.stack([ga[valid], gb[valid]]), axis=1, return_counts=True)
            for piece in pairs:
                order = np.lexsort((-votes, piece))  # by piece, most votes first
                first = np.ones(len(order), bool)
                first[1:] = piece[order][1:] != piece[order][:-1]
                rows.append(pairs[0, order[first]])
                cols.append(pairs[1, order[first]])
    if rows:
        r, c = np.concatenate(rows), np.concatenate(cols)
    else:
        r = c = np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(n_nodes, n_nodes))
    # Undirected components are numbered in order of their smallest node.
    n_objects, component = connected_components(graph, directed=False)
    object_sizes = np.bincount(component, weights=sizes, minlength=n_objects)
    keep = object_sizes >= max(1, min_size)
    final = np.zeros(n_objects, np.int64)
    count = int(keep.sum())
    final[keep] = np.arange(1, count + 1)
    node_final = final[component]
    luts = [node_final[offsets[i] : offsets[i + 1]] for i in range(len(blocks))]
    return luts, count


def instances_blockwise(
    outputs: Any,
    mode: str,
    params: PostprocessConfig | None = None,
    block_shape: int | Sequence[int] = 1024,
    halo: int | Sequence[int] | None = None,
    out: Any = None,
    progress: Callable[[int, int], None] | None = None,
    sampling: Sequence[float] | None = None,
) -> Any:
    """Instance labels from network outputs, computed block by block.

    Parameters
    ----------
    outputs : array-like, shape (2, *spatial)
        Foreground probability and auxiliary map, as for ``instances_from_outputs``. Any
        array with ``shape`` and numpy slicing (numpy array, memory map, zarr array); it is
        read one block plus halo at a time.
    mode : {"boundary", "distance"}
        How to read the auxiliary map.
    params : PostprocessConfig, optional
        Thresholds and minimum size; ``min_size`` applies to whole objects after merging.
    block_shape : int or sequence of int
        Core size of each block per spatial axis (one int for all axes).
    halo : int or sequence of int, optional
        Margin read around each block, per axis (in 3D with coarse z steps, a smaller one
        along z); at least 1. Default :func:`default_halo` (32 pixels). It should exceed
        the largest object's diameter plus 4 * smoothing.
    out : array-like, optional
        Integer array of shape ``spatial`` to write the labels into (it is written twice:
        local ids, then final ids). A new int32 array by default.
    progress : callable, optional
        Called as ``progress(done, total)`` after each block is post-processed.
    sampling : sequence of float, optional
        Voxel size of the outputs (smoothing by physical width, see
        ``instances_from_outputs``).

    Returns
    -------
    array-like
        ``out``: 0 for background, 1..N for objects, each object one connected piece with
        its own id. With one block covering the image, equal to ``instances_from_outputs``.

    Raises
    ------
    InputError
        Bad ``outputs`` shape, ``block_shape``, ``halo`` or ``out``.
    """
    params = params or PostprocessConfig()
    if mode not in ("boundary", "distance"):
        raise InputError(f"unknown post-processing mode {mode!r}: use 'boundary' or 'distance'")
    if not hasattr(outputs, "shape"):
        outputs = np.asarray(outputs)
    shape = tuple(int(n) for n in outputs.shape)
    if len(shape) < 3 or shape[0] != 2:
        raise InputError(
            f"outputs must have shape (2, *spatial) with 2 or 3 spatial axes, got {shape}"
        )
    spatial = shape[1:]
    ndim = len(spatial)
    blocks_shape = _per_axis("block_shape", block_shape, ndim, minimum=1)
    halos = _per_axis("halo", default_halo(params) if halo is None else halo, ndim, minimum=1)
    if out is None:
        out = np.zeros(spatial, np.int32)
    elif tuple(out.shape) != spatial or not np.issubdtype(np.dtype(out.dtype), np.integer):
        raise InputError(
            f"out must be an integer array of shape {spatial}, got {out.dtype} {tuple(out.shape)}"
        )
    top = np.iinfo(np.dtype(out.dtype)).max

    cores = block_grid(spatial, blocks_shape)
    blocks: list[BlockLabels] = []
    for done, core in enumerate(cores, start=1):
        block = segment_block(outputs, core, halos, mode, params, sampling=sampling)
        if block.n_ids > top:
            raise InputError(f"out's dtype {out.dtype} cannot hold {block.n_ids} labels")
        out[core] = block.labels
        blocks.append(replace(block, labels=None))
        if progress is not None:
            progress(done, len(cores))
    luts, count = merge_blocks(blocks, params.min_size)
    if count > top:
        raise InputError(f"out's dtype {out.dtype} cannot hold {count} labels")
    for block, lut in zip(blocks, luts, strict=True):
        out[block.core] = lut[np.asarray(out[block.core])]
    return out


def _grown_labels(
    maps: np.ndarray, mode: str, params: PostprocessConfig, sampling: Sequence[float] | None
) -> np.ndarray:
    """Objects before the size filter, with the whole-image algorithm's ids.

    ``instances_from_outputs`` keeps them in its cache under ``"grown"``; the size filter
    must wait until pieces cut by block borders are joined.
    """
    cache: dict = {}
    instances_from_outputs(maps, mode, params, cache, sampling=sampling)
    return cache["grown"][1]


def _per_axis(name: str, value: Any, ndim: int, minimum: int) -> tuple[int, ...]:
    """``value`` for each of ``ndim`` axes, each an integer >= ``minimum``."""
    values = (value,) * ndim if isinstance(value, Integral) else value
    try:
        values = tuple(values)
    except TypeError:
        raise InputError(
            f"{name} must be an integer or one integer per axis, got {value!r}"
        ) from None
    if len(values) != ndim:
        raise InputError(
            f"{name} needs one value per spatial axis ({ndim}), got {len(values)}: {value!r}"
        )
    if not all(isinstance(v, Integral) and not isinstance(v, bool) for v in values):
        raise InputError(f"{name} must hold integers, got {value!r}")
    if any(v < minimum for v in values):
        raise InputError(f"{name} values must be at least {minimum}, got {value!r}")
    return tuple(int(v) for v in values)
