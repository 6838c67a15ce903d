"""Live plot of train/validation loss and validation AP per epoch (pyqtgraph).

A run that fine-tunes a trained model starts with epoch 0: the starting model's scores,
marked with a star, so the curves start at its level. *Continue* keeps the earlier runs'
curves: the new run is drawn after them, from a dashed line at the restart.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QVBoxLayout, QWidget

_TRAIN_COLOUR = "#f0a030"
_VAL_COLOUR = "#40b0f0"
_AP_COLOUR = "#70e070"
_START_COLOUR = "#f0f0f0"
_REDRAW_MS = 300
"""Points that arrive within this long of each other are drawn together: each redraw
repaints the plot, and every repaint of the napari window costs the GUI thread tens of
milliseconds on a software-rendered display, so an epoch's loss, AP and restart mark make
one repaint rather than three."""


class LossPlot(QWidget):
    """Loss curves on the left axis and validation AP@0.5 on the right (0-1).

    Points are added as epochs end; the curves redraw within ``_REDRAW_MS`` (points that
    arrive together are drawn in one repaint). Epoch 0 (the starting model of a fine-tuning
    run, scored before any step) is drawn like any epoch and marked.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # pyqtgraph infers str from the default; None (transparent) is documented.
        self.plot_widget = pg.PlotWidget(background=None)  # pyright: ignore[reportArgumentType]
        self.plot_widget.setMinimumHeight(180)
        item = self.plot_widget.getPlotItem()
        assert item is not None  # a PlotWidget makes its PlotItem when it is created
        self._item = item
        item.setLabel("bottom", "epoch")
        item.setLabel("left", "loss")
        item.getAxis("left").enableAutoSIPrefix(False)  # plain numbers, no "x0.001"
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
        item.getAxis("right").enableAutoSIPrefix(False)
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
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.setInterval(_REDRAW_MS)
        self._redraw_timer.timeout.connect(self._redraw)
        self.clear()

    def _sync_views(self) -> None:
        self._ap_view.setGeometry(self._item.getViewBox().sceneBoundingRect())

    def clear(self) -> None:
        """Forget all points (a new training run starts)."""
        self.epochs: list[float] = []
        self.train_loss: list[float] = []
        self.val_epochs: list[float] = []
        self.val_loss: list[float] = []
        self.ap_epochs: list[float] = []
        self.ap: list[float] = []
        self.restarts: list[float] = []  # x positions where a continued run began
        self._start_train: list[int] = []  # indices of epoch-0 points
        self._start_val: list[int] = []
        self._offset = 0.0
        for line in getattr(self, "_restart_lines", []):
            self._item.removeItem(line)
        self._restart_lines: list[pg.InfiniteLine] = []
        self._redraw()

    def start_run(self, continue_previous: bool) -> None:
        """Get ready for a run: a new one clears the plot; a continued one is drawn after the
        earlier runs, its epoch 0 (the model it continues from) at their last epoch."""
        if not continue_previous or not self.epochs:
            self.clear()
            return
        self._offset = self.epochs[-1]
        self.restarts.append(self._offset)
        line = pg.InfiniteLine(
            self._offset, angle=90, pen=pg.mkPen(_START_COLOUR, width=1, style=Qt.PenStyle.DashLine)
        )
        self._item.addItem(line)
        self._restart_lines.append(line)

    def add_epoch(self, epoch: int, train_loss: float, val_loss: float | None) -> None:
        """Append one epoch's losses (``val_loss`` None when there is no validation data)."""
        if epoch == 0:
            self._start_train.append(len(self.epochs))
            if val_loss is not None:
                self._start_val.append(len(self.val_epochs))
        x = epoch + self._offset
        self.train_loss.append(train_loss)
        self.epochs.append(x)
        if val_loss is not None:
            self.val_epochs.append(x)
            self.val_loss.append(val_loss)
        self._schedule_redraw()

    def add_ap(self, epoch: int, ap: float) -> None:
        """Append a validation AP@0.5 value."""
        self.ap_epochs.append(epoch + self._offset)
        self.ap.append(ap)
        self._schedule_redraw()

    def start_points(self) -> list[tuple[float, float]]:
        """The starting models' losses (epoch 0 of each run), train first; empty for a new
        model."""
        train = [(self.epochs[i], self.train_loss[i]) for i in self._start_train]
        val = [(self.val_epochs[i], self.val_loss[i]) for i in self._start_val]
        return train + val

    def _schedule_redraw(self) -> None:
        if not self._redraw_timer.isActive():
            self._redraw_timer.start()

    def _redraw(self) -> None:
        self._redraw_timer.stop()
        self._train.setData(*self._runs(self.epochs, self.train_loss), connect="finite")
        self._val.setData(*self._runs(self.val_epochs, self.val_loss), connect="finite")
        start = self.start_points()
        self._start.setData([e for e, _ in start], [x for _, x in start])
        self._ap.setData(*self._runs(self.ap_epochs, self.ap), connect="finite")
        self._sync_views()

    def _runs(self, xs: list[float], ys: list[float]) -> tuple[np.ndarray, np.ndarray]:
        """Points with a gap (NaN) before each restart, so runs are not joined by a line."""
        x, y = np.asarray(xs, float), np.asarray(ys, float)
        if not self.restarts or x.size == 0:
            return x, y
        # A run's first point repeats the previous run's last x: break the line there.
        breaks = [i for i in range(1, x.size) if x[i] <= x[i - 1]]
        return np.insert(x, breaks, np.nan), np.insert(y, breaks, np.nan)
