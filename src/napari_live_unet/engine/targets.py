"""Training targets computed from instance labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2

# Distance target at object pixels that touch another object, relative to their own.
TOUCHING_SCALE = 0.5


def boundary_classes(labels: np.ndarray) -> np.ndarray:
    """Three classes per pixel: 0 background, 1 object interior, 2 object boundary.

    Boundaries are the objects' own outermost pixels, so two touching objects are separated
    by a boundary band two pixels wide.
    """
    classes = (labels > 0).astype(np.uint8)
    classes[find_boundaries(labels, mode="inner") & (labels > 0)] = BOUNDARY
    return classes


def normalized_distance(labels: np.ndarray, sampling: Sequence[float] | None = None) -> np.ndarray:
    """Distance of each object pixel to its object's boundary, scaled to 1 at its centre.

    Every object is treated on its own, so touching objects get separate peaks and a small
    object counts as much as a large one. Background is 0. ``sampling`` is the voxel size
    per axis: distances are then physical, so a nucleus in a volume with 3x coarser z steps
    still peaks at its centre rather than along a flat disc.
    """
    out = np.zeros(labels.shape, np.float32)
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        padded = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in box)
        obj = labels[padded] == index
        # Pad so objects touching the image edge still fall to 0 outside the image.
        # scipy's inferred return type allows None (it returns distances unless told not to).
        edt = cast(np.ndarray, ndi.distance_transform_edt(np.pad(obj, 1), sampling=sampling))
        dist = edt[(slice(1, -1),) * obj.ndim]
        peak = dist.max()
        if peak > 0:
            region = out[padded]
            region[obj] = dist[obj] / peak
    return out


def touching_pixels(labels: np.ndarray) -> np.ndarray:
    """Object pixels with a neighbour (any of the 8 in 2D, 26 in 3D) in another object."""
    footprint = np.ones((3,) * labels.ndim, bool)
    # Background counts as the highest id when looking for lower neighbours (and is 0, the
    # lowest, when looking for higher ones), so no id outside the dtype's range is needed.
    highest = ndi.grey_dilation(labels, footprint=footprint)
    lowest = ndi.grey_erosion(np.where(labels > 0, labels, labels.max()), footprint=footprint)
    return (labels > 0) & ((highest > labels) | (lowest < labels))


def distance_target(labels: np.ndarray, sampling: Sequence[float] | None = None) -> np.ndarray:
    """The distance mode's auxiliary target: :func:`normalized_distance`, halved where an
    object touches another one.

    Every path from one object's peak to a touching neighbour's then passes a pixel at
    most half the height of the peaks, so touching objects keep separate seeds even when
    the network smooths the map. The per-object distance alone dips little between nuclei
    stacked in z: the last slice of a nucleus two or three slices deep lies a whole z step
    from its neighbour, about as far as its centre lies from its sides, and on synthetic
    volumes (voxel 3x1x1 um) the saddles between such pairs were 0.46-0.83 of the peaks;
    the network's smoothed maps lost them and merged the pairs.
    """
    distance = normalized_distance(labels, sampling)
    distance[touching_pixels(labels)] *= TOUCHING_SCALE
    return distance


def make_targets(
    labels: np.ndarray, mode: str, sampling: Sequence[float] | None = None
) -> np.ndarray:
    """Targets for one label image, shape (T, *spatial) float32.

    ``boundary`` mode gives one channel of class indices; ``distance`` mode gives
    foreground (0/1) and :func:`distance_target` (in physical units when ``sampling``, the
    voxel size, is given).
    """
    if mode == "boundary":
        return boundary_classes(labels)[None].astype(np.float32)
    if mode == "distance":
        return np.stack([(labels > 0).astype(np.float32), distance_target(labels, sampling)])
    raise ValueError(f"unknown mode {mode!r}")
