"""The model the widgets share: the one just trained or the one opened from a file."""

from __future__ import annotations

from psygnal import Signal

from ..engine.model import SegmentationModel


class CurrentModel:
    """Holds the current model and announces changes.

    The train widget sets it when training ends, the model-file reader when a file is
    opened; the predict widget listens. Only touched from napari's main thread.
    """

    changed = Signal(object, str)  # (model or None, where it came from)

    def __init__(self) -> None:
        self._model: SegmentationModel | None = None
        self._source = ""

    @property
    def model(self) -> SegmentationModel | None:
        return self._model

    @property
    def source(self) -> str:
        """Human-readable origin, e.g. ``trained 12:03`` or a file path."""
        return self._source

    def set(self, model: SegmentationModel | None, source: str) -> None:
        self._model, self._source = model, source
        self.changed.emit(model, source)


current_model = CurrentModel()
"""The one instance every widget of this plugin uses."""


def describe_model(model: SegmentationModel | None, source: str) -> str:
    """One line on a model for the widgets: mode, dimensionality, size and origin."""
    if model is None:
        return "No model yet: train one or open a model file."
    c = model.config
    if not model.trainable:
        return (
            f"another tool's BMZ model, {c.mode} mode, {c.ndim}D, {c.in_channels} channel(s), "
            f"predicts only ({source or 'unnamed model'})"
        )
    return (
        f"{c.mode} mode, {c.ndim}D, {c.in_channels} channel(s), base {c.base_channels}, "
        f"depth {c.depth} ({source or 'unnamed model'})"
    )
