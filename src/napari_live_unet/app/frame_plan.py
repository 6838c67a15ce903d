"""How an image layer's data splits into frames the model segments one by one.

A :class:`FramePlan` is the engine's :class:`~napari_live_unet.engine.block_plan.FrameLayout`
of the layer's data (which axes are frames, channels and space) with the data's shape:
frames predicted whole and frames predicted block by block read the layer the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..engine.block_plan import FrameLayout
from ..engine.config import ModelConfig
from ..engine.errors import InputError


@dataclass(frozen=True)
class FramePlan:
    """How an image layer's data splits into frames the model segments one by one.

    Attributes
    ----------
    data_shape : tuple of int
        Shape of the layer's data.
    layout : FrameLayout
        Which axes of the data are frames (the leading axes), the channel axis and the
        model's spatial axes, as the engine reads stored images.
    """

    data_shape: tuple[int, ...]
    layout: FrameLayout

    @property
    def leading(self) -> tuple[int, ...]:
        """Shape of the axes iterated over (time, stack); empty for a single image."""
        return tuple(self.data_shape[a] for a in self.layout.frame_axes)

    @property
    def spatial(self) -> tuple[int, ...]:
        """Shape of one frame's labels."""
        return self.layout.spatial_shape(self.data_shape)

    @property
    def channel_axis(self) -> int | None:
        """Channel axis of a frame (after the leading axes are removed): -1 for RGB(A)
        channels last, 0 for channels before the spatial axes, None without channels."""
        axis = self.layout.channel_axis
        if axis is None:
            return None
        return -1 if axis == len(self.data_shape) - 1 else axis - len(self.layout.frame_axes)

    @property
    def kept_axes(self) -> tuple[int, ...]:
        """The layer dimensions the labels keep (all but a non-RGB channel axis), to copy
        scale and translate from."""
        return tuple(i for i in range(len(self.data_shape)) if i != self.layout.channel_axis)

    @property
    def n_frames(self) -> int:
        return int(np.prod(self.leading, dtype=np.int64))

    @property
    def labels_shape(self) -> tuple[int, ...]:
        return self.leading + self.spatial

    def frames(self) -> Iterator[tuple[int, ...]]:
        """Index of each frame into the leading axes, in order."""
        return iter(np.ndindex(*self.leading))

    def position(self, index: tuple[int, ...]) -> int:
        """Number of the frame at ``index`` in :meth:`frames` order."""
        return int(np.ravel_multi_index(index, self.leading)) if self.leading else 0

    def index(self, position: int) -> tuple[int, ...]:
        """Index into the leading axes of frame number ``position``."""
        if not self.leading:
            return ()
        return tuple(int(i) for i in np.unravel_index(position, self.leading))


def plan_frames(
    shape: Sequence[int],
    rgb: bool,
    config: ModelConfig,
    name: str = "image",
    channel: int | None = None,
) -> FramePlan:
    """Split a layer's data of ``shape`` into frames for a model with ``config``.

    RGB layers carry their channels last (a one-channel model reads their luminance, or
    ``channel``); a non-RGB layer for a multi-channel model, or one whose ``channel`` is
    chosen, must hold the channels just before the spatial axes, (..., C, *spatial). Any
    axes before are frames: a 2D model segments a (T, Y, X) series frame by frame.

    Raises
    ------
    InputError
        When the layer cannot be read by the model, with what to do instead.
    """
    ndim, in_channels = config.ndim, config.in_channels
    shape = tuple(int(s) for s in shape)
    layer_ndim = len(shape) - (1 if rgb else 0)
    if channel is not None and in_channels != 1:
        raise InputError(
            f"the model reads {in_channels} channels: a single channel of '{name}' cannot be "
            "chosen for it; set Channel to auto"
        )
    if rgb:
        fits = in_channels in (1, shape[-1]) or (in_channels, shape[-1]) == (3, 4)
        if channel is None and not fits:
            raise InputError(
                f"'{name}' is an RGB(A) image with {shape[-1]} channels but the model reads "
                f"{in_channels} channel(s); choose a channel or train on images like these"
            )
        n_channels = shape[-1]
        channel_axis: int | None = -1
    elif in_channels > 1 or channel is not None:
        n_channels = shape[-ndim - 1] if layer_ndim >= ndim + 1 else 0
        if channel is None and n_channels != in_channels:
            raise InputError(
                f"the model reads {in_channels} channels but '{name}' (shape {shape}) has no "
                f"axis of {in_channels} just before its {ndim} spatial axes"
            )
        channel_axis = 0
    else:
        n_channels, channel_axis = 1, None
    if channel is not None and channel >= n_channels:
        raise InputError(
            f"'{name}' (shape {shape}) has no channel {channel}: the axis before its {ndim} "
            f"spatial axes holds {n_channels} channel(s)"
        )
    n_channel_axes = 0 if channel_axis is None else 1
    n_leading = len(shape) - ndim - n_channel_axes
    if n_leading < 0:
        raise InputError(
            f"'{name}' has {layer_ndim} dimension(s) but the model segments {ndim}D images"
            + ("; open the volume as one 3D layer" if ndim == 3 else "")
        )
    # Leading axes are frames (the last one time, others unknown), then the channel axis
    # if any, then space (RGB channels last).
    axes = "q" * max(0, n_leading - 1) + "t" * min(1, n_leading)
    space = "zyx"[3 - ndim :]
    if channel_axis is None:
        axes += space
    elif channel_axis == -1:
        axes += space + "c"
    else:
        axes += "c" + space
    return FramePlan(shape, FrameLayout.of(axes, ndim, name))
