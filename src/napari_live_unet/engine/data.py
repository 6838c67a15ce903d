"""Image/label pairs from arrays or folders, validated for training."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .config import check_voxel_size
from .errors import InputError
from .io import list_tiffs, read_tiff
from .normalize import channel_percentiles
from .voxel_metadata import read_voxel_size

AxisRanges = Sequence[tuple[int, int]]
"""An axis-aligned box as one (start, stop) pair per spatial axis, e.g. ((y0, y1), (x0, x1))."""


@dataclass
class TrainingPair:
    """One image with its instance labels, ready for training.

    Attributes
    ----------
    name : str
        Used in messages and reports.
    image : ndarray, shape (C, *spatial)
        Raw image, channel axis first (not yet normalised).
    labels : ndarray of int, shape spatial
        Instance labels; 0 is background.
    annotated : ndarray of bool, shape spatial, or None
        Which pixels were annotated. ``None`` means all of them. Unannotated pixels are
        ignored by the loss instead of being taught as background.
    intensity_range : (low, high) arrays of shape (C,), or None
        Normalisation percentiles of the whole image this pair was cut from, so a small
        region is scaled as the whole image will be at prediction time. ``None``: the
        pair's own percentiles.
    voxel_size : tuple of float, or None
        Physical pixel (voxel) size per spatial axis, from the file's metadata or the
        user; None when unknown.
    """

    name: str
    image: np.ndarray
    labels: np.ndarray
    annotated: np.ndarray | None = None
    intensity_range: tuple[np.ndarray, np.ndarray] | None = None
    voxel_size: tuple[float, ...] | None = None

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.labels.shape)

    @property
    def n_objects(self) -> int:
        ids = np.unique(self.labels if self.annotated is None else self.labels[self.annotated])
        return int(np.count_nonzero(ids))


def check_finite(image: np.ndarray, name: str) -> None:
    """Raise :class:`InputError` if a float image holds NaN or Inf pixels."""
    if not np.issubdtype(image.dtype, np.floating):
        return
    # Checked in slabs so a huge image is never duplicated as a boolean array.
    flat = image.reshape(image.shape[0], -1) if image.ndim > 1 else image[None]
    step = max(1, 4_000_000 // max(1, flat.shape[0]))
    for start in range(0, flat.shape[1], step):
        if not np.isfinite(flat[:, start : start + step]).all():
            raise InputError(
                f"{name}: image contains NaN or Inf pixels. Replace them (for example with "
                "numpy.nan_to_num) before training or prediction."
            )


def check_labels(labels: np.ndarray, name: str) -> None:
    """Raise :class:`InputError` unless ``labels`` is a non-negative integer array."""
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(
            f"{name}: labels must be an integer image (0 = background, 1, 2, ... = objects), "
            f"got dtype {labels.dtype}. Save the labels as an integer TIFF."
        )
    if np.issubdtype(labels.dtype, np.signedinteger) and labels.size and labels.min() < 0:
        raise InputError(
            f"{name}: labels contain negative values (min {labels.min()}). "
            "Use 0 for background and positive integers for objects."
        )


def to_channel_first(
    image: np.ndarray, spatial_shape: tuple[int, ...], name: str, channel_axis: int | None = None
) -> np.ndarray:
    """Return ``image`` as (C, *spatial) matching ``spatial_shape`` (a view where possible)."""
    if channel_axis is not None:
        image = np.moveaxis(image, channel_axis, 0)
    elif image.shape == spatial_shape:
        image = image[None]
    elif image.ndim == len(spatial_shape) + 1 and image.shape[:-1] == spatial_shape:
        image = np.moveaxis(image, -1, 0)
    elif image.ndim == len(spatial_shape) + 1 and image.shape[1:] == spatial_shape:
        pass
    if image.shape[1:] != spatial_shape:
        raise InputError(
            f"{name}: image shape {image.shape} does not match label shape {spatial_shape}. "
            "Image and labels must cover the same pixels (an extra channel axis is allowed)."
        )
    return image


def regions_to_mask(regions: Sequence[AxisRanges], shape: tuple[int, ...]) -> np.ndarray:
    """Boolean mask that is True inside any of the axis-aligned ``regions``."""
    mask = np.zeros(shape, bool)
    for region in regions:
        if len(region) != len(shape):
            raise InputError(
                f"region {region} has {len(region)} axes but the labels have {len(shape)}"
            )
        mask[tuple(slice(max(0, int(a)), max(0, int(b))) for a, b in region)] = True
    return mask


def make_pair(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    annotated: np.ndarray | Sequence[AxisRanges] | None = None,
    channel_axis: int | None = None,
    name: str = "array",
    require_objects: bool = True,
    voxel_size: Sequence[float] | None = None,
) -> TrainingPair:
    """Validate an image/label pair from in-memory arrays.

    Parameters
    ----------
    image : ndarray
        2D or 3D image, optionally with a channel axis (first or last, or ``channel_axis``).
    labels : ndarray of int
        Instance labels with the image's spatial shape.
    annotated : ndarray of bool or list of regions, optional
        What was annotated; pixels outside are ignored by the loss.
    channel_axis : int, optional
        Axis of ``image`` holding channels, if it is ambiguous.
    name : str
        Named in error messages.
    require_objects : bool
        Raise if the (annotated part of the) labels contains no object.
    voxel_size : sequence of float, optional
        Physical pixel (voxel) size per spatial axis, if known.

    Returns
    -------
    TrainingPair
    """
    image = np.asarray(image)
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise InputError(f"{name}: labels must be 2D or 3D, got shape {labels.shape}")
    check_labels(labels, name)
    labels = _compact_ids(labels)
    image = to_channel_first(image, labels.shape, name, channel_axis)
    check_finite(image, name)
    mask = None
    if annotated is not None:
        if isinstance(annotated, np.ndarray):
            if annotated.shape != labels.shape:
                raise InputError(
                    f"{name}: annotation mask shape {annotated.shape} differs from label "
                    f"shape {labels.shape}"
                )
            mask = annotated.astype(bool, copy=False)
        else:
            mask = regions_to_mask(annotated, labels.shape)
        if not mask.any():
            raise InputError(f"{name}: the annotated region is empty; mark what you annotated")
    if voxel_size is not None:
        try:
            voxel_size = check_voxel_size(voxel_size, labels.ndim)
        except ValueError as exc:
            raise InputError(f"{name}: {exc}") from None
    pair = TrainingPair(name, image, labels, mask, voxel_size=voxel_size)
    if require_objects and pair.n_objects == 0:
        raise InputError(
            f"{name}: labels contain no objects. Annotate at least one object, or remove "
            "this image from the training set."
        )
    return pair


def _compact_ids(labels: np.ndarray) -> np.ndarray:
    """Relabel 1..N when ids are large (e.g. 2**31), which per-id tables cannot index."""
    if labels.size == 0 or int(labels.max()) < 2**16:
        return labels
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(labels)[0]


def load_folder_pairs(
    images_dir: str | os.PathLike,
    labels_dir: str | os.PathLike,
    *,
    ndim: int | None = None,
    voxel_size: Sequence[float] | None = None,
) -> list[TrainingPair]:
    """Load ``images_dir/NAME.tif`` with ``labels_dir/NAME.tif`` for every NAME.

    Each pair's voxel size is ``voxel_size`` when given, else what the image file records
    (see :func:`~napari_live_unet.engine.voxel_metadata.read_voxel_size`).

    Raises :class:`InputError` if either folder is missing or empty, if names do not match
    one to one, or if any pair is invalid. All files are checked before anything is returned.
    """
    images = list_tiffs(images_dir)
    labels = list_tiffs(labels_dir)
    if not images:
        raise InputError(f"{images_dir}: no .tif images found")
    if not labels:
        raise InputError(f"{labels_dir}: no .tif label images found")
    only_images = sorted(set(images) - set(labels))
    only_labels = sorted(set(labels) - set(images))
    if only_images or only_labels:
        parts = []
        if only_images:
            parts.append(f"images without labels: {_few(only_images)}")
        if only_labels:
            parts.append(f"labels without images: {_few(only_labels)}")
        raise InputError(
            f"{images_dir} and {labels_dir} do not pair up by file name ("
            + "; ".join(parts)
            + "). Every images/NAME.tif needs a labels/NAME.tif."
        )
    pairs = []
    for stem in sorted(images):
        label_array = read_tiff(labels[stem])
        check_labels(label_array, str(labels[stem]))  # label errors name the label file
        spacing = voxel_size
        if spacing is None:
            spacing = read_voxel_size(images[stem], label_array.ndim)
        pair = make_pair(
            read_tiff(images[stem]), label_array, name=str(images[stem]), voxel_size=spacing
        )
        if ndim is not None and pair.labels.ndim != ndim:
            raise InputError(f"{images[stem]}: expected {ndim}D labels, got {pair.labels.shape}")
        pairs.append(pair)
    return pairs


def split_validation(
    pairs: Sequence[TrainingPair], fraction: float, seed: int | None = 0
) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """Hold out about ``fraction`` of the pairs for validation.

    With a single pair, the image is split along its longest axis instead, so that one
    annotated image still yields a validation set.
    """
    pairs = list(pairs)
    if fraction <= 0:
        return pairs, []
    if len(pairs) == 1:
        return _split_single(pairs[0], fraction)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pairs))
    n_val = min(len(pairs) - 1, max(1, round(fraction * len(pairs))))
    val_idx = set(order[:n_val].tolist())
    train = [p for i, p in enumerate(pairs) if i not in val_idx]
    val = [p for i, p in enumerate(pairs) if i in val_idx]
    return train, val


def split_regions(
    pairs: Sequence[TrainingPair], fraction: float
) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """Hold out ``fraction`` of every pair (a band along its longest axis) for validation.

    With a handful of images, holding out whole images validates on a few objects of one
    image; a band of each validates on every kind of image the user annotated. A pair
    too small to split, or whose band holds no object, stays whole for training.
    """
    train: list[TrainingPair] = []
    val: list[TrainingPair] = []
    for pair in pairs:
        kept, held = _split_single(pair, fraction) if fraction > 0 else ([pair], [])
        train += kept
        val += held
    return train, val


def _split_single(pair: TrainingPair, fraction: float) -> tuple[list[TrainingPair], list]:
    axis = int(np.argmax(pair.spatial_shape))
    size = pair.spatial_shape[axis]
    # At least 16 pixels for validation, so a small image (a 128-pixel-wide volume) still
    # gets a validation set, which chooses the checkpoint and the thresholds.
    cut = size - max(16, round(fraction * size))
    if cut < 16:
        return [pair], []

    # Both parts are normalised like the whole image, as prediction will see it.
    intensity_range = pair.intensity_range or channel_percentiles(pair.image)

    def part(sl: slice, suffix: str) -> TrainingPair:
        index = [slice(None)] * len(pair.spatial_shape)
        index[axis] = sl
        idx = tuple(index)
        mask = None if pair.annotated is None else pair.annotated[idx]
        return TrainingPair(
            f"{pair.name}[{suffix}]",
            pair.image[(slice(None), *idx)],
            pair.labels[idx],
            mask,
            intensity_range,
            pair.voxel_size,
        )

    # Validate on the far end of the image; if no object lies there, try the near end.
    for train_sl, val_sl in (
        (slice(0, cut), slice(cut, None)),
        (slice(size - cut, None), slice(0, size - cut)),
    ):
        train, val = part(train_sl, "train"), part(val_sl, "val")
        if val.n_objects and train.n_objects:
            return [train], [val]
    return [pair], []


def _few(names: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")
