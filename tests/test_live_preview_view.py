"""The live preview of a volume in a real napari viewer: which crop is asked for and where
its labels are drawn, in a 2D view (one slice) and in a 3D view."""

from __future__ import annotations

import numpy as np
import pytest

from napari_live_unet.engine.config import ModelConfig
from napari_live_unet.widgets.live_preview import LivePreviewController

pytestmark = pytest.mark.gui


def predicted(request):
    """Stand-in for the worker's labels: each slice holds its z in the image, plus 1."""
    z0, z1 = request.key.start[0], request.key.stop[0]
    z = np.arange(z0, z1, dtype=np.int32) + 1
    return np.broadcast_to(z[:, None, None], request.image.shape).copy()


def test_slice_view_previews_the_slices_around_the_shown_one(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    volume = np.random.default_rng(0).random((40, 48, 56), dtype=np.float32)
    image = viewer.add_image(volume, name="volume", scale=(3, 1, 1), translate=(10, 0, 0))
    viewer.dims.set_current_step(0, 30)  # slice 30 of the volume on screen
    controller = LivePreviewController(viewer)
    controller.start(image, 3, ModelConfig(ndim=3, depth=3))  # z multiple 8
    request = controller.crop()
    assert request is not None
    assert request.key.start[0] == 22 and request.key.stop[0] == 39  # 30 - 8 .. 30 + 8
    box = tuple(slice(a, b) for a, b in zip(request.key.start, request.key.stop, strict=True))
    np.testing.assert_array_equal(request.image, volume[box])
    assert request.key.start[1:] == (0, 0) and request.key.stop[1:] == (48, 56)  # in view
    controller.show(predicted(request), request.key)
    layer = viewer.layers["volume live preview"]
    assert layer.data.shape[0] == 17
    assert layer.translate[0] == pytest.approx(10 + 22 * 3)
    world = viewer.dims.point
    assert layer.get_value(world, world=True) == 31  # slice 30's labels, drawn on slice 30
    assert viewer.dims.current_step[0] == 30  # drawing the preview did not move the view
    controller.stop()


def test_a_volume_thinner_than_the_context_is_previewed_whole_along_z(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    volume = np.random.default_rng(1).random((50, 32, 32), dtype=np.float32)
    image = viewer.add_image(volume, name="volume")
    viewer.dims.set_current_step(0, 25)
    controller = LivePreviewController(viewer)
    controller.start(image, 3, ModelConfig(ndim=3, depth=5))  # 32 slices each side
    request = controller.crop()
    assert request is not None
    assert request.image.shape[0] == 50  # all of z, nothing padded
    assert (request.key.start[0], request.key.stop[0]) == (0, 50)
    controller.show(predicted(request), request.key)
    layer = viewer.layers["volume live preview"]
    assert layer.translate[0] == 0 and layer.data.shape[0] == 50
    assert layer.get_value(viewer.dims.point, world=True) == 26
    controller.stop()


def test_3d_view_previews_a_bounded_volume_around_the_camera(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    volume = np.zeros((100, 300, 300), np.uint8)
    image = viewer.add_image(volume, name="volume")
    viewer.dims.ndisplay = 3
    viewer.camera.center = (60, 100, 200)
    controller = LivePreviewController(viewer)
    controller.start(image, 3, ModelConfig(ndim=3, depth=3))
    request = controller.crop()
    assert request is not None
    window = request.key
    assert request.image.size <= controller.crop.max_voxels < volume.size
    for axis, centre in enumerate((60, 100, 200)):
        assert window.start[axis] <= centre < window.stop[axis]
        assert window.stop[axis] - window.start[axis] >= 64  # more than a thin slab
    controller.show(predicted(request), request.key)
    layer = viewer.layers["volume live preview"]
    assert tuple(layer.translate) == tuple(float(a) for a in window.start)
    assert layer.data.shape == request.image.shape
    assert layer.contour == 0  # napari draws no outlines in 3D, and warns at each redraw
    viewer.dims.ndisplay = 2
    controller.show(predicted(request), request.key)
    assert layer.contour == 1
    controller.stop()


def test_the_preview_stays_in_place_under_small_pans_and_follows_large_ones(
    make_napari_viewer, qtbot
):
    viewer = make_napari_viewer(show=True)  # drawn, so the layer knows what is in view
    movie = np.zeros((3, 1200, 1200), np.float32)  # (t, y, x): larger than a preview
    image = viewer.add_image(movie, name="movie")
    viewer.dims.set_current_step(0, 1)
    viewer.camera.zoom = 2.0
    viewer.camera.center = (600, 600)

    def drawn_at(y, x):  # the canvas has drawn the view centred there
        corners = image.corner_pixels[:, 1:]
        return np.allclose(corners.mean(axis=0), (y, x), atol=2)

    qtbot.waitUntil(lambda: drawn_at(600, 600))
    controller = LivePreviewController(viewer)
    controller.start(image, 2)
    first = controller.crop.window
    assert first is not None and first.frame == (1,)
    assert [b - a for a, b in zip(first.start, first.stop, strict=True)] == [384, 384]

    def pan_to(y, x):
        viewer.camera.center = (y, x)
        qtbot.waitUntil(lambda: drawn_at(y, x))
        controller._update_view()  # what its 0.5 s timer does
        return controller.crop.window

    assert pan_to(610, 630) == first  # a few pixels: the preview layer is not moved
    moved = pan_to(600, 900)  # 300 pixels: it follows the view
    assert moved is not None and moved.start[1] == first.start[1] + 300
    viewer.dims.set_current_step(0, 2)  # another frame: it follows at once
    controller._update_view()
    assert controller.crop.window is not None and controller.crop.window.frame == (2,)
    controller.stop()
