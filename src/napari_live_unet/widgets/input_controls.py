"""How images are fitted to a model: channel, polarity and object diameter.

The Predict and Train widgets share these controls; :meth:`InputControls.adapt_options`
turns them into the engine's :class:`~napari_live_unet.engine.image_adapter.AdaptOptions`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# qtpy re-exports PyQt's pyqtSignal under another name, which pyright does not count as an export.
from qtpy.QtCore import Signal  # pyright: ignore[reportPrivateImportUsage]
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QPushButton,
    QWidget,
)

from ..app.jobs import one_shot
from ..engine.errors import InputError
from ..engine.image_adapter import AdaptOptions, estimate_diameter
from ..layers.layer_pairs import layer_image_data
from .job_runner import JobRunner

POLARITY_TEXT = {"auto": "auto", "bright": "bright objects", "dark": "dark objects"}
RGB_NAMES = ("red", "green", "blue", "alpha")
MAX_CHANNELS = 8  # as the engine reads channel axes
MAX_DIAMETER = 10_000.0

MeasureSource = Callable[[], Sequence[tuple[Any, int]]]
"""Returns (labels data, spatial ndim) pairs to measure, or raises InputError saying why
there are none."""


def channel_count(shape: Sequence[int], rgb: bool, spatial_ndim: int) -> int:
    """Channels a layer of ``shape`` may hold: RGB(A) last, else the axis just before the
    spatial axes when it is short enough to be channels (1 otherwise)."""
    if rgb:
        return int(shape[-1])
    if len(shape) > spatial_ndim and shape[-spatial_ndim - 1] <= MAX_CHANNELS:
        return int(shape[-spatial_ndim - 1])
    return 1


def measure_diameter(sources: Sequence[tuple[Any, int]]) -> float | None:
    """Median object diameter in pixels over every frame of the labels (None: no objects).

    Leading axes beyond ``spatial_ndim`` are frames (a time series), measured one by one.
    """
    frames = []
    for data, spatial_ndim in sources:
        data = np.asarray(data)
        if data.ndim < spatial_ndim:
            raise InputError(f"labels of shape {data.shape} are not {spatial_ndim}D")
        frames += list(data.reshape(-1, *data.shape[data.ndim - spatial_ndim :]))
    return estimate_diameter(frames) if frames else None


class InputControls(QGroupBox):
    """Channel, polarity and object diameter of the images; all automatic by default.

    Parameters
    ----------
    measure_source : callable, optional
        What the "Measure from annotations" button measures (see :data:`MeasureSource`).
    """

    message = Signal(str, bool)  # text for the status line, whether it is an error

    def __init__(
        self, measure_source: MeasureSource | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__("Input images", parent)
        self._measure_source = measure_source
        self._measuring = JobRunner(self, "Measuring the objects")
        self.channel = QComboBox()
        self.channel.setToolTip(
            "Channel of a colour or multi-channel image to segment; auto: luminance of colour "
            "images"
        )
        self.polarity = QComboBox()
        for value, text in POLARITY_TEXT.items():
            self.polarity.addItem(text, value)
        self.polarity.setToolTip(
            "How objects look: bright on a dark background (fluorescence) or dark on a bright "
            "one (brightfield, H&E); auto decides from the image or the annotations"
        )
        self.diameter = QDoubleSpinBox()
        self.diameter.setRange(0.0, MAX_DIAMETER)
        self.diameter.setDecimals(1)
        self.diameter.setSingleStep(1.0)
        self.diameter.setSuffix(" px")
        self.diameter.setSpecialValueText("auto")
        self.diameter.setToolTip(
            "Typical object diameter in pixels; images are zoomed so objects have the size "
            "the model knows. 0 = auto"
        )
        self.measure_button = QPushButton("Measure from annotations")
        self.measure_button.setToolTip("Median diameter of the objects in the ground truth")
        self.measure_button.clicked.connect(self.measure)
        self.measure_button.setVisible(measure_source is not None)
        diameter_row = QHBoxLayout()
        diameter_row.setContentsMargins(0, 0, 0, 0)
        diameter_row.addWidget(self.diameter)
        diameter_row.addWidget(self.measure_button)
        form = QFormLayout(self)
        form.addRow("Channel", self.channel)
        form.addRow("Polarity", self.polarity)
        form.addRow("Object diameter", diameter_row)
        self.set_channels(1)

    def set_channels(self, count: int | None, *, rgb: bool = False, luminance: bool = True) -> None:
        """Offer the channels of an image: ``count`` None when unknown (up to 8 offered).

        Single-channel images get "auto" only (disabled); colour images get "auto
        (luminance)" when the model reads one channel (``luminance``), and each colour.
        The current choice is kept when it still exists.
        """
        previous = self.channel_choice()
        self.channel.blockSignals(True)
        self.channel.clear()
        auto = "auto (luminance)" if rgb and luminance else "auto"
        self.channel.addItem(auto, None)
        n = MAX_CHANNELS if count is None else count
        if count is None or count > 1:
            for i in range(n):
                name = f" ({RGB_NAMES[i]})" if rgb and i < len(RGB_NAMES) else ""
                self.channel.addItem(f"{i}{name}", i)
        index = self.channel.findData(previous) if previous is not None else 0
        self.channel.setCurrentIndex(max(0, index))
        self.channel.setEnabled(self.channel.count() > 1)
        self.channel.blockSignals(False)

    def show_layer(self, layer, spatial_ndim: int = 2, luminance: bool = True) -> None:
        """Offer the channels of an image layer (None: no image)."""
        if layer is None:
            self.set_channels(1)
            return
        count = channel_count(layer_image_data(layer).shape, layer.rgb, spatial_ndim)
        self.set_channels(count, rgb=layer.rgb, luminance=luminance)

    def channel_choice(self) -> int | None:
        """The chosen channel, None for auto."""
        return self.channel.currentData()

    def set_channel(self, channel: int | None) -> None:
        """Choose a channel (None: auto); raises InputError when the image has no such one."""
        index = self.channel.findData(channel) if channel is not None else 0
        if index < 0:
            raise InputError(f"channel {channel} is not offered for this image")
        self.channel.setCurrentIndex(index)

    def diameter_value(self) -> float | None:
        """The object diameter in pixels, None for auto."""
        value = self.diameter.value()
        return None if value <= self.diameter.minimum() else float(value)

    def adapt_options(self) -> AdaptOptions:
        """The choices as the engine takes them."""
        return AdaptOptions(
            channel=self.channel_choice(),
            polarity=self.polarity.currentData(),
            diameter=self.diameter_value(),
        )

    def measure(self) -> bool:
        """Set the diameter from the annotations, measured in a worker; returns whether
        measuring started (what is wrong, if anything, goes to :attr:`message`)."""
        if self._measure_source is None or self._measuring.is_running:
            return False
        try:
            sources = self._measure_source()  # read on the main thread: arrays, no layers
        except InputError as exc:
            self.message.emit(f"Cannot measure the object diameter: {exc}", True)
            return False
        self.measure_button.setEnabled(False)
        self._measuring.start(
            lambda _stop: one_shot(measure_diameter, sources),
            lambda done: self._show_measured(done.value),
            lambda _end: self.measure_button.setEnabled(True),
        )
        return True

    @property
    def is_measuring(self) -> bool:
        return self._measuring.is_running

    def _show_measured(self, diameter: float | None) -> None:
        if diameter is None:
            self.message.emit("No annotated objects to measure the diameter from.", True)
            return
        self.diameter.setValue(max(diameter, self.diameter.singleStep()))
        self.message.emit(f"Objects are about {diameter:.1f} px across (median).", False)
