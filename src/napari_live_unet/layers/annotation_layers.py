"""The layers of the Annotate widget: ground truth labels and regions shapes of an image.

Layer names tie them to their image: ``"<image> ground truth"`` and ``"<image> regions"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Shapes
from napari.utils.colormaps.standardize_color import transform_color

from ..engine.annotation_set import AnnotatedImage, safe_name
from ..engine.errors import InputError
from ..engine.regions import Region, count_objects, objects_in_region, region_geometry
from .layer_pairs import GROUND_TRUTH_SUFFIX, REGIONS_SUFFIX, layer_image_data, spatial_shape
from .shape_regions import regions_from_shapes

if TYPE_CHECKING:
    pass

ROLE_COLOURS = {"train": "yellow", "val": "cyan"}
ROLE_TITLES = {"train": "training", "val": "validation"}


def _transforms(image: Image) -> dict:
    return {"scale": image.scale, "translate": image.translate, "rotate": image.rotate}


def add_ground_truth(viewer: Any, image: Image, data=None) -> Labels:
    """A new labels layer for ``image``: zeros (or ``data``), aligned, ready to paint."""
    shape = spatial_shape(image)
    if data is None:
        data = np.zeros(shape, np.uint16)
    else:  # room to paint more objects than the smallest dtype on disk holds
        data = np.asarray(data).astype(np.promote_types(data.dtype, np.uint16), copy=False)
    labels = viewer.add_labels(data, name=image.name + GROUND_TRUTH_SUFFIX, **_transforms(image))
    labels.brush_size = int(np.clip(min(shape[-2:]) // 50, 5, 25))
    return labels


def add_regions_layer(viewer: Any, image: Image, role: str, regions=()) -> Shapes:
    """A shapes layer for ``image``'s regions, coloured by role, with ``regions`` in it."""
    shapes = viewer.add_shapes(
        ndim=image.ndim,
        name=image.name + REGIONS_SUFFIX,
        features={"role": np.array([], dtype=object)},
        feature_defaults={"role": role},
        edge_color="role",
        edge_color_cycle=list(ROLE_COLOURS.values()),
        face_color="transparent",
        edge_width=max(2, min(spatial_shape(image)[-2:]) // 200),
        **_transforms(image),
    )
    # Fixed colours per role; the cycle alone would colour by order of first appearance.
    shapes.edge_color_cycle_map = {k: transform_color(c)[0] for k, c in ROLE_COLOURS.items()}
    if regions:
        data = [
            np.column_stack([np.tile(r.frame, (len(r.vertices), 1)), r.vertices]) for r in regions
        ]
        kinds = ["rectangle" if _is_rectangle(r.vertices) else "polygon" for r in regions]
        shapes.add(data, shape_type=kinds)
        shapes.features = {"role": np.array([r.role for r in regions], dtype=object)}
        shapes.refresh_colors(update_color_mapping=False)
    return shapes


def annotated_item(
    image: Image, labels: Labels, shapes: Shapes | None, spatial_ndim: int
) -> AnnotatedImage:
    """What to save for ``image``: copies of labels and regions, taken now (main thread)."""
    regions = regions_from_shapes(shapes, spatial_ndim, image) if shapes is not None else []
    return AnnotatedImage(
        safe_name(image.name),
        layer_image_data(image),
        np.array(labels.data),
        regions,
        spatial_ndim,
        -1 if image.rgb else None,
    )


def add_annotated_item(viewer: Any, item: AnnotatedImage) -> Image:
    """Add an item loaded from an annotation set as image, ground truth and regions layers."""
    image_data = item.image
    if item.channel_axis is not None:
        image_data = np.moveaxis(image_data, item.channel_axis, -1)
    image = viewer.add_image(image_data, name=item.name, rgb=item.channel_axis is not None)
    assert isinstance(image, Image)  # one array gives one layer
    add_ground_truth(viewer, image, item.labels)
    add_regions_layer(viewer, image, "train", item.regions)
    return image


def region_rows(
    labels: np.ndarray | None,
    regions: list[Region],
    image_shape: tuple[int, ...],
    spatial_ndim: int,
) -> list[tuple[str, ...]]:
    """One row per region: number, role, frame, size and objects annotated in it.

    Works on arrays (``labels``: the ground truth's data, or None), so it runs in a
    worker; ``regions`` come from :func:`regions_from_shapes` on the main thread.
    """
    rows = []
    for i, region in enumerate(regions, start=1):
        frame = ", ".join(f"t={t}" for t in region.frame) if region.frame else "–"
        try:
            n_lead = len(region.frame)
            box, _ = region_geometry(region, image_shape[n_lead:])
            size = " × ".join(str(s.stop - s.start) for s in box)
            objects = (
                "–" if labels is None else str(objects_in_region(labels, region, spatial_ndim))
            )
        except InputError:
            size, objects = "outside image", "–"
        rows.append((str(i), ROLE_TITLES[region.role], frame, size, objects))
    return rows


def whole_image_summary(labels: np.ndarray, spatial_ndim: int) -> str:
    """``"whole image: N objects"``, or per frame counts summed for a time series."""
    n_lead = labels.ndim - spatial_ndim
    if n_lead <= 0:
        return f"whole image: {count_objects(np.asarray(labels))} objects"
    counts = [count_objects(np.asarray(labels[f])) for f in np.ndindex(*labels.shape[:n_lead])]
    frames = sum(1 for c in counts if c)
    return f"whole image: {sum(counts)} objects in {frames} of {len(counts)} frames"


def annotation_counts(
    labels: np.ndarray | None,
    regions: list[Region],
    image_shape: tuple[int, ...],
    spatial_ndim: int,
) -> tuple[list[tuple[str, ...]], str]:
    """The Annotate widget's table rows and summary line; runs in a worker."""
    if regions:
        return region_rows(labels, regions, image_shape, spatial_ndim), ""
    if labels is not None:
        return [], whole_image_summary(labels, spatial_ndim)
    return [], "No ground truth yet: press 'New ground truth'."


def _is_rectangle(vertices: np.ndarray) -> bool:
    if len(vertices) != 4:
        return False
    a, b, c, d = vertices
    return bool(np.allclose(a + c, b + d) and abs(np.dot(b - a, d - a)) < 1e-6)
