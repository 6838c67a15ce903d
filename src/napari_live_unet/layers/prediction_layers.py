"""Putting prediction results into napari layers: main-thread helpers, no Qt widgets."""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image, Labels, Shapes

from ..app.prediction_result import PredictionResult
from ..engine.regions import role_mask
from .layer_pairs import PREDICTIONS_SUFFIX, REGIONS_SUFFIX, find_layer
from .shape_regions import Box, boxes_from_shapes, frame_box, regions_from_shapes, view_box

COPY_REGION_CHOICES = (
    "whole image (current frame)",
    "visible field of view",
    "rectangles of a Shapes layer",
)


def layer_names(result: PredictionResult) -> tuple[str, str, str]:
    """Names of the labels, foreground and auxiliary-map layers of a result."""
    aux = "boundary" if result.mode == "boundary" else "distance"
    name = result.image_name
    return (name + PREDICTIONS_SUFFIX, f"{name} foreground", f"{name} {aux}")


def geometry(viewer, result: PredictionResult, image_layer=None) -> dict:
    """Scale and translate of the image layer (or the layer of that name), without a
    channel axis; empty if the image is gone."""
    image_layer = _image_layer(viewer, result, image_layer)
    if image_layer is None:
        return {}
    axes = result.plan.kept_axes
    return {
        "scale": [image_layer.scale[a] for a in axes],
        "translate": [image_layer.translate[a] for a in axes],
    }


def set_layer(viewer, kind, name: str, data: Any, kwargs: dict):
    """Update the layer called ``name`` if it is a ``kind`` layer, else add one."""
    if name in viewer.layers and isinstance(viewer.layers[name], kind):
        layer = viewer.layers[name]
        layer.data = data
        for key in ("scale", "translate"):
            if key in kwargs:
                setattr(layer, key, kwargs[key])
        return layer
    add = viewer.add_labels if kind is Labels else viewer.add_image
    return add(data, name=name, **kwargs)


NOT_PAINTABLE = (
    " The predictions are shown at the image's resolutions, and napari cannot paint into "
    "such a layer: predict a crop of the image to correct objects."
)
"""Said when stored (block by block) predictions are shown as a pyramid."""


def show_labels(viewer, result: PredictionResult, image_layer=None) -> str:
    """Add or update the ``<image> predictions`` Labels layer.

    Labels stored on disk (predicted block by block) are shown lazily; when the image layer
    is multiscale, as a pyramid with its downsampling (napari then reads only what the
    canvas needs, but cannot paint).

    Returns
    -------
    str
        What the user should know about the layer ("" or :data:`NOT_PAINTABLE`).
    """
    data = result.labels_array()
    image = _image_layer(viewer, result, image_layer)
    pyramid = bool(result.blockwise and image is not None and image.multiscale)
    if pyramid and image is not None:
        data = label_pyramid(data, image.downsample_factors[:, list(result.plan.kept_axes)])
    name = layer_names(result)[0]
    shown = find_layer(viewer, name, Labels)
    if shown is not None and shown.multiscale != pyramid:  # napari cannot switch it
        viewer.layers.remove(shown)
    set_layer(viewer, Labels, name, data, geometry(viewer, result, image_layer))
    return NOT_PAINTABLE if pyramid else ""


def label_pyramid(labels: Any, factors: np.ndarray) -> list:
    """``labels`` (a zarr array) and lazy strided views of it, one per row of ``factors``
    (downsampling per axis of each level, the first all ones)."""
    import dask.array as da

    lazy = da.from_zarr(labels)
    levels: list = [labels]
    for row in factors[1:]:
        levels.append(lazy[tuple(slice(None, None, max(1, round(float(f)))) for f in row)])
    return levels


def _image_layer(viewer, result: PredictionResult, image_layer=None):
    if image_layer is None or image_layer not in viewer.layers:
        image_layer = next((x for x in viewer.layers if x.name == result.image_name), None)
    return image_layer if isinstance(image_layer, Image) else None


def show_outputs(viewer, result: PredictionResult) -> None:
    """Add or update the foreground and boundary/distance Image layers (float32, 0..1).

    Their data is lazy (dask): napari reads the frames it shows from the result's output
    cache, one at a time, so a long series is never held whole in memory.
    """
    foreground, aux = result.output_arrays()
    _, fg_name, aux_name = layer_names(result)
    style = {"blending": "additive", "contrast_limits": (0.0, 1.0), **geometry(viewer, result)}
    set_layer(viewer, Image, fg_name, foreground, {**style, "colormap": "green"})
    set_layer(viewer, Image, aux_name, aux, {**style, "colormap": "magenta"})


def copy_region(viewer, choice: int, gt, shapes, n_leading: int) -> Box | list[Box]:
    """The region picked in the widget (index into COPY_REGION_CHOICES), in ``gt``'s data
    coordinates.

    "Whole image" is the current frame of a stack (all of it for a single image or
    volume); an empty list means nothing to copy.
    """
    point = viewer.dims.point
    if choice == 0:
        return frame_box(gt, point, n_leading)
    if choice == 1:
        offset = viewer.dims.ndim - gt.ndim
        return view_box(gt, point, [a - offset for a in viewer.dims.displayed if a >= offset])
    return boxes_from_shapes(shapes, gt, point) if shapes is not None else []


def region_masks(
    viewer, image_name: str, labels_shape: tuple[int, ...], spatial_ndim: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(validation, training) pixel masks of the image's ``"<image> regions"`` layer, in
    its labels' data coordinates; (None, None) when the image has no regions.

    Raises
    ------
    InputError
        When a shape of the regions layer cannot be read as a region.
    """
    shapes = find_layer(viewer, image_name + REGIONS_SUFFIX, Shapes)
    image = find_layer(viewer, image_name, Image)
    if shapes is None or not len(shapes.data):
        return None, None
    regions = regions_from_shapes(shapes, spatial_ndim, image)
    return (
        role_mask(regions, labels_shape, spatial_ndim, "val"),
        role_mask(regions, labels_shape, spatial_ndim, "train"),
    )


def release_result(viewer: Any, result: PredictionResult | None) -> None:
    """Free what a replaced result holds on disk (stored labels) unless a layer of
    ``viewer`` still shows it."""
    if result is not None:
        result.release_unless_shown(lambda array: any(_shows(lay, array) for lay in viewer.layers))


def _shows(layer: Any, array: Any) -> bool:
    """Whether ``layer`` shows ``array`` (itself, or as the first level of a pyramid)."""
    return layer.data is array or (getattr(layer, "multiscale", False) and layer.data[0] is array)
