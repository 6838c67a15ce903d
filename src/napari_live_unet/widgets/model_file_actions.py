"""The Train dock's *Save model…* and *Export to BioImage Model Zoo…* buttons.

Both write the current model in a worker (saving is disk I/O; exporting also runs
bioimageio.core's ``test_model``, seconds to a minute), so the viewer never waits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import QFileDialog, QPushButton, QWidget

from ..app.current_model import current_model
from ..app.jobs import Done, one_shot
from ..engine.model_file import MODEL_SUFFIX, PACKAGE_SUFFIX, save_model
from .job_runner import JobRunner
from .model_chooser import SAVE_FILTER

EXPORT_FILTER = f"BioImage Model Zoo package (*{PACKAGE_SUFFIX})"


def _export(model, path: str | Path) -> Path:
    from ..engine.bmz.package_writer import export_bmz_package

    # The file dialog has already asked before replacing an existing file.
    return export_bmz_package(model, path, overwrite=True)


class ModelFileActions:
    """Save or export the current model in a worker; ``on_busy(True/False)`` brackets it."""

    def __init__(self, widget: QWidget, on_busy: Callable[[bool], None]) -> None:
        self._widget = widget
        self._on_busy = on_busy
        self._runner = JobRunner(widget, "Writing the model")
        self.save_button = QPushButton("Save model…")
        self.export_button = QPushButton("Export to BioImage Model Zoo…")
        self.export_button.setToolTip(
            "Write a .zip that bioimageio.core, ilastik, deepImageJ and QuPath run "
            "(checked with bioimageio.core's test_model before it is written)"
        )
        self.save_button.clicked.connect(self._choose_save_path)
        self.export_button.clicked.connect(self._choose_export_path)

    def set_enabled(self, enabled: bool) -> None:
        """Enable both buttons (the caller knows whether a model exists and nothing runs)."""
        self.save_button.setEnabled(enabled)
        self.export_button.setEnabled(enabled)

    def save_to(self, path: str | Path) -> bool:
        """Save the current model to ``path``; returns whether saving started."""

        def saved(event: Done) -> None:
            show_info(f"Model saved to {event.value}")
            current_model.set(model, str(event.value))

        model = self._model("save")
        return model is not None and self._start(lambda: one_shot(save_model, model, path), saved)

    def export_to(self, path: str | Path) -> bool:
        """Export the current model as a BMZ package at ``path``; returns whether it
        started. Another tool's model is refused at once (it can only predict)."""
        model = self._model("export")
        if model is None:
            return False
        if not model.trainable:
            show_warning(
                "This model came from another tool's BioImage Model Zoo package; export "
                "Live U-net models only."
            )
            return False

        def exported(event: Done) -> None:
            show_info(f"Exported to {event.value} (passed bioimageio.core's test_model)")

        return self._start(lambda: one_shot(_export, model, path), exported)

    def shutdown(self) -> None:
        self._runner.shutdown()

    def _model(self, verb: str):
        model = current_model.model
        if model is None:
            show_warning(f"No model to {verb} yet: train one first.")
        return model

    def _start(self, job, on_done: Callable[[Done], None]) -> bool:
        started = self._runner.start(
            lambda _stop: job(), on_done, lambda _end: self._on_busy(False)
        )
        if started:
            self._on_busy(True)
        return started

    def _choose_save_path(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self._widget, "Save model", f"model{MODEL_SUFFIX}", SAVE_FILTER
        )
        if path:
            self.save_to(path)

    def _choose_export_path(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self._widget, "Export to BioImage Model Zoo", f"model{PACKAGE_SUFFIX}", EXPORT_FILTER
        )
        if path:
            if not path.lower().endswith(PACKAGE_SUFFIX):
                path += PACKAGE_SUFFIX
            self.export_to(path)
