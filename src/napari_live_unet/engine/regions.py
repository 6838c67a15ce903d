"""Annotated regions of an image (training or validation) and the pairs they make.

A user paints ground truth in some rectangles (or polygons) of an image, or of some frames
of a time series, and marks each as a training or a validation region; only pixels inside a
training region teach the network, so unpainted pixels are not taught as background.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from skimage.draw import polygon2mask

from .data import TrainingPair, check_labels, make_pair, to_channel_first
from .errors import InputError
from .normalize import channel_percentiles

ROLES = ("train", "val")


@dataclass(eq=False)
class Region:
    """One annotated region of an image.

    Attributes
    ----------
    role : str
        ``"train"`` or ``"val"``.
    frame : tuple of int
        Index along the leading non-spatial axes (time point, slice of a 2D stack);
        ``()`` for a single 2D image or 3D volume.
    vertices : ndarray, shape (N, spatial_ndim)
        Polygon corners in pixel coordinates of the spatial axes (pixel centres lie at
        integers, as in napari). A pixel is annotated when its centre lies inside the
        polygon. For 3D images (z, y, x), a region is a prism: the polygon in y/x of
        vertices drawn on one slice (the y/x box around them if they are not all on one
        slice, or are fewer than 3), over the slices ``slices`` or else over the z extent
        of the vertices (one slice for a shape drawn on one slice).
    slices : tuple of int, optional
        3D only: the first and last slice (z index, inclusive) that the region covers;
        ``None`` for the z extent of the vertices. The vertices then stay on the slice the
        region was drawn on.
    """

    role: str
    frame: tuple[int, ...]
    vertices: np.ndarray
    slices: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise InputError(f"region role must be 'train' or 'val', got {self.role!r}")
        self.frame = tuple(int(i) for i in self.frame)
        self.vertices = np.asarray(self.vertices, dtype=np.float64)
        if self.vertices.ndim != 2 or len(self.vertices) == 0:
            raise InputError(
                f"region vertices must be an (N, ndim) array, got shape {self.vertices.shape}"
            )
        if self.slices is not None:
            self.slices = _check_slices(self.slices, self.vertices.shape[1])

    @property
    def z_range(self) -> tuple[int, int] | None:
        """3D only: first and last slice covered (inclusive, before clipping to the
        image); ``None`` for a 2D region or one that covers no slice centre."""
        if self.vertices.shape[1] != 3:
            return None
        if self.slices is not None:
            return self.slices
        z = self.vertices[:, 0]
        first, last = int(np.ceil(z.min())), int(np.floor(z.max()))
        return (first, last) if first <= last else None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Region):
            return NotImplemented
        return (
            self.role == other.role
            and self.frame == other.frame
            and np.array_equal(self.vertices, other.vertices)
            and self.slices == other.slices
        )


def _check_slices(slices: Sequence[int], ndim: int) -> tuple[int, int]:
    try:
        first, last = (int(i) for i in slices)
    except (TypeError, ValueError):
        raise InputError(
            f"region slices must be two slice numbers (first, last), got {slices!r}"
        ) from None
    if ndim != 3:
        raise InputError(f"only 3D regions span slices; this region has {ndim} coordinates")
    if first < 0 or first > last:
        raise InputError(
            f"region slices {first} to {last}: the first slice must be at least 0 and not "
            "after the last one"
        )
    return first, last


def pairs_from_regions(
    name: str,
    image: Any,
    labels: Any,
    regions: Sequence[Region],
    spatial_ndim: int,
    channel_axis: int | None = None,
) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """Training and validation pairs from an image annotated in regions.

    Parameters
    ----------
    name : str
        Named in pair names and error messages, e.g. ``"nuclei[t=3] region 2"``.
    image : array-like
        Image with optional leading frame axes, e.g. (T, Y, X) for a time series of 2D
        images; may be a dask array (only the needed frames are read).
    labels : array-like of int
        Instance labels, same shape as ``image`` without its channel axis.
    regions : sequence of Region
        Annotated regions. If empty, every frame with at least one object is used whole.
        If there are validation regions but no training regions, every frame with objects
        is used for training outside the validation regions.
    spatial_ndim : int
        2 or 3.
    channel_axis : int, optional
        Axis of ``image`` holding channels (-1 for RGB).

    Returns
    -------
    train, val : list of TrainingPair
        One pair per region (cropped to its bounding box, with pixels outside the polygon
        marked as not annotated), or per frame. Pairs hold copies of the data.

    Raises
    ------
    InputError
        If shapes disagree, a region lies outside the image, or nothing annotated holds an
        object.
    """
    train, val = collect_pairs(name, image, labels, regions, spatial_ndim, channel_axis)
    check_pair_sets(train, val, name, any(r.role == "train" for r in regions))
    return train, val


def check_pair_sets(
    train: Sequence[TrainingPair],
    val: Sequence[TrainingPair],
    source: str,
    train_regions: bool,
) -> None:
    """Raise :class:`InputError` unless the training (and validation) pairs hold objects.

    ``train_regions`` says whether training regions were marked, for the message.
    """
    if not train or sum(p.n_objects for p in train) == 0:
        where = "the training regions contain" if train_regions else "the labels contain"
        raise InputError(
            f"{source}: {where} no annotated objects. Paint some objects in the labels layer "
            "first" + (" inside a training region." if train_regions else ".")
        )
    if val and sum(p.n_objects for p in val) == 0:
        raise InputError(
            f"{source}: the validation regions contain no objects. Paint the objects in them, "
            "or remove them to let training hold out validation data automatically."
        )


def objects_in_region(labels: Any, region: Region, spatial_ndim: int) -> int:
    """Number of distinct objects (non-zero label ids) with pixels inside ``region``."""
    n_lead = _check_labels_ndim(labels, spatial_ndim, "labels")
    spatial = tuple(labels.shape[n_lead:])
    check_frame(region, labels.shape[:n_lead], "region")
    box, mask = region_geometry(region, spatial, "region")
    crop = np.asarray(labels[region.frame + box])
    values = crop if mask is None else crop[mask]
    return count_objects(values)


def region_geometry(
    region: Region, spatial_shape: tuple[int, ...], name: str = "region"
) -> tuple[tuple[slice, ...], np.ndarray | None]:
    """The pixel box of ``region`` clipped to the image, and its polygon mask in that box.

    Returns
    -------
    box : tuple of slice
        Bounding box of the annotated pixels, clipped to ``spatial_shape``.
    mask : ndarray of bool or None
        Which pixels of the box lie inside the polygon; ``None`` when all do.
    """
    ndim = len(spatial_shape)
    vertices = region.vertices
    if vertices.shape[1] != ndim:
        raise InputError(
            f"{name}: vertices have {vertices.shape[1]} coordinates but the image has "
            f"{ndim} spatial axes"
        )
    if ndim == 2 and len(vertices) < 3:
        raise InputError(f"{name}: a 2D region needs at least 3 corners, got {len(vertices)}")
    # Pixels whose centres (integer coordinates) lie within [min, max].
    low, high = np.ceil(vertices.min(0)).astype(int), np.floor(vertices.max(0)).astype(int)
    if ndim == 3 and region.slices is not None:
        low[0], high[0] = region.slices
    start = np.maximum(low, 0)
    stop = np.minimum(high + 1, spatial_shape)
    if np.any(stop <= start):
        lo, hi = vertices.min(0).round(1).tolist(), vertices.max(0).round(1).tolist()
        span = "" if region.slices is None else f" over slices {region.slices}"
        raise InputError(
            f"{name}: lies outside the image or covers no pixel (it spans {lo} to {hi}"
            f"{span}; the image is {spatial_shape}). Delete it or redraw it over the image."
        )
    box = tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))
    flat = ndim == 2 or (len(vertices) >= 3 and np.ptp(vertices[:, 0]) < 1e-6)
    if not flat:
        return box, None  # 3D vertices off one slice: the box around them
    yx = vertices[:, -2:]
    mask = polygon2mask(tuple((stop - start)[-2:].tolist()), yx - start[-2:])
    if not mask.any():
        raise InputError(f"{name}: the polygon covers no pixel centre. Redraw it larger.")
    if mask.all():
        return box, None
    if ndim == 3:  # the same polygon on each of the region's slices
        mask = np.repeat(mask[None], stop[0] - start[0], axis=0)
    return box, mask


def role_mask(
    regions: Sequence[Region], shape: tuple[int, ...], spatial_ndim: int, role: str
) -> np.ndarray:
    """Which pixels of a labels array of ``shape`` lie in a region of ``role``.

    Leading axes beyond the ``spatial_ndim`` spatial ones are frames; a region covers
    only its own frame. Regions that lie outside the image are left out.
    """
    mask = np.zeros(shape, bool)
    n_lead = len(shape) - spatial_ndim
    for region in regions:
        if region.role != role or len(region.frame) != n_lead:
            continue
        try:
            box, inside = region_geometry(region, tuple(shape[n_lead:]))
        except InputError:
            continue
        view = mask[(*region.frame, *box)]
        view |= True if inside is None else inside
    return mask


def collect_pairs(
    name: str,
    image: Any,
    labels: Any,
    regions: Sequence[Region],
    spatial_ndim: int,
    channel_axis: int | None,
) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """Pairs of one image, without checking that they hold objects."""
    image, n_lead = check_image(name, image, labels, spatial_ndim, channel_axis)
    ch = None if channel_axis is None else -1
    lead_shape = tuple(labels.shape[:n_lead])
    spatial = tuple(labels.shape[n_lead:])
    train: list[TrainingPair] = []
    val: list[TrainingPair] = []
    geometry = []
    for i, region in enumerate(regions, start=1):
        label = f"{name}{frame_label(region.frame)} region {i}"
        check_frame(region, lead_shape, label)
        geometry.append((region, label, *region_geometry(region, spatial, label)))

    if not any(r.role == "train" for r in regions):
        # Whole frames are annotated, except where validation regions were marked.
        for frame in np.ndindex(*lead_shape):
            lab = np.array(labels[frame])
            annotated = None
            for region, _, box, mask in geometry:
                if region.frame == frame:
                    if annotated is None:
                        annotated = np.ones(spatial, bool)
                    if mask is None:
                        annotated[box] = False
                    else:
                        annotated[box] &= ~mask
            if not lab.any() or (annotated is not None and not annotated.any()):
                continue
            train.append(
                make_pair(
                    np.array(image[frame]),
                    lab,
                    annotated=annotated,
                    channel_axis=ch,
                    name=f"{name}{frame_label(frame)}",
                    require_objects=False,
                )
            )

    frame_ranges: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
    for region, label, box, mask in geometry:
        index = region.frame + box
        pair = make_pair(
            np.array(image[index]),
            np.array(labels[index]),
            annotated=mask,
            channel_axis=ch,
            name=label,
            require_objects=False,
        )
        if region.frame not in frame_ranges:
            whole = to_channel_first(np.asarray(image[region.frame]), spatial, name, ch)
            frame_ranges[region.frame] = channel_percentiles(whole)
        # A region is normalised like its whole frame, as prediction will normalise it.
        pair.intensity_range = frame_ranges[region.frame]
        (train if region.role == "train" else val).append(pair)
    return train, val


def check_image(
    name: str, image: Any, labels: Any, spatial_ndim: int, channel_axis: int | None
) -> tuple[Any, int]:
    """Channel axis moved last; check shapes. Returns (image, number of frame axes)."""
    n_lead = _check_labels_ndim(labels, spatial_ndim, name)
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        check_labels(np.zeros(0, labels.dtype), name)  # raises with the standard message
    shape = tuple(image.shape)
    if channel_axis is not None:
        if not -len(shape) <= channel_axis < len(shape):
            raise InputError(f"{name}: channel axis {channel_axis} but the image is {shape}")
        image = np.moveaxis(image, channel_axis, -1)
        shape = tuple(image.shape[:-1])
    if shape != tuple(labels.shape):
        raise InputError(
            f"{name}: image shape {tuple(image.shape)} does not match labels shape "
            f"{tuple(labels.shape)}. The labels must cover the image pixel for pixel "
            "(a channel axis aside)."
        )
    return image, n_lead


def _check_labels_ndim(labels: Any, spatial_ndim: int, name: str) -> int:
    if spatial_ndim not in (2, 3):
        raise InputError(f"{name}: spatial_ndim must be 2 or 3, got {spatial_ndim}")
    if labels.ndim < spatial_ndim:
        raise InputError(
            f"{name}: labels of shape {tuple(labels.shape)} have fewer than {spatial_ndim} axes"
        )
    return labels.ndim - spatial_ndim


def check_frame(region: Region, lead_shape: tuple[int, ...], name: str) -> None:
    if len(region.frame) != len(lead_shape):
        raise InputError(
            f"{name}: frame {region.frame} has {len(region.frame)} indices but the image has "
            f"{len(lead_shape)} frame axes {lead_shape}. Draw regions in a shapes layer with "
            "as many dimensions as the image."
        )
    if any(not 0 <= i < n for i, n in zip(region.frame, lead_shape, strict=True)):
        raise InputError(f"{name}: frame {region.frame} is outside the image's frames {lead_shape}")


def frame_label(frame: tuple[int, ...]) -> str:
    """``"[t=3]"`` for a frame of a time series (or stack), ``""`` for a single image."""
    if not frame:
        return ""
    if len(frame) == 1:
        return f"[t={frame[0]}]"
    return "[" + ", ".join(map(str, frame)) + "]"


def count_objects(values: np.ndarray) -> int:
    """Number of distinct non-zero ids in a label array (linear time for compact ids)."""
    if values.size == 0:
        return 0
    if np.issubdtype(values.dtype, np.signedinteger) and values.min() < 0:
        values = values[values > 0]
        if values.size == 0:
            return 0
    top = int(values.max())
    if top == 0:
        return 0
    if top < 4 * values.size:  # presence table: linear time, no sort
        present = np.zeros(top + 1, bool)
        present[values.ravel()] = True
        return int(np.count_nonzero(present[1:]))
    return int(np.count_nonzero(np.unique(values)))
