"""The voxel size a TIFF file records: OME-XML, ImageJ metadata, or the TIFF resolution."""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import tifffile

# Micrometres per unit, for the units OME and ImageJ files use.
_UNIT_UM = {
    "m": 1e6,
    "cm": 1e4,
    "mm": 1e3,
    "µm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "\\u00b5m": 1.0,
    "nm": 1e-3,
    "å": 1e-4,
}


def read_voxel_size(path: str | os.PathLike, ndim: int) -> tuple[float, ...] | None:
    """Voxel size per spatial axis (``(z, y, x)`` in 3D, ``(y, x)`` in 2D) in µm.

    Read from OME-XML ``PhysicalSizeZ/Y/X``, else ImageJ's ``spacing`` (z) and the TIFF
    resolution (y, x). None when the file records no voxel size (or only the default of one
    pixel per unit, which most writers store when they know nothing), or cannot be read.
    """
    try:
        with tifffile.TiffFile(Path(path)) as tif:
            if tif.ome_metadata:
                size = _from_ome(tif.ome_metadata, ndim)
                if size is not None:
                    return size
            return _from_tags(tif, ndim)
    except Exception:  # an unreadable file is reported by the image reader, not here
        return None


def _from_ome(xml: str, ndim: int) -> tuple[float, ...] | None:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    pixels = next((e for e in root.iter() if e.tag.endswith("Pixels")), None)
    if pixels is None:
        return None
    sizes = []
    for axis in "ZYX"[-ndim:]:
        value = pixels.get(f"PhysicalSize{axis}")
        if value is None:
            return None
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
        sizes.append(float(value) * _UNIT_UM.get(unit.lower(), 1.0))
    return _valid(tuple(sizes))


def _from_tags(tif: tifffile.TiffFile, ndim: int) -> tuple[float, ...] | None:
    page = tif.pages.first
    tags = page.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None
    sizes_yx = [_pixel_size(tags[name].value) for name in ("YResolution", "XResolution")]
    imagej = tif.imagej_metadata or {}
    unit = str(imagej.get("unit", "um")).lower()
    factor = _UNIT_UM.get(unit, 1.0)
    sizes_yx = [s * factor for s in sizes_yx]
    if ndim == 2:
        return _valid(tuple(sizes_yx))
    spacing = imagej.get("spacing")
    if spacing is None:
        return None
    return _valid((float(spacing) * factor, *sizes_yx))


def _pixel_size(resolution) -> float:
    """Size of a pixel from a TIFF resolution (pixels per unit, as a fraction)."""
    num, den = resolution if isinstance(resolution, tuple) else (resolution, 1)
    return float(den) / float(num) if num else math.nan


def _valid(sizes: tuple[float, ...]) -> tuple[float, ...] | None:
    if not all(0 < s < math.inf for s in sizes) or all(s == 1.0 for s in sizes):
        return None
    return sizes
