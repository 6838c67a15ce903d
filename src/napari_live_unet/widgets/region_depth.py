"""Regions of a 3D volume in the Annotate widget: spin boxes that set which slices the
selected region covers, and the regions' outlines for napari's 3D view."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QFormLayout, QLabel, QSpinBox, QWidget

from ..engine.errors import InputError
from ..engine.regions import Region
from ..layers.layer_pairs import spatial_shape
from ..layers.region_depth import (
    drawn_slice,
    region_slices,
    set_region_slices,
    show_region_outlines,
)

if TYPE_CHECKING:
    from napari.layers import Image, Shapes

_HINT = "Select one region to set the slices it covers."


class RegionDepthControls(QWidget):
    """The "first slice" and "last slice" of the selected region of a 3D volume.

    Shown only while the image is treated as 3D; enabled while exactly one region is
    selected. The range always holds the slice the region was drawn on, and the spin
    boxes' limits keep it inside the volume with the first slice not after the last.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        Where the outlines of regions spanning several slices are shown.
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self._viewer = napari_viewer
        self._image: Image | None = None
        self._shapes: Shapes | None = None
        self._index: int | None = None
        self._applying = False  # writing the features: ignore the events that follow
        self._first = QSpinBox()
        self._last = QSpinBox()
        self._first.setToolTip("First slice of the selected region (down to slice 0)")
        self._last.setToolTip("Last slice of the selected region (up to the volume's last)")
        self._hint = QLabel(_HINT)
        self._hint.setWordWrap(True)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("first slice", self._first)
        form.addRow("last slice", self._last)
        form.addRow(self._hint)
        self._first.valueChanged.connect(self._apply)
        self._last.valueChanged.connect(self._apply)
        self.show_for(None, None, 2)

    def select_region(self, index: int) -> None:
        """Select region ``index`` (a row of the region table) in the regions layer."""
        if self._shapes is not None and 0 <= index < len(self._shapes.data):
            self._shapes.selected_data = {index}

    @property
    def slices(self) -> tuple[int, int] | None:
        """The selected region's first and last slice, or ``None`` if none can be set."""
        if self._index is None:
            return None
        return self._first.value(), self._last.value()

    def set_slices(self, first: int, last: int) -> None:
        """Set the selected region's slices, as typing in the spin boxes would (values
        outside the limits are clamped to them, as the spin boxes do)."""
        self._last.setValue(last)
        self._first.setValue(first)

    def show_for(
        self,
        image: Image | None,
        shapes: Shapes | None,
        spatial_ndim: int,
        regions: Sequence[Region] | None = None,
    ) -> None:
        """Follow ``image``'s regions layer: show the selected region's range, if one is,
        and (given its ``regions``) update the outlines of those spanning several slices."""
        if self._applying:
            return
        self._image, self._shapes, self._index = image, shapes, None
        if image is not None and regions is not None:
            show_region_outlines(self._viewer, image, regions, spatial_ndim)
        self.setVisible(image is not None and spatial_ndim == 3)
        selected = sorted(shapes.selected_data) if shapes is not None else []
        if image is None or shapes is None or spatial_ndim != 3 or len(selected) != 1:
            self._set_enabled(False, _HINT)
            return
        index = selected[0]
        depth = spatial_shape(image)[-3]
        drawn = min(max(drawn_slice(shapes, index, image), 0), depth - 1)
        first, last = region_slices(shapes, index, image)
        for box, low, high, value in (
            (self._first, 0, drawn, first),
            (self._last, drawn, depth - 1, last),
        ):
            box.blockSignals(True)
            box.setRange(low, high)
            box.setValue(value)
            box.blockSignals(False)
        self._index = index
        self._set_enabled(True, f"Region {index + 1}: slices {first} to {last}.")

    def _set_enabled(self, enabled: bool, hint: str) -> None:
        self._first.setEnabled(enabled)
        self._last.setEnabled(enabled)
        self._hint.setText(hint)

    def _apply(self, *_) -> None:
        if self._index is None or self._shapes is None or self._image is None:
            return
        first, last = self._first.value(), self._last.value()
        self._applying = True
        try:
            set_region_slices(self._shapes, self._index, first, last, self._image)
        except InputError as exc:  # the limits should prevent it; say so if not
            self._hint.setText(str(exc))
            return
        finally:
            self._applying = False
        self._hint.setText(f"Region {self._index + 1}: slices {first} to {last}.")
