"""Content hashes of pixel data and network weights, for run records.

A hash of the *pixels* (dtype, shape and values), not of a file's bytes: the array of a
napari layer and the TIFF file saved from it (compressed or not, with any metadata) hash
the same, and a re-run can check that it reads the data the recorded run trained on.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

_SLAB_BYTES = 64 * 2**20  # hashed in slabs along the first axis: bounded memory for dask


def array_sha256(array: Any) -> str:
    """SHA-256 of an array's pixel data: its dtype, shape and values in C order.

    Byte order is normalised to little-endian, so a big-endian TIFF of the same pixels
    hashes the same. Dask (and other lazy) arrays are read slab by slab.

    Parameters
    ----------
    array : array-like
        numpy, dask or anything ``numpy.asarray`` reads.

    Returns
    -------
    str
        ``"sha256:"`` and 64 hex digits.
    """
    if getattr(array, "dtype", None) is None:  # a list, say
        array = np.asarray(array)
    shape = tuple(int(n) for n in array.shape)
    dtype = np.dtype(array.dtype)
    little = dtype.newbyteorder("<")
    digest = hashlib.sha256(f"{little.str}{shape}".encode())
    if not shape:
        digest.update(np.ascontiguousarray(np.asarray(array), dtype=little).tobytes())
        return f"sha256:{digest.hexdigest()}"
    row_bytes = max(1, math.prod(shape[1:]) * dtype.itemsize)
    step = max(1, _SLAB_BYTES // row_bytes)
    for start in range(0, shape[0], step):
        slab = np.ascontiguousarray(np.asarray(array[start : start + step]), dtype=little)
        digest.update(slab.tobytes())  # a copy of one slab at most
    return f"sha256:{digest.hexdigest()}"


def weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a network's weights as loaded: every tensor's name, dtype, shape, values.

    A model file saved in half precision is hashed as the float32 weights it loads into.
    """
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"
