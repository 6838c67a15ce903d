"""Opening TIFF, OME-Zarr and plain zarr images lazily, block by block.

:func:`open_image` returns an :class:`ImageSource` whose ``array`` reads pixels only when it
is sliced: a TIFF through tifffile's zarr store (one chunk per strip or tile), a zarr or
OME-Zarr image through zarr-python 3 (zarr v2 and v3 formats on disk).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from .errors import InputError
from .io import TIFF_SUFFIXES, list_tiffs
from .voxel_metadata import read_voxel_size

AXIS_LETTERS = "tczyxq"
_TIFF_AXES = {"S": "c", "C": "c", "Z": "z", "T": "t", "Y": "y", "X": "x"}
_ZARR_METADATA = ("zarr.json", ".zgroup", ".zarray")
_ZARR_SUFFIX = ".zarr"
_EXPECTED = "a TIFF file (.tif/.tiff), a zarr array or an OME-Zarr image with multiscales metadata"
# Micrometres per NGFF unit (the engine works in µm).
_NGFF_UNIT_UM = {
    "angstrom": 1e-4,
    "picometer": 1e-6,
    "nanometer": 1e-3,
    "micrometer": 1.0,
    "millimeter": 1e3,
    "centimeter": 1e4,
    "meter": 1e6,
}


@dataclass(frozen=True)
class ImageSource:
    """One input image, opened lazily.

    Attributes
    ----------
    path : Path
        The file or zarr directory the image was opened from.
    name : str
        Stem used to name outputs (``a.tif`` -> ``"a"``, ``a.ome.zarr`` -> ``"a"``).
    array : Any
        Lazy array with ``shape``, ``dtype``, ``ndim``; basic slicing returns a numpy array
        and decodes only the chunks it touches.
    axes : str
        One letter per array axis from ``"tczyxq"`` (``q``: unknown, e.g. the pages of a
        plain multi-page TIFF).
    voxel_size : tuple of float or None
        Physical size (µm) per spatial axis, in the order of :attr:`spatial_axes`.
    chunks : tuple of int
        Storage chunk (or shard) shape per array axis.
    kind : str
        ``"tiff"``, ``"ome-zarr"`` or ``"zarr"``.

    Notes
    -----
    A TIFF's ``array`` reads through a tifffile store that keeps the file open (and reopens
    it if needed) until :meth:`close`; use the source as a context manager or call
    :meth:`close` when done. The TIFF store cannot be pickled: in another process, call
    :func:`open_image` on ``path`` again instead of sending ``array``.
    """

    path: Path
    name: str
    array: Any
    axes: str
    voxel_size: tuple[float, ...] | None
    chunks: tuple[int, ...]
    kind: str
    _close: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    @property
    def spatial_axes(self) -> str:
        """The letters among z, y, x in :attr:`axes`, in order."""
        return "".join(a for a in self.axes if a in "zyx")

    def chunk_bytes(self) -> int:
        """Bytes of one stored chunk, uncompressed."""
        return math.prod(self.chunks) * np.dtype(self.array.dtype).itemsize

    def close(self) -> None:
        """Release the open file of a TIFF source (a no-op for zarr)."""
        if self._close is not None:
            self._close()

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_zarr_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zarr directory (a ``.zarr`` folder or one with zarr metadata)."""
    path = Path(path)
    if not path.is_dir():
        return False
    return path.suffix.lower() == _ZARR_SUFFIX or any((path / m).is_file() for m in _ZARR_METADATA)


def image_name(path: str | os.PathLike) -> str:
    """The name outputs of ``path`` get: the stem, without ``.zarr`` and ``.ome.zarr``."""
    path = Path(path)
    if path.suffix.lower() != _ZARR_SUFFIX:
        return path.stem
    stem = path.name[: -len(_ZARR_SUFFIX)]
    return stem[:-4] if stem.lower().endswith(".ome") else stem


def list_images(path: str | os.PathLike) -> dict[str, Path]:
    """Map name to path for the images in a folder, or for one image.

    A folder gives every TIFF (``.tif``/``.tiff``, any case) and every ``.zarr`` directory
    directly inside it; hidden entries (temporaries of interrupted writes) are skipped. A
    TIFF file or a zarr directory gives one entry.

    Raises
    ------
    InputError
        If ``path`` is missing or holds no image, or two inputs share a name (``a.tif`` and
        ``a.zarr``), which would make their outputs collide.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: not found. Pass {_EXPECTED}, or a folder of them.")
    if is_zarr_path(path) or (path.is_file() and path.suffix.lower() in TIFF_SUFFIXES):
        return {image_name(path): path}
    if not path.is_dir():
        raise InputError(f"{path}: not an image. Pass {_EXPECTED}, or a folder of them.")
    found = list_tiffs(path)
    for p in sorted(path.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() != _ZARR_SUFFIX or not p.is_dir():
            continue
        name = image_name(p)
        if name in found:
            raise InputError(
                f"{path}: {found[name].name} and {p.name} have the same name; keep one (or "
                "rename the other) so each image gets its own output."
            )
        found[name] = p
    if not found:
        raise InputError(f"{path}: no images found. The folder should hold .tif or .zarr images.")
    return found


def open_image(path: str | os.PathLike) -> ImageSource:
    """Open a TIFF, OME-Zarr or zarr image lazily; no pixel data is read.

    OME-Zarr: the level-0 dataset of the NGFF ``multiscales`` (0.4 or 0.5 layout, or the
    first series of a bioformats2raw layout), with its axes and level-0 scale. Plain zarr:
    an array, or a group holding exactly one array (that array is used); axes are guessed
    (``"yx"``, ``"qyx"``, ...) unless a zarr v3 array names them, voxel size unknown. TIFF:
    level 0 of the first series, axes from tifffile, voxel size from
    :func:`~napari_live_unet.engine.voxel_metadata.read_voxel_size`.

    Raises
    ------
    InputError
        If the path is missing, cannot be read, or is not an image.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: not found. Pass {_EXPECTED}.")
    if path.is_dir():
        if not is_zarr_path(path):
            raise InputError(f"{path}: a folder, not an image. Pass {_EXPECTED}.")
        return _open_zarr(path)
    return _open_tiff(path)


def _open_tiff(path: Path) -> ImageSource:
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise InputError(f"{path}: the TIFF holds no image. Pass {_EXPECTED}.")
            series = tif.series[0]
            tiff_axes = series.axes
            # The store reopens the file through its own file cache after ``tif`` closes.
            store = series.aszarr(level=0)
        array = zarr.open_array(store, mode="r")
    except InputError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise InputError(
            f"{path}: not a readable TIFF ({type(exc).__name__}: {exc}). "
            f"Re-export it as TIFF or pass {_EXPECTED}."
        ) from None
    axes = "".join(_TIFF_AXES.get(a, "q") for a in tiff_axes)
    if len(axes) != array.ndim or "y" not in axes or "x" not in axes:
        axes = _guess_axes(path, array.ndim)
    n_spatial = sum(a in "zyx" for a in axes)
    return ImageSource(
        path=path,
        name=image_name(path),
        array=array,
        axes=axes,
        voxel_size=read_voxel_size(path, n_spatial),
        chunks=_storage_chunks(array),
        kind="tiff",
        _close=store.close,
    )


def _open_zarr(path: Path) -> ImageSource:
    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as exc:
        raise InputError(
            f"{path}: not a readable zarr ({type(exc).__name__}: {exc}). Pass {_EXPECTED}."
        ) from None
    if isinstance(node, zarr.Array):
        return _plain_zarr(path, node)
    meta = _ngff_attrs(node)
    if "multiscales" not in meta and "bioformats2raw.layout" in meta and "0" in node:
        series = node["0"]
        if isinstance(series, zarr.Group):
            node, meta = series, _ngff_attrs(series)
    if "multiscales" in meta:
        return _ome_zarr(path, node, meta)
    arrays = list(node.arrays())
    if len(arrays) == 1:
        return _plain_zarr(path, arrays[0][1])
    found = f"it holds {len(arrays)} arrays" if arrays else "it holds no array"
    raise InputError(
        f"{path}: a zarr group without multiscales metadata ({found}). Expected a zarr "
        "array or an OME-Zarr image with multiscales metadata; pass the array's folder "
        "(e.g. path/to/group/array) or an OME-Zarr image."
    )


def _plain_zarr(path: Path, array: zarr.Array) -> ImageSource:
    names = getattr(array.metadata, "dimension_names", None)
    axes = "".join(str(n).lower() for n in names) if names and all(names) else ""
    if not _valid_axes(axes, array.ndim):
        axes = _guess_axes(path, array.ndim)
    return ImageSource(
        path=path,
        name=image_name(path),
        array=array,
        axes=axes,
        voxel_size=None,
        chunks=_storage_chunks(array),
        kind="zarr",
    )


def _ome_zarr(path: Path, group: zarr.Group, meta: dict[str, Any]) -> ImageSource:
    try:
        multiscale = meta["multiscales"][0]
        dataset = multiscale["datasets"][0]
        array = group[dataset["path"]]
    except Exception as exc:
        raise InputError(
            f"{path}: broken OME-Zarr multiscales metadata ({type(exc).__name__}: {exc}). "
            "Re-export the image, or pass its level-0 array folder as a plain zarr array."
        ) from None
    if not isinstance(array, zarr.Array):
        raise InputError(f"{path}: level 0 of the OME-Zarr image is not an array.")
    axes_meta = multiscale.get("axes") or []
    axes = "".join(_ngff_axis_letter(a) for a in axes_meta)
    if not axes and array.ndim == 5:
        axes = "tczyx"  # NGFF 0.1/0.2 images are always 5D tczyx
    if not _valid_axes(axes, array.ndim):
        axes = _guess_axes(path, array.ndim)
    return ImageSource(
        path=path,
        name=image_name(path),
        array=array,
        axes=axes,
        voxel_size=_ngff_voxel_size(multiscale, dataset, axes, axes_meta),
        chunks=_storage_chunks(array),
        kind="ome-zarr",
    )


def _ngff_attrs(group: zarr.Group) -> dict[str, Any]:
    """The NGFF attributes of a group: under ``ome`` (0.5) or top-level (0.4 and older)."""
    attrs = group.attrs.asdict()
    ome = attrs.get("ome")
    return dict(ome) if isinstance(ome, dict) else attrs


def _ngff_axis_letter(axis: Any) -> str:
    name = str(axis.get("name", "") if isinstance(axis, dict) else axis).lower()
    if name in "tczyx" and len(name) == 1:
        return name
    kind = axis.get("type") if isinstance(axis, dict) else None
    return {"channel": "c", "time": "t"}.get(str(kind), "q")


def _ngff_voxel_size(
    multiscale: dict[str, Any], dataset: dict[str, Any], axes: str, axes_meta: list[Any]
) -> tuple[float, ...] | None:
    """Level-0 scale of the spatial axes in µm (times a multiscale-wide scale, if any).

    None when no scale is given, or when every spatial scale is 1 with no unit: the default
    that writers store when they know nothing.
    """
    scale = [1.0] * len(axes)
    for transforms in (
        dataset.get("coordinateTransformations"),
        multiscale.get("coordinateTransformations"),
    ):
        for t in transforms or []:
            if t.get("type") == "scale" and len(t.get("scale", [])) == len(axes):
                scale = [s * float(v) for s, v in zip(scale, t["scale"], strict=True)]
    units = [
        a.get("unit") if isinstance(a, dict) else None
        for a in (axes_meta if len(axes_meta) == len(axes) else [None] * len(axes))
    ]
    spatial = [i for i, a in enumerate(axes) if a in "zyx"]
    if all(scale[i] == 1.0 and not units[i] for i in spatial):
        return None
    sizes = tuple(scale[i] * _NGFF_UNIT_UM.get(str(units[i]).lower(), 1.0) for i in spatial)
    if not all(0 < s < math.inf for s in sizes):
        return None
    return sizes


def _valid_axes(axes: str, ndim: int) -> bool:
    letters = axes.replace("q", "")
    return (
        len(axes) == ndim
        and all(a in AXIS_LETTERS for a in axes)
        and len(set(letters)) == len(letters)
        and "y" in axes
        and "x" in axes
    )


def _guess_axes(path: Path, ndim: int) -> str:
    if ndim < 2:
        raise InputError(f"{path}: a {ndim}-D array, not an image. Pass {_EXPECTED}.")
    return "q" * (ndim - 2) + "yx"


def _storage_chunks(array: zarr.Array) -> tuple[int, ...]:
    """The shape of one stored object: the shard of a sharded array, else the chunk."""
    shards = getattr(array, "shards", None)
    return tuple(int(c) for c in (shards or array.chunks))
