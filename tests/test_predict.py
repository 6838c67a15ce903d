import numpy as np
import pytest
import torch

from napari_live_unet.engine import ModelConfig, SegmentationModel
from napari_live_unet.engine.errors import InputError
from napari_live_unet.engine.predict import _Band, blend_window, tile_starts

from .conftest import predict_one


class Pointwise(torch.nn.Module):
    """A network whose output at a pixel depends only on that pixel: tiling must be exact."""

    def forward(self, x):
        return torch.cat([x * 3.0 - 1.0, x * 0.5], dim=1)


@pytest.mark.parametrize(
    "shape,tile,overlap",
    [
        ((100, 77), (32, 32), 8),
        ((300, 40), (64, 64), 16),
        ((20, 50, 33), (8, 16, 16), 4),
        ((10, 12), (64, 64), 8),
    ],
)
def test_tiled_prediction_matches_whole_image(shape, tile, overlap):
    rng = np.random.default_rng(0)
    image = rng.random((1, *shape)).astype(np.float32)
    low, high = np.zeros(1, np.float32), np.ones(1, np.float32)
    out = predict_one(
        Pointwise(),
        image,
        mode="distance",
        size_multiple=4,
        low=low,
        high=high,
        tile_shape=tile,
        overlap=overlap,
        batch_size=3,
        out_dtype=np.float32,
    )
    expected_fg = 1 / (1 + np.exp(-(image[0] * 3 - 1)))
    np.testing.assert_allclose(out[0], expected_fg, atol=1e-5)
    np.testing.assert_allclose(out[1], np.clip(image[0] * 0.5, 0, 1), atol=1e-5)


def test_tile_starts_cover_everything():
    for size, tile, overlap in [(100, 32, 8), (64, 64, 8), (65, 64, 16), (10, 64, 8)]:
        starts = tile_starts(size, tile, overlap)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s : s + tile] = True
        assert covered.all() and starts[-1] + min(tile, size) == size


def test_blend_window_positive_and_smooth():
    w = blend_window((32, 32), 8)
    assert w.min() > 0 and w.max() == 1
    assert w[0, 0] < w[4, 4] < w[16, 16]


def test_band_accumulator_is_bounded_by_tile_not_image():
    band = _Band((5000, 300), (128, 128), 0, torch.ones(128, 128))
    assert tuple(band.acc.shape) == (2, 128, 300)


def test_stop_returns_none_and_progress_reported():
    image = np.zeros((1, 128, 128), np.float32)
    calls = []
    out = predict_one(
        Pointwise(),
        image,
        mode="distance",
        size_multiple=1,
        tile_shape=(32, 32),
        overlap=0,
        batch_size=2,
        progress=lambda d, t: calls.append((d, t)),
        should_stop=lambda: len(calls) >= 2,
    )
    assert out is None and calls[-1] == (4, 16)


def test_model_prediction_shapes_and_channel_checks():
    model = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    image = np.random.default_rng(0).integers(0, 255, (70, 90)).astype(np.uint8)
    out = model.predict_outputs(image, tile_shape=(32, 32))
    assert out.shape == (2, 70, 90) and out.dtype == np.float16
    labels = model.segment(image, tile_shape=(32, 32))
    assert labels.shape == (70, 90) and labels.dtype == np.int32
    with pytest.raises(InputError, match="not 2D"):
        model.predict_outputs(np.zeros((4, 70, 90, 2)))
    with pytest.raises(InputError, match="NaN"):
        model.predict_outputs(np.full((32, 32), np.nan, np.float32))


def test_many_images_share_batches_and_match_single_predictions():
    model = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    rng = np.random.default_rng(3)
    images = [
        rng.integers(0, 255, s).astype(np.uint8)
        for s in [(40, 40), (40, 40), (100, 70), (40, 40), (24, 30)]
    ]
    seen = []
    net = model.network
    original_forward = net.forward
    net.forward = lambda x: (seen.append(len(x)), original_forward(x))[1]
    many = list(model.predict_outputs_many(iter(images), tile_shape=(64, 64), batch_size=4))
    assert max(seen) > 1  # the 40x40 images travelled together
    net.forward = original_forward
    assert len(many) == len(images)
    for image, out in zip(images, many, strict=True):
        single = model.predict_outputs(image, tile_shape=(64, 64), batch_size=1)
        np.testing.assert_allclose(out.astype(np.float32), single.astype(np.float32), atol=2e-3)


def test_segment_many_matches_one_by_one():
    model = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 255, (48, 48)).astype(np.uint8) for _ in range(5)]
    results = list(model.segment_many(iter(images), workers=2, tile_shape=(64, 64)))
    assert len(results) == 5
    for image, (maps, labels) in zip(images, results, strict=True):
        assert maps.shape == (2, 48, 48)
        np.testing.assert_array_equal(labels, model.instances(maps))
        np.testing.assert_array_equal(labels, model.segment(image, tile_shape=(64, 64)))
