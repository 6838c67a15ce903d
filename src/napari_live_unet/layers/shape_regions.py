"""Shapes layers to regions: annotated regions for training, and boxes to copy into.

The one place where Shapes vertices are mapped into an image's pixel coordinates (through
world coordinates, so the layers may differ in scale and translation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..engine.errors import InputError
from ..engine.regions import Region

if TYPE_CHECKING:
    from napari.layers import Image, Layer, Shapes

Box = tuple[slice, ...]
"""An axis-aligned box of pixels in a layer's data coordinates."""

_ROLE_NAMES = {"train": "train", "training": "train", "val": "val", "validation": "val"}
_ELLIPSE_POINTS = 64
DEPTH_FEATURES = ("slices_before", "slices_after")
"""Shapes features of a 3D region: how many slices it covers before (lower z) and after
the slice it was drawn on, in the image's pixels; 0 (or no such feature) for one slice."""


def vertices_in(shapes_layer: Shapes, vertices: np.ndarray, target: Layer) -> np.ndarray:
    """``vertices`` of a shape (data coordinates of ``shapes_layer``) in ``target``'s data
    coordinates, through world coordinates."""
    return np.array([target.world_to_data(shapes_layer.data_to_world(v)) for v in vertices])


def regions_from_shapes(
    shapes_layer: Shapes, spatial_ndim: int, image_layer: Image | None = None
) -> list[Region]:
    """Regions marked by the rectangles and polygons of a shapes layer.

    Parameters
    ----------
    shapes_layer : napari.layers.Shapes
        Rectangles, polygons or ellipses; the ``role`` feature (``"train"`` or ``"val"``)
        says what each marks, ``"train"`` where there is no such feature. In 3D, the
        :data:`DEPTH_FEATURES` extend a shape over the slices before and after its own.
    spatial_ndim : int
        2 or 3: the trailing spatial axes; leading coordinates give the region's frame.
    image_layer : napari.layers.Image, optional
        If given, vertices are mapped through world coordinates into this layer's pixel
        coordinates, so the two layers may differ in scale and translation. Otherwise the
        shapes layer's data coordinates are taken to be the image's.

    Returns
    -------
    list of Region
        In the order of the shapes, so region ``i + 1`` in messages is shape ``i``.

    Raises
    ------
    InputError
        For lines and paths, unknown roles, or a shape drawn across frames.
    """
    roles = (
        shapes_layer.features["role"].tolist()
        if "role" in shapes_layer.features
        else ["train"] * len(shapes_layer.data)
    )
    depths = shape_depths(shapes_layer)
    regions = []
    for i, (vertices, kind, role, depth) in enumerate(
        zip(shapes_layer.data, shapes_layer.shape_type, roles, depths, strict=True), start=1
    ):
        where = f"{shapes_layer.name}: shape {i}"
        if role not in _ROLE_NAMES:
            raise InputError(f"{where}: role must be 'train' or 'val', got {role!r}")
        if kind not in ("rectangle", "polygon", "ellipse"):
            raise InputError(
                f"{where} is a {kind}; only rectangles, polygons and ellipses mark regions. "
                "Delete it or draw a rectangle instead."
            )
        vertices = np.asarray(vertices, np.float64)
        if image_layer is not None:
            vertices = vertices_in(shapes_layer, vertices, image_layer)
        n_lead = vertices.shape[1] - spatial_ndim
        if n_lead < 0:
            raise InputError(
                f"{where} has {vertices.shape[1]} coordinates; {spatial_ndim}D regions need "
                f"at least {spatial_ndim}"
            )
        frames = np.round(vertices[:, :n_lead]).astype(int)
        if len(np.unique(frames, axis=0)) > 1:
            raise InputError(f"{where} spans several frames; draw each region in one frame")
        spatial = vertices[:, n_lead:]
        slices = None
        if kind == "ellipse" and spatial_ndim == 2:
            spatial = _ellipse_polygon(spatial)
        elif spatial_ndim == 3 and np.ptp(spatial[:, 0]) < 1e-6:  # drawn on one slice
            z = spatial[0, 0]
            if kind == "ellipse":
                spatial = np.column_stack(
                    [np.full(_ELLIPSE_POINTS, z), _ellipse_polygon(spatial[:, 1:])]
                )
            if any(depth):
                slices = (max(round(z) - depth[0], 0), round(z) + depth[1])
        regions.append(Region(_ROLE_NAMES[role], tuple(frames[0].tolist()), spatial, slices))
    return regions


def shape_depths(shapes_layer: Shapes) -> list[tuple[int, int]]:
    """Slices before and after its own that each shape covers (see :data:`DEPTH_FEATURES`);
    (0, 0) for every shape of a layer without these features."""
    features = shapes_layer.features
    if not all(name in features for name in DEPTH_FEATURES):
        return [(0, 0)] * len(shapes_layer.data)
    columns = (features[name].fillna(0).astype(int).clip(lower=0) for name in DEPTH_FEATURES)
    return list(zip(*(c.tolist() for c in columns), strict=True))


def box_from_points(points: np.ndarray, shape: Sequence[int]) -> Box | None:
    """The pixels whose centres lie within the bounding box of ``points`` (data
    coordinates, one row per point), clipped to ``shape``; None if that is empty."""
    points = np.asarray(points, float)
    box = []
    for axis, size in enumerate(shape):
        low, high = points[:, axis].min(), points[:, axis].max()
        if high - low < 1e-6:  # a flat axis: the frame the shape was drawn on
            start = stop = round(low)
            stop += 1
        else:
            start, stop = math.ceil(low), math.floor(high) + 1
        start, stop = max(0, start), min(size, stop)
        if start >= stop:
            return None
        box.append(slice(start, stop))
    return tuple(box)


def boxes_from_shapes(shapes_layer, target_layer, frame_point: Sequence[float]) -> list[Box]:
    """Rectangles of a Shapes layer as boxes in ``target_layer``'s data coordinates.

    Shapes with fewer dimensions than the target (2D rectangles over a stack) apply to the
    frame at ``frame_point`` (world coordinates of the viewer's current position).
    """
    boxes = []
    for vertices, kind in zip(shapes_layer.data, shapes_layer.shape_type, strict=True):
        if kind != "rectangle":
            continue
        points = []
        for vertex in np.asarray(vertices, float):
            world = np.asarray(shapes_layer.data_to_world(vertex), float)
            full = np.array(frame_point, float)[-target_layer.ndim :]
            full[-len(world) :] = world[-target_layer.ndim :]
            points.append(target_layer.world_to_data(full))
        box = box_from_points(np.array(points), target_layer.data.shape)
        if box is not None:
            boxes.append(box)
    return boxes


def frame_box(target_layer, frame_point: Sequence[float], n_leading: int) -> Box:
    """The whole current frame: leading axes fixed at the viewer's position, the rest full."""
    position = target_layer.world_to_data(np.asarray(frame_point, float)[-target_layer.ndim :])
    box = []
    for axis, size in enumerate(target_layer.data.shape):
        if axis < n_leading:
            index = int(np.clip(round(position[axis]), 0, size - 1))
            box.append(slice(index, index + 1))
        else:
            box.append(slice(0, size))
    return tuple(box)


def view_box(target_layer, frame_point: Sequence[float], displayed: Sequence[int]) -> Box:
    """The part of the current frame that the canvas shows (from the layer's corner pixels,
    which napari updates on each draw); the whole frame if the layer was never drawn."""
    shape = target_layer.data.shape
    position = target_layer.world_to_data(np.asarray(frame_point, float)[-target_layer.ndim :])
    corners = np.asarray(target_layer.corner_pixels)
    drawn = corners.shape == (2, len(shape)) and (corners[1] > corners[0]).any()
    box = []
    for axis, size in enumerate(shape):
        if axis in displayed:
            if drawn:
                start = int(np.clip(corners[0, axis], 0, size))
                stop = int(np.clip(corners[1, axis] + 1, 0, size))
                box.append(slice(start, max(start, stop)))
            else:
                box.append(slice(0, size))
        else:
            index = int(np.clip(round(position[axis]), 0, size - 1))
            box.append(slice(index, index + 1))
    return tuple(box)


def _ellipse_polygon(corners: np.ndarray) -> np.ndarray:
    # napari stores an ellipse as the four corners of its (possibly rotated) bounding box.
    centre = corners.mean(0)
    half_a = (corners[1] - corners[0]) / 2
    half_b = (corners[3] - corners[0]) / 2
    t = np.linspace(0, 2 * np.pi, _ELLIPSE_POINTS, endpoint=False)[:, None]
    return centre + np.cos(t) * half_a + np.sin(t) * half_b
