"""npe2 reader: opening a model file (drag and drop, File > Open) makes it the current model."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

from .current_model import current_model
from .engine.model_file import load_model

_SUFFIXES = (".pt", ".pth")


def get_reader(path: str | list[str]) -> Callable[[str], list[tuple]] | None:
    """Return a reader for a napari-live-unet model file, or None for anything else.

    torch saves zip archives; any other file with a ``.pt`` suffix is left to other readers.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.suffix.lower() not in _SUFFIXES or not p.is_file() or not zipfile.is_zipfile(p):
        return None
    return read_model


def read_model(path: str) -> list[tuple]:
    """Load the model, make it current, and add no layer.

    Raises
    ------
    InputError
        The file is not a readable napari-live-unet model (napari shows the message).
    """
    from napari.utils.notifications import show_info

    model = load_model(path)
    current_model.set(model, str(path))
    show_info(f"Live U-net: model {Path(path).name} loaded ({model.config.mode} mode)")
    return [(None,)]  # napari's sentinel for "read fine, nothing to add"
