"""Annotation sets: images, their (partial) ground truth and annotated regions, on disk.

An *annotation set* folder holds::

    folder/images/NAME.tif
    folder/labels/NAME.tif
    folder/regions.json      which regions of which frames were annotated

A region of a 3D volume that spans several slices stores them as ``"slices": [first,
last]``; such files are written as version 2 (files without it stay version 1, readable by
earlier versions of the plugin).

which ``live-unet train --images folder/images --labels folder/labels --regions
folder/regions.json`` reads too.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .atomic_write import write_bytes_atomic
from .data import TrainingPair, check_labels, make_pair
from .errors import InputError
from .io import list_tiffs, read_tiff, write_tiff_atomic
from .label_dtype import label_dtype
from .regions import (
    Region,
    check_frame,
    check_image,
    check_pair_sets,
    collect_pairs,
    frame_label,
    region_geometry,
)

FORMAT_NAME = "napari-live-unet annotation set"
FORMAT_VERSION = 2
"""The newest regions file version this module reads; it writes version 1 unless a region
spans slices (version 2 added ``"slices"``)."""
REGIONS_FILE = "regions.json"

_UNSAFE_NAME = re.compile(r'[\x00-\x1f/\\:*?"<>|]')


@dataclass(eq=False)
class AnnotatedImage:
    """An image with its (partial) ground truth, as saved in an annotation set.

    Attributes
    ----------
    name : str
        File stem in the annotation set; also used in messages.
    image : array-like
        The image, possibly with leading frame axes and a channel axis.
    labels : array-like of int
        Instance labels with the image's shape, channel axis aside.
    regions : list of Region
        Annotated regions; empty means every frame with objects is fully annotated.
    spatial_ndim : int
        2 or 3: how many trailing axes (channel axis aside) are spatial.
    channel_axis : int, optional
        Axis of ``image`` holding channels (-1 for RGB).
    """

    name: str
    image: Any
    labels: Any
    regions: list[Region] = field(default_factory=list)
    spatial_ndim: int = 2
    channel_axis: int | None = None


class _Entry(NamedTuple):
    spatial_ndim: int
    channel_axis: int | None
    regions: list[Region]


def safe_name(name: str) -> str:
    """``name`` with characters that cannot appear in a file name replaced by ``_``."""
    return _UNSAFE_NAME.sub("_", name).strip().strip(".").strip() or "image"


def save_annotation_set(folder: str | os.PathLike, items: Sequence[AnnotatedImage]) -> None:
    """Write images, labels and regions to an annotation set folder.

    Every item is checked before anything is written; each file is written atomically,
    ``regions.json`` last. An existing annotation set is updated (items with the same name
    replaced, others kept); a folder holding anything else is refused.

    Parameters
    ----------
    folder : path
        New or empty folder, or an annotation set written before.
    items : sequence of AnnotatedImage
        What to save. Names must be usable as file names (see :func:`safe_name`).

    Raises
    ------
    InputError
        If the folder holds other data or an item is invalid; nothing is written then.
    """
    folder = Path(folder)
    entries = _existing_entries(folder)
    if not items:
        raise InputError("nothing to save: no annotated images given")
    names = [item.name for item in items]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"two images have the same name: {', '.join(duplicates)}")
    prepared = [_prepare_item(item) for item in items]  # checks everything first

    for item, image, labels in prepared:
        write_tiff_atomic(folder / "images" / f"{item.name}.tif", image)
        write_tiff_atomic(folder / "labels" / f"{item.name}.tif", labels)
        entries[item.name] = _Entry(item.spatial_ndim, item.channel_axis, list(item.regions))
    _write_json_atomic(folder / REGIONS_FILE, _entries_to_json(entries))


def load_annotation_set(folder: str | os.PathLike) -> list[AnnotatedImage]:
    """Read an annotation set written by :func:`save_annotation_set`.

    Raises
    ------
    InputError
        If the folder is not an annotation set or a file is missing or damaged.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    entries = read_regions_file(folder / REGIONS_FILE)
    items = []
    for name, entry in entries.items():
        image = read_tiff(folder / "images" / f"{name}.tif")
        labels = read_tiff(folder / "labels" / f"{name}.tif")
        items.append(
            AnnotatedImage(
                name, image, labels, entry.regions, entry.spatial_ndim, entry.channel_axis
            )
        )
    return items


def pairs_from_annotation_set(
    folder: str | os.PathLike,
) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """Training and validation pairs of every image in an annotation set folder."""
    folder = Path(folder)
    return load_region_pairs(folder / "images", folder / "labels", folder / REGIONS_FILE)


def load_region_pairs(
    images_dir: str | os.PathLike,
    labels_dir: str | os.PathLike,
    regions_file: str | os.PathLike,
) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """Pairs from image/label folders and a ``regions.json`` saying what was annotated.

    Images named in ``regions_file`` give one pair per region (see
    :func:`~.regions.pairs_from_regions`); other images in ``images_dir`` are used whole, as without
    a regions file.

    Raises
    ------
    InputError
        If the regions file is invalid or names an image missing from either folder.
    """
    entries = read_regions_file(regions_file)
    images, labels = list_tiffs(images_dir), list_tiffs(labels_dir)
    for folder, files in ((images_dir, images), (labels_dir, labels)):
        missing = [n for n in entries if n not in files]
        if missing:
            raise InputError(
                f"{regions_file} names images that are not in {folder}: "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}. Pass the "
                "folders the regions were drawn on."
            )
    unlisted = sorted(set(images) - set(entries))
    no_labels = [n for n in unlisted if n not in labels]
    if no_labels:
        raise InputError(f"{images_dir}: images without labels in {labels_dir}: {no_labels[:5]}")
    train: list[TrainingPair] = []
    val: list[TrainingPair] = []
    for name, entry in entries.items():
        t, v = collect_pairs(
            name,
            read_tiff(images[name]),
            read_tiff(labels[name]),
            entry.regions,
            entry.spatial_ndim,
            entry.channel_axis,
        )
        train += t
        val += v
    for name in unlisted:
        train.append(make_pair(read_tiff(images[name]), read_tiff(labels[name]), name=name))
    has_train = any(r.role == "train" for e in entries.values() for r in e.regions)
    check_pair_sets(train, val, str(regions_file), has_train)
    return train, val


def read_regions_file(path: str | os.PathLike) -> dict[str, _Entry]:
    """Parse ``regions.json``: image name -> (spatial_ndim, channel_axis, regions)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise InputError(
            f"{path}: not a regions file of napari-live-unet (expected "
            f'"format": "{FORMAT_NAME}"). Save annotations with the Annotate widget.'
        )
    version = data.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(
            f"{path}: format version {version!r} is not supported (this version reads "
            f"up to {FORMAT_VERSION}); update napari-live-unet"
        )
    images = data.get("images")
    if not isinstance(images, dict):
        raise InputError(f'{path}: "images" must map image names to their regions')
    entries = {}
    for name, spec in images.items():
        where = f"{path}: image {name!r}"
        try:
            spatial_ndim = int(spec["spatial_ndim"])
            channel_axis = spec.get("channel_axis")
            channel_axis = None if channel_axis is None else int(channel_axis)
            regions = [_region_from_json(r) for r in spec["regions"]]
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"{where}: malformed entry ({type(exc).__name__}: {exc}); each image needs "
                '"spatial_ndim" and "regions" with "role", "frame" and "vertices"'
            ) from None
        if spatial_ndim not in (2, 3):
            raise InputError(f"{where}: spatial_ndim must be 2 or 3, got {spatial_ndim}")
        entries[name] = _Entry(spatial_ndim, channel_axis, regions)
    return entries


def _existing_entries(folder: Path) -> dict[str, _Entry]:
    """Entries of the annotation set in ``folder``; {} if new or empty; refuse others."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder")
    if not folder.exists() or not any(not p.name.startswith(".") for p in folder.iterdir()):
        return {}
    if not (folder / REGIONS_FILE).is_file():
        raise InputError(
            f"{folder}: holds other files and is not an annotation set (no {REGIONS_FILE}). "
            "Choose an empty folder, a new one, or an annotation set saved before."
        )
    return read_regions_file(folder / REGIONS_FILE)


def _prepare_item(item: AnnotatedImage) -> tuple[AnnotatedImage, np.ndarray, np.ndarray]:
    """Validate one item; returns it with the arrays to write."""
    if safe_name(item.name) != item.name or not item.name:
        raise InputError(
            f"{item.name!r} cannot be a file name; use for example {safe_name(item.name)!r}"
        )
    image = np.asarray(item.image)
    labels = np.asarray(item.labels)
    _, n_lead = check_image(item.name, image, labels, item.spatial_ndim, item.channel_axis)
    check_labels(labels, item.name)
    for i, region in enumerate(item.regions, start=1):
        label = f"{item.name}{frame_label(region.frame)} region {i}"
        check_frame(region, labels.shape[:n_lead], label)
        region_geometry(region, labels.shape[n_lead:], label)
    top = int(labels.max()) if labels.size else 0
    return item, image, labels.astype(label_dtype(top), copy=False)


def _region_from_json(spec: dict) -> Region:
    slices = spec.get("slices")  # absent before version 2: the vertices' z extent
    return Region(
        str(spec["role"]),
        tuple(spec["frame"]),
        np.asarray(spec["vertices"], np.float64),
        None if slices is None else tuple(slices),
    )


def _region_to_json(region: Region) -> dict:
    spec = {"role": region.role, "frame": list(region.frame), "vertices": region.vertices.tolist()}
    if region.slices is not None:
        spec["slices"] = list(region.slices)
    return spec


def _entries_to_json(entries: dict[str, _Entry]) -> dict:
    deep = any(r.slices is not None for e in entries.values() for r in e.regions)
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION if deep else 1,
        "images": {
            name: {
                "spatial_ndim": e.spatial_ndim,
                "channel_axis": e.channel_axis,
                "regions": [_region_to_json(r) for r in e.regions],
            }
            for name, e in entries.items()
        },
    }


def _write_json_atomic(path: Path, data: dict) -> None:
    write_bytes_atomic(path, json.dumps(data, indent=1).encode("utf-8"))
