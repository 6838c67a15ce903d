"""Regions of a 3D volume deeper than one slice: their slice range on a Shapes layer, and
their outlines in napari's 3D view.

A region is drawn on one slice of the regions Shapes layer; the :data:`DEPTH_FEATURES` of
that shape extend it over slices before and after. napari draws a shape only on its own
slice (and flat in 3D), so a Vectors layer ``"<image> region outlines"`` shows the box
edges of each deeper region: its outline on its first and last slices and the edges
joining them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Shapes, Vectors
from napari.utils.colormaps.standardize_color import transform_color

from ..engine.errors import InputError
from ..engine.regions import Region
from .annotation_layers import ROLE_COLOURS, add_annotated_item
from .layer_pairs import REGIONS_SUFFIX, find_layer, spatial_shape
from .shape_regions import DEPTH_FEATURES, shape_depths, vertices_in

if TYPE_CHECKING:
    from napari.layers import Image

    from ..engine.annotation_set import AnnotatedImage

OUTLINES_SUFFIX = " region outlines"


def set_feature_defaults(shapes: Shapes, **values: Any) -> None:
    """Change some of the defaults that new shapes get, keeping the others."""
    defaults = {name: shapes.feature_defaults[name].iloc[0] for name in shapes.feature_defaults}
    shapes.feature_defaults = {**defaults, **values}


def set_role(shapes: Shapes, role: str) -> None:
    """New shapes get ``role``; so do the selected ones (select regions to change them).

    The other feature defaults (the slice range) are kept: napari requires them to be set
    together.
    """
    selected = sorted(shapes.selected_data)
    if selected:
        features = shapes.features.copy()
        features.loc[selected, "role"] = role
        _write_features(shapes, features)
        shapes.refresh_colors(update_color_mapping=False)
    set_feature_defaults(shapes, role=role)  # last: listeners see the selection updated


def drawn_slice(shapes: Shapes, index: int, image: Image) -> int:
    """The slice (z index in ``image``'s pixels) on which shape ``index`` was drawn."""
    vertices = vertices_in(shapes, np.asarray(shapes.data[index], float), image)
    return round(float(vertices[:, -3].mean()))


def region_slices(shapes: Shapes, index: int, image: Image) -> tuple[int, int]:
    """First and last slice (inclusive) covered by shape ``index`` of a 3D regions layer."""
    z = drawn_slice(shapes, index, image)
    before, after = shape_depths(shapes)[index]
    return max(z - before, 0), z + after


def set_region_slices(shapes: Shapes, index: int, first: int, last: int, image: Image) -> None:
    """Make shape ``index`` cover slices ``first`` to ``last`` (inclusive) of ``image``.

    Raises
    ------
    InputError
        If the range is outside the volume or does not hold the slice the shape was drawn
        on (draw the region on a slice inside the range).
    """
    depth = spatial_shape(image)[-3]
    z = drawn_slice(shapes, index, image)
    if not 0 <= first <= z <= last < depth:
        raise InputError(
            f"slices {first} to {last}: a region drawn on slice {z} must cover it, within the "
            f"volume's slices 0 to {depth - 1}"
        )
    _ensure_depth_features(shapes)
    features = shapes.features.copy()
    features.loc[index, list(DEPTH_FEATURES)] = [z - first, last - z]
    _write_features(shapes, features)


def set_depths(shapes: Shapes, regions: Sequence[Region], image: Image) -> None:
    """Give the shapes of ``regions`` (in order, as loaded) the regions' slice ranges."""
    for index, region in enumerate(regions):
        if region.slices is not None:
            z = np.clip(drawn_slice(shapes, index, image), *region.slices)
            _ensure_depth_features(shapes)
            features = shapes.features.copy()
            features.loc[index, list(DEPTH_FEATURES)] = [z - region.slices[0], region.slices[1] - z]
            _write_features(shapes, features)


def add_item_with_depth(viewer: Any, item: AnnotatedImage) -> Image:
    """:func:`~.annotation_layers.add_annotated_item`, with regions spanning slices drawn
    on one of their slices and extended by the :data:`DEPTH_FEATURES`."""
    flat = [_on_one_slice(r) for r in item.regions]
    image = add_annotated_item(viewer, dataclasses.replace(item, regions=flat))
    shapes = find_layer(viewer, image.name + REGIONS_SUFFIX, Shapes)
    if shapes is not None and any(r.slices is not None for r in item.regions):
        set_depths(shapes, item.regions, image)
    return image


def outline_segments(
    regions: Sequence[Region], spatial_ndim: int, depth: int
) -> tuple[np.ndarray, list[str]]:
    """Edges of the regions that span several slices, as napari vectors.

    Parameters
    ----------
    regions : sequence of Region
        In the image's pixel coordinates; 2D and one-slice regions are left out.
    spatial_ndim : int
        Only 3 gives outlines.
    depth : int
        Number of slices of the volume; ranges are clipped to it.

    Returns
    -------
    vectors : ndarray, shape (M, 2, ndim)
        Start point and offset of each edge (frame indices first).
    roles : list of str
        The role of the region of each edge.
    """
    vectors, roles = [], []
    for region in regions:
        z_range = region.z_range
        if spatial_ndim != 3 or z_range is None:
            continue
        first, last = max(z_range[0], 0), min(z_range[1], depth - 1)
        if first >= last:
            continue
        yx = _outline_yx(region.vertices)
        n = len(yx)
        frame = np.zeros((n, len(region.frame))) + np.asarray(region.frame, float)
        ring = np.column_stack([np.zeros(n), np.roll(yx, -1, axis=0) - yx])  # along y/x
        up = np.column_stack([np.full(n, last - first), np.zeros((n, 2))])  # along z
        for z, move in ((first, ring), (last, ring), (first, up)):
            start = np.column_stack([frame, np.full(n, z), yx])
            vectors.extend(np.stack([start, np.column_stack([frame * 0, move])], axis=1))
            roles += [region.role] * n
    ndim = 3 + (len(regions[0].frame) if regions else 0)
    return np.array(vectors, float).reshape(-1, 2, ndim), roles


def show_region_outlines(
    viewer: Any, image: Image, regions: Sequence[Region], spatial_ndim: int
) -> Vectors | None:
    """Show the box edges of the regions that span several slices (for napari's 3D view)
    in the ``"<image> region outlines"`` layer, created when first needed."""
    shape = spatial_shape(image)
    depth = shape[-3] if spatial_ndim == 3 and len(shape) >= 3 else 1
    vectors, roles = outline_segments(regions, spatial_ndim, depth)
    if vectors.shape[2] != len(shape):
        vectors, roles = np.zeros((0, 2, len(shape))), []
    name = image.name + OUTLINES_SUFFIX
    layer = find_layer(viewer, name, Vectors)
    if layer is None and not len(vectors):
        return None
    colours = [transform_color(ROLE_COLOURS[r])[0] for r in roles] or "yellow"
    if layer is None:
        active = viewer.layers.selection.active  # keep drawing in the regions layer
        layer = viewer.add_vectors(
            vectors,
            name=name,
            vector_style="line",
            edge_width=max(1, min(shape[-2:]) // 200),
            edge_color=colours,
            scale=image.scale[-len(shape) :],
            translate=image.translate[-len(shape) :],
        )
        if active is not None:
            viewer.layers.selection.active = active
    elif len(layer.data) or len(vectors):
        layer.data = vectors
        layer.edge_color = colours
    return layer


def _ensure_depth_features(shapes: Shapes) -> None:
    if all(name in shapes.features for name in DEPTH_FEATURES):
        return
    features = shapes.features.copy()
    for name in DEPTH_FEATURES:
        features[name] = np.zeros(len(features), int)
    _write_features(shapes, features)


def _write_features(shapes: Shapes, features: Any) -> None:
    """Set the features table, keeping the defaults (napari resets them to the last row's
    values): new regions get the chosen role and cover one slice."""
    defaults = {name: shapes.feature_defaults[name].iloc[0] for name in shapes.feature_defaults}
    shapes.features = features
    depth = {name: 0 for name in DEPTH_FEATURES if name in shapes.features}
    shapes.feature_defaults = {**defaults, **depth}


def _on_one_slice(region: Region) -> Region:
    if region.slices is None:
        return region
    vertices = region.vertices.copy()
    vertices[:, 0] = np.clip(vertices[:, 0], *region.slices)
    if np.ptp(vertices[:, 0]) > 1e-6:  # not drawn on one slice: its box on the first
        yx = _outline_yx(vertices)
        vertices = np.column_stack([np.full(len(yx), region.slices[0]), yx])
    return Region(region.role, region.frame, vertices)


def _outline_yx(vertices: np.ndarray) -> np.ndarray:
    """The y/x polygon of a 3D region: its vertices if drawn on one slice, else its box."""
    if len(vertices) >= 3 and np.ptp(vertices[:, 0]) < 1e-6:
        return vertices[:, 1:]
    (y0, x0), (y1, x1) = vertices[:, 1:].min(0), vertices[:, 1:].max(0)
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]])
