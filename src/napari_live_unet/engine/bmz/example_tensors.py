"""The test tensors of an exported package: a real image through the plugin's own pipeline.

A 2D model gets a crop of the bundled sample image, a 3D model a small deterministic
volume of bright blobs. The expected output is the network's forward pass on the crop
after the plugin's percentile normalisation, in float32: the numbers the predict path
computes for that crop (which stores them as float16).
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import ModelConfig, NormalizationConfig
from ..normalize import apply_normalization, channel_percentiles
from ..sample_data import load_sample

_TEST_EDGE = {2: (128, 128), 3: (16, 64, 64)}
"""The largest test crop per axis (the package's smallest size may ask for more)."""


def example_shape(config: ModelConfig, smallest: tuple[int, ...]) -> tuple[int, ...]:
    """The spatial shape of the test input: the largest valid size up to ``_TEST_EDGE``,
    at least ``smallest`` (each a multiple of the axis's size multiple)."""
    caps = _TEST_EDGE[config.ndim]
    return tuple(
        max(low, cap // step * step)
        for low, cap, step in zip(smallest, caps, config.size_multiples, strict=True)
    )


def example_image(config: ModelConfig, shape: tuple[int, ...]) -> np.ndarray:
    """The raw test image, channel-first float32 of ``shape``, with the model's channels."""
    image = _sample_crop(shape) if config.ndim == 2 else _blobs(shape)
    # A model reading several channels sees shifted copies: different, yet deterministic.
    channels = [np.roll(image, 3 * c, axis=-1) for c in range(config.in_channels)]
    return np.stack(channels).astype(np.float32)


def _sample_crop(shape: tuple[int, ...]) -> np.ndarray:
    _, image, _ = load_sample("test")[0]
    image = np.asarray(image, np.float32)
    if image.ndim == 3:  # RGB(A): its luminance
        image = image[..., :3].mean(axis=-1)
    reps = [-(-s // n) for s, n in zip(shape, image.shape, strict=True)]
    image = np.tile(image, reps)  # only if the package's smallest size exceeds the sample
    return image[tuple(slice(0, s) for s in shape)]


def _blobs(shape: tuple[int, ...]) -> np.ndarray:
    """Bright ellipsoids (round in physical terms for voxels twice as deep as wide) on a
    dim background, with noise; the same every time."""
    rng = np.random.default_rng(0)
    grid = np.meshgrid(*(np.arange(s, dtype=np.float32) for s in shape), indexing="ij")
    image = np.full(shape, 10.0, np.float32)
    radius = max(3.0, min(shape[1:]) / 8)
    for _ in range(8):
        centre = [rng.uniform(0, s) for s in shape]
        dist = sum(
            ((g - c) / (radius / 2 if axis == 0 else radius)) ** 2
            for axis, (g, c) in enumerate(zip(grid, centre, strict=True))
        )
        image += 150.0 * np.exp(-(dist**2))
    image += rng.normal(0.0, 3.0, shape).astype(np.float32)
    return image


def expected_output(
    network: torch.nn.Module, image: np.ndarray, normalization: NormalizationConfig
) -> np.ndarray:
    """``network`` (an :class:`~napari_live_unet.engine.unet.ExportedUNet` on the CPU, in
    eval mode) on ``image`` normalised as the plugin does; shape (1, 2, *spatial)."""
    low, high = channel_percentiles(image, normalization)
    x = torch.from_numpy(apply_normalization(image, low, high))[None]
    with torch.inference_mode():
        return network(x).float().numpy()
