"""Write labels predicted block by block into one TIFF file, without holding them whole.

Blocks land in a hidden temporary zarr array next to the output (blocks may be written by
several processes, in any order); :meth:`TiffLabelsWriter.finish` then streams it into a
tiled TIFF, one band of rows at a time, in the smallest integer type that holds the
labels, and moves the file into place atomically.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import tifffile
import zarr

from .atomic_write import TMP_SUFFIX, atomic_path
from .label_dtype import UNKNOWN_COUNT_DTYPE, label_dtype
from .memory_budget import PYRAMID_BYTES

TIFF_TILE = 256
"""Tile edge of the TIFF written (tiled TIFFs can be read lazily block by block)."""


class TiffLabelsWriter:
    """Collect labels block by block; write them as ``path`` (a TIFF) on :meth:`finish`.

    Parameters
    ----------
    path : str or os.PathLike
        The TIFF to write.
    shape, chunks : tuple of int
        Shape of the labels (frame axes, then spatial) and the chunks blocks write.
    dtype : numpy dtype
        Type of the temporary array (default
        :data:`~napari_live_unet.engine.label_dtype.UNKNOWN_COUNT_DTYPE`); the TIFF gets
        :func:`~napari_live_unet.engine.label_dtype.label_dtype` of the final count.

    Attributes
    ----------
    array : zarr.Array
        Where blocks are written (chunk-aligned blocks only).
    level0_path : Path
        Its directory; ``zarr.open_array(level0_path, mode="r+")`` opens it elsewhere.
    """

    def __init__(
        self, path: str | os.PathLike, shape: tuple[int, ...], chunks: tuple[int, ...], dtype=None
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = Path(
            tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=TMP_SUFFIX)
        )
        self.level0_path = self.tmp_dir / "labels.zarr"
        self.array: Any = zarr.create_array(
            str(self.level0_path),
            shape=shape,
            chunks=chunks,
            dtype=np.dtype(dtype or UNKNOWN_COUNT_DTYPE),
            fill_value=0,
        )

    def __enter__(self) -> TiffLabelsWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()

    def finish(self, max_label: int, max_bytes: int = PYRAMID_BYTES) -> Path:
        """Write the TIFF (tiled, zlib) and remove the temporary array.

        ``max_label`` chooses the TIFF's integer type; bands of ``max_bytes`` at most are
        read at a time (at least one tile row).
        """
        array = self.array
        dtype = label_dtype(int(max_label))
        try:
            with atomic_path(self.path) as tmp:
                tifffile.imwrite(
                    tmp,
                    data=_tiles(array, dtype, max_bytes),
                    shape=tuple(array.shape),
                    dtype=dtype,
                    tile=(TIFF_TILE, TIFF_TILE),
                    compression="zlib",
                )
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        """Remove the temporary array."""
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


def _tiles(array: Any, dtype: np.dtype, max_bytes: int) -> Iterator[np.ndarray]:
    """The tiles of every 2D plane in TIFF order, read in bands of whole tile rows."""
    *planes, height, width = array.shape
    row_bytes = TIFF_TILE * width * array.dtype.itemsize
    rows = max(1, max_bytes // row_bytes) * TIFF_TILE
    for plane in np.ndindex(*planes):
        for top in range(0, height, rows):
            band = np.asarray(array[(*plane, slice(top, min(top + rows, height)))]).astype(dtype)
            for y in range(0, band.shape[0], TIFF_TILE):
                for x in range(0, width, TIFF_TILE):
                    tile = np.zeros((TIFF_TILE, TIFF_TILE), dtype)
                    piece = band[y : y + TIFF_TILE, x : x + TIFF_TILE]
                    tile[: piece.shape[0], : piece.shape[1]] = piece
                    yield tile
