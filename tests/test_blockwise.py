"""Blockwise post-processing against whole-image post-processing (issue 13)."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_live_unet.engine import InputError, PostprocessConfig, match_counts
from napari_live_unet.engine.blockwise import (
    BlockLabels,
    default_halo,
    instances_blockwise,
    merge_blocks,
)
from napari_live_unet.engine.postprocess import instances_from_outputs
from napari_live_unet.engine.targets import BOUNDARY, make_targets


def _packed_objects(shape, n, radius, seed):
    """Up to ``n`` discs (2D) or balls (3D), often touching (up to 15 % overlap tried)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    next_id = 1
    for _ in range(n * 3):
        if next_id > n:
            break
        r = rng.uniform(*radius)
        centre = [rng.uniform(r, s - r) for s in shape]
        box = tuple(
            slice(max(0, int(c - r)), min(s, int(c + r) + 2))
            for c, s in zip(centre, shape, strict=True)
        )
        grid = np.ogrid[box]
        ball = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= r * r
        region = labels[box]
        if (region[ball] > 0).mean() > 0.15:
            continue
        region[ball & (region == 0)] = next_id
        next_id += 1
    return labels


def _outputs(labels, mode, noise=0.05, blur=1.0, seed=0):
    """Network-like outputs from known labels: the training targets, blurred and noisy,
    in the (foreground, auxiliary) layout post-processing reads, as float16."""
    if mode == "distance":
        clean = make_targets(labels, "distance")
    else:
        classes = make_targets(labels, "boundary")[0]
        clean = np.stack([classes > 0, classes == BOUNDARY]).astype(np.float32)
    blurred = ndi.gaussian_filter(clean, (0,) + (blur,) * labels.ndim)
    noisy = blurred + np.random.default_rng(seed).normal(0, noise, clean.shape)
    return np.clip(noisy, 0, 1).astype(np.float16)


def _assert_each_id_one_connected_object(labels):
    ids = np.unique(labels)
    ids = ids[ids > 0]
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))  # consecutive 1..N
    for k, box in enumerate(ndi.find_objects(labels), start=1):
        assert box is not None, k
        assert ndi.label(labels[box] == k)[1] == 1, f"id {k} is in several pieces"


def _assert_matches_whole_image(blockwise, whole):
    n_whole, n_block = int(whole.max()), int(blockwise.max())
    assert abs(n_block - n_whole) <= 0.005 * n_whole, (n_block, n_whole)
    counts = match_counts(whole, blockwise, [0.5])[0]
    assert counts.ap >= 0.99, counts
    assert ((blockwise > 0) == (whole > 0)).mean() > 0.999


def _cut_objects(labels, block_shape):
    """How many objects straddle a block border."""
    cut = 0
    for box in ndi.find_objects(labels):
        if box is None:
            continue
        cut += any(s.start // b != (s.stop - 1) // b for s, b in zip(box, block_shape, strict=True))
    return cut


@pytest.mark.parametrize("mode", ["distance", "boundary"])
def test_blockwise_matches_whole_image_2d(mode):
    truth = _packed_objects((320, 320), n=220, radius=(5, 11), seed=1)
    outputs = _outputs(truth, mode)
    params = PostprocessConfig(min_size=15)
    whole = instances_from_outputs(outputs, mode, params)
    assert whole.max() > 150
    assert _cut_objects(truth, (48, 48)) > 60

    blockwise = instances_blockwise(outputs, mode, params, block_shape=48)

    _assert_matches_whole_image(blockwise, whole)
    _assert_each_id_one_connected_object(blockwise)


@pytest.mark.parametrize("mode", ["distance", "boundary"])
def test_blockwise_matches_whole_image_3d(mode):
    truth = _packed_objects((40, 80, 80), n=90, radius=(4, 7), seed=2)
    outputs = _outputs(truth, mode, blur=0.5)  # small balls: keep a seed inside each
    params = PostprocessConfig(min_size=20)
    whole = instances_from_outputs(outputs, mode, params)
    assert whole.max() > 60
    block_shape = (16, 24, 24)
    assert _cut_objects(truth, block_shape) > 40

    blockwise = instances_blockwise(outputs, mode, params, block_shape=block_shape, halo=16)

    _assert_matches_whole_image(blockwise, whole)
    _assert_each_id_one_connected_object(blockwise)


@pytest.mark.parametrize("ndim", [2, 3])
def test_object_across_a_block_corner_is_one_object(ndim):
    shape = (48,) * ndim
    grid = np.indices(shape)
    truth = (sum((g - 24) ** 2 for g in grid) <= 9**2).astype(np.int32)  # centred on a corner
    outputs = _outputs(truth, "distance", noise=0)

    labels = instances_blockwise(outputs, "distance", block_shape=24, halo=8)

    assert labels.max() == 1
    np.testing.assert_array_equal(labels, instances_from_outputs(outputs, "distance"))


def test_min_size_counts_all_pieces_of_a_cut_object():
    truth = np.zeros((64, 64), np.int32)
    grid = np.indices(truth.shape)
    truth[((grid - 32) ** 2).sum(0) <= 25] = 1  # 81 pixels, about 20 in each of 4 blocks
    truth[5:9, 5:9] = 2  # 16 pixels, inside one block
    outputs = _outputs(truth, "distance", noise=0)
    params = PostprocessConfig(min_size=40)

    labels = instances_blockwise(outputs, "distance", params, block_shape=32, halo=8)

    assert labels.max() == 1
    assert labels[32, 32] == 1 and labels[6, 6] == 0
    np.testing.assert_array_equal(labels, instances_from_outputs(outputs, "distance", params))


@pytest.mark.parametrize("mode", ["distance", "boundary"])
def test_one_block_covering_the_image_equals_whole_image(mode):
    truth = _packed_objects((100, 90), n=40, radius=(3, 9), seed=3)
    outputs = _outputs(truth, mode, noise=0.1)
    params = PostprocessConfig(min_size=30)  # removes some objects

    labels = instances_blockwise(outputs, mode, params, block_shape=(128, 100))

    whole = instances_from_outputs(outputs, mode, params)
    assert 0 < whole.max() < len(np.unique(truth)) - 1
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, whole)


def test_a_seam_shifted_by_one_pixel_does_not_join_touching_objects():
    # Two objects meet across a vertical block face; the left block's halo puts their
    # dividing line one row lower than the right block does.
    column = np.repeat([1, 2], 5)[:, None]
    shifted = np.repeat([1, 2], [6, 4])[:, None]
    sizes = np.array([0, 20, 20])
    left = BlockLabels((slice(0, 10), slice(0, 4)), None, 2, sizes, {(1, 1): column}, {})
    right = BlockLabels((slice(0, 10), slice(4, 8)), None, 2, sizes, {(1, 0): column}, {})
    left.outer[(1, 1)] = shifted
    right.outer[(1, 0)] = column

    luts, count = merge_blocks([left, right])

    assert count == 2
    np.testing.assert_array_equal(luts[0], [0, 1, 2])
    np.testing.assert_array_equal(luts[1], [0, 1, 2])


class _RecordingArray:
    """An array-like that records the boxes read from it, as a zarr array would serve."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.reads = data, data.shape, data.dtype, []

    def __getitem__(self, key):
        self.reads.append(key)
        return self.data[key]


def test_reads_block_by_block_and_writes_into_given_array():
    truth = _packed_objects((96, 96), n=40, radius=(4, 8), seed=4)
    outputs = _RecordingArray(_outputs(truth, "distance"))
    out = np.full((96, 96), -7, np.int64)

    result = instances_blockwise(outputs, "distance", block_shape=32, halo=10, out=out)

    assert result is out
    assert len(outputs.reads) == 9
    for key in outputs.reads:
        assert all(s.stop - s.start <= 32 + 2 * 10 for s in key[1:])
    np.testing.assert_array_equal(out > 0, instances_from_outputs(outputs.data, "distance") > 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"block_shape": 0},
        {"block_shape": -16},
        {"block_shape": (32, 32, 32)},
        {"block_shape": (32,)},
        {"block_shape": (32, 0)},
        {"block_shape": 16.5},
        {"block_shape": "32"},
        {"block_shape": 32, "halo": 0},
        {"block_shape": 32, "halo": (4, 4, 4)},
        {"block_shape": 32, "out": np.zeros((40, 40), np.int32)},
        {"block_shape": 32, "out": np.zeros((48, 48), np.float32)},
    ],
)
def test_bad_arguments_are_input_errors(kwargs):
    outputs = np.zeros((2, 48, 48), np.float16)
    with pytest.raises(InputError):
        instances_blockwise(outputs, "distance", **kwargs)


def test_bad_outputs_and_mode_are_input_errors():
    with pytest.raises(InputError, match="shape"):
        instances_blockwise(np.zeros((3, 16, 16)), "distance", block_shape=8)
    with pytest.raises(InputError, match="mode"):
        instances_blockwise(np.zeros((2, 16, 16)), "watershed", block_shape=8)


def test_default_halo_grows_with_object_size_and_smoothing():
    assert default_halo() == 32
    assert default_halo(PostprocessConfig(smoothing=1.0), diameter=40) == 40 + 4 + 2
    assert default_halo(PostprocessConfig(smoothing=2.0), diameter=40) == 40 + 8 + 2


def test_a_model_post_processes_large_images_block_by_block(monkeypatch):
    # Above the size limit the model switches to blocks: the same objects, far less memory.
    from napari_live_unet.engine import ModelConfig, SegmentationModel
    from napari_live_unet.engine import blockwise as blockwise_module
    from napari_live_unet.engine import model as model_module

    labels = _packed_objects((1200, 1100), n=400, radius=(6, 14), seed=3)
    outputs = _outputs(labels, "distance")
    model = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    whole = model.instances(outputs)
    calls = []
    original = model_module.instances_blockwise

    def spy(*args, **kwargs):
        calls.append(kwargs["block_shape"])
        return original(*args, **kwargs)

    monkeypatch.setattr(model_module, "instances_blockwise", spy)
    monkeypatch.setattr(blockwise_module, "POSTPROCESS_BLOCKS_ABOVE", 1000 * 1000)
    blockwise = model.instances(outputs)
    assert calls == [1024]  # 1200x1100 is cut into 1024-pixel blocks
    _assert_matches_whole_image(blockwise, whole)
