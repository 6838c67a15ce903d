"""Which crop the live preview asks the model for (no viewer needed)."""

from types import SimpleNamespace

import numpy as np

from napari_live_unet.app.visible_crop import (
    MIN_CONTEXT,
    PreviewWindow,
    VisibleCrop,
    preview_context,
    steady_window,
    visible_window,
    volume_window,
)
from napari_live_unet.engine.config import ModelConfig


def test_window_is_capped_around_the_view_centre():
    corners = np.array([[0, 100, 200], [0, 899, 1199]])  # (t, y, x): y 100-899, x 200-1199
    window = visible_window(corners, np.array([3.2, 0, 0]), (5, 1000, 1500), 2, (1, 2), 256)
    assert window.frame == (3,)
    assert window.start == (500 - 128, 700 - 128) and window.stop == (500 + 128, 700 + 128)
    # An image smaller than the cap is previewed whole, however far the view zooms in.
    small = visible_window(np.array([[10, 20], [49, 79]]), np.zeros(2), (64, 96), 2, (0, 1), 256)
    assert small == PreviewWindow((), (0, 0), (64, 96))


def test_zooming_and_small_pans_keep_the_window_in_place():
    shape = (1000, 1500)

    def window(y0, x0, size, previous=None):
        corners = np.array([[y0, x0], [y0 + size - 1, x0 + size - 1]])
        new = visible_window(corners, np.zeros(2), shape, 2, (0, 1), 256)
        return steady_window(previous, new, (0, 1))

    first = window(300, 400, 200)
    assert window(340, 440, 120) == first  # zoomed in on the same centre: same window
    assert window(305, 408, 200, first) == first  # a pan of a few pixels: kept
    assert window(360, 400, 200, first) == first  # 60 pixels: still under a quarter
    moved = window(500, 400, 200, first)  # a pan of 200 pixels: the window follows
    assert moved.start[0] == first.start[0] + 200 and moved.start[1] == first.start[1]


def test_changing_slice_or_frame_always_moves_the_window():
    slab = PreviewWindow((), (10, 0, 0), (19, 256, 256))  # z 10-18 around slice 14
    next_slice = PreviewWindow((), (11, 0, 0), (20, 256, 256))
    assert steady_window(slab, next_slice, (1, 2)) == next_slice
    frame = PreviewWindow((0,), (0, 0), (256, 256))
    assert steady_window(frame, PreviewWindow((1,), (0, 0), (256, 256)), (0, 1)).frame == (1,)


def test_three_d_model_previews_a_slab_around_the_current_slice():
    corners = np.array([[0, 0, 0], [0, 63, 63]])
    window = visible_window(corners, np.array([40.0, 0, 0]), (100, 64, 64), 3, (1, 2), 256, 8)
    assert window.frame == ()
    assert window.start == (32, 0, 0) and window.stop == (49, 64, 64)  # z 40 - 8 .. 40 + 8
    # Near the ends the slab is clipped to the volume, never padded or shifted past it.
    low = visible_window(corners, np.array([3.0, 0, 0]), (100, 64, 64), 3, (1, 2), 256, 8)
    assert (low.start[0], low.stop[0]) == (0, 12)
    high = visible_window(corners, np.array([99.0, 0, 0]), (100, 64, 64), 3, (1, 2), 256, 8)
    assert (high.start[0], high.stop[0]) == (91, 100)


def test_a_thin_volume_is_previewed_whole_along_z():
    corners = np.array([[0, 0, 0], [0, 63, 63]])
    for z in range(6):
        window = visible_window(corners, np.array([z, 0, 0]), (6, 64, 64), 3, (1, 2), 256, 8)
        assert window.start == (0, 0, 0) and window.stop == (6, 64, 64)


def test_a_large_slab_keeps_its_depth_and_narrows_around_the_view_centre():
    corners = np.array([[0, 0, 0], [0, 999, 999]])
    window = visible_window(
        corners,
        np.array([50.0, 0, 0]),
        (100, 1000, 1000),
        3,
        (1, 2),
        384,
        8,
        max_voxels=17 * 100**2,
    )
    assert (window.start[0], window.stop[0]) == (42, 59)
    assert window.start[1:] == (450, 450) and window.stop[1:] == (550, 550)


def test_three_d_view_previews_a_bounded_volume_around_the_camera_centre():
    shape = (200, 1000, 1000)
    window = volume_window(
        np.array([100.0, 300, 700]), np.zeros(3), shape, 3, (0, 1, 2), 384, 8, 64**3
    )
    sizes = np.subtract(window.stop, window.start)
    assert np.prod(sizes) <= 64**3 and tuple(sizes) == (64, 64, 64)
    assert window.start == (68, 268, 668)
    # A thin volume stays whole along z; y and x share the rest of the budget.
    thin = volume_window(
        np.array([2.0, 500, 500]), np.zeros(3), (5, 1000, 1000), 3, (0, 1, 2), 384, 8, 5 * 100**2
    )
    assert thin.start == (0, 450, 450) and thin.stop == (5, 550, 550)
    # A small volume is previewed whole wherever the camera is.
    small = volume_window(np.array([-9.0, 90, 0]), np.zeros(3), (10, 40, 40), 3, (0, 1, 2), 384)
    assert small.start == (0, 0, 0) and small.stop == (10, 40, 40)


def test_context_follows_the_network_s_z_multiple():
    assert preview_context(ModelConfig(ndim=3, depth=3)) == (8, 8, 8)
    assert preview_context(ModelConfig(ndim=3, depth=1)) == (MIN_CONTEXT,) * 3
    anisotropic = SimpleNamespace(ndim=3, depth=4, size_multiples=(2, 16, 16))
    assert preview_context(anisotropic)[0] == MIN_CONTEXT  # type: ignore[arg-type]
    older = SimpleNamespace(ndim=3, depth=4)  # a config without per-axis multiples
    assert preview_context(older) == (16, 16, 16)  # type: ignore[arg-type]
    assert preview_context(None) == (8, 8, 8)


def test_source_crops_and_moves_rgb_channels_first():
    data = np.arange(2 * 10 * 12 * 3).reshape(2, 10, 12, 3)
    source = VisibleCrop()
    assert source() is None
    source.set_view(data, PreviewWindow((1,), (2, 3), (6, 9)), rgb=True)
    request = source()
    assert request is not None and request.intensity_range is not None
    crop, (low, high) = request.image, request.intensity_range
    assert crop.shape == (3, 4, 6)
    assert low.shape == high.shape == (3,)
    assert high[0] > data[1, 2:6, 3:9, 0].max()  # range of the whole frame, not the crop
    np.testing.assert_array_equal(crop[0], data[1, 2:6, 3:9, 0])
    source.clear()
    assert source() is None
