"""A trained segmentation model: network, configuration, thresholds and history."""

from __future__ import annotations

import collections
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .config import ModelConfig, NormalizationConfig, PostprocessConfig
from .data import check_finite, to_channel_first
from .device import resolve_device
from .errors import InputError
from .normalize import channel_percentiles
from .postprocess import instances_from_outputs
from .predict import (
    MessageCallback,
    ProgressCallback,
    predict_outputs_many,
)
from .unet import UNet, memory_format


@dataclass
class SegmentationModel:
    """Everything needed to segment new images; saved to and loaded from one file.

    Attributes
    ----------
    network : UNet
        The trained network.
    config : ModelConfig
        Architecture and output mode.
    normalization : NormalizationConfig
        How images are normalised before the network sees them.
    postprocess : PostprocessConfig
        Thresholds (chosen on the validation split after training).
    history : list of dict
        One entry per epoch: losses, learning rate, metrics, elapsed seconds.
    train_config : dict
        The training settings used, for the record.
    """

    network: UNet
    config: ModelConfig
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    history: list[dict[str, Any]] = field(default_factory=list)
    train_config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, config: ModelConfig, **kwargs: Any) -> SegmentationModel:
        """A new, untrained model."""
        return cls(UNet(config), config, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device: str | torch.device) -> SegmentationModel:
        self.network.to(resolve_device(device), memory_format=memory_format(self.config.ndim))
        return self

    def prepare_image(self, image: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
        """Return the image channel-first, checking channels and finiteness."""
        image = np.asarray(image) if not hasattr(image, "shape") else image
        spatial_ndim = self.config.ndim
        if channel_axis is None and image.ndim == spatial_ndim + 1 and self.config.in_channels > 1:
            channel_axis = -1 if image.shape[-1] == self.config.in_channels else 0
        if channel_axis is None:
            if image.ndim != spatial_ndim:
                raise InputError(
                    f"image of shape {image.shape} is not {spatial_ndim}D; this model "
                    f"segments {spatial_ndim}D images with {self.config.in_channels} channel(s)"
                )
            spatial = tuple(image.shape)
        else:
            spatial = tuple(np.delete(np.array(image.shape), channel_axis))
        image = to_channel_first(image, spatial, "image", channel_axis)
        if image.shape[0] != self.config.in_channels:
            raise InputError(
                f"image has {image.shape[0]} channel(s) but the model expects "
                f"{self.config.in_channels}"
            )
        check_finite(image, "image")
        return image

    def predict_outputs(
        self,
        image: np.ndarray,
        *,
        channel_axis: int | None = None,
        tile_shape: tuple[int, ...] | None = None,
        batch_size: int = 8,
        progress: ProgressCallback | None = None,
        on_message: MessageCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> np.ndarray | None:
        """Foreground probability and auxiliary map, shape (2, *spatial), float16.

        Returns None if ``should_stop`` ended prediction early.
        """
        results = self.predict_outputs_many(
            [image],
            channel_axis=channel_axis,
            tile_shape=tile_shape,
            batch_size=batch_size,
            progress=progress,
            on_message=on_message,
            should_stop=should_stop,
        )
        return next(results, None)

    def predict_outputs_many(
        self,
        images: Iterable[np.ndarray],
        *,
        channel_axis: int | None = None,
        tile_shape: tuple[int, ...] | None = None,
        batch_size: int = 8,
        progress: ProgressCallback | None = None,
        on_message: MessageCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
        intensity_ranges: Iterable[tuple[np.ndarray, np.ndarray] | None] | None = None,
    ) -> Iterator[np.ndarray]:
        """Outputs for a stream of images, in order; tiles of small images share batches.

        ``intensity_ranges`` optionally gives each image's normalisation percentiles (None
        entries: computed from the image), for crops that must be scaled like their whole
        image.
        """
        prepared = (self.prepare_image(image, channel_axis) for image in images)
        ranges = itertools.repeat(None) if intensity_ranges is None else intensity_ranges
        with_stats = (
            (image, rng if rng is not None else channel_percentiles(image, self.normalization))
            for image, rng in zip(prepared, ranges, strict=False)
        )
        first, second = itertools.tee(with_stats)
        was_training = self.network.training
        self.network.eval()
        try:
            yield from predict_outputs_many(
                self.network,
                (image for image, _ in first),
                mode=self.config.mode,
                size_multiple=self.config.size_multiple,
                stats=(st for _, st in second),
                tile_shape=tile_shape,
                batch_size=batch_size,
                device=self.device,
                progress=progress,
                on_message=on_message,
                should_stop=should_stop,
            )
        finally:
            self.network.train(was_training)

    def instances(self, outputs: np.ndarray, params: PostprocessConfig | None = None) -> np.ndarray:
        """Instance labels from cached outputs (re-run cheaply when thresholds change)."""
        return instances_from_outputs(outputs, self.config.mode, params or self.postprocess)

    def segment(self, image: np.ndarray, **kwargs: Any) -> np.ndarray:
        """Instance labels (int32) for one image; keyword arguments go to predict_outputs."""
        outputs = self.predict_outputs(image, **kwargs)
        return self.instances(outputs)

    def segment_many(
        self, images: Iterable[np.ndarray], *, workers: int | None = None, **kwargs: Any
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(outputs, labels) for a stream of images, in order.

        Post-processing runs in a pool of ``workers`` threads (default: one per CPU core)
        while the network moves on to the next images; scikit-image and scipy release the
        GIL for most of it (1.6× on 2 cores measured). At most ``2 * workers`` images are
        in flight, so memory stays bounded. Keyword arguments go to
        :meth:`predict_outputs_many`.
        """
        workers = workers or os.cpu_count() or 1
        pending: collections.deque = collections.deque()
        with ThreadPoolExecutor(workers) as pool:
            for outputs in self.predict_outputs_many(images, **kwargs):
                pending.append((outputs, pool.submit(self.instances, outputs)))
                if len(pending) >= 2 * workers:
                    outputs, future = pending.popleft()
                    yield outputs, future.result()
            while pending:
                outputs, future = pending.popleft()
                yield outputs, future.result()
