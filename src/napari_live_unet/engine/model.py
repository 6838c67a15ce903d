"""A trained segmentation model: network, configuration, thresholds and history."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .blockwise import default_halo, instances_blockwise, postprocesses_in_blocks
from .config import ModelConfig, NormalizationConfig, PostprocessConfig
from .data import check_finite
from .device import resolve_device
from .errors import InputError
from .flip_average import FlipAveraged
from .image_adapter import (
    AUTO_FIT,
    Adaptation,
    AdaptOptions,
    InputSpec,
    check_model_channels,
    invert,
    invert_range,
    polarity_from_image,
    resize,
    scale_postprocess,
    split_channels,
    to_model_channels,
    zoom_for,
    zoomed_shape,
)
from .normalize import channel_percentiles
from .postprocess import instances_from_outputs
from .predict import MessageCallback, TilesDone, predict_stream
from .unet import UNet, memory_format
from .voxel_zoom import combined_zoom, voxel_zoom


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
    input : InputSpec
        What the network reads (polarity, channel choice, object size), so images of other
        layouts, polarities and object sizes can be fitted to it.
    info : dict
        Description for people: name, description, training data and licence, the command
        that produced it, figures. Empty for models trained by users.
    record : dict
        What produced the model: data with content hashes, settings, starting model, seed,
        versions, device, times and steps (see :mod:`.run_record`); JSON-safe. Empty for
        models saved before run records existed.
    flip_average : bool
        Predict each tile and its three flips and average the maps (four times the
        network's work; see :mod:`.flip_average`). Chosen on the validation data when the
        model is trained, where it gains at least a point of AP; False for older files.
    """

    network: UNet
    config: ModelConfig
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    history: list[dict[str, Any]] = field(default_factory=list)
    train_config: dict[str, Any] = field(default_factory=dict)
    input: InputSpec = field(default_factory=InputSpec)
    info: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    flip_average: bool = False

    @classmethod
    def create(cls, config: ModelConfig, **kwargs: Any) -> SegmentationModel:
        """A new, untrained model."""
        return cls(UNet(config), config, **kwargs)

    def without_flip_average(self) -> SegmentationModel:
        """This model predicting each tile once (the same network, not a copy): for work
        that flips images itself, such as doubt."""
        return dataclasses.replace(self, flip_average=False) if self.flip_average else self

    @property
    def trainable(self) -> bool:
        """False for another tool's network opened from a BMZ package: it predicts only."""
        return bool(getattr(self.network, "trainable", True))

    def check_trainable(self, action: str) -> None:
        """Raise :class:`InputError` saying why ``action`` (e.g. "fine-tuned") is refused
        for a network that predicts only."""
        if not self.trainable:
            raise InputError(
                f"this model comes from another tool's BioImage Model Zoo package and can "
                f"only predict; it cannot be {action}. Train a Live U-net model (from "
                "scratch or from the built-in starter) instead"
            )

    @property
    def device(self) -> torch.device:
        # Buffers too: a foreign network may hold no parameter of its own.
        tensors = itertools.chain(self.network.parameters(), self.network.buffers())
        return next(tensors).device

    def to(self, device: str | torch.device) -> SegmentationModel:
        # Module.to's overloads omit the memory_format keyword that it accepts and documents.
        self.network.to(
            resolve_device(device),
            memory_format=memory_format(self.config.ndim),  # pyright: ignore[reportCallIssue]
        )
        return self

    def prepare_image(self, image: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
        """Return the image channel-first, checking its channels and finiteness.

        The image must already be in the network's terms (its channel count); use
        :meth:`adapt_image` to fit other layouts, polarities and object sizes.
        """
        data, _ = split_channels(image, self.config.ndim, channel_axis)
        if data.shape[0] != self.config.in_channels:
            raise InputError(
                f"image has {data.shape[0]} channel(s) but the model expects "
                f"{self.config.in_channels}"
            )
        check_finite(data, "image")
        return data

    def check_fits(
        self,
        image: np.ndarray,
        options: AdaptOptions | None = None,
        *,
        channel_axis: int | None = None,
        name: str = "image",
    ) -> None:
        """Raise :class:`InputError` if :meth:`adapt_image` would refuse ``image``: its
        channels cannot be fitted, or it holds NaN or Inf pixels."""
        options = options or AdaptOptions()
        data, is_rgb, channel, name = self._split(image, options, channel_axis, name)
        check_model_channels(
            data.shape[0], self.config.in_channels, is_rgb=is_rgb, channel=channel, name=name
        )
        check_finite(data, name)

    def _split(self, image, options: AdaptOptions, channel_axis, name):
        """Channel-first data, whether it is RGB(A), the channel to take (the user's, or the
        one this model was trained on), and a name for messages that gives the shape."""
        data, is_rgb = split_channels(image, self.config.ndim, channel_axis, name)
        channel = options.channel
        if channel is None and data.shape[0] > self.config.in_channels == 1 and not is_rgb:
            channel = self.input.channel
        return data, is_rgb, channel, f"{name} of shape {tuple(image.shape)}"

    def zoom_for(self, diameter: float | None = None) -> float:
        """Zoom applied to images whose objects are ``diameter`` pixels across (None: auto)."""
        return zoom_for(self.input, diameter)

    def voxel_zoom(self, voxel_size: tuple[float, ...] | None) -> tuple[float, ...] | None:
        """Per-axis zoom that brings images of ``voxel_size`` to the model's voxel size
        (None when either is unknown or they agree)."""
        if voxel_size is not None and len(voxel_size) != self.config.ndim:
            raise InputError(
                f"voxel size {tuple(voxel_size)} gives {len(voxel_size)} axes, but the model "
                f"segments {self.config.ndim}D images: give one size per axis "
                f"({'Z,Y,X' if self.config.ndim == 3 else 'Y,X'})"
            )
        return voxel_zoom(voxel_size, self.config.voxel_size)

    def image_zoom(
        self, diameter: float | None = None, voxel_size: tuple[float, ...] | None = None
    ) -> float | tuple[float, ...]:
        """The zoom applied to an image before the network: object size and voxel size."""
        return combined_zoom(self.zoom_for(diameter), self.voxel_zoom(voxel_size), self.config.ndim)

    def adapt_image(
        self,
        image: np.ndarray,
        options: AdaptOptions | None = None,
        *,
        channel_axis: int | None = None,
        intensity_range: tuple[np.ndarray, np.ndarray] | None = None,
        name: str = "image",
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None, Adaptation]:
        """Fit an image to the network: channels, polarity and object size.

        Returns the channel-first image in the network's terms, its normalisation range
        (when one was given, adapted too) and what was done.

        Raises
        ------
        InputError
            If the image's channels cannot be fitted (the message names the shape and what
            the model reads).
        """
        options = options or AdaptOptions()
        data, is_rgb, channel, name = self._split(image, options, channel_axis, name)
        data, channel_note = to_model_channels(
            data, self.config.in_channels, is_rgb=is_rgb, channel=channel, name=name
        )
        if options.polarity != "auto":
            polarity, source = options.polarity, "as chosen"
        elif self.input.image_polarity != "auto":
            polarity, source = self.input.image_polarity, "as in the model's training images"
        else:
            polarity, source = polarity_from_image(data), "judged from the image"
        inverted = polarity != self.input.polarity
        if inverted:
            data = invert(data)
            intensity_range = invert_range(intensity_range)
        zoom = self.zoom_for(options.diameter)
        axis_zoom = self.voxel_zoom(options.voxel_size)
        shape = tuple(data.shape[1:])
        total = combined_zoom(zoom, axis_zoom, self.config.ndim)
        if total != 1.0:
            data = resize(data, zoomed_shape(shape, total))
        check_finite(data, name)
        adaptation = Adaptation(zoom, inverted, channel_note, polarity, source, input_shape=shape)
        adaptation.voxel_zoom = axis_zoom
        adaptation.voxel_size = options.voxel_size
        return data, intensity_range, adaptation

    def predict_outputs(
        self,
        image: np.ndarray,
        *,
        channel_axis: int | None = None,
        adapt: AdaptOptions | None = AUTO_FIT,
        tile_shape: tuple[int, ...] | None = None,
        batch_size: int = 8,
        on_message: MessageCallback | None = None,
        stop: threading.Event | None = None,
    ) -> np.ndarray | None:
        """Foreground probability and auxiliary map, shape (2, *spatial), float16.

        A convenience over :class:`~napari_live_unet.engine.predictor.Predictor` (outputs
        only, one image). Returns None if ``stop`` was set before the image was done.
        See :meth:`predict_stream` for the parameters.
        """
        outputs = list(
            self.predict_outputs_many(
                [image],
                channel_axis=channel_axis,
                adapt=adapt,
                tile_shape=tile_shape,
                batch_size=batch_size,
                on_message=on_message,
                stop=stop,
            )
        )
        return outputs[0] if outputs else None

    def predict_outputs_many(
        self,
        images: Iterable[np.ndarray],
        *,
        channel_axis: int | None = None,
        adapt: AdaptOptions | None = AUTO_FIT,
        intensity_ranges: Iterable[tuple[np.ndarray, np.ndarray] | None] | None = None,
        voxel_sizes: Iterable[tuple[float, ...] | None] | None = None,
        stop: threading.Event | None = None,
        **options: Any,
    ) -> Iterator[np.ndarray]:
        """Outputs for a stream of images, in order; tiles of small images share batches.

        A convenience over :class:`~napari_live_unet.engine.predictor.Predictor` (outputs
        only): the outputs of its :class:`~.prediction_events.FrameDone` events. Use the
        predictor itself for progress and each image's fitting. ``options`` (tiling,
        ``on_message``, ``max_tile_bytes``) are the predictor's.
        """
        from .predictor import FrameDone, Images, Predictor

        predictor = Predictor(self, adapt=adapt, postprocess=False, **options)
        source = Images(images, channel_axis, intensity_ranges, voxel_sizes)
        for event in predictor.run(source, stop=stop):
            if isinstance(event, FrameDone):
                yield event.outputs

    def predict_stream(
        self,
        images: Iterable[np.ndarray],
        *,
        channel_axis: int | None = None,
        adapt: AdaptOptions | None = AUTO_FIT,
        tile_shape: tuple[int, ...] | None = None,
        batch_size: int = 8,
        on_message: MessageCallback | None = None,
        stop: threading.Event | None = None,
        intensity_ranges: Iterable[tuple[np.ndarray, np.ndarray] | None] | None = None,
        voxel_sizes: Iterable[tuple[float, ...] | None] | None = None,
        max_tile_bytes: int | None = None,
    ) -> Iterator[np.ndarray | TilesDone | Adaptation]:
        """Outputs for a stream of images, in order, with progress as it happens.

        The model's own forward pass: its fitting, flip averaging and the tiled network,
        nothing decided about memory, blocks or post-processing. Whole frames of a
        :class:`~napari_live_unet.engine.predictor.Predictor` and each block of its block
        path go through here.

        Parameters
        ----------
        images : iterable of ndarray
            Images in any layout the model can be fitted to (see :meth:`adapt_image`).
        channel_axis : int, optional
            Channel axis of the images, when it is ambiguous.
        adapt : AdaptOptions or None
            How to fit images to the network (channel, polarity, object diameter; default:
            automatic). None: the images are already in the network's terms (used for
            training data, which is fitted once at the start).
        tile_shape, batch_size, on_message, stop, max_tile_bytes
            As for :func:`napari_live_unet.engine.predict.predict_stream`.
        intensity_ranges : iterable of (low, high) or None, optional
            Each image's normalisation percentiles (None entries: computed from the image),
            for crops that must be scaled like their whole image.
        voxel_sizes : iterable of tuple or None, optional
            Each image's voxel size (None entries: ``adapt.voxel_size``), when images of one
            stream differ; images are resampled to the model's voxel size.

        Yields
        ------
        ndarray, TilesDone or Adaptation
            Each image's outputs, shape (2, *spatial), float16, with the input's spatial
            shape (a zoomed image's outputs are resized back); a :class:`TilesDone` after
            each batch of tiles; and, before its first tiles' progress, what was done to fit
            each image to the network. One thread consumes it all, so a GUI worker can
            report progress within a large image without a helper thread.
        """
        ranges = itertools.repeat(None) if intensity_ranges is None else intensity_ranges
        spacings = itertools.repeat(None) if voxel_sizes is None else voxel_sizes
        shapes: collections.deque[tuple[int, ...]] = collections.deque()
        adapted: collections.deque[Adaptation] = collections.deque()

        def fitted() -> Iterator[tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]]:
            for image, rng, spacing in zip(images, ranges, spacings, strict=False):
                if adapt is None:
                    data = self.prepare_image(image, channel_axis)
                    shapes.append(tuple(data.shape[1:]))
                else:
                    options = adapt
                    if spacing is not None:
                        options = dataclasses.replace(adapt, voxel_size=tuple(spacing))
                    data, rng, adaptation = self.adapt_image(
                        image, options, channel_axis=channel_axis, intensity_range=rng
                    )
                    shapes.append(adaptation.input_shape)
                    adapted.append(adaptation)
                yield (
                    data,
                    rng if rng is not None else channel_percentiles(data, self.normalization),
                )

        first, second = itertools.tee(fitted())
        was_training = self.network.training
        self.network.eval()
        try:
            network = self.network
            if self.flip_average:
                network = FlipAveraged(network, self.config.mode)
            for item in predict_stream(
                network,
                (image for image, _ in first),
                mode=self.config.mode,
                size_multiple=self.config.size_multiples,
                stats=(st for _, st in second),
                tile_shape=tile_shape,
                batch_size=batch_size,
                device=self.device,
                on_message=on_message,
                stop=stop,
                max_tile_bytes=max_tile_bytes,
            ):
                while adapted:  # the images read so far, announced before their results
                    yield adapted.popleft()
                if isinstance(item, TilesDone):
                    yield item
                    continue
                shape = shapes.popleft()
                if tuple(item.shape[1:]) != shape:
                    item = resize(item, shape).astype(item.dtype)
                yield item
        finally:
            self.network.train(was_training)

    def instances(
        self,
        outputs: np.ndarray,
        params: PostprocessConfig | None = None,
        *,
        diameter: float | None = None,
        voxel_size: tuple[float, ...] | None = None,
        zoom: float | tuple[float, ...] | None = None,
    ) -> np.ndarray:
        """Instance labels from cached outputs (re-run cheaply when thresholds change).

        ``diameter`` and ``voxel_size`` are those the outputs were predicted with (or
        ``zoom``, the zoom the image got, as :meth:`image_zoom` gives it): sizes in the
        thresholds (minimum size, smoothing) are in the network's pixels and are scaled to
        the image's.
        """
        if zoom is None:
            zoom = self.image_zoom(diameter, voxel_size)
        params, sampling, halo = self.postprocess_plan(zoom, voxel_size, params)
        if not postprocesses_in_blocks(outputs.shape[1:]):
            return instances_from_outputs(outputs, self.config.mode, params, sampling=sampling)
        # Large images: the same objects block by block, faster (see the rule).
        block = 1024 if self.config.ndim == 2 else (64, 256, 256)
        return instances_blockwise(
            outputs, self.config.mode, params, block_shape=block, halo=halo, sampling=sampling
        )

    def postprocess_plan(
        self,
        zoom: float | tuple[float, ...],
        voxel_size: tuple[float, ...] | None = None,
        params: PostprocessConfig | None = None,
    ) -> tuple[PostprocessConfig, tuple[float, ...] | None, int]:
        """Thresholds, voxel size and block halo for outputs of an image zoomed by ``zoom``.

        Returns ``params`` (default: the model's) with sizes scaled to the image's pixels,
        the outputs' voxel size (``voxel_size``, else the model's), and the halo that
        block-by-block post-processing needs for the largest objects the model was trained
        on (:func:`~napari_live_unet.engine.blockwise.default_halo`).
        """
        params = scale_postprocess(params or self.postprocess, zoom, self.config.ndim)
        sampling = voxel_size or self.config.voxel_size  # the outputs' voxels
        zooms = (zoom,) * self.config.ndim if isinstance(zoom, int | float) else zoom
        largest = self.input.diameter_range[1] if self.input.diameter_range else None
        halo = default_halo(params, largest / min(zooms) * 1.5 if largest else None)
        return params, sampling, halo

    def segment(
        self, image: np.ndarray, *, adapt: AdaptOptions | None = AUTO_FIT, **kwargs: Any
    ) -> np.ndarray:
        """Instance labels (int32) for one image; a convenience over
        :class:`~napari_live_unet.engine.predictor.Predictor` (keyword arguments as for
        :meth:`segment_many`).

        Raises
        ------
        RuntimeError
            If a ``stop`` among ``kwargs`` ended prediction before the image was done.
        """
        results = list(self.segment_many([image], adapt=adapt, **kwargs))
        if results:
            return results[0][1]
        raise RuntimeError("prediction was stopped before the image was segmented")

    def segment_many(
        self,
        images: Iterable[np.ndarray],
        *,
        workers: int | None = None,
        channel_axis: int | None = None,
        voxel_sizes: Iterable[tuple[float, ...] | None] | None = None,
        stop: threading.Event | None = None,
        **options: Any,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(outputs, labels) for a stream of images, in order.

        A convenience over :class:`~napari_live_unet.engine.predictor.Predictor`, whose
        post-processing runs in a pool of ``workers`` threads (default: one per CPU core)
        while the network moves on to the next images. ``options`` (``adapt``, tiling,
        ``on_message``) are the predictor's.
        """
        from .predictor import FrameDone, Images, Predictor

        predictor = Predictor(self, workers=workers, **options)
        source = Images(images, channel_axis, voxel_sizes=voxel_sizes)
        for event in predictor.run(source, stop=stop):
            if isinstance(event, FrameDone):
                yield event.outputs, event.labels
