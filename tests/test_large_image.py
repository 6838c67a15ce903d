"""Block-by-block prediction of stored images under a memory limit (engine)."""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_live_unet.engine.block_plan import MAX_CORE_PIXELS, FrameLayout, block_bytes, plan_core
from napari_live_unet.engine.builtin_models import load_model_source
from napari_live_unet.engine.config import ModelConfig, PostprocessConfig
from napari_live_unet.engine.errors import InputError
from napari_live_unet.engine.image_adapter import AdaptOptions
from napari_live_unet.engine.large_image import plan_image, segment_stored
from napari_live_unet.engine.memory_budget import BLOCKS_IN_FLIGHT, MemoryBudget
from napari_live_unet.engine.metrics import match_counts
from napari_live_unet.engine.model import SegmentationModel
from napari_live_unet.engine.prediction_events import FrameDone, FrameFitted
from napari_live_unet.engine.unet import UNet

from .conftest import synthetic_nuclei

MB = 2**20


@pytest.mark.parametrize(
    ("axes", "ndim", "frames", "channel", "spatial"),
    [
        ("yx", 2, (), None, (0, 1)),
        ("tyx", 2, (0,), None, (1, 2)),
        ("zyx", 2, (0,), None, (1, 2)),  # a 2D model labels every slice
        ("qyx", 3, (), None, (0, 1, 2)),  # an unknown axis before y is z for a 3D model
        ("tczyx", 3, (0,), 1, (2, 3, 4)),
        ("yxc", 2, (), 2, (0, 1)),
    ],
)
def test_layout_finds_frames_channels_and_space(axes, ndim, frames, channel, spatial):
    layout = FrameLayout.of(axes, ndim)
    assert layout.frame_axes == frames
    assert layout.channel_axis == channel
    assert layout.spatial_axes == spatial


@pytest.mark.parametrize(("axes", "ndim", "words"), [("yx", 3, "2D model"), ("xy", 2, "order")])
def test_layout_refuses_images_the_model_cannot_read(axes, ndim, words):
    with pytest.raises(InputError, match=words):
        FrameLayout.of(axes, ndim, "img.zarr")


def test_layout_reads_rgb_last_and_other_channels_first():
    rgb = np.zeros((32, 48, 3), np.uint8)
    data, axis = FrameLayout.of("yxc", 2).read(rgb, (), (slice(0, 8), slice(0, 16)))
    assert data.shape == (8, 16, 3) and axis == 2
    stack = np.zeros((5, 2, 32, 48), np.uint8)  # t, c, y, x
    data, axis = FrameLayout.of("tcyx", 2).read(stack, (3,), (slice(0, 8), slice(0, 16)))
    assert data.shape == (2, 8, 16) and axis == 0


def test_cores_are_whole_chunks_and_fit_the_budget():
    budget = 40 * MB
    core = plan_core((5000, 7000), (256, 256), (100, 100), budget)
    assert all(c % 256 == 0 for c in core)
    read = [c + 200 for c in core]
    assert block_bytes(read) < budget
    # One more chunk along either axis would not fit.
    assert block_bytes([read[0] + 256, read[1]]) + 0 > budget * 0.8


def test_a_chunking_larger_than_the_budget_is_refused_with_advice():
    with pytest.raises(InputError, match="Rechunk"):
        plan_core((16384, 16384), (16384, 16384), (100, 100), 64 * MB, name="huge.zarr")


def test_a_memory_limit_below_the_process_itself_is_refused():
    with pytest.raises(InputError, match="too small"):
        MemoryBudget.split(300 * MB, baseline=280 * MB)


@pytest.fixture(scope="module")
def starter():
    return load_model_source("nuclei", "cpu")


def _nuclei_image(shape, seed=0):
    image, labels = synthetic_nuclei(shape, n=int(np.prod(shape) / 900), radius=(5, 9), seed=seed)
    return (image * 200).clip(0, 255).astype(np.uint8), labels


def _budget(model, axes, shape, core):
    """A block budget that fits blocks of ``core`` (plus margins) and no larger."""
    layout = FrameLayout.of(axes, model.config.ndim)
    roomy = MemoryBudget(limit=2**40, baseline=0, network=64 * MB, per_block=2**39)
    job = plan_image(model, shape, layout, roomy, core).job
    spatial = layout.spatial_shape(shape)
    reach = [h + m for h, m in zip(job.halo, job.margin, strict=True)]
    read = [min(s, c + 2 * r) for s, c, r in zip(spatial, core, reach, strict=True)]
    return int(1.05 * block_bytes(read))


def _blocks(model, image, axes, per_block, chunks, **kwargs):
    layout = FrameLayout.of(axes, model.config.ndim)
    memory = MemoryBudget(limit=2**31, baseline=0, network=64 * MB, per_block=per_block)
    plan = plan_image(model, image.shape, layout, memory, chunks, **kwargs)
    out = np.zeros(
        tuple(image.shape[a] for a in layout.frame_axes) + layout.spatial_shape(image.shape),
        np.uint32,
    )
    events = list(segment_stored(model, image, plan, out))
    done = [e for e in events if isinstance(e, FrameDone)]
    fitted = [e for e in events if isinstance(e, FrameFitted)]
    assert [e.position for e in fitted] == [e.position for e in done]
    return out, plan, done, fitted


def _single_pieces(labels):
    """Whether every id is one connected piece (ids unique across the image)."""
    found = ndi.find_objects(labels)
    for i, box in enumerate(found, start=1):
        if box is not None and ndi.label(labels[box] == i)[1] != 1:
            return False
    return True


@pytest.mark.slow
def test_blocks_match_the_whole_image_2d(starter):
    image, _ = _nuclei_image((700, 640))
    whole = starter.segment(image)
    budget = _budget(starter, "yx", image.shape, (128, 128))
    out, plan, done, _ = _blocks(starter, image, "yx", budget, (128, 128))
    assert plan.blocks_per_frame >= 4  # the test needs seams
    labels = out.astype(np.int32)
    assert match_counts(whole, labels, [0.5])[0].ap >= 0.99
    assert abs(int(labels.max()) - int(whole.max())) <= max(1, 0.005 * whole.max())
    assert done[0].count == labels.max()
    assert set(np.unique(labels)) == set(range(labels.max() + 1))  # 1..N, no gaps
    assert _single_pieces(labels)


class _PixelNetwork(torch.nn.Module):
    """A stand-in network without context: foreground where the image is bright, its value
    as the distance map. Blocks then see exactly what the whole image sees."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        x = x[:, :1] * self.scale
        return torch.cat([40 * (x - 0.1), x], dim=1)


def _distance_volume(shape, spacing=9, seed=0):
    """Touching nuclei on a jittered grid (each voxel of overlapping balls goes to the
    nearest centre, so every object is convex), intensity their normalised distance to
    their border."""
    rng = np.random.default_rng(seed)
    axes = [np.arange(spacing // 2, s - spacing // 2, spacing) for s in shape]
    centres = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(shape))
    centres = centres + rng.uniform(-1.5, 1.5, centres.shape)
    radii = rng.uniform(4.0, 5.5, len(centres))
    grid = np.indices(shape).reshape(len(shape), -1).T
    labels = np.zeros(grid.shape[0], np.int32)
    nearest = np.full(grid.shape[0], np.inf)
    for i, (centre, r) in enumerate(zip(centres, radii, strict=True), start=1):
        d = np.sqrt(((grid - centre) ** 2).sum(1)) / r
        take = (d <= 1) & (d < nearest)
        labels[take], nearest[take] = i, d[take]
    labels = labels.reshape(shape)
    distance = np.zeros(shape, np.float32)
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        if box is not None:
            inside = np.pad(labels[box] == i, 1)
            d = ndi.distance_transform_edt(inside)[(slice(1, -1),) * len(shape)]
            # Peaks of different heights, as real nuclei give (equal ones tie).
            peak = rng.uniform(0.6, 1.0)
            distance[box][inside[(slice(1, -1),) * len(shape)]] = (peak * d / d.max())[
                inside[(slice(1, -1),) * len(shape)]
            ]
    return (distance * 255).astype(np.uint8)


def test_blocks_match_the_whole_image_3d_with_frames():
    config = ModelConfig(ndim=3, mode="distance", depth=1, base_channels=4)
    model = SegmentationModel(UNet(config), config)
    model.network = _PixelNetwork(config)  # type: ignore[assignment]
    model.postprocess = PostprocessConfig(smoothing=1.0)
    model.input = dataclasses.replace(model.input, diameter_range=(6.0, 10.0))  # halo 21
    volume = _distance_volume((32, 128, 120))
    series = np.stack([volume, volume[:, ::-1].copy()])  # t, z, y, x
    budget = _budget(model, "tzyx", series.shape, (8, 32, 32))
    out, plan, done, _ = _blocks(model, series, "tzyx", budget, (8, 32, 32))
    assert plan.blocks_per_frame >= 8 and len(done) == 2
    for t in range(2):
        whole = model.segment(series[t])
        labels = out[t].astype(np.int32)
        assert match_counts(whole, labels, [0.5])[0].ap >= 0.99
        assert labels.max() == whole.max() == done[t].count
        assert _single_pieces(labels)


def test_every_block_sees_one_fit_of_the_whole_frame(starter):
    """Polarity and normalisation are the frame's, not each block's: a block of mostly
    background is not stretched into objects."""
    image, _ = _nuclei_image((512, 512), seed=3)
    image[:, 256:] = image[:, 256:] // 8  # a dim half: its own percentiles would differ
    whole = starter.segment(image, adapt=AdaptOptions(polarity="bright"))
    budget = _budget(starter, "yx", image.shape, (128, 128))
    out, plan, _, fitted = _blocks(
        starter, image, "yx", budget, (128, 128), adapt=AdaptOptions(polarity="bright")
    )
    assert plan.blocks_per_frame >= 4
    assert match_counts(whole, out.astype(np.int32), [0.5])[0].ap >= 0.99
    assert "bright" in fitted[0].note


def test_memory_stays_under_the_block_budget():
    """numpy memory (traced) stays near the blocks' share, far below what the whole image
    would take to post-process (about 45 bytes per pixel)."""
    config = ModelConfig(ndim=2, mode="distance", depth=2, base_channels=4)
    model = SegmentationModel(UNet(config), config)
    model.network = _PixelNetwork(config)  # type: ignore[assignment]
    image = np.tile(_distance_volume((256, 256), spacing=16), (8, 8))
    per_block = 40 * MB
    tracemalloc.start()
    try:
        _, plan, _, _ = _blocks(model, image, "yx", per_block, (256, 256))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert plan.blocks_per_frame >= 8
    out_and_image = image.nbytes + image.size * 4
    assert peak - out_and_image < BLOCKS_IN_FLIGHT * per_block + 24 * MB
    assert 45 * image.size > BLOCKS_IN_FLIGHT * per_block + 24 * MB  # the test can fail


def test_cores_stop_growing_at_the_size_post_processing_handles_best():
    core = plan_core((20000, 20000), (256, 256), (100, 100), 2**40)
    assert np.prod(core) <= MAX_CORE_PIXELS
    assert all(c % 256 == 0 for c in core)
