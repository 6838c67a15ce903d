"""The live-preview Labels layer: what the model makes of the visible area while it trains.

Main-thread functions on the viewer's layers; the crop itself is handed to the training
worker by :class:`~.visible_crop.VisibleCrop`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from napari.layers import Image, Labels

from ..app.visible_crop import (
    MAX_PREVIEW_VOXELS,
    MIN_CONTEXT,
    PreviewWindow,
    steady_window,
    visible_window,
    volume_window,
)
from .layer_pairs import LIVE_PREVIEW_SUFFIX, spatial_shape


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
    fit_contour(layer, viewer.dims.ndisplay)
    viewer.layers.selection.active = active if active is not None else image
    return layer


def fit_contour(layer: Labels, ndisplay: int) -> None:
    """Outline the preview's objects in a 2D view; fill them in a 3D view, where napari
    draws no contours and warns on every redraw of a layer that asks for them."""
    contour = 1 if ndisplay == 2 else 0
    if layer.contour != contour:
        layer.contour = contour


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
    fit_contour(layer, viewer.dims.ndisplay)
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


def visible_window_of(
    viewer: Any,
    image: Image,
    spatial_ndim: int,
    max_size: int,
    context: int | Sequence[int] = MIN_CONTEXT,
    max_voxels: int = MAX_PREVIEW_VOXELS,
    previous: PreviewWindow | None = None,
) -> PreviewWindow:
    """The crop of ``image`` to preview for what the canvas shows now.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer showing ``image``.
    image : Image
        The image being previewed.
    spatial_ndim : int
        Spatial axes of the model (2 or 3).
    max_size : int
        Largest crop edge along a displayed axis.
    context : int or sequence of int
        Slices on each side of the shown one along a spatial axis that is not displayed
        (see :func:`~.visible_crop.preview_context`).
    max_voxels : int
        Largest crop size in voxels.
    previous : PreviewWindow, optional
        The window previewed now: kept while the view moved only a little (see
        :func:`~.visible_crop.steady_window`).

    Returns
    -------
    PreviewWindow
        In a 2D view the field of view (see :func:`~.visible_crop.visible_window`): the
        shown slice of a volume with ``context`` slices each side for a 3D model. In a 3D
        view a bounded sub-volume around the camera's centre (see
        :func:`~.visible_crop.volume_window`).
    """
    shape = spatial_shape(image)
    offset = viewer.dims.ndim - len(shape)  # world axes before the layer's first axis
    displayed = tuple(d - offset for d in viewer.dims.displayed if d >= offset)
    world = np.asarray(viewer.dims.point, dtype=float)
    point = np.asarray(image.world_to_data(world[offset:]), dtype=float)
    args = (point, shape, spatial_ndim, displayed, max_size, context, max_voxels)
    if viewer.dims.ndisplay == 3:
        world[list(viewer.dims.displayed)] = viewer.camera.center[-len(viewer.dims.displayed) :]
        centre = np.asarray(image.world_to_data(world[offset:]), dtype=float)
        window = volume_window(centre, *args)
    else:
        window = visible_window(image.corner_pixels, *args)
    lead = len(shape) - spatial_ndim
    return steady_window(previous, window, [d - lead for d in displayed if d >= lead])
