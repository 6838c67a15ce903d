"""npe2 reader: opening a model file or a BioImage Model Zoo package (drag and drop,
File > Open) makes it the current model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..app.current_model import current_model
from ..engine.bmz.package_reader import is_bmz_package
from ..engine.builtin_models import load_model_source
from ..engine.errors import InputError
from ..engine.model_file import MODEL_SUFFIXES, PACKAGE_SUFFIX


def get_reader(path: str | list[str]) -> Callable[[str], list[tuple]] | None:
    """Return a reader for a napari-live-unet model file or a BMZ model package, or None
    for anything else.

    Any ``.pt``/``.pth`` file is taken, so that a truncated or foreign one gets this
    plugin's explanation instead of napari's "no reader" message; a ``.zip`` only when it
    holds a BMZ description (other zips are left to other readers).
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if not p.is_file():
        return None
    if p.suffix.lower() in MODEL_SUFFIXES:
        return read_model
    if p.suffix.lower() == PACKAGE_SUFFIX and is_bmz_package(p):
        return read_model
    return None


def read_model(path: str) -> list[tuple]:
    """Load the model, make it current, and add no layer.

    A file that is not a readable napari-live-unet model (truncated, damaged, another
    tool's) is reported in a notification that says what is wrong; the current model stays.
    So is another tool's BMZ package whose output channels are not named: the message
    says to choose it in the Predict dock, which asks which channel is which.
    """
    from napari.utils.notifications import show_error, show_info

    try:
        model = load_model_source(path)
    except InputError as exc:
        show_error(f"Live U-net: {exc}")
        return [(None,)]
    current_model.set(model, str(path))
    show_info(f"Live U-net: model {Path(path).name} loaded ({model.config.mode} mode)")
    return [(None,)]  # napari's sentinel for "read fine, nothing to add"
