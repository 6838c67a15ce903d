"""The one rule for the integer type of instance labels, on disk and in the viewer."""

from __future__ import annotations

import numpy as np

_UNSIGNED = (np.uint8, np.uint16, np.uint32, np.uint64)

UNKNOWN_COUNT_DTYPE = np.dtype(np.uint32)
"""Labels written block by block, before their count is known: room for 4 billion ids at
half the size of uint64 (a TIFF output is narrowed to :func:`label_dtype` of the final
count when it is finished)."""


def label_dtype(max_label: int | None = None, *, at_least: type | np.dtype = np.uint8) -> np.dtype:
    """The smallest unsigned integer type, ``at_least`` wide, that holds ids up to
    ``max_label``.

    Parameters
    ----------
    max_label : int, optional
        The largest id. None when it is not known yet (labels written block by block):
        :data:`UNKNOWN_COUNT_DTYPE`.
    at_least : dtype, optional
        The narrowest type to return: ``np.uint16`` for labels corrected by hand, where 255
        ids run out fast.

    Returns
    -------
    numpy.dtype
        uint8, uint16, uint32 or uint64: types that TIFF, Zarr and napari's Labels layers
        all store as they are.

    Examples
    --------
    >>> label_dtype(255), label_dtype(256), label_dtype(256, at_least=np.uint16)
    (dtype('uint8'), dtype('uint16'), dtype('uint16'))
    """
    floor = np.dtype(at_least)
    if max_label is None:
        return max(UNKNOWN_COUNT_DTYPE, floor, key=lambda d: d.itemsize)
    for dtype in _UNSIGNED:
        if np.dtype(dtype).itemsize >= floor.itemsize and max_label <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)
