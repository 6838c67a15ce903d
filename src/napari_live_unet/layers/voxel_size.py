"""The voxel size of a napari layer, as the engine takes it."""

from __future__ import annotations

import numpy as np
from napari.layers import Layer


def layer_voxel_size(layer: Layer, ndim: int) -> tuple[float, ...] | None:
    """Physical pixel (voxel) size of ``layer``'s last ``ndim`` axes, from its ``scale``.

    napari gives every layer a scale of 1 unless the reader or the user set one, so a scale
    of all ones means "unknown" (None): images are then taken as they are.
    """
    scale = tuple(float(s) for s in np.asarray(layer.scale)[-ndim:])
    if len(scale) != ndim or all(s == 1.0 for s in scale):
        return None
    return scale
