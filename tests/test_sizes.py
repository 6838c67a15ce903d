"""Issue 12 (1): training patches are sized from the data, z on its own."""

from __future__ import annotations

import pytest

from napari_live_unet.engine.sizes import training_patch_shape


@pytest.mark.parametrize(
    ("shapes", "ndim", "expected"),
    [
        ([(512, 512)], 2, (128, 128)),  # large images: the wanted size
        ([(40, 300)], 2, (48, 128)),  # one short axis: capped there, rounded up to 16
        ([(40, 300), (90, 20)], 2, (96, 128)),  # the largest extent per axis counts
        ([(10, 60, 70)], 3, (16, 64, 80)),  # a small volume: no 32x128x128 giants
        ([(200, 500, 500)], 3, (32, 128, 128)),  # a large volume: the wanted size
        ([], 3, (32, 128, 128)),  # no data known: the wanted size
    ],
)
def test_patches_never_exceed_the_data(shapes, ndim, expected):
    assert training_patch_shape(128, 32, ndim, 16, shapes) == expected


def test_every_edge_is_a_multiple_of_the_network_size():
    patch = training_patch_shape(100, 20, 3, 8, [(5, 33, 1000)])
    assert all(edge % 8 == 0 and edge >= 8 for edge in patch)
    assert patch == (8, 40, 96)
