"""Robust percentile normalisation of microscopy images."""

from __future__ import annotations

import numpy as np

from .config import NormalizationConfig

# Percentiles are estimated from at most this many pixels per channel, so a huge image is
# never copied as a whole to compute them.
_MAX_SAMPLES = 2_000_000


def channel_percentiles(
    image: np.ndarray, config: NormalizationConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Low and high percentiles of each channel of a channel-first image.

    Parameters
    ----------
    image : ndarray, shape (C, *spatial)
        Image with the channel axis first.
    config : NormalizationConfig, optional
        Which percentiles to take.

    Returns
    -------
    low, high : ndarray, shape (C,)
        Per-channel percentiles (computed on a strided subsample of large images).
    """
    config = config or NormalizationConfig()
    lows, highs = [], []
    for channel in image:
        stride = max(1, int(np.ceil((channel.size / _MAX_SAMPLES) ** (1 / channel.ndim))))
        sample = np.asarray(channel[(slice(None, None, stride),) * channel.ndim], np.float32)
        lo, hi = np.percentile(sample, [config.low_percentile, config.high_percentile])
        lows.append(lo)
        highs.append(hi)
    return np.asarray(lows, np.float32), np.asarray(highs, np.float32)


def apply_normalization(image: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map ``low`` to 0 and ``high`` to 1 per channel; returns float32 (C, *spatial)."""
    shape = (-1,) + (1,) * (image.ndim - 1)
    scale = 1.0 / np.maximum(high - low, 1e-6)
    out = image.astype(np.float32, copy=True)
    out -= low.reshape(shape)
    out *= scale.reshape(shape)
    return out


def normalize(image: np.ndarray, config: NormalizationConfig | None = None) -> np.ndarray:
    """Percentile-normalise a channel-first image to float32."""
    low, high = channel_percentiles(image, config)
    return apply_normalization(image, low, high)
