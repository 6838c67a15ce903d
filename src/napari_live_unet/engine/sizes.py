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
    size_multiple: int,
    spatial_shapes: Iterable[Sequence[int]] = (),
) -> tuple[int, ...]:
    """The patch shape for training on images of ``spatial_shapes``.

    Parameters
    ----------
    patch_size, patch_size_z : int
        The wanted edge in y/x and (3D) in z.
    ndim : int
        2 or 3.
    size_multiple : int
        The network's size multiple (2 ** depth); every edge is a multiple of it.
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
    patch = []
    for axis, edge in enumerate(wanted):
        size = edge // size_multiple * size_multiple
        if largest is not None:
            size = min(size, math.ceil(largest[axis] / size_multiple) * size_multiple)
        patch.append(max(size_multiple, size))
    return tuple(patch)
