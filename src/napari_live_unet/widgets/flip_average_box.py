"""The Predict dock's "Average flips" box: whether a model that averages flips does so.

Training turns flip averaging on for a model where it gains on the validation data
(:mod:`napari_live_unet.engine.flip_average`); it costs four times the network's work, so
the user may predict such a model once per tile instead. For other models the box is off
and disabled.
"""

from __future__ import annotations

from qtpy.QtWidgets import QCheckBox

from ..engine.model import SegmentationModel


class FlipAverageBox(QCheckBox):
    """Checked and enabled when the current model averages flips."""

    def __init__(self) -> None:
        super().__init__("Average flips (chosen in training; 4x slower)")
        self.setToolTip(
            "This model predicts each tile and its three flips and averages them, which "
            "scored better on its validation data. Untick to predict each tile once."
        )
        self.follow(None)

    def follow(self, model: SegmentationModel | None) -> None:
        """Show ``model``'s choice (the new current model's)."""
        averages = model is not None and model.flip_average
        self.setChecked(averages)
        self.setEnabled(averages)

    def applied(self, model: SegmentationModel) -> SegmentationModel:
        """``model`` as the box says it predicts."""
        return model if self.isChecked() else model.without_flip_average()
