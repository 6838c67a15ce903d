"""Where tiles go: their size per image under a memory budget, their overlap and blending.

:func:`plan_tile` chooses the tile for one image: the whole image, padded to the network's
size multiple on each axis, when its activations fit :func:`tile_budget_voxels`; otherwise
the near-equal tiles that cover each axis with an overlap of the network's receptive radius
(:func:`context_margin`) and compute the fewest voxels. ``predict.py`` runs the tiles.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from . import memory_budget
from .errors import InputError
from .memory_estimate import available_memory_bytes
from .sizes import per_axis

SizeMultiple = int | Sequence[int]

# Working memory of a U-net forward pass without gradients, per voxel of the tile: about
# BYTES_PER_VOXEL_PER_CHANNEL x base channels + BYTES_PER_VOXEL. Measured (peak resident
# memory minus memory before, one tile, 2 CPU threads): 402 B/voxel for a 2D base-16 depth-4
# net on 2048² and 408 for a 3D base-16 depth-3 net on 32x256x256 in float32, 229 and 234
# under bfloat16 autocast. Rounded up, so the estimate errs on the side of smaller tiles.
BYTES_PER_VOXEL_PER_CHANNEL = 26
BYTES_PER_VOXEL = 64
_UNKNOWN_NETWORK_BYTES_PER_VOXEL = 512


def tile_starts(size: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Start offsets of tiles of ``tile`` covering ``[0, size)``, overlapping by ``overlap``
    or more.

    Starts are spread evenly and fall on multiples of ``multiple``, so every tile sees the
    network's pooling grid as the whole image does; the last tile ends at ``size`` rounded
    up to ``multiple`` (tiles past the image are padded as the whole image would be).
    """
    padded = -(-size // multiple) * multiple
    if padded <= tile:
        return [0]
    step = max(multiple, (tile - overlap) // multiple * multiple)
    n = -(-(padded - tile) // step) + 1
    return [i * (padded - tile) // (n - 1) // multiple * multiple for i in range(n)]


def blend_window(shape: tuple[int, ...], overlap: int | Sequence[int]) -> np.ndarray:
    """Separable weights that fall smoothly towards tile edges inside the overlap band.

    ``overlap`` is one width for all axes or one per axis. The floor keeps every weight
    positive, so pixels covered by a single tile (image edges) get that tile's prediction
    exactly after normalisation.
    """
    overlaps = _per_axis(overlap, len(shape))
    window = np.ones(shape, np.float32)
    for axis, n in enumerate(shape):
        ramp = np.ones(n, np.float32)
        k = min(overlaps[axis], n // 2)
        if k > 0:
            t = (np.arange(k, dtype=np.float32) + 0.5) / k
            edge = np.sin(t * np.pi / 2) ** 2
            ramp[:k] = edge
            ramp[n - k :] = edge[::-1]
        view = [1] * len(shape)
        view[axis] = n
        window *= np.maximum(ramp, 1e-3).reshape(view)
    return window


def _per_axis(value: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    """An int for every axis, or a per-axis sequence checked for length."""
    try:
        return per_axis(int(value) if isinstance(value, np.integer) else value, ndim)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _fit_tile(
    tile: tuple[int, ...], shape: tuple[int, ...], multiples: tuple[int, ...]
) -> tuple[int, ...]:
    """Round tiles down to each axis's multiple and shrink them to the image (rounded up)."""
    return tuple(
        min(max(m, t // m * m), _round_up(s, m))
        for t, s, m in zip(tile, shape, multiples, strict=True)
    )


def check_tile_shape(tile_shape: tuple[int, ...] | None, size_multiple: SizeMultiple) -> None:
    """Refuse tiles too small to predict efficiently (overlap would dominate).

    Parameters
    ----------
    tile_shape : tuple of int or None
        The tile asked for; None (automatic tiles) is always accepted.
    size_multiple : int or tuple of int
        The network's size multiple, one for all axes or one per spatial axis.

    Raises
    ------
    InputError
        Naming the smallest tile edge this network accepts along each axis.
    """
    if tile_shape is None:
        return
    multiples = _per_axis(size_multiple, len(tile_shape))
    smallest = tuple(2 * m for m in multiples)
    if any(
        not isinstance(t, int | np.integer) or t < low
        for t, low in zip(tile_shape, smallest, strict=True)
    ):
        edge = (
            f"{smallest[0]} pixels along each axis"
            if len(set(smallest)) == 1
            else f"{'x'.join(map(str, smallest))} pixels"
        )
        raise InputError(
            f"tile size {tuple(tile_shape)} is too small: tiles must be at least {edge} "
            f"for this network (leave it out for automatic tiles)"
        )


def context_margin(network: torch.nn.Module, multiples: tuple[int, ...]) -> tuple[int, ...]:
    """Overlap automatic tiles keep along each axis: the U-net's receptive radius.

    The radius adds, per level, the reach of its convolutions (two on the way down, two on
    the way up, one pair at the bottom) and of its pooling, in input pixels; it is rounded
    up to the axis's size multiple. A network without a U-net ``config`` gets four
    multiples.
    """
    declared = getattr(network, "context_margins", None)
    if declared is not None:  # a foreign (BMZ) network says its own
        return tuple(_round_up(int(d), m) for d, m in zip(declared, multiples, strict=True))
    config = getattr(network, "config", None)
    if config is None or not hasattr(config, "level_pooling"):
        return tuple(4 * m for m in multiples)
    ndim, depth = config.ndim, config.depth
    pools, kernels = config.level_pooling, config.level_kernels
    radius, stride = [0] * ndim, [1] * ndim
    for level in range(depth + 1):
        convs = 2 if level == depth else 4
        for a in range(ndim):
            radius[a] += convs * (kernels[level][a] // 2) * stride[a]
            if level < depth:
                radius[a] += (pools[level][a] - 1) * stride[a]
                stride[a] *= pools[level][a]
    return tuple(_round_up(max(r, 1), m) for r, m in zip(radius, multiples, strict=True))


def activation_bytes_per_voxel(network: torch.nn.Module) -> int:
    """Estimated working memory of a forward pass per tile voxel, float32 (see
    ``BYTES_PER_VOXEL_PER_CHANNEL``)."""
    config = getattr(network, "config", None)
    base = getattr(config, "base_channels", None)
    if not isinstance(base, int):
        return _UNKNOWN_NETWORK_BYTES_PER_VOXEL
    return BYTES_PER_VOXEL_PER_CHANNEL * base + BYTES_PER_VOXEL


def tile_budget_voxels(network: torch.nn.Module, device: torch.device) -> int:
    """Tile voxels one forward pass may hold: a share of the free memory, capped.

    A quarter of the available memory on a CPU (half on CUDA), at most
    :data:`~.memory_budget.CPU_TILE_BYTES` (:data:`~.memory_budget.CUDA_TILE_BYTES`),
    divided by :func:`activation_bytes_per_voxel`.
    """
    cuda = device.type == "cuda"
    cap = memory_budget.CUDA_TILE_BYTES if cuda else memory_budget.CPU_TILE_BYTES
    free = available_memory_bytes(device)
    budget = cap if free is None else min(cap, free // (2 if cuda else 4))
    return max(1, budget // activation_bytes_per_voxel(network))


def plan_tile(
    spatial: tuple[int, ...],
    multiples: tuple[int, ...],
    margins: tuple[int, ...],
    max_voxels: int,
) -> tuple[int, ...]:
    """The tile shape for one image: the whole image when it fits, else the fewest tiles.

    Parameters
    ----------
    spatial : tuple of int
        The image's spatial shape.
    multiples : tuple of int
        Per axis, tile edges must be multiples of this.
    margins : tuple of int
        Per axis, the overlap tiles keep (each a multiple of its axis's multiple).
    max_voxels : int
        The most voxels one tile may hold.

    Returns
    -------
    tuple of int
        The image rounded up to the multiples when that fits ``max_voxels``. Otherwise the
        tile, among those splitting each axis into ``n`` near-equal tiles (each rounded up
        to its multiple, together covering the padded axis with ``margin`` overlap), that
        fits and computes the fewest voxels in all, then has the fewest tiles. When none
        fits, the smallest tiles that keep their overlap under half the tile.
    """
    padded = tuple(_round_up(s, m) for s, m in zip(spatial, multiples, strict=True))
    if math.prod(padded) <= max_voxels:
        return padded
    options = [_axis_options(p, m, o) for p, m, o in zip(padded, multiples, margins, strict=True)]
    best: tuple[tuple[int, int], tuple[int, ...]] | None = None
    for choice in itertools.product(*options[:-1]):
        others = math.prod(t for _, t in choice)
        last = next(((n, t) for n, t in options[-1] if others * t <= max_voxels), None)
        if last is None:
            continue
        picked = (*choice, last)
        cost = (
            math.prod(n * t for n, t in picked),
            math.prod(n for n, _ in picked),
        )
        if best is None or cost < best[0]:
            best = (cost, tuple(t for _, t in picked))
    if best is None:
        return tuple(axis[-1][1] for axis in options)
    return best[1]


def _axis_options(padded: int, multiple: int, margin: int) -> list[tuple[int, int]]:
    """(tile count, tile edge) ways to cover one padded axis, fewest tiles first.

    ``n`` tiles of edge ``t`` overlapping by ``margin`` cover ``padded`` when
    ``n t - (n - 1) margin >= padded``. Edges stop at twice the margin (at least two
    multiples): smaller tiles would mostly compute overlap.
    """
    smallest = min(padded, max(2 * margin, 2 * multiple))
    options, n = [], 1
    while True:
        edge = _round_up(-(-(padded + (n - 1) * margin) // n), multiple)
        if edge < smallest:
            break
        if not options or edge < options[-1][1]:
            options.append((n, edge))
        if edge == smallest:
            break
        n += 1
    return options


@dataclass(frozen=True)
class Tiling:
    """How one prediction run tiles its images: given tiles, or chosen per image."""

    network: torch.nn.Module
    size_multiple: SizeMultiple
    tile_shape: tuple[int, ...] | None
    overlap: int | None
    budget: int

    def multiples(self, ndim: int) -> tuple[int, ...]:
        try:
            return _per_axis(self.size_multiple, ndim)
        except InputError:
            raise InputError(
                f"size multiples {self.size_multiple} do not fit a {ndim}D image"
            ) from None

    def choose(self, spatial: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Tile shape and per-axis overlap for an image of this spatial shape."""
        ndim = len(spatial)
        multiples = self.multiples(ndim)
        if self.tile_shape is None:
            margins = context_margin(self.network, multiples)
            tile = plan_tile(spatial, multiples, margins, self.budget)
            return tile, margins if self.overlap is None else (int(self.overlap),) * ndim
        if len(self.tile_shape) != ndim:
            raise InputError(f"tile shape {self.tile_shape} does not fit a {ndim}D image")
        tile = _fit_tile(self.tile_shape, spatial, multiples)
        ov = max(8, min(tile) // 8) if self.overlap is None else int(self.overlap)
        return tile, (ov,) * ndim
