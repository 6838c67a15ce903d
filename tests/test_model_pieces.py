import numpy as np
import pytest
import torch

from napari_live_unet.engine import AugmentConfig, ModelConfig, make_pair
from napari_live_unet.engine.augment import augment_batch
from napari_live_unet.engine.losses import segmentation_loss
from napari_live_unet.engine.sampler import PatchSampler
from napari_live_unet.engine.targets import make_targets
from napari_live_unet.engine.unet import UNet, activate

from .conftest import synthetic_nuclei


@pytest.mark.parametrize(
    "ndim,mode,norm",
    [
        (2, "boundary", "batch"),
        (2, "distance", "group"),
        (3, "distance", "instance"),
        (3, "boundary", "none"),
    ],
)
def test_unet_output_shapes(ndim, mode, norm):
    cfg = ModelConfig(ndim=ndim, in_channels=2, mode=mode, base_channels=4, depth=2, norm=norm)
    net = UNet(cfg).eval()
    shape = (16, 32, 32)[-ndim:]
    raw = net(torch.zeros(1, 2, *shape))
    assert raw.shape == (1, cfg.out_channels, *shape)
    act = activate(raw, mode)
    assert act.shape == (1, 2, *shape)
    assert act.min() >= 0 and act.max() <= 1


def test_augmentation_keeps_image_and_targets_aligned():
    _, labels = synthetic_nuclei((64, 64), n=6, seed=2)
    targets = torch.from_numpy(make_targets(labels, "distance"))[None].repeat(8, 1, 1, 1)
    image = targets[:, :1].clone()  # an image that *is* the foreground
    mask = torch.ones(8, 1, 64, 64)
    cfg = AugmentConfig(intensity=False)
    g = torch.Generator().manual_seed(0)
    img, tgt, msk = augment_batch(image, targets, mask, cfg, categorical=(True, False), generator=g)
    assert img.shape == image.shape and tgt.shape == targets.shape
    assert not torch.equal(img, image)  # something happened
    valid = msk[:, 0] > 0
    agree = ((img[:, 0] > 0.5) == (tgt[:, 0] > 0.5))[valid].float().mean()
    assert agree > 0.97
    assert ((tgt[:, 1] > 0) <= (tgt[:, 0] > 0) | (tgt[:, 1] < 0.2)).all()


def test_rotation_masks_pixels_pulled_from_outside():
    image = torch.rand(16, 1, 32, 32)
    targets = torch.zeros(16, 1, 32, 32)
    mask = torch.ones(16, 1, 32, 32)
    cfg = AugmentConfig(
        flips=False, rot90=False, intensity=False, max_rotation_deg=45, scale_range=(0.7, 0.75)
    )
    _, _, msk = augment_batch(
        image, targets, mask, cfg, categorical=(True,), generator=torch.Generator().manual_seed(1)
    )
    assert (msk == 0).any()  # zoomed-out corners are ignored, not taught as background


def test_loss_ignores_unannotated_pixels():
    torch.manual_seed(0)
    raw = torch.randn(2, 2, 16, 16)
    targets = torch.rand(2, 2, 16, 16).round()
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., :8] = 1
    changed = targets.clone()
    changed[..., 8:] = 1 - changed[..., 8:]
    for mode, raw_in, tgt, chg in [
        ("distance", raw, targets, changed),
        ("boundary", torch.randn(2, 3, 16, 16), targets[:, :1] * 2, changed[:, :1] * 2),
    ]:
        a = segmentation_loss(raw_in, tgt, mask, mode)
        b = segmentation_loss(raw_in, chg, mask, mode)
        assert torch.isclose(a, b), mode
        assert not torch.isclose(a, segmentation_loss(raw_in, chg, torch.ones_like(mask), mode))


def test_sampler_favours_objects_and_pads_small_images():
    img, lab = synthetic_nuclei((40, 50), n=2, radius=(4, 5), seed=1, touching=False)
    pair = make_pair(img, lab)
    sampler = PatchSampler(
        [pair], "distance", (64, 64), torch.device("cpu"), foreground_sampling=1.0, seed=0
    )
    image, targets, mask = sampler.sample(6)
    assert image.shape == (6, 1, 64, 64) and targets.shape == (6, 2, 64, 64)
    assert mask[:, 0, 40:, :].sum() == 0 and mask[:, 0, :, 50:].sum() == 0
    assert mask[:, 0, :40, :50].all()


def test_sampler_draws_objects_even_when_rare():
    img, lab = synthetic_nuclei((400, 400), n=1, radius=(5, 6), seed=4)
    sampler = PatchSampler(
        [make_pair(img, lab)],
        "distance",
        (32, 32),
        torch.device("cpu"),
        foreground_sampling=0.5,
        seed=0,
    )
    with_objects = sum(float(sampler.sample(1)[1][:, 0].sum()) > 0 for _ in range(60))
    assert with_objects >= 20  # uniform sampling would hit the one object ~1 time in 150


def test_sampler_stays_inside_annotated_area():
    img, lab = synthetic_nuclei((128, 128), n=10, seed=6)
    mask = np.zeros(lab.shape, bool)
    mask[:64, :64] = True
    sampler = PatchSampler(
        [make_pair(img, lab, annotated=mask)],
        "boundary",
        (32, 32),
        torch.device("cpu"),
        foreground_sampling=0.0,
        seed=0,
    )
    for _ in range(20):
        _, _, m = sampler.sample(1)
        assert m.sum() > 0
