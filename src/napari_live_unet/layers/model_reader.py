"""npe2 reader: opening a model file (drag and drop, File > Open) makes it the current model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..engine.errors import InputError
from ..engine.model_file import MODEL_SUFFIXES, load_model
from .current_model import current_model


def get_reader(path: str | list[str]) -> Callable[[str], list[tuple]] | None:
    """Return a reader for a napari-live-unet model file, or None for anything else.

    Any ``.pt``/``.pth`` file is taken, so that a truncated or foreign one gets this
    plugin's explanation instead of napari's "no reader" message.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.suffix.lower() not in MODEL_SUFFIXES or not p.is_file():
        return None
    return read_model


def read_model(path: str) -> list[tuple]:
    """Load the model, make it current, and add no layer.

    A file that is not a readable napari-live-unet model (truncated, damaged, another
    tool's) is reported in a notification that says what is wrong; the current model stays.
    """
    from napari.utils.notifications import show_error, show_info

    try:
        model = load_model(path)
    except InputError as exc:
        show_error(f"Live U-net: {exc}")
        return [(None,)]
    current_model.set(model, str(path))
    show_info(f"Live U-net: model {Path(path).name} loaded ({model.config.mode} mode)")
    return [(None,)]  # napari's sentinel for "read fine, nothing to add"
