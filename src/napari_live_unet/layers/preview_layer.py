"""The live-preview Labels layer: what the model makes of the visible area while it trains.

Main-thread functions on the viewer's layers; the crop itself is handed to the training
worker by :class:`~.visible_crop.VisibleCrop`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image, Labels

from .layer_pairs import LIVE_PREVIEW_SUFFIX, spatial_shape
from .visible_crop import PreviewWindow, visible_window


def preview_layer(viewer: Any, image: Image) -> Labels:
    """The ``"<image> live preview"`` Labels layer, added if it is not there.

    Adding a layer costs a few hundred milliseconds of the GUI thread, so callers add it
    when a run starts rather than in the middle of training; later previews only swap its
    data. The layer that was active stays active (the painter keeps the brush).
    """
    name = image.name + LIVE_PREVIEW_SUFFIX
    if name in viewer.layers and isinstance(viewer.layers[name], Labels):
        return viewer.layers[name]
    active = viewer.layers.selection.active
    layer = viewer.add_labels(
        np.zeros((1,) * len(spatial_shape(image)), np.int32),
        name=name,
        scale=image.scale,
        opacity=0.6,
    )
    layer.contour = 1
    viewer.layers.selection.active = active if active is not None else image
    return layer


def show_preview(viewer: Any, image: Image, labels: np.ndarray, window: PreviewWindow) -> None:
    """Draw labels computed for ``window`` of ``image`` into its preview layer.

    Runs on the GUI thread once per preview, so it does the least napari work that shows
    the new labels: a crop of the same size as the last one (the usual case: the view did
    not change its size) is copied into the layer's array and the layer redrawn, which
    skips what replacing ``data`` costs (the viewer's dimensions, the layer's extent and
    transforms; about half the time). Unchanged labels and an unchanged position cost
    nothing.
    """
    layer = preview_layer(viewer, image)
    offset = [*window.frame, *window.start]
    translate = [t + o * s for t, o, s in zip(image.translate, offset, image.scale, strict=False)]
    if not np.allclose(layer.translate, translate):  # each change redraws the layer
        layer.translate = translate
    # Any: napari types ``data`` as its array protocol, which numpy arrays satisfy at run time.
    new: Any = labels.reshape((1,) * len(window.frame) + labels.shape)
    old = layer.data
    if not isinstance(old, np.ndarray) or old.shape != new.shape or old.dtype != new.dtype:
        layer.data = new
    elif not np.array_equal(old, new):
        old[...] = new
        layer.refresh(extent=False)


def visible_window_of(viewer: Any, image: Image, spatial_ndim: int, max_size: int) -> PreviewWindow:
    """The crop of ``image`` the canvas shows now (see :func:`visible_window`)."""
    shape = spatial_shape(image)
    displayed = tuple(d for d in viewer.dims.displayed if d < len(shape))
    point = image.world_to_data(viewer.dims.point[-len(shape) :])
    return visible_window(image.corner_pixels, point, shape, spatial_ndim, displayed, max_size)
