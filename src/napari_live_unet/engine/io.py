"""Reading and writing TIFF files with clear errors and atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile

from .atomic_write import atomic_path
from .errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff")


def read_tiff(path: str | os.PathLike) -> np.ndarray:
    """Read a TIFF file into an array, raising :class:`InputError` if it cannot be read."""
    path = Path(path)
    try:
        return tifffile.imread(path)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except Exception as exc:  # tifffile raises many types for damaged files
        raise InputError(
            f"{path}: not a readable TIFF ({type(exc).__name__}: {exc}). "
            "Re-export the file as TIFF or remove it from the folder."
        ) from None


def list_tiffs(folder: str | os.PathLike) -> dict[str, Path]:
    """Map file stem to path for every TIFF in ``folder`` (not recursive).

    Hidden files (such as the temporary files of an interrupted write) are skipped.

    Raises
    ------
    InputError
        If the folder is missing, or two files share a stem (``a.tif`` and ``a.TIFF``),
        which would make the image/label pairing ambiguous.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder. Pass a folder of .tif images.")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in TIFF_SUFFIXES or p.name.startswith("."):
            continue
        if p.stem in found:
            raise InputError(
                f"{folder}: {found[p.stem].name} and {p.name} have the same name; keep one "
                "(or rename the other) so each image pairs with one label file."
            )
        found[p.stem] = p
    return found


def write_tiff_atomic(path: str | os.PathLike, data: np.ndarray) -> None:
    """Write ``data`` to ``path`` so that the file is either complete or absent."""
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, data, compression="zlib")
