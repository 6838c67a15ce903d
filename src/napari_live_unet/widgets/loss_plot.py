"""Live plot of train/validation loss and validation AP per epoch (pyqtgraph).

A run that fine-tunes a trained model starts with epoch 0: the starting model's scores,
marked with a star, so the curves start at its level.
"""

from __future__ import annotations

import pyqtgraph as pg
from qtpy.QtWidgets import QVBoxLayout, QWidget

_TRAIN_COLOUR = "#f0a030"
_VAL_COLOUR = "#40b0f0"
_AP_COLOUR = "#70e070"
_START_COLOUR = "#f0f0f0"


class LossPlot(QWidget):
    """Loss curves on the left axis and validation AP@0.5 on the right (0-1).

    Points are added as epochs end; the curves redraw immediately. Epoch 0 (the starting
    model of a fine-tuning run, scored before any step) is drawn like any epoch and marked.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot_widget = pg.PlotWidget(background=None)
        self.plot_widget.setMinimumHeight(180)
        item = self.plot_widget.getPlotItem()
        item.setLabel("bottom", "epoch")
        item.setLabel("left", "loss")
        item.showGrid(x=True, y=True, alpha=0.2)
        item.addLegend(offset=(-10, 10))
        self._train = item.plot([], [], pen=pg.mkPen(_TRAIN_COLOUR, width=2), name="train loss")
        self._val = item.plot([], [], pen=pg.mkPen(_VAL_COLOUR, width=2), name="val loss")
        self._start = item.plot(
            [],
            [],
            pen=None,
            symbol="star",
            symbolSize=12,
            symbolBrush=_START_COLOUR,
            name="starting model",
        )
        # AP lives on its own axis and view box, linked to the loss plot's x range.
        self._ap_view = pg.ViewBox()
        item.showAxis("right")
        item.scene().addItem(self._ap_view)
        item.getAxis("right").linkToView(self._ap_view)
        item.getAxis("right").setLabel("val AP@0.5", color=_AP_COLOUR)
        self._ap_view.setXLink(item)
        self._ap_view.setYRange(0, 1, padding=0)
        self._ap_view.setMouseEnabled(y=False)
        self._ap = pg.PlotDataItem(
            [],
            [],
            pen=pg.mkPen(_AP_COLOUR, width=2),
            symbol="o",
            symbolSize=5,
            symbolBrush=_AP_COLOUR,
        )
        self._ap_view.addItem(self._ap)
        legend = item.legend
        if legend is not None:
            legend.addItem(self._ap, "val AP@0.5")
        item.getViewBox().sigResized.connect(self._sync_views)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot_widget)
        self.clear()

    def _sync_views(self) -> None:
        self._ap_view.setGeometry(self.plot_widget.getPlotItem().getViewBox().sceneBoundingRect())

    def clear(self) -> None:
        """Forget all points (a new training run starts)."""
        self.epochs: list[int] = []
        self.train_loss: list[float] = []
        self.val_epochs: list[int] = []
        self.val_loss: list[float] = []
        self.ap_epochs: list[int] = []
        self.ap: list[float] = []
        self._redraw()

    def add_epoch(self, epoch: int, train_loss: float, val_loss: float | None) -> None:
        """Append one epoch's losses (``val_loss`` None when there is no validation data)."""
        self.epochs.append(epoch)
        self.train_loss.append(train_loss)
        if val_loss is not None:
            self.val_epochs.append(epoch)
            self.val_loss.append(val_loss)
        self._redraw()

    def add_ap(self, epoch: int, ap: float) -> None:
        """Append a validation AP@0.5 value."""
        self.ap_epochs.append(epoch)
        self.ap.append(ap)
        self._redraw()

    def start_points(self) -> list[tuple[int, float]]:
        """The starting model's losses (epoch 0), train first; empty for a new model."""
        train = [(e, x) for e, x in zip(self.epochs, self.train_loss, strict=True) if e == 0]
        val = [(e, x) for e, x in zip(self.val_epochs, self.val_loss, strict=True) if e == 0]
        return train + val

    def _redraw(self) -> None:
        self._train.setData(self.epochs, self.train_loss)
        self._val.setData(self.val_epochs, self.val_loss)
        start = self.start_points()
        self._start.setData([e for e, _ in start], [x for _, x in start])
        self._ap.setData(self.ap_epochs, self.ap)
        self._sync_views()
