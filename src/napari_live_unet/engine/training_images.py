"""The images a training run reads, as they were given, and the one way they become pairs.

The command line reads image/label folders (and a ``regions.json``), the Train dock reads
napari layers; both describe each image as a :class:`TrainingImage` and turn them into
training and validation pairs with :func:`training_pairs`. A recorded run
(:mod:`.run_record`) names the same images, so re-running it builds the same pairs in the
same order, whichever of the two trained it first.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .annotation_set import read_regions_file
from .data import TrainingPair, check_labels, make_pair
from .errors import InputError
from .io import list_tiffs, read_tiff
from .regions import Region, check_pair_sets, collect_pairs
from .voxel_metadata import read_voxel_size

ROLES = ("train", "val")


@dataclass(eq=False)
class TrainingImage:
    """One image with its (partial) ground truth, as a training run was given it.

    Attributes
    ----------
    name : str
        The image's name: its file stem, or the napari layer's name.
    image : array-like
        The image as read (numpy or dask), frames and channel axis included.
    labels : array-like of int
        Instance labels, the image's shape without its channel axis.
    regions : list of Region, or None
        The annotated regions (empty: every frame with objects, see
        :func:`~.regions.pairs_from_regions`); None: the whole image is annotated and it is
        one pair (an image of a folder without a regions file).
    spatial_ndim : int
        2 or 3.
    channel_axis : int, optional
        Axis of ``image`` holding channels (-1 for RGB).
    voxel_size : tuple of float, optional
        The image's voxel size (the user's, the file's or the layer's scale).
    role : {"train", "val"}
        ``val``: validation data given apart (``--val-images``); its validation pairs
        replace the validation regions of the training images.
    labels_name : str, optional
        The labels' own name when it differs from ``name`` (a labels layer's name).
    image_path, labels_path : str, optional
        Where the image and labels were read from, when they came from files.
    checked_with : str, optional
        Images with the same value are checked together for objects (a regions file);
        None: this image alone (a layer).
    """

    name: str
    image: Any
    labels: Any
    regions: list[Region] | None = None
    spatial_ndim: int = 2
    channel_axis: int | None = None
    voxel_size: tuple[float, ...] | None = None
    role: str = "train"
    labels_name: str | None = None
    image_path: str | None = None
    labels_path: str | None = None
    checked_with: str | None = None


def training_pairs(
    images: Sequence[TrainingImage],
) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """Training and validation pairs of ``images``, in their order.

    Images without regions are one pair each (as :func:`~.data.load_folder_pairs` makes
    them); images with regions give a pair per region or frame (as
    :func:`~.regions.pairs_from_regions`). When images of role ``val`` are given, their
    pairs are the validation data and validation regions are left out.

    Raises
    ------
    InputError
        If an image is invalid or its annotated parts hold no object.
    """
    train: list[TrainingPair] = []
    val: list[TrainingPair] = []
    region_val: list[TrainingPair] = []
    checks: dict[str, tuple[list[TrainingPair], list[TrainingPair], bool]] = {}
    for item in images:
        if item.role not in ROLES:
            raise InputError(f"{item.name}: role must be 'train' or 'val', got {item.role!r}")
        if item.regions is None:
            pair = _whole_pair(item)
            (train if item.role == "train" else val).append(pair)
            continue
        t, v = collect_pairs(
            item.name, item.image, item.labels, item.regions, item.spatial_ndim, item.channel_axis
        )
        if item.voxel_size is not None:
            t = [dataclasses.replace(p, voxel_size=item.voxel_size) for p in t]
            v = [dataclasses.replace(p, voxel_size=item.voxel_size) for p in v]
        key = item.checked_with or item.name
        kt, kv, marked = checks.setdefault(key, ([], [], False))
        kt += t
        kv += v
        checks[key] = (kt, kv, marked or any(r.role == "train" for r in item.regions))
        if item.role == "train":
            train += t
            region_val += v
        else:
            val += t + v
    for key, (t, v, marked) in checks.items():
        check_pair_sets(t, v, key, marked)
    return train, val if any(i.role == "val" for i in images) else region_val + val


def _whole_pair(item: TrainingImage) -> TrainingPair:
    labels = item.labels
    check_labels(labels, item.labels_path or item.name)  # label errors name the label file
    return make_pair(
        item.image,
        labels,
        name=item.image_path or item.name,
        voxel_size=item.voxel_size,
        channel_axis=item.channel_axis,
    )


def folder_images(
    images_dir: str | os.PathLike,
    labels_dir: str | os.PathLike,
    *,
    regions_file: str | os.PathLike | None = None,
    voxel_size: Sequence[float] | None = None,
    role: str = "train",
) -> list[TrainingImage]:
    """``images_dir/NAME.tif`` with ``labels_dir/NAME.tif`` for every NAME, read now.

    With ``regions_file`` (``regions.json`` of the Annotate widget), the images it names
    come first, in its order, with their regions; the other images follow whole. Without
    one, every image is used whole, in the order of the names, with ``voxel_size`` or else
    the voxel size its file records.

    Raises
    ------
    InputError
        If a folder is missing or empty, names do not pair up, or the regions file names
        images that are not in the folders.
    """
    images, labels = list_tiffs(images_dir), list_tiffs(labels_dir)
    entries = {} if regions_file is None else read_regions_file(regions_file)
    if regions_file is not None:
        for folder, files in ((images_dir, images), (labels_dir, labels)):
            missing = [n for n in entries if n not in files]
            if missing:
                raise InputError(
                    f"{regions_file} names images that are not in {folder}: "
                    f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}. Pass the "
                    "folders the regions were drawn on."
                )
    else:
        _check_folders_pair_up(images_dir, labels_dir, images, labels)
    unlisted = sorted(set(images) - set(entries))
    no_labels = [n for n in unlisted if n not in labels]
    if no_labels:
        raise InputError(f"{images_dir}: images without labels in {labels_dir}: {no_labels[:5]}")
    items = []
    for name, entry in entries.items():
        items.append(
            TrainingImage(
                name,
                read_tiff(images[name]),
                read_tiff(labels[name]),
                entry.regions,
                entry.spatial_ndim,
                entry.channel_axis,
                role=role,
                image_path=str(images[name]),
                labels_path=str(labels[name]),
                checked_with=str(regions_file),
            )
        )
    for name in unlisted:
        label_array = read_tiff(labels[name])
        spacing = voxel_size
        if spacing is None and regions_file is None:
            spacing = read_voxel_size(images[name], label_array.ndim)
        items.append(
            TrainingImage(
                name,
                read_tiff(images[name]),
                label_array,
                None,
                label_array.ndim,
                voxel_size=None if spacing is None else tuple(spacing),
                role=role,
                image_path=str(images[name]),
                labels_path=str(labels[name]),
            )
        )
    return items


def _check_folders_pair_up(images_dir, labels_dir, images: dict, labels: dict) -> None:
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


def _few(names: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")
