"""Which crop the live preview asks the model for (no viewer needed)."""

import numpy as np

from napari_live_unet.layers.visible_crop import PreviewWindow, VisibleCrop, visible_window


def test_window_follows_the_view_and_is_capped_around_its_centre():
    corners = np.array([[0, 100, 200], [0, 899, 1199]])  # (t, y, x): y 100-899, x 200-1199
    window = visible_window(corners, np.array([3.2, 0, 0]), (5, 1000, 1500), 2, (1, 2), 256)
    assert window.frame == (3,)
    assert window.start == (500 - 128, 700 - 128) and window.stop == (500 + 128, 700 + 128)
    small = visible_window(np.array([[10, 20], [49, 79]]), np.zeros(2), (64, 96), 2, (0, 1), 256)
    assert small == PreviewWindow((), (10, 20), (50, 80))


def test_three_d_model_previews_a_slab_around_the_current_slice():
    corners = np.array([[0, 0, 0], [0, 63, 63]])
    window = visible_window(corners, np.array([40.0, 0, 0]), (100, 64, 64), 3, (1, 2), 256, 32)
    assert window.frame == ()
    assert window.start == (24, 0, 0) and window.stop == (56, 64, 64)


def test_source_crops_and_moves_rgb_channels_first():
    data = np.arange(2 * 10 * 12 * 3).reshape(2, 10, 12, 3)
    source = VisibleCrop()
    assert source() is None
    source.set_view(data, PreviewWindow((1,), (2, 3), (6, 9)), rgb=True)
    request = source()
    crop, (low, high) = request.image, request.intensity_range
    assert crop.shape == (3, 4, 6)
    assert low.shape == high.shape == (3,)
    assert high[0] > data[1, 2:6, 3:9, 0].max()  # range of the whole frame, not the crop
    np.testing.assert_array_equal(crop[0], data[1, 2:6, 3:9, 0])
    source.clear()
    assert source() is None
