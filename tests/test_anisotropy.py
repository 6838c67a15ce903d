"""Issue 12 (2, 6): voxel sizes, flat-then-3D networks, physical distance targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage as ndi

from napari_live_unet.engine import (
    AdaptOptions,
    ModelConfig,
    TrainConfig,
    TrainingStarted,
    load_model,
    make_pair,
    save_model,
    train,
)
from napari_live_unet.engine.augment import augment_batch
from napari_live_unet.engine.config import AugmentConfig, anisotropic_layout
from napari_live_unet.engine.errors import InputError
from napari_live_unet.engine.memory_estimate import training_memory_bytes
from napari_live_unet.engine.model import SegmentationModel
from napari_live_unet.engine.sizes import training_patch_shape
from napari_live_unet.engine.targets import (
    TOUCHING_SCALE,
    distance_target,
    normalized_distance,
)
from napari_live_unet.engine.unet import UNet
from napari_live_unet.engine.voxel_metadata import read_voxel_size


@pytest.mark.parametrize(
    ("voxel", "pooling", "kernels"),
    [
        # z steps 4x the pixel: two flat levels bring voxels to 4x4x4, then full 3D
        (
            (4.0, 1.0, 1.0),
            ((1, 2, 2), (1, 2, 2), (2, 2, 2)),
            ((1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3)),
        ),
        # z steps 2x: one flat level
        (
            (2.0, 1.0, 1.0),
            ((1, 2, 2), (2, 2, 2), (2, 2, 2)),
            ((1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
        ),
        # nearly isotropic: a plain 3D U-net
        ((1.3, 1.0, 1.0), ((2, 2, 2),) * 3, ((3, 3, 3),) * 4),
    ],
)
def test_pooling_and_kernels_follow_the_voxel_size(voxel, pooling, kernels):
    assert anisotropic_layout(voxel, 3) == (pooling, kernels)


def test_anisotropic_network_keeps_the_input_shape_and_pools_z_less():
    pooling, kernels = anisotropic_layout((4.0, 1.0, 1.0), 3)
    config = ModelConfig(ndim=3, base_channels=4, depth=3, pooling=pooling, kernels=kernels)
    assert config.size_multiples == (2, 8, 8)
    network = UNet(config).eval()
    with torch.no_grad():
        out = network(torch.zeros(1, 1, 6, 32, 40))
    assert out.shape == (1, 2, 6, 32, 40)
    first = network.down[0][0]
    assert tuple(first.kernel_size) == (1, 3, 3)  # a flat first level
    assert tuple(network.down[-1][0].kernel_size) == (3, 3, 3)  # full 3D at the bottom
    # fewer pooled voxels are fewer features to hold: the estimate follows the pooling
    iso = ModelConfig(ndim=3, base_channels=4, depth=3)
    patch = (8, 64, 64)
    assert training_memory_bytes(config, TrainConfig(), patch=patch) > training_memory_bytes(
        iso, TrainConfig(), patch=patch
    )


def test_per_axis_multiples_size_patches_on_their_own():
    # z pools by 2 only: a 6-slice volume gets an 6-deep patch, not 8
    assert training_patch_shape(64, 16, 3, (2, 8, 8), [(6, 50, 200)]) == (6, 56, 64)


def test_voxel_size_and_pooling_survive_saving(tmp_path):
    pooling, kernels = anisotropic_layout((3.0, 0.5, 0.5), 3)
    config = ModelConfig(
        ndim=3, base_channels=4, voxel_size=(3.0, 0.5, 0.5), pooling=pooling, kernels=kernels
    )
    model = SegmentationModel.create(config)
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.config.voxel_size == (3.0, 0.5, 0.5)
    assert loaded.config.pooling == pooling and loaded.config.kernels == kernels
    for key, value in model.network.state_dict().items():
        assert torch.equal(value, loaded.network.state_dict()[key])


@pytest.mark.parametrize(
    ("voxel", "problem"),
    [
        ((0.0, 1.0, 1.0), "positive"),
        ((-2.0, 1.0, 1.0), "positive"),
        ((math.nan, 1.0, 1.0), "positive"),
        ((math.inf, 1.0, 1.0), "positive"),
        (("a", 1, 1), "numbers"),
    ],
)
def test_bad_voxel_sizes_are_refused_with_a_clear_message(voxel, problem):
    with pytest.raises(InputError, match=problem):
        AdaptOptions(voxel_size=voxel)
    with pytest.raises(ValueError, match=problem):
        ModelConfig(ndim=3, voxel_size=voxel)


def test_a_voxel_size_with_the_wrong_number_of_axes_names_the_axes():
    model = SegmentationModel.create(ModelConfig(ndim=3, base_channels=4, voxel_size=(2, 1, 1)))
    with pytest.raises(InputError, match="Z,Y,X"):
        model.voxel_zoom((1.0, 1.0))
    with pytest.raises(ValueError, match="3 numbers"):
        ModelConfig(ndim=3, voxel_size=(1.0, 1.0))


def test_distance_targets_are_in_physical_units():
    # A box 7 slices deep of 3 µm z steps and 21x21 pixels of 1 µm: 21 µm on every axis.
    labels = np.zeros((9, 23, 23), np.int32)
    labels[1:8, 1:22, 1:22] = 1
    physical = normalized_distance(labels, sampling=(3.0, 1.0, 1.0))
    voxels = normalized_distance(labels)
    centre = (4, 11, 11)
    # 3 µm from the surface along z (one slice in) and along x (three pixels in): equal
    assert physical[1, 11, 11] == pytest.approx(physical[4, 11, 3], rel=0.01)
    assert physical[centre] == pytest.approx(1.0)
    # in voxel units, the flat box's distance falls off along z three times too fast
    assert voxels[1, 11, 11] < 0.5 * voxels[4, 11, 3]


def _saddle(distance, labels):
    """Highest level at which objects 1 and 2 are joined in ``distance > level``."""
    low, high = 0.0, 1.0
    for _ in range(20):
        level = (low + high) / 2
        parts = ndi.label(distance > level, np.ones((3, 3, 3)))[0]
        joined = np.intersect1d(parts[labels == 1], parts[labels == 2])
        low, high = (level, high) if (joined > 0).any() else (low, level)
    return low


def test_distance_target_keeps_a_valley_between_nuclei_stacked_in_z():
    # Two nuclei two slices deep (3 µm steps), one on top of the other.
    z, y, x = np.indices((8, 24, 24))
    labels = np.zeros((8, 24, 24), np.int32)
    labels[(z >= 2) & (z <= 3) & ((y - 11) ** 2 + (x - 12) ** 2 <= 36)] = 1
    labels[(z >= 4) & (z <= 5) & ((y - 13) ** 2 + (x - 12) ** 2 <= 36)] = 2
    sampling = (3.0, 1.0, 1.0)
    # Each nucleus's last slice lies a z step from the other, as far as its centre lies
    # from its sides: the per-object distance joins the two peaks without a dip.
    assert _saddle(normalized_distance(labels, sampling), labels) > 0.9
    target = distance_target(labels, sampling)
    assert _saddle(target, labels) <= TOUCHING_SCALE
    assert np.isclose(target[labels == 1].max(), 1.0)
    assert np.isclose(target[labels == 2].max(), 1.0)


def test_augmentation_keeps_z_as_z():
    # Each slice holds one value: any turn or flip that mixed z with y/x would mix them.
    gen = torch.Generator().manual_seed(0)
    z = torch.arange(8, dtype=torch.float32).reshape(1, 1, 8, 1, 1)
    image = z.expand(16, 1, 8, 32, 32).contiguous()
    targets = image.clone()
    mask = torch.ones(16, 1, 8, 32, 32)
    config = AugmentConfig(intensity=False, max_rotation_deg=45.0)
    out, out_targets, out_mask = augment_batch(
        image, targets, mask, config, categorical=(False,), generator=gen
    )
    # targets count where the mask does (pixels rotated in from outside are masked out)
    inside = out_mask > 0
    filled = torch.where(inside, out_targets, out.detach())
    for batch in (out, filled):
        per_slice = batch.flatten(3)  # (B, C, Z, Y*X)
        spread = per_slice.max(dim=-1).values - per_slice.min(dim=-1).values
        assert float(spread.max()) < 1e-4  # every slice is still one value
    # and z was resampled along z only: slices stay ordered (up or down, after a flip)
    values = out[:, 0, :, 0, 0]
    steps = values[:, 1:] - values[:, :-1]
    assert bool(((steps >= -1e-4).all(dim=1) | (steps <= 1e-4).all(dim=1)).all())
    # z is scaled on its own: some profiles are neither the original nor its flip
    original = torch.arange(8, dtype=torch.float32)
    scaled = [
        v
        for v in values
        if not (torch.allclose(v, original, atol=1e-3) or torch.allclose(v, original.flip(0)))
    ]
    assert scaled


def test_augmentation_rotates_non_square_patches_without_shearing():
    # A disc stays a disc (equal extent along y and x) after rotation of a 32x64 patch.
    yy, xx = np.mgrid[:32, :64]
    disc = ((yy - 16) ** 2 + (xx - 32) ** 2 <= 64).astype(np.float32)
    image = torch.from_numpy(disc)[None, None].repeat(8, 1, 1, 1)
    gen = torch.Generator().manual_seed(1)
    config = AugmentConfig(
        flips=False, rot90=False, intensity=False, max_rotation_deg=45, scale_range=(1, 1)
    )
    _, out, _ = augment_batch(  # the targets: the image is padded by reflection
        image, image.clone(), torch.ones_like(image), config, categorical=(True,), generator=gen
    )
    for patch in out[:, 0].numpy():
        ys, xs = np.nonzero(patch > 0.5)
        assert abs((ys.max() - ys.min()) - (xs.max() - xs.min())) <= 2


def _volume(shape, rng, spacing_z=1):
    """A few bright balls (physically round) in a noisy volume, with their labels."""
    zz, yy, xx = np.indices(shape)
    labels = np.zeros(shape, np.int32)
    for index in range(1, 6):
        c = rng.uniform([0, 6, 6], [shape[0], shape[1] - 6, shape[2] - 6])
        ball = ((zz - c[0]) * spacing_z) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 25
        labels[ball & (labels == 0)] = index
    image = (labels > 0) * 200.0 + rng.normal(20, 5, shape)
    return image.astype(np.float32), labels


def test_training_on_a_small_anisotropic_volume_sizes_everything_from_it():
    rng = np.random.default_rng(0)
    image, labels = _volume((6, 40, 48), rng, spacing_z=3)
    pair = make_pair(image, labels, name="vol", voxel_size=(3.0, 1.0, 1.0))
    config = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, tune_thresholds=False)
    events = list(
        train(
            [pair],
            config,
            model_config=ModelConfig(ndim=3, base_channels=4, depth=3),
            device="cpu",
            preview=None,
        )
    )
    started = next(e for e in events if isinstance(e, TrainingStarted))
    # never larger than the data padded to the per-axis multiple (z skips one pooling:
    # multiples (4, 8, 8)), not 16x64x64 of padding; x is 32 once 16 columns of the one
    # volume are held out for validation
    assert started.n_val == 1
    assert started.patch_shape == (8, 40, 32)
    assert started.pooling[0] == (1, 2, 2)
    assert "patches 8x40x32" in started.describe_sizes()
    model = events[-1].model
    assert model.config.voxel_size == (3.0, 1.0, 1.0)
    assert model.config.size_multiples == (4, 8, 8)


def test_a_model_predicts_other_voxel_sizes_rescaled_at_the_input_shape():
    pooling, kernels = anisotropic_layout((2.0, 1.0, 1.0), 2)
    config = ModelConfig(
        ndim=3, base_channels=4, depth=2, voxel_size=(2.0, 1.0, 1.0), pooling=pooling,
        kernels=kernels,
    )  # fmt: skip
    model = SegmentationModel.create(config)
    seen: list[tuple[int, ...]] = []
    model.network.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    image = np.random.default_rng(0).random((24, 32, 32)).astype(np.float32)
    # the same specimen imaged with 1 µm z steps: twice the slices of the model's data
    outputs = model.predict_outputs(image, adapt=AdaptOptions(voxel_size=(1.0, 1.0, 1.0)))
    assert outputs is not None and outputs.shape == (2, 24, 32, 32)
    assert seen and seen[0][2] == 12  # the network saw 12 slices of 2 µm
    # the voxel size the model knows: no resampling
    seen.clear()
    model.predict_outputs(image, adapt=AdaptOptions(voxel_size=(2.0, 1.0, 1.0)))
    assert seen[0][2] == 24
    labels = model.segment(image, adapt=AdaptOptions(voxel_size=(1.0, 1.0, 1.0)))
    assert labels.shape == image.shape


def test_voxel_size_read_from_imagej_and_ome_tiffs(tmp_path):
    data = np.zeros((4, 16, 16), np.uint16)
    tifffile.imwrite(
        tmp_path / "ij.tif",
        data,
        imagej=True,
        resolution=(2.0, 2.0),  # pixels per µm
        metadata={"axes": "ZYX", "spacing": 1.5, "unit": "um"},
    )
    tifffile.imwrite(
        tmp_path / "ome.ome.tif",
        data,
        metadata={"axes": "ZYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.3, "PhysicalSizeZ": 2},
    )
    tifffile.imwrite(tmp_path / "plain.tif", data)
    assert read_voxel_size(tmp_path / "ij.tif", 3) == pytest.approx((1.5, 0.5, 0.5))
    assert read_voxel_size(tmp_path / "ome.ome.tif", 3) == pytest.approx((2.0, 0.3, 0.3))
    assert read_voxel_size(tmp_path / "plain.tif", 3) is None


def test_flat_levels_run_as_2d_convolutions_with_the_same_result():
    from napari_live_unet.engine.unet import _FlatConv3d

    reference = torch.nn.Conv3d(4, 6, (1, 3, 3), padding=(0, 1, 1))
    flat = _FlatConv3d(4, 6, (1, 3, 3), padding=(0, 1, 1))
    flat.load_state_dict(reference.state_dict())  # same parameters: files load either way
    for layout in (torch.channels_last_3d, torch.contiguous_format):
        x = torch.randn(2, 4, 5, 12, 14).contiguous(memory_format=layout)
        with torch.no_grad():
            torch.testing.assert_close(flat(x), reference(x), rtol=1e-5, atol=1e-5)


def test_post_processing_smooths_by_physical_width_so_nuclei_stacked_in_z_stay_apart():
    from napari_live_unet.engine.config import PostprocessConfig
    from napari_live_unet.engine.postprocess import instances_from_outputs

    # Two balls of 5 µm radius touching along z, sampled with 3 µm z steps (about 3 slices
    # each): one slice of smoothing along z would blur 3 µm and merge their peaks.
    zz, yy, xx = np.indices((16, 32, 32))
    labels = np.zeros((16, 32, 32), np.int32)
    for index, cz in enumerate((6.0, 9.0), start=1):
        ball = ((zz - cz) * 3) ** 2 + (yy - 16) ** 2 + (xx - 16) ** 2 <= 25
        labels[ball & (labels == 0)] = index
    outputs = np.stack(
        [(labels > 0).astype(np.float32), normalized_distance(labels, sampling=(3, 1, 1))]
    )
    params = PostprocessConfig(smoothing=1.0)
    assert instances_from_outputs(outputs, "distance", params).max() == 1  # voxel units merge
    split = instances_from_outputs(outputs, "distance", params, sampling=(3.0, 1.0, 1.0))
    assert split.max() == 2
    # and a model uses its voxel size when it post-processes
    model = SegmentationModel.create(ModelConfig(ndim=3, base_channels=4, voxel_size=(3, 1, 1)))
    model.postprocess = params
    assert model.instances(outputs).max() == 2


def test_distance_errors_inside_objects_are_not_diluted_by_background():
    # Sparse volumes (1% foreground) trained distance peaks too low to seed touching nuclei
    # apart: the error inside objects must weigh the same however much background there is.
    from napari_live_unet.engine.losses import segmentation_loss

    def loss(size: int) -> float:
        fg = torch.zeros(1, size, size)
        fg[:, :10, :10] = 1.0
        targets = torch.stack([fg, fg], dim=1)  # distance 1 inside the object
        raw = torch.stack([(fg * 2 - 1) * 20, torch.zeros_like(fg)], dim=1)  # fg right
        return float(segmentation_loss(raw, targets, torch.ones(1, 1, size, size), "distance"))

    small, large = loss(20), loss(200)  # 25% and 0.25% foreground
    assert large == pytest.approx(small, rel=0.05)
    assert large > 4.0  # half of the weight 10 times the squared error of 1
