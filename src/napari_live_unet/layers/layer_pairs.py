"""Training pairs from napari layers: image, ground-truth labels and a regions shapes layer.

Works on napari layer objects only (no Qt), so it runs in tests and scripts without a window.
Call it on the main thread: the pairs it returns hold copies, so training in a worker thread
never sees the user's next brush strokes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..engine.data import TrainingPair
from ..engine.errors import InputError
from ..engine.regions import Region, pairs_from_regions

if TYPE_CHECKING:
    from napari.layers import Image, Labels, Shapes

_ROLE_NAMES = {"train": "train", "training": "train", "val": "val", "validation": "val"}
_ELLIPSE_POINTS = 64


def regions_from_shapes(
    shapes_layer: Shapes, spatial_ndim: int, image_layer: Image | None = None
) -> list[Region]:
    """Regions marked by the rectangles and polygons of a shapes layer.

    Parameters
    ----------
    shapes_layer : napari.layers.Shapes
        Rectangles, polygons or ellipses; the ``role`` feature (``"train"`` or ``"val"``)
        says what each marks, ``"train"`` where there is no such feature.
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
    regions = []
    for i, (vertices, kind, role) in enumerate(
        zip(shapes_layer.data, shapes_layer.shape_type, roles, strict=True), start=1
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
            vertices = np.array(
                [image_layer.world_to_data(shapes_layer.data_to_world(v)) for v in vertices]
            )
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
        if kind == "ellipse" and spatial_ndim == 2:
            spatial = _ellipse_polygon(spatial)
        regions.append(Region(_ROLE_NAMES[role], tuple(frames[0].tolist()), spatial))
    return regions


def pairs_from_layers(
    image_layer: Image,
    labels_layer: Labels,
    regions_layer: Shapes | None = None,
    spatial_ndim: int = 2,
) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """Training and validation pairs from an image, its ground truth and its regions.

    Parameters
    ----------
    image_layer : napari.layers.Image
        The image (RGB images are read channel last; multiscale images at full resolution).
    labels_layer : napari.layers.Labels
        Ground truth with the image's shape.
    regions_layer : napari.layers.Shapes, optional
        Annotated regions (see :func:`regions_from_shapes`). Without it, or when it holds no
        shapes, every frame with objects is taken as fully annotated.
    spatial_ndim : int
        2 or 3; leading axes beyond these are frames (time points, slices).

    Returns
    -------
    train, val : list of TrainingPair
        See :func:`napari_live_unet.engine.pairs_from_regions`.
    """
    regions = (
        regions_from_shapes(regions_layer, spatial_ndim, image_layer)
        if regions_layer is not None and len(regions_layer.data)
        else []
    )
    return pairs_from_regions(
        image_layer.name,
        layer_image_data(image_layer),
        labels_layer.data,
        regions,
        spatial_ndim,
        channel_axis=-1 if image_layer.rgb else None,
    )


def layer_image_data(image_layer: Image):
    """The full-resolution array of an image layer (level 0 of a multiscale image)."""
    return image_layer.data[0] if image_layer.multiscale else image_layer.data


MODEL_OUTPUT_SUFFIXES = (" predictions", " live preview")


def ground_truth_of(layers, image_layer: Image) -> Labels | None:
    """The ground-truth Labels layer paired with ``image_layer``, if one can be told.

    ``"<image> ground truth"`` (as the Annotate widget names it) when it exists; otherwise
    the only Labels layer with the image's spatial shape, leaving out prediction and
    live-preview layers. None when there is no such layer or several.
    """
    from napari.layers import Labels

    named = f"{image_layer.name} ground truth"
    if named in layers and isinstance(layers[named], Labels):
        return layers[named]
    shape = tuple(layer_image_data(image_layer).shape)
    shape = shape[:-1] if image_layer.rgb else shape
    candidates = [
        layer for layer in ground_truth_candidates(layers) if tuple(layer.data.shape) == shape
    ]
    return candidates[0] if len(candidates) == 1 else None


def ground_truth_candidates(layers) -> list[Labels]:
    """Labels layers that can be ground truth: not the plugin's predictions or previews."""
    from napari.layers import Labels

    return [
        layer
        for layer in layers
        if isinstance(layer, Labels) and not layer.name.endswith(MODEL_OUTPUT_SUFFIXES)
    ]


def _ellipse_polygon(corners: np.ndarray) -> np.ndarray:
    # napari stores an ellipse as the four corners of its (possibly rotated) bounding box.
    centre = corners.mean(0)
    half_a = (corners[1] - corners[0]) / 2
    half_b = (corners[3] - corners[0]) / 2
    t = np.linspace(0, 2 * np.pi, _ELLIPSE_POINTS, endpoint=False)[:, None]
    return centre + np.cos(t) * half_a + np.sin(t) * half_b
