"""Writing instance labels into an OME-Zarr container, block by block.

Layout (NGFF 0.5 on zarr v3 for a new container; NGFF 0.4 on zarr v2 when the container
already exists in the v2 format)::

    out.zarr/                   the container: a zarr group (may be an OME-Zarr image)
      labels/                   group whose NGFF ``labels`` list names every label image
        <name>/                 multiscale label image (``multiscales`` + ``image-label``)
          0/ 1/ ...             level 0 (the input's chunking), then y/x halved per level
        .<name>.live-unet-tmp/  hidden while being written; renamed to <name> by finish()

Level 0 is written by the caller (possibly from other processes) into the hidden
temporary; :meth:`OmeZarrLabelsWriter.finish` builds the pyramid, writes the metadata and
renames the temporary into place, so nothing half-written ever carries the final name.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import zarr
from ome_zarr.format import Format, FormatV04, FormatV05
from ome_zarr.writer import add_metadata, get_metadata, write_multiscales_metadata

from .atomic_write import TMP_SUFFIX, remove_stale_temporaries
from .errors import InputError
from .label_dtype import UNKNOWN_COUNT_DTYPE
from .memory_budget import PYRAMID_BYTES

PYRAMID_MAX_SIDE = 512
_NGFF_AXES = "tczyx"
_ZARR_METADATA = ("zarr.json", ".zgroup", ".zarray")


class OmeZarrLabelsWriter:
    """Write one label image as ``<path>/labels/<name>`` of an OME-Zarr container.

    Parameters
    ----------
    path : str or os.PathLike
        The container (e.g. ``out.zarr``); created as a zarr v3 group if missing. Labels of
        other names already in it are kept.
    name : str
        Name of the label image (usually the input image's name).
    shape, chunks : tuple of int
        Level-0 shape and chunk shape (use the input's chunking).
    axes : str
        One letter per axis from ``"tczyx"``, in that order, including ``y`` and ``x``.
    dtype : numpy dtype, optional
        Label dtype, ``uint32`` by default.
    voxel_size : tuple of float, optional
        Size in µm per spatial axis (``z``, ``y``, ``x`` among ``axes``).
    overwrite : bool, optional
        Replace an existing label image of the same name when :meth:`finish` succeeds.

    Attributes
    ----------
    level0_path : Path
        Directory of the level-0 array; ``zarr.open_array(level0_path, mode="r+")`` opens
        it from any process. Write chunk-aligned blocks only: blocks sharing a chunk race.
    array : zarr.Array
        The level-0 array (writable). ``array`` and ``level0_path`` are invalid after
        :meth:`finish` or :meth:`abort`.
    final_path : Path
        Where :meth:`finish` puts the labels: ``<path>/labels/<name>``.
    tmp_path : Path
        The hidden temporary group written until then.

    Raises
    ------
    InputError
        If ``path`` is not a zarr group, or ``name`` exists and ``overwrite`` is False.
    ValueError
        If shape, axes, chunks or voxel size do not fit together.

    Notes
    -----
    One writer at a time per container: a new writer removes every hidden temporary in
    ``labels/``, taking them for leftovers of an interrupted run.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        name: str,
        shape: tuple[int, ...],
        axes: str,
        chunks: tuple[int, ...],
        dtype: Any = UNKNOWN_COUNT_DTYPE,
        voxel_size: tuple[float, ...] | None = None,
        overwrite: bool = False,
    ) -> None:
        _check_layout(name, shape, axes, chunks, voxel_size)
        self.container = Path(path)
        self.name = name
        self.axes = axes
        self.voxel_size = None if voxel_size is None else tuple(float(v) for v in voxel_size)
        self.overwrite = overwrite
        root = _open_container(self.container)
        self._zarr_format = root.metadata.zarr_format
        self._fmt: Format = FormatV05() if self._zarr_format == 3 else FormatV04()
        try:
            root.require_group("labels")
        except Exception as exc:  # e.g. an array named "labels"
            raise InputError(
                f"{self.container}: cannot use its 'labels' group ({type(exc).__name__}: "
                f"{exc}). Pass another output container."
            ) from None
        self.labels_dir = self.container / "labels"
        remove_stale_temporaries(self.labels_dir)
        self.final_path = self.labels_dir / name
        if self.final_path.exists() and not overwrite:
            raise InputError(
                f"{self.final_path}: labels named {name!r} already exist. Choose another output, "
                "remove them, or allow overwriting."
            )
        self.tmp_path = self.labels_dir / f".{name}{TMP_SUFFIX}"
        try:
            self._group = zarr.open_group(
                str(self.tmp_path), mode="w", zarr_format=self._zarr_format
            )
            self.array = self._create_level("0", tuple(shape), tuple(chunks), np.dtype(dtype))
        except BaseException:
            shutil.rmtree(self.tmp_path, ignore_errors=True)
            raise
        self.level0_path = self.tmp_path / "0"
        self._done = False

    def __enter__(self) -> OmeZarrLabelsWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()

    def finish(self, max_bytes: int = PYRAMID_BYTES) -> Path:
        """Build the pyramid, write the metadata and move the labels into place.

        Levels 1, 2, ... take every second pixel of the previous level along y and x (never
        interpolating labels; other axes are kept) until y and x are at most 512, reading
        and writing whole chunks so the pixels in memory stay near ``max_bytes`` (at least
        a few chunks).

        Parameters
        ----------
        max_bytes : int, optional
            Memory budget for the pyramid, in bytes.

        Returns
        -------
        Path
            The final labels path, ``<container>/labels/<name>``.

        Raises
        ------
        InputError
            If labels of this name appeared meanwhile and ``overwrite`` is False. On any
            error everything written is removed and nothing carries the final name.
        """
        if self._done:
            raise RuntimeError(f"{self.final_path}: the writer has already finished or aborted")
        try:
            levels = self._build_pyramid(max_bytes)
            self._write_metadata(levels)
            self._move_into_place()
            self._add_to_labels_list()
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.final_path

    def abort(self) -> None:
        """Remove everything this writer wrote; the final name is left untouched."""
        self._done = True
        shutil.rmtree(self.tmp_path, ignore_errors=True)

    def _create_level(
        self, key: str, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: np.dtype
    ) -> zarr.Array:
        extra: dict[str, Any] = {}
        if self._zarr_format == 3:
            extra["dimension_names"] = list(self.axes)  # NGFF 0.5: must match the axes
        return self._group.create_array(
            key,
            shape=shape,
            chunks=tuple(min(c, max(n, 1)) for c, n in zip(chunks, shape, strict=True)),
            dtype=dtype,
            fill_value=0,
            **extra,
        )

    def _build_pyramid(self, max_bytes: int) -> list[zarr.Array]:
        y, x = self.axes.index("y"), self.axes.index("x")
        level0 = zarr.open_array(str(self.level0_path), mode="r")
        levels = [level0]
        while max(levels[-1].shape[y], levels[-1].shape[x]) > PYRAMID_MAX_SIDE:
            prev = levels[-1]
            shape = tuple(-(-n // 2) if i in (y, x) else n for i, n in enumerate(prev.shape))
            dst = self._create_level(str(len(levels)), shape, tuple(level0.chunks), prev.dtype)
            downsample_labels(prev, dst, (y, x), max_bytes)
            levels.append(dst)
        return levels

    def _write_metadata(self, levels: list[zarr.Array]) -> None:
        spatial = iter(self.voxel_size or ())
        base = [next(spatial) if a in "zyx" and self.voxel_size else 1.0 for a in self.axes]
        datasets = []
        for k, _ in enumerate(levels):
            scale = [s * 2**k if a in "yx" else s for a, s in zip(self.axes, base, strict=True)]
            datasets.append(
                {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
            )
        units = {a: "micrometer" for a in self.axes if a in "zyx"} if self.voxel_size else None
        write_multiscales_metadata(
            self._group,
            datasets,
            fmt=self._fmt,
            axes=list(self.axes),
            axes_units=units,
            name=self.name,
        )
        label_meta: dict[str, Any] = {}
        if self._fmt.version == "0.4":
            label_meta["version"] = self._fmt.version
        add_metadata(self._group, {"image-label": label_meta}, fmt=self._fmt)

    def _move_into_place(self) -> None:
        old = self.labels_dir / f".{self.name}.replaced{TMP_SUFFIX}"
        if self.final_path.exists():
            if not self.overwrite:
                raise InputError(
                    f"{self.final_path}: labels named {self.name!r} appeared while writing; "
                    "choose another output or allow overwriting."
                )
            os.rename(self.final_path, old)
        try:
            os.rename(self.tmp_path, self.final_path)
        except BaseException:
            if old.exists():
                os.rename(old, self.final_path)
            raise
        shutil.rmtree(old, ignore_errors=True)

    def _add_to_labels_list(self) -> None:
        group = zarr.open_group(str(self.labels_dir), mode="r+")
        names = [n for n in get_metadata(group).get("labels", []) if (self.labels_dir / n).is_dir()]
        if self.name not in names:
            names.append(self.name)
        meta: dict[str, Any] = {"labels": names}
        if self._fmt.version != "0.4":
            meta["version"] = self._fmt.version  # NGFF 0.5: every "ome" key holds the version
        add_metadata(group, meta, fmt=self._fmt)


def downsample_labels(
    src: zarr.Array, dst: zarr.Array, yx: tuple[int, int], max_bytes: int
) -> None:
    """Write ``src[..., ::2, ::2]`` (on axes ``yx``) into ``dst``, chunk-aligned block by block.

    Each block of ``dst`` reads four times its size from ``src``; blocks are as many whole
    chunks of ``dst`` as fit about ``max_bytes / 6`` (always at least one chunk).
    """
    itemsize = np.dtype(dst.dtype).itemsize
    budget = max(max_bytes // 6, 1)
    block = list(dst.chunks)
    for ax in reversed(range(dst.ndim)):
        fit = max(1, budget // (math.prod(block) * itemsize))
        n_chunks = -(-dst.shape[ax] // dst.chunks[ax])
        block[ax] = dst.chunks[ax] * min(fit, n_chunks)
    starts = [range(0, n, b) for n, b in zip(dst.shape, block, strict=True)]
    for start in itertools.product(*starts):
        out_sel, in_sel = [], []
        for ax, (s, b, n) in enumerate(zip(start, block, dst.shape, strict=True)):
            stop = min(s + b, n)
            out_sel.append(slice(s, stop))
            in_sel.append(
                slice(2 * s, min(2 * stop, src.shape[ax]), 2) if ax in yx else slice(s, stop)
            )
        dst[tuple(out_sel)] = src[tuple(in_sel)]


def _open_container(path: Path) -> zarr.Group:
    """Open the container group, creating a zarr v3 group if ``path`` is missing or empty."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is a file. Pass a .zarr folder for the labels.")
    if (
        path.is_dir()
        and any(path.iterdir())
        and not any((path / m).is_file() for m in _ZARR_METADATA)
    ):
        raise InputError(
            f"{path}: exists and is not a zarr container. Pass a new or an existing .zarr "
            "folder for the labels."
        )
    try:
        if any((path / m).is_file() for m in _ZARR_METADATA):
            node = zarr.open(store=str(path), mode="r+")
        else:
            node = zarr.open_group(str(path), mode="a", zarr_format=3)
    except Exception as exc:
        raise InputError(
            f"{path}: cannot open it as a zarr container ({type(exc).__name__}: {exc})."
        ) from None
    if not isinstance(node, zarr.Group):
        raise InputError(
            f"{path}: is a zarr array, not a group. Pass a new or an existing .zarr group."
        )
    return node


def _check_layout(
    name: str,
    shape: tuple[int, ...],
    axes: str,
    chunks: tuple[int, ...],
    voxel_size: tuple[float, ...] | None,
) -> None:
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        raise ValueError(f"{name!r}: not a valid label name")
    order = [_NGFF_AXES.find(a) for a in axes]
    if -1 in order or order != sorted(set(order)) or "y" not in axes or "x" not in axes:
        raise ValueError(f"axes {axes!r}: need distinct letters from 'tczyx' in that order")
    if len(shape) != len(axes) or len(chunks) != len(axes) or min(chunks, default=1) < 1:
        raise ValueError(f"shape {shape}, chunks {chunks} and axes {axes!r} do not match")
    n_spatial = sum(a in "zyx" for a in axes)
    if voxel_size is not None and len(voxel_size) != n_spatial:
        raise ValueError(f"voxel size {voxel_size}: need one value per axis of {axes!r} in zyx")
