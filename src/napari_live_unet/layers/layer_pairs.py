"""Which layers belong together: an image, its full-resolution data and its ground truth.

Works on napari layer objects only (no Qt), on the main thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari.layers import Image, Labels

GROUND_TRUTH_SUFFIX = " ground truth"
REGIONS_SUFFIX = " regions"
PREDICTIONS_SUFFIX = " predictions"
LIVE_PREVIEW_SUFFIX = " live preview"
MODEL_OUTPUT_SUFFIXES = (PREDICTIONS_SUFFIX, LIVE_PREVIEW_SUFFIX)


def find_layer(viewer: Any, name: str, kind: type) -> Any:
    """The layer called ``name`` if it exists and is a ``kind`` layer."""
    layers = viewer.layers  # a LayerList: no dict-like get()
    layer = layers[name] if name in layers else None  # noqa: SIM401
    return layer if isinstance(layer, kind) else None


def layer_image_data(image_layer: Image):
    """The full-resolution array of an image layer (level 0 of a multiscale image).

    The array is returned as the layer holds it: a dask or zarr array (or a pyramid's level
    0) stays lazy, and readers such as the prediction job take one frame at a time from it.
    """
    return image_layer.data[0] if image_layer.multiscale else image_layer.data


def spatial_shape(image_layer: Image) -> tuple[int, ...]:
    """The image's shape without an RGB channel axis: the shape its labels need."""
    shape = tuple(layer_image_data(image_layer).shape)
    return shape[:-1] if image_layer.rgb else shape


def layer_choices(viewer: Any, kind: type) -> Callable[..., list[tuple[str, Any]]]:
    """A magicgui ``choices`` callable: (name, layer) of the viewer's ``kind`` layers, in
    order. Labels layers are offered only if they can be ground truth (see
    :func:`ground_truth_candidates`)."""
    from napari.layers import Labels

    def choices(_widget: Any = None) -> list[tuple[str, Any]]:
        if kind is Labels:
            return [(layer.name, layer) for layer in ground_truth_candidates(viewer.layers)]
        return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, kind)]

    return choices


def ground_truth_of(layers, image_layer: Image) -> Labels | None:
    """The ground-truth Labels layer paired with ``image_layer``, if one can be told.

    ``"<image> ground truth"`` (as the Annotate widget names it) when it exists; otherwise
    the only Labels layer with the image's spatial shape, leaving out prediction and
    live-preview layers. None when there is no such layer or several.
    """
    from napari.layers import Labels

    named = image_layer.name + GROUND_TRUTH_SUFFIX
    if named in layers and isinstance(layers[named], Labels):
        return layers[named]
    shape = spatial_shape(image_layer)
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
