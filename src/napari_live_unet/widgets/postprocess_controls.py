"""Post-processing thresholds as spin boxes, announcing changes after a short pause."""

from __future__ import annotations

from dataclasses import replace

# qtpy re-exports PyQt's pyqtSignal under another name, which pyright does not count as an export.
from qtpy.QtCore import QTimer, Signal  # pyright: ignore[reportPrivateImportUsage]
from qtpy.QtWidgets import QDoubleSpinBox, QFormLayout, QGroupBox, QSpinBox, QWidget

from ..engine.config import PostprocessConfig

DEBOUNCE_MS = 150


class PostprocessControls(QGroupBox):
    """Foreground threshold, seed threshold, seed prominence and minimum object size.

    ``changed`` fires once the user has paused for ``DEBOUNCE_MS``, so dragging a value
    re-runs post-processing once rather than at every step.
    """

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Post-processing (updates the labels live)", parent)
        self.fg_threshold = _spin(0.0, 1.0, 0.05, 2)
        self.seed_threshold = _spin(0.0, 1.0, 0.05, 2)
        self.seed_prominence = _spin(0.0, 1.0, 0.01, 3)
        self.min_size = QSpinBox()
        self.min_size.setRange(0, 1_000_000)
        self.debounce = QTimer(self)
        self.debounce.setSingleShot(True)
        self.debounce.setInterval(DEBOUNCE_MS)
        self.debounce.timeout.connect(self.changed)
        form = QFormLayout(self)
        for label, spin in zip(
            ("Foreground threshold", "Seed threshold", "Seed prominence", "Minimum size"),
            self._spins(),
            strict=True,
        ):
            form.addRow(label, spin)
            spin.valueChanged.connect(lambda *_: self.debounce.start())

    def _spins(self) -> tuple:
        return (self.fg_threshold, self.seed_threshold, self.seed_prominence, self.min_size)

    def show_params(self, params: PostprocessConfig) -> None:
        """Display ``params`` without announcing a change."""
        values = (params.fg_threshold, params.seed_threshold, params.seed_prominence)
        for spin, value in zip(self._spins(), (*values, params.min_size), strict=True):
            spin.blockSignals(True)
            spin.setValue(value)
            spin.blockSignals(False)

    def params(self, base: PostprocessConfig | None = None) -> PostprocessConfig:
        """The shown thresholds; other settings (smoothing) come from ``base``."""
        return replace(
            base or PostprocessConfig(),
            fg_threshold=round(self.fg_threshold.value(), 4),
            seed_threshold=round(self.seed_threshold.value(), 4),
            seed_prominence=round(self.seed_prominence.value(), 4),
            min_size=self.min_size.value(),
        )

    def set_mode(self, mode: str | None) -> None:
        """Enable the boxes for a model of ``mode``; seed prominence only in distance mode.

        ``None`` (no model yet): the boxes show "–" and are disabled, rather than values
        that no model chose.
        """
        has_model = mode is not None
        for spin in self._spins():
            # The special text shows at the minimum, which is a real value once a model is set.
            spin.setSpecialValueText("" if has_model else "–")
            if not has_model:
                spin.blockSignals(True)
                spin.setValue(spin.minimum())
                spin.blockSignals(False)
            spin.setEnabled(has_model)
        self.seed_prominence.setEnabled(mode == "distance")


def _spin(low: float, high: float, step: float, decimals: int) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(low, high)
    spin.setSingleStep(step)
    spin.setDecimals(decimals)
    return spin
