"""Asking which output channel of another tool's BMZ model is which map."""

from __future__ import annotations

from qtpy.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QWidget,
)

from ..engine.bmz.output_roles import OutputRoles
from ..engine.config import MODES


class OutputRolesDialog(QDialog):
    """Three choices: the foreground channel, the auxiliary channel and what it holds.

    The choices start where the channel names point (a name containing "fore" for the
    foreground, "bound" or "dist" for the other), else at channels 0 and 1.
    """

    def __init__(self, package: str, channels: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Which output is which?")
        self.foreground = QComboBox()
        self.auxiliary = QComboBox()
        for index, name in enumerate(channels):
            for combo in (self.foreground, self.auxiliary):
                combo.addItem(f"{index}: {name}", index)
        self.kind = QComboBox()
        for mode in MODES:
            self.kind.addItem(f"{mode} map", mode)
        self._guess(channels)
        intro = QLabel(
            f"{package} is another tool's model with {len(channels)} output channels. "
            "Say which holds the foreground probability and which a boundary probability "
            "or a distance map; Live U-net turns them into labels."
        )
        intro.setWordWrap(True)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        ok_button = buttons.button(QDialogButtonBox.StandardButton.Ok)
        assert ok_button is not None  # the box was made with an Ok button
        self.ok_button = ok_button
        layout = QFormLayout(self)
        layout.addRow(intro)
        layout.addRow("Foreground", self.foreground)
        layout.addRow("Splits touching objects", self.auxiliary)
        layout.addRow("That channel holds a", self.kind)
        layout.addRow(buttons)
        for combo in (self.foreground, self.auxiliary):
            combo.currentIndexChanged.connect(self._check)
        self._check()

    def _guess(self, channels: list[str]) -> None:
        lowered = [c.lower() for c in channels]
        fg = next((i for i, c in enumerate(lowered) if "fore" in c), 0)
        aux = next((i for i, c in enumerate(lowered) if "bound" in c or "dist" in c), None)
        if aux is None:
            aux = 1 if fg == 0 and len(channels) > 1 else 0
        self.foreground.setCurrentIndex(fg)
        self.auxiliary.setCurrentIndex(aux)
        if "dist" in lowered[aux]:
            self.kind.setCurrentIndex(MODES.index("distance"))

    def _check(self) -> None:
        """Two different channels are needed."""
        self.ok_button.setEnabled(self.foreground.currentIndex() != self.auxiliary.currentIndex())

    def roles(self) -> OutputRoles:
        """The roles as chosen."""
        return OutputRoles(
            self.foreground.currentData(), self.auxiliary.currentData(), self.kind.currentData()
        )


def ask_output_roles(
    package: str, channels: list[str], parent: QWidget | None = None
) -> OutputRoles | None:
    """Show the dialog; the chosen roles, or None when the user cancels."""
    dialog = OutputRolesDialog(package, channels, parent)
    return dialog.roles() if dialog.exec() == QDialog.DialogCode.Accepted else None
