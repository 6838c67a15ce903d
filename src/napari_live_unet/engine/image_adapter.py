"""Fit an image to what a model reads: channels, polarity and object size.

A model records its input in an :class:`InputSpec`. Before prediction or fine-tuning, an
image is *adapted* to it: colour or multi-channel images become the model's channels
(luminance, or a chosen channel), dark objects on a bright background are inverted when the
network expects bright objects, and the image is zoomed so its objects have the diameter
the network was trained on. Outputs are mapped back to the input's shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal, cast

import numpy as np
import torch
import torch.nn.functional as F

from .config import PostprocessConfig, check_voxel_size
from .config_fields import ConfigValue, check_fields, choice, integer, number_pair, real
from .errors import InputError

Polarity = Literal["bright", "dark"]
PolarityChoice = Literal["auto", "bright", "dark"]
POLARITY_CHOICES: tuple[str, ...] = ("auto", "bright", "dark")
# Rec. 709 luma weights, as scikit-image's rgb2gray uses.
_LUMA = np.array([0.2125, 0.7154, 0.0721], np.float32)
# Zooms this close to 1 are not worth resampling for: training zooms patches by 0.67-1.5
# anyway, and resampling blurs.
_ZOOM_TOLERANCE = 0.2


@dataclass(frozen=True)
class InputSpec(ConfigValue):
    """What a model's network reads, and what its images looked like.

    Attributes
    ----------
    polarity : {"bright", "dark"}
        How objects look in the network's input: ``bright`` objects on a dark background
        (fluorescence) or the reverse.
    image_polarity : {"auto", "bright", "dark"}
        How objects look in the images this model is meant for. ``auto``: decide per image
        from its statistics (the built-in starter); fine-tuning sets it from the annotations.
        An image whose polarity differs from ``polarity`` is inverted before the network.
    channel : int or None
        Channel taken from multi-channel images for a one-channel network (None: colour
        images become luminance; other multi-channel images need a choice).
    diameter : float or None
        Median object diameter in pixels as the network saw them in training.
    diameter_range : (float, float) or None
        10th and 90th percentiles of those diameters: sizes the network knows. Images whose
        objects lie outside are zoomed to the nearest end (see :func:`zoom_for`).
    image_diameter : float or None
        Median object diameter in the images the model was last trained on, before zooming;
        prediction with ``diameter=None`` zooms as for objects of this size.
    """

    polarity: Polarity = "bright"
    image_polarity: PolarityChoice = "bright"
    channel: int | None = None
    diameter: float | None = None
    diameter_range: tuple[float, float] | None = None
    image_diameter: float | None = None

    def __post_init__(self) -> None:
        check_fields(
            self,
            {
                "polarity": choice(("bright", "dark")),
                "image_polarity": choice(POLARITY_CHOICES),
                "channel": integer(0, optional=True),
                "diameter": real(0, low_open=True, optional=True),
                "diameter_range": number_pair(0, low_open=True, optional=True),
                "image_diameter": real(0, low_open=True, optional=True),
            },
        )


@dataclass(frozen=True)
class AdaptOptions:
    """The user's choices for fitting images to a model (all optional).

    Parameters
    ----------
    channel : int, optional
        Channel of a multi-channel image to use with a one-channel model.
    polarity : {"auto", "bright", "dark"}
        How objects look in the user's images; ``auto`` decides (from the annotations when
        training, from the model's record or the image's statistics when predicting).
    diameter : float, optional
        Typical object diameter in the user's images, in pixels; None: automatic.
    all_channels : bool
        Fine-tuning only: a one-channel model learns to read every channel of colour or
        multi-channel images (its first layer is widened, starting from the luminance it
        would otherwise see) instead of their luminance.
    voxel_size : tuple of float, optional
        Physical pixel (voxel) size of the images per spatial axis, ``(z, y, x)`` in 3D.
        Images are resampled to the model's voxel size when both are known; a new model
        records it and adapts its network to anisotropic voxels. None: unknown (for
        training, the images' own voxel sizes are used when they carry one).
    """

    channel: int | None = None
    polarity: PolarityChoice = "auto"
    diameter: float | None = None
    all_channels: bool = False
    voxel_size: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check_channel(self.channel)
        check_polarity(self.polarity)
        check_diameter(self.diameter)
        if self.voxel_size is not None:
            try:
                size = check_voxel_size(self.voxel_size, len(tuple(self.voxel_size)))
            except (TypeError, ValueError) as exc:
                raise InputError(str(exc)) from None
            object.__setattr__(self, "voxel_size", size)
        if self.all_channels and self.channel is not None:
            raise InputError("choose one channel or all channels, not both")


@dataclass
class Adaptation:
    """What was done to fit one image (or a training set) to a model."""

    zoom: float = 1.0
    inverted: bool = False
    channel_note: str = ""
    polarity: Polarity = "bright"
    polarity_source: str = ""
    notes: list[str] = field(default_factory=list)
    input_shape: tuple[int, ...] = ()
    voxel_zoom: tuple[float, ...] | None = None
    """Per-axis zoom that brought the image's voxel size to the model's (None: none)."""
    voxel_size: tuple[float, ...] | None = None
    """The image's voxel size, when known."""
    judged_per_image: bool = False
    """Training only: judging polarity image by image (:func:`polarity_from_image`) gives
    every training image the polarity the annotations gave them all."""

    def describe(self) -> str:
        """One line for the user, e.g. ``RGB -> luminance; inverted (dark objects); zoom 0.50``."""
        parts = []
        if self.channel_note:
            parts.append(self.channel_note)
        what = (
            "dark objects on a bright background"
            if self.polarity == "dark"
            else ("bright objects on a dark background")
        )
        source = f", {self.polarity_source}" if self.polarity_source else ""
        parts.append(f"{what}{source}" + ("; inverted" if self.inverted else ""))
        if abs(self.zoom - 1.0) > 1e-6:
            parts.append(f"zoomed ×{self.zoom:.2f} to the model's object size")
        if self.voxel_zoom is not None:
            zooms = " x ".join(f"{z:.2f}" for z in self.voxel_zoom)
            parts.append(f"resampled ×({zooms}) to the model's voxel size")
        return "; ".join(parts + self.notes)


def check_channel(channel: int | None) -> None:
    """Raise :class:`InputError` unless ``channel`` is None or a non-negative integer."""
    if channel is None:
        return
    if isinstance(channel, bool) or not isinstance(channel, int | np.integer) or channel < 0:
        raise InputError(f"channel must be a non-negative integer (0 = first), got {channel!r}")


def check_polarity(polarity: str) -> None:
    """Raise :class:`InputError` unless ``polarity`` is auto, bright or dark."""
    if polarity not in POLARITY_CHOICES:
        raise InputError(f"polarity must be one of {', '.join(POLARITY_CHOICES)}, got {polarity!r}")


def check_diameter(diameter: float | None) -> None:
    """Raise :class:`InputError` unless ``diameter`` is None or a positive finite number."""
    if diameter is None:
        return
    try:
        value = float(diameter)
    except (TypeError, ValueError):
        raise InputError(f"diameter must be a number of pixels, got {diameter!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(
            f"diameter must be a positive number of pixels (or automatic), got {diameter!r}"
        )


def split_channels(
    image: np.ndarray, ndim: int, channel_axis: int | None = None, name: str = "image"
) -> tuple[np.ndarray, bool]:
    """Return ``image`` channel-first for ``ndim`` spatial axes, and whether it is RGB(A).

    Without ``channel_axis``, an extra last axis of length 3 or 4 is read as RGB(A) when the
    axes before it are image-sized (more than 8 pixels, so a short stack of RGBA slices
    keeps its 4 channels), and an extra first axis of at most 8 as channels; anything else
    is ambiguous and refused. A 2D colour image given to a 3D model is refused with its
    channel count rather than read as a volume 3 or 4 pixels deep.
    """
    image = image if hasattr(image, "shape") else np.asarray(image)
    shape = tuple(image.shape)
    if image.ndim == ndim and channel_axis is None:
        if ndim == 3 and _colour_last(shape):
            kind = "RGBA" if shape[-1] == 4 else "RGB"
            raise InputError(
                f"{name} of shape {shape} is a 2D image with {shape[-1]} channels ({kind}), "
                "but this model segments 3D images; use a 2D model for it"
            )
        return image[np.newaxis], False
    if image.ndim != ndim + 1:
        raise InputError(
            f"{name} of shape {shape} is not {ndim}D: this model segments {ndim}D "
            "images, optionally with one channel axis"
        )
    if channel_axis is None:
        if _colour_last(shape) or (shape[-1] in (3, 4) and shape[0] > 8):
            channel_axis = -1
        elif shape[0] <= 8:
            channel_axis = 0
        elif shape[-1] <= 8:
            channel_axis = -1
        else:
            raise InputError(
                f"{name} has shape {shape}: no axis looks like channels; a {ndim}D "
                "model reads images with at most 8 channels (first or last axis)"
            )
    channel_axis = channel_axis % image.ndim
    is_rgb = channel_axis == image.ndim - 1 and shape[-1] in (3, 4)
    return np.moveaxis(image, channel_axis, 0), is_rgb


def _colour_last(shape: tuple[int, ...]) -> bool:
    """Whether the last axis holds RGB(A): 3 or 4 long after image-sized axes (a volume or
    a channel-first image is never 3 or 4 pixels along its last axis beside those)."""
    return len(shape) >= 3 and shape[-1] in (3, 4) and all(s > 8 for s in shape[-3:-1])


def channel_weights(n: int, is_rgb: bool) -> np.ndarray:
    """How a one-channel model's view is spread over ``n`` channels (sums to 1)."""
    if is_rgb:
        return np.concatenate([_LUMA, np.zeros(n - 3, np.float32)])
    return np.full(n, 1.0 / n, np.float32)


def to_model_channels(
    image: np.ndarray, model_channels: int, *, is_rgb: bool, channel: int | None, name: str
) -> tuple[np.ndarray, str]:
    """Fit a channel-first image to ``model_channels``; returns it and a note of what was done.

    One-channel models take ``channel`` when given, luminance of RGB(A) images otherwise.
    Multi-channel models take images with that many channels (RGBA drops its alpha).
    """
    n = image.shape[0]
    check_model_channels(n, model_channels, is_rgb=is_rgb, channel=channel, name=name)
    if channel is not None:
        return image[channel : channel + 1], f"channel {channel} of {n}"
    if n == model_channels:
        return image, ""
    if n == 4 and model_channels == 3:
        return image[:3], "RGBA -> RGB"
    rgb = np.asarray(image[:3], np.float32)
    luma = np.tensordot(_LUMA, rgb, axes=1)[np.newaxis]
    return luma, ("RGBA" if n == 4 else "RGB") + " -> luminance"


def check_model_channels(
    n: int, model_channels: int, *, is_rgb: bool, channel: int | None, name: str
) -> None:
    """Raise :class:`InputError` unless an image with ``n`` channels can be fitted."""
    if channel is not None:
        if channel >= n:
            raise InputError(
                f"{name}: channel {channel} does not exist; the image has {n} channel(s) "
                f"(0 to {n - 1})"
            )
        if model_channels != 1:
            raise InputError(
                f"{name}: the model reads {model_channels} channels; a single channel cannot "
                "be chosen for it"
            )
        return
    if n == model_channels or (is_rgb and (model_channels == 1 or (n, model_channels) == (4, 3))):
        return
    hint = " Choose one with --channel (or the Channel box)." if model_channels == 1 else ""
    raise InputError(
        f"{name}: image with {n} channel(s), but the model reads {model_channels} channel(s).{hint}"
    )


def polarity_from_image(image: np.ndarray) -> Polarity:
    """Guess how objects look from a channel-first image's statistics.

    Microscopy backgrounds cover most of an image: when the median lies in the upper half
    of the 1-99.8 percentile range, the background is bright and objects are dark (H&E,
    brightfield); otherwise objects are bright (fluorescence).
    """
    data = np.asarray(image[0], np.float32)
    stride = max(1, int(np.ceil((data.size / 1_000_000) ** (1 / data.ndim))))
    sample = data[(slice(None, None, stride),) * data.ndim]
    low, median, high = np.percentile(sample, [1.0, 50.0, 99.8])
    if high - low <= 0:
        return "bright"
    return "dark" if (median - low) / (high - low) > 0.5 else "bright"


def polarity_from_annotations(
    images: list[np.ndarray], labels: list[np.ndarray], masks: list[np.ndarray | None]
) -> Polarity:
    """Dark if annotated objects are on the whole darker than the annotated background.

    Compares the mean of the first channel inside objects with the mean of the background
    pixels next to them (a few pixels around each object), pooled over all pairs.
    """
    from scipy import ndimage

    inside = around = 0.0
    n_in = n_around = 0
    for image, lab, mask in zip(images, labels, masks, strict=True):
        data = np.asarray(image[0], np.float32)
        objects = lab > 0
        if mask is not None:
            objects &= mask
        if not objects.any():
            continue
        dilated = cast(np.ndarray, ndimage.binary_dilation(objects, iterations=3))
        ring = dilated & ~(lab > 0)
        if mask is not None:
            ring &= mask
        low, high = np.percentile(data, [1.0, 99.8])
        scale = 1.0 / max(float(high - low), 1e-6)
        inside += float(data[objects].sum() - low * objects.sum()) * scale
        n_in += int(objects.sum())
        if ring.any():
            around += float(data[ring].sum() - low * ring.sum()) * scale
            n_around += int(ring.sum())
    if n_in == 0 or n_around == 0:
        return "bright"
    return "dark" if inside / n_in < around / n_around else "bright"


def object_diameters(labels: np.ndarray, annotated: np.ndarray | None = None) -> np.ndarray:
    """Equivalent diameters (circle in 2D, sphere in 3D) of the labelled objects, in pixels."""
    lab = labels if annotated is None else np.where(annotated, labels, 0)
    flat = np.asarray(lab).ravel()
    if flat.size == 0 or flat.max() == 0:
        return np.zeros(0)
    _, counts = np.unique(flat[flat > 0], return_counts=True)
    counts = counts.astype(np.float64)
    if lab.ndim == 3:
        return (6.0 * counts / math.pi) ** (1.0 / 3.0)
    return 2.0 * np.sqrt(counts / math.pi)


def estimate_diameter(
    labels: list[np.ndarray] | np.ndarray, masks: list[np.ndarray | None] | None = None
) -> float | None:
    """Median equivalent diameter of all annotated objects (None when there are none)."""
    if isinstance(labels, np.ndarray):
        labels = [labels]
    mask_list: list[np.ndarray | None] = masks if masks is not None else [None] * len(labels)
    sizes = [object_diameters(lab, m) for lab, m in zip(labels, mask_list, strict=True)]
    pooled = np.concatenate(sizes) if sizes else np.zeros(0)
    return float(np.median(pooled)) if pooled.size else None


def diameter_range(diameters: np.ndarray) -> tuple[float, float] | None:
    """10th and 90th percentiles of object diameters."""
    if diameters.size == 0:
        return None
    lo, hi = np.percentile(diameters, [10.0, 90.0])
    return float(lo), float(hi)


def zoom_for(spec: InputSpec, diameter: float | None) -> float:
    """Zoom that brings objects of ``diameter`` pixels into the sizes the model knows.

    Objects already inside the model's diameter range are left at their size (zoom 1:
    no detail is lost); smaller or larger ones are zoomed to the nearest end of the range.
    ``None`` uses the diameter recorded for the model's own images (1.0 when none is).
    """
    if spec.diameter is None:
        return 1.0
    source = diameter if diameter is not None else spec.image_diameter
    if source is None:
        return 1.0
    low, high = spec.diameter_range or (spec.diameter, spec.diameter)
    zoom = min(max(float(source), low), high) / float(source)
    return 1.0 if abs(zoom - 1.0) < _ZOOM_TOLERANCE else zoom


def scale_postprocess(
    params: PostprocessConfig, zoom: float | tuple[float, ...], ndim: int
) -> PostprocessConfig:
    """Thresholds for outputs of an image that was zoomed by ``zoom`` before the network.

    Sizes in the thresholds (minimum size, smoothing) are in the network's pixels; outputs
    come back at the image's size, so the sizes are scaled to it. A per-axis ``zoom``
    scales the minimum size by the volume change and the smoothing by the in-plane zoom.
    """
    zooms = (zoom,) * ndim if isinstance(zoom, int | float) else tuple(zoom)
    if all(z == 1.0 for z in zooms):
        return params
    in_plane = math.sqrt(zooms[-1] * zooms[-2]) if ndim >= 2 else zooms[-1]
    return replace(
        params,
        min_size=round(params.min_size / math.prod(zooms)),
        smoothing=params.smoothing / in_plane,
    )


def zoomed_shape(shape: tuple[int, ...], zoom: float | tuple[float, ...]) -> tuple[int, ...]:
    """Spatial shape after zooming by one factor or one per axis (at least one pixel each)."""
    zooms = (zoom,) * len(shape) if isinstance(zoom, int | float) else zoom
    return tuple(max(1, round(s * z)) for s, z in zip(shape, zooms, strict=True))


def resize(array: np.ndarray, shape: tuple[int, ...], *, nearest: bool = False) -> np.ndarray:
    """Resize a channel-first array's spatial axes to ``shape``.

    Linear interpolation (antialiased when shrinking in 2D) or nearest neighbour for labels.
    Returns float32 for linear, the input dtype for nearest.
    """
    spatial = tuple(array.shape[1:])
    if spatial == tuple(shape):
        return array
    ndim = len(spatial)
    if nearest:
        index = np.ix_(*[_nearest_index(s, t) for s, t in zip(spatial, shape, strict=True)])
        return np.asarray(array)[(slice(None), *index)]
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    shrink = any(t < s for s, t in zip(spatial, shape, strict=True))
    mode = "bilinear" if ndim == 2 else "trilinear"
    with torch.no_grad():
        out = F.interpolate(
            x, size=tuple(shape), mode=mode, align_corners=False, antialias=shrink and ndim == 2
        )
    return out[0].numpy()


def _nearest_index(size: int, target: int) -> np.ndarray:
    centres = (np.arange(target) + 0.5) * (size / target) - 0.5
    return np.clip(np.round(centres), 0, size - 1).astype(np.intp)


def invert(image: np.ndarray) -> np.ndarray:
    """Negate intensities (float32): percentile normalisation then maps dark to bright."""
    return -np.asarray(image, np.float32)


def invert_range(
    intensity_range: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The normalisation range of an inverted image."""
    if intensity_range is None:
        return None
    low, high = intensity_range
    return -np.asarray(high, np.float32), -np.asarray(low, np.float32)


AUTO_FIT = AdaptOptions()
"""Fit channels, polarity and object size automatically (the default everywhere)."""
