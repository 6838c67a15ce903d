"""Where training starts from: the built-in starter, the current model, a file or scratch.

Fine-tuning the built-in starter needs a few annotated objects where training from scratch
needs many. The choice is read on the main thread; model files are loaded in the training
worker (:func:`~napari_live_unet.layers.training_job.starting_model`).
"""

from __future__ import annotations

from pathlib import Path

# qtpy re-exports the binding's signal class as Signal; pyright misses the re-export.
from qtpy.QtCore import Signal  # pyright: ignore[reportPrivateImportUsage]
from qtpy.QtWidgets import QComboBox, QFileDialog, QWidget

from ..app.current_model import current_model
from ..engine.builtin_models import STARTER_MODEL, builtin_model_names
from ..engine.errors import InputError
from ..layers.training_job import StartChoice
from .model_chooser import OPEN_FILTER, builtin_label

CURRENT = "current model"
MODEL_FILE = "model file…"
SCRATCH = "scratch (new model)"


class StartFrom(QComboBox):
    """Combo box of starting points; the starter is the default where it is installed.

    Choosing "model file…" asks for the file; :meth:`set_file` sets it directly.
    ``choice_changed`` fires whenever the starting point changes.
    """

    choice_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._file: str | None = None
        self._previous = 0
        for name in builtin_model_names():
            self.addItem(builtin_label(name), f"builtin:{name}")
        self.addItem(CURRENT, "current")
        self.addItem(MODEL_FILE, "file")
        self.addItem(SCRATCH, "scratch")
        starter = self.findText(builtin_label(STARTER_MODEL))
        self.setCurrentIndex(starter if starter >= 0 else self.findText(SCRATCH))
        self._previous = self.currentIndex()
        self.setToolTip(
            "Fine-tune a trained model (the built-in starter learns from a few annotated "
            "objects), or train a new one from scratch (Model size applies)"
        )
        self.currentIndexChanged.connect(self._on_index)
        self.activated.connect(self._on_activated)

    @property
    def kind(self) -> str:
        return self.currentData().partition(":")[0]

    def choose(self, text: str) -> None:
        """Pick an entry by its text (e.g. ``"scratch (new model)"``)."""
        index = self.findText(text)
        if index < 0:
            raise ValueError(f"no starting point {text!r}")
        self.setCurrentIndex(index)

    def set_file(self, path: str | Path) -> None:
        """Start from this model file."""
        self._file = str(path)
        index = self.findData("file")
        self.setItemText(index, f"model file: {Path(path).name}")
        if self.currentIndex() == index:
            self.choice_changed.emit()
        self.setCurrentIndex(index)

    def _on_index(self, index: int) -> None:
        if self.itemData(index) != "file":
            self._previous = index
        self.choice_changed.emit()

    def _on_activated(self, index: int) -> None:
        """The user picked an entry: "model file…" asks which file (again)."""
        if self.itemData(index) != "file":
            return
        path, _ = QFileDialog.getOpenFileName(self, "Start from a model file", "", OPEN_FILTER)
        if path:
            self.set_file(path)
        elif self._file is None:
            self.setCurrentIndex(self._previous)

    def one_channel(self) -> bool:
        """Whether the starting model reads one channel (colour images become luminance)."""
        if self.kind == "scratch":
            return False
        if self.kind == "current":
            model = current_model.model
            return model is None or model.config.in_channels == 1
        return True

    def choice(self) -> StartChoice:
        """The starting point now (the current model is taken as it is).

        Raises
        ------
        InputError
            "current model" without one.
        """
        kind, _, name = self.currentData().partition(":")
        if kind == "current":
            if current_model.model is None:
                raise InputError(
                    "there is no current model to start from: train one, open a model file, "
                    "or choose another starting point"
                )
            return StartChoice("current", model=current_model.model)
        if kind == "file":
            if self._file is None:
                raise InputError("choose the model file to start from")
            return StartChoice("file", self._file)
        return StartChoice(kind, name)
