"""Training patch sizes derived from the data: never larger than the images.

A patch larger than every image is mostly padding: a small 3D volume trained in
32x128x128 patches spends nine tenths of each step on padding. Each axis of the patch is
therefore capped at the largest image extent along it (rounded up to the network's size
multiple), with z sized on its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def training_patch_shape(
    patch_size: int,
    patch_size_z: int,
    ndim: int,
    size_multiple: int | Sequence[int],
    spatial_shapes: Iterable[Sequence[int]] = (),
) -> tuple[int, ...]:
    """The patch shape for training on images of ``spatial_shapes``.

    Parameters
    ----------
    patch_size, patch_size_z : int
        The wanted edge in y/x and (3D) in z.
    ndim : int
        2 or 3.
    size_multiple : int or sequence of int
        The network's size multiple, one for all axes (``2 ** depth``) or one per axis
        (anisotropic networks pool z less); every edge is a multiple of its axis's.
    spatial_shapes : iterable of shape
        Spatial shapes of the training images. Empty: the wanted sizes, only rounded.

    Returns
    -------
    tuple of int
        Per axis: the wanted edge rounded down to the multiple, but no larger than the
        largest image extent along that axis rounded up to the multiple (and at least one
        multiple).
    """
    wanted = (patch_size,) * 2 if ndim == 2 else (patch_size_z, patch_size, patch_size)
    shapes = [tuple(int(s) for s in shape)[-ndim:] for shape in spatial_shapes]
    largest = tuple(max(s[a] for s in shapes) for a in range(ndim)) if shapes else None
    multiples = per_axis(size_multiple, ndim)
    patch = []
    for axis, (edge, multiple) in enumerate(zip(wanted, multiples, strict=True)):
        size = edge // multiple * multiple
        if largest is not None:
            size = min(size, math.ceil(largest[axis] / multiple) * multiple)
        patch.append(max(multiple, size))
    return tuple(patch)


def per_axis(value: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    """``value`` repeated for ``ndim`` axes, or checked to have one entry per axis."""
    if isinstance(value, int):
        return (value,) * ndim
    values = tuple(int(v) for v in value)
    if len(values) != ndim:
        raise ValueError(f"expected {ndim} per-axis values, got {values}")
    return values
