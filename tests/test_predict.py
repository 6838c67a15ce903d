import itertools
import threading

import numpy as np
import pytest
import torch

from napari_live_unet.engine import ModelConfig, SegmentationModel, memory_budget, predict
from napari_live_unet.engine.errors import InputError
from napari_live_unet.engine.predict import _Band
from napari_live_unet.engine.tile_plan import (
    activation_bytes_per_voxel,
    blend_window,
    check_tile_shape,
    context_margin,
    plan_tile,
    tile_starts,
)
from napari_live_unet.engine.unet import UNet

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
    stop = threading.Event()

    def progress(done, total):
        calls.append((done, total))
        if len(calls) >= 2:
            stop.set()

    out = predict_one(
        Pointwise(),
        image,
        mode="distance",
        size_multiple=1,
        tile_shape=(32, 32),
        overlap=0,
        batch_size=2,
        progress=progress,
        stop=stop,
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


class ShapeSpy(torch.nn.Module):
    """Records the spatial shape of every batch it is given; the output is pointwise."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape[2:]))
        return Pointwise()(x)


def test_automatic_tile_is_the_padded_image_when_it_fits():
    assert plan_tile((520, 696), (16, 16), (112, 112), 10**7) == (528, 704)
    # A 520-pixel axis is one 528 tile, not two 512 tiles overlapping by 504.
    assert plan_tile((520, 520), (16, 16), (16, 16), 528 * 528) == (528, 528)
    spy = ShapeSpy()
    image = np.zeros((1, 300, 1300), np.float32)
    predict_one(spy, image, mode="distance", size_multiple=16)
    assert spy.shapes == [(304, 1312)]  # today's 1024² cap would make two tiles


@pytest.mark.parametrize(
    "shape,multiples,margins,budget",
    [
        ((6000, 6000), (16, 16), (112, 112), 2_236_962),
        ((2000, 3000), (16, 16), (112, 112), 2_236_962),
        ((64, 512, 512), (8, 8, 8), (56, 56, 56), 2_236_962),
        ((64, 512, 512), (2, 8, 8), (10, 56, 56), 2_236_962),
        ((100, 37), (4, 4), (8, 8), 40 * 40),
    ],
)
def test_large_images_get_the_fewest_tiles_that_fit(shape, multiples, margins, budget):
    tile = plan_tile(shape, multiples, margins, budget)
    padded = [-(-s // m) * m for s, m in zip(shape, multiples, strict=True)]
    assert np.prod(tile) <= budget
    assert all(t % m == 0 and t <= p for t, m, p in zip(tile, multiples, padded, strict=True))
    counts = [
        len(tile_starts(s, t, o, m))
        for s, t, o, m in zip(shape, tile, margins, multiples, strict=True)
    ]
    # No tiling with fewer tiles along any axis fits the budget (given the others).
    for axis, n in enumerate(counts):
        if n > 1:
            fewer = -(-(padded[axis] + (n - 2) * margins[axis]) // (n - 1))
            fewer = -(-fewer // multiples[axis]) * multiples[axis]
            bigger = list(tile)
            bigger[axis] = fewer
            assert np.prod(bigger) > budget


def test_tile_starts_fall_on_multiples_and_keep_the_overlap():
    for size, tile, overlap, multiple in [(603, 256, 112, 16), (1000, 208, 56, 8), (50, 16, 4, 4)]:
        starts = tile_starts(size, tile, overlap, multiple)
        assert all(s % multiple == 0 for s in starts)
        assert starts[0] == 0 and starts[-1] + tile == -(-size // multiple) * multiple
        assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))


def test_automatic_tiles_match_the_whole_image_away_from_seams(monkeypatch):
    monkeypatch.setattr(predict, "autocast_dtype", lambda device: None)  # exact float32
    torch.manual_seed(0)
    net = UNet(ModelConfig(base_channels=4, depth=2)).eval()
    margin = context_margin(net, (4, 4))
    assert margin == (24, 24)  # receptive radius 4 × (1 + 2) + 2 × 4 + (1 + 2) = 23
    monkeypatch.setattr(memory_budget, "CPU_TILE_BYTES", 96 * 96 * activation_bytes_per_voxel(net))
    image = np.random.default_rng(1).random((1, 150, 230)).astype(np.float32)
    options = dict(mode="distance", size_multiple=4, low=np.zeros(1), high=np.ones(1))
    spy = []
    forward = net.forward
    net.forward = lambda x: (spy.append(tuple(x.shape[2:])), forward(x))[1]
    tiled = predict_one(net, image, out_dtype=np.float32, **options)
    tiles = {shape for shape in spy}
    assert len(tiles) == 1 and np.prod(next(iter(tiles))) <= 96 * 96
    spy.clear()
    whole = predict_one(net, image, tile_shape=(152, 232), out_dtype=np.float32, **options)
    assert spy == [(152, 232)]
    # Pixels that only one tile covers lie at least the margin inside it: exact there.
    tile = next(iter(tiles))
    cover = np.zeros(image.shape[1:], int)
    for start in itertools.product(
        *[tile_starts(s, t, o, 4) for s, t, o in zip(image.shape[1:], tile, margin, strict=True)]
    ):
        cover[tuple(slice(s, s + t) for s, t in zip(start, tile, strict=True))] += 1
    assert cover.min() >= 1 and (cover == 1).any() and (cover > 1).any()
    single = cover == 1
    np.testing.assert_allclose(tiled[:, single], whole[:, single], atol=1e-5)
    assert np.abs(tiled - whole).max() < 0.05


def test_per_axis_multiples_pad_each_axis_to_its_own():
    spy = ShapeSpy()
    image = np.zeros((1, 10, 30, 50), np.float32)
    predict_one(spy, image, mode="distance", size_multiple=(4, 8, 8))
    assert spy.shapes == [(12, 32, 56)]
    spy.shapes.clear()
    predict_one(spy, image, mode="distance", size_multiple=(4, 8, 8), tile_shape=(8, 16, 16))
    assert set(spy.shapes) == {(8, 16, 16)}
    assert plan_tile((10, 30, 50), (4, 8, 8), (4, 8, 8), 10**6) == (12, 32, 56)


def test_tile_shape_check_names_per_axis_minimum():
    check_tile_shape((8, 16, 16), (4, 8, 8))
    with pytest.raises(InputError, match="8x16x16"):
        check_tile_shape((8, 8, 16), (4, 8, 8))
    with pytest.raises(InputError, match="32 pixels along each axis"):
        check_tile_shape((16, 64), 16)
