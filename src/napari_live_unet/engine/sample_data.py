"""The small nuclei sample bundled with the package (crops of DSB2018, CC0).

The CLI demo and the napari sample (:mod:`napari_live_unet.layers.sample_layers`) use it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import list_tiffs, read_tiff

SAMPLE_DIR = Path(__file__).parent.parent / "sample"


def sample_folder(split: str = "train") -> Path:
    """Folder holding ``images/`` and ``labels/`` of the bundled ``train`` or ``test`` split."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return SAMPLE_DIR / split


def load_sample(split: str = "test") -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image, labels) for every image of a bundled split."""
    folder = sample_folder(split)
    labels = list_tiffs(folder / "labels")
    return [
        (name, read_tiff(path), read_tiff(labels[name]))
        for name, path in list_tiffs(folder / "images").items()
    ]
