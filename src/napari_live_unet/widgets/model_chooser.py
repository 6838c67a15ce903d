"""Which model the Predict widget uses: the current one, a built-in one or a model file.

Choosing a built-in model or a file loads it in a worker and makes it the current model
(the one the Train widget continues from). Built-in models are only read: nothing is
written into the package folder.
"""

from __future__ import annotations

from pathlib import Path

# qtpy re-exports the binding's signal class as Signal; pyright misses the re-export.
from qtpy.QtCore import Signal  # pyright: ignore[reportPrivateImportUsage]
from qtpy.QtWidgets import QComboBox, QFileDialog, QLabel, QVBoxLayout, QWidget

from ..app.current_model import current_model, describe_model
from ..app.jobs import Done, one_shot
from ..engine.bmz.output_roles import OutputRoles
from ..engine.bmz.package_reader import OutputRolesNeeded
from ..engine.builtin_models import builtin_model_names, builtin_model_path, load_model_source
from ..engine.model_file import MODEL_SUFFIX, MODEL_SUFFIXES, PACKAGE_SUFFIX
from .job_runner import JobEnd, JobOutcome, JobRunner
from .output_roles_dialog import ask_output_roles
from .widget_lifetime import connect_while_alive

CURRENT = "current model"
MODEL_FILE = "model file…"
OPEN_FILTER = (
    f"Model files ({' '.join('*' + s for s in (*MODEL_SUFFIXES, PACKAGE_SUFFIX))});;"
    f"BioImage Model Zoo packages (*{PACKAGE_SUFFIX});;All files (*)"
)
SAVE_FILTER = f"Live U-net model (*{MODEL_SUFFIX})"


def builtin_label(name: str) -> str:
    """How a built-in model is named in the widgets (and as the current model's source)."""
    return f"{name} (built-in)"


class ModelChooser(QWidget):
    """A combo box of models and a line describing the current one.

    Signals
    -------
    message(str, bool)
        Text for the widget's status line and whether it reports an error.
    loading(bool)
        A model started or finished loading.
    """

    message = Signal(str, bool)
    loading = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._jobs = JobRunner(self, "Loading the model")
        self._roles_needed: tuple[str, list[str]] | None = None
        self.combo = QComboBox()
        self.combo.addItem(CURRENT, "current")
        for name in builtin_model_names():
            self.combo.addItem(builtin_label(name), f"builtin:{name}")
        self.combo.addItem(MODEL_FILE, "file")
        self.combo.setToolTip(
            "The model to predict with: the one trained or opened last, a model that comes "
            "with the plugin, or a model file"
        )
        self.label = QLabel()
        self.label.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo)
        layout.addWidget(self.label)
        self.combo.currentIndexChanged.connect(self._on_choice)
        connect_while_alive(self, current_model.changed, self._on_model_changed)
        self._on_model_changed(current_model.model, current_model.source)

    @property
    def is_loading(self) -> bool:
        return self._jobs.is_running

    def choose(self, text: str) -> None:
        """Pick an entry by its text, as a click would (e.g. ``"nuclei (built-in)"``)."""
        index = self.combo.findText(text)
        if index < 0:
            raise ValueError(f"no model entry {text!r}")
        self.combo.setCurrentIndex(index)

    def _on_choice(self, index: int) -> None:
        kind, _, name = self.combo.itemData(index).partition(":")
        if kind == "builtin":
            self.load(builtin_model_path(name), builtin_label(name))
            return
        if kind == "file":
            path, _ = QFileDialog.getOpenFileName(
                self, "Load a Live U-net model or a BMZ package", "", OPEN_FILTER
            )
            if path:
                self.load(path)
                return
        self._show_current()

    def load(
        self, path: str | Path, source: str | None = None, outputs: OutputRoles | None = None
    ) -> bool:
        """Load a model file or BMZ package in a worker and make it the current model
        (named ``source``, by default the path); returns whether loading started.

        Another tool's BMZ package whose output channels are not named asks the user
        which is which (``outputs`` answers it in advance)."""
        path = str(path)
        label = source or path
        if self._jobs.is_running:
            self.message.emit("A model is loading already; try again when it is done.", True)
            return False
        self.message.emit(f"Loading {label if label != path else Path(path).name}…", False)
        self.combo.setEnabled(False)
        self._jobs.start(
            lambda _stop: one_shot(_open_model, path, outputs),
            lambda event: self._on_loaded(event, label, path),
            self._on_load_end,
        )
        self.loading.emit(True)
        return True

    def cancel(self) -> None:
        """Drop the model being loaded when it arrives; the current model stays."""
        self._jobs.request_stop()

    def shutdown(self) -> None:
        """The window is closing: a model still loading is not applied."""
        self._jobs.shutdown()

    def _on_loaded(self, event: Done, source: str, path: str) -> None:
        if self._jobs.stop_requested:
            return
        if isinstance(event.value, OutputRolesNeeded):
            # Asked once the loading job has ended, so a new load can start.
            self._roles_needed = (path, event.value.channels)
            return
        current_model.set(event.value, source)
        name = source if source.endswith("(built-in)") else Path(source).name
        self.message.emit(f"Model {name} loaded.", False)

    def _on_load_end(self, end: JobEnd) -> None:
        if end.failure is not None:
            self.message.emit(f"Could not load the model: {end.failure.message}", False)
        elif end.outcome is JobOutcome.STOPPED:
            self.message.emit("Loading cancelled; the current model stays.", False)
        self.combo.setEnabled(True)
        self._show_current()
        self.loading.emit(False)
        if self._roles_needed is not None:
            path, channels = self._roles_needed
            self._roles_needed = None
            roles = ask_output_roles(Path(path).name, channels, self)
            if roles is None:
                self.message.emit("No output channels chosen; the current model stays.", False)
            else:
                self.load(path, outputs=roles)

    def _on_model_changed(self, model, source: str) -> None:
        text = describe_model(model, source)
        description = (model.info or {}).get("description") if model is not None else None
        self.label.setText(f"{text}. {description}" if description else text)
        self._show_current()

    def _show_current(self) -> None:
        """Select the built-in entry when the current model is that one, else "current"."""
        index = self.combo.findText(current_model.source) if current_model.source else -1
        if index < 0 or not self.combo.itemData(index).startswith("builtin:"):
            index = 0
        self.combo.blockSignals(True)
        self.combo.setCurrentIndex(index)
        self.combo.blockSignals(False)


def _open_model(path: str, outputs: OutputRoles | None):
    """The model, or the :class:`OutputRolesNeeded` question to put to the user (runs in
    the loading worker)."""
    try:
        return load_model_source(path, outputs=outputs)
    except OutputRolesNeeded as question:
        return question
