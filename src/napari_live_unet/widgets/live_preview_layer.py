"""The live-preview layer: shows what the model makes of the visible area while training."""

from __future__ import annotations

import numpy as np
from napari.layers import Image
from qtpy.QtCore import QObject, QTimer

from ..layers.visible_crop import PreviewSource, PreviewWindow, visible_window


class LivePreview(QObject):
    """Keeps a :class:`PreviewSource` in step with the view and draws what comes back.

    Main thread only: a timer records the visible crop of the image being previewed; the
    training worker reads it through :attr:`source`; :meth:`show` puts the labels it
    returns into a ``"<image> live preview"`` Labels layer.
    """

    def __init__(self, viewer, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.source = PreviewSource()
        self.image: Image | None = None
        self._spatial_ndim = 2
        self._timer = QTimer(self, interval=500)
        self._timer.timeout.connect(self._update_view)

    def start(self, image: Image | None, spatial_ndim: int) -> None:
        """Preview ``image`` (None: no preview) for a run that is starting."""
        self.stop()
        if image is None:
            return
        self.image, self._spatial_ndim = image, spatial_ndim
        self._layer()
        self._update_view()
        self._timer.start()

    def stop(self) -> None:
        """No more crops are handed out (the run ended or the image went away)."""
        self._timer.stop()
        self.source.clear()
        self.image = None

    def _update_view(self) -> None:
        layer = self.image
        if layer is None or layer not in self.viewer.layers:
            self.source.clear()
            return
        rgb = bool(getattr(layer, "rgb", False))
        shape = tuple(layer.data.shape[:-1] if rgb else layer.data.shape)
        displayed = tuple(d for d in self.viewer.dims.displayed if d < len(shape))
        point = layer.world_to_data(self.viewer.dims.point[-len(shape) :])
        window = visible_window(
            layer.corner_pixels,
            point,
            shape,
            self._spatial_ndim,
            displayed,
            self.source.max_size,
        )
        self.source.set_view(layer.data, window, rgb)

    def _layer(self):
        """The preview Labels layer, created when the run starts.

        Creating a layer costs a few hundred milliseconds of the GUI thread, so it happens
        on Start rather than in the middle of training; later previews only swap its data.
        """
        image = self.image
        name = f"{image.name} live preview"
        if name in self.viewer.layers:
            return self.viewer.layers[name]
        ndim = image.data.ndim - bool(getattr(image, "rgb", False))
        layer = self.viewer.add_labels(
            np.zeros((1,) * ndim, np.int32), name=name, scale=image.scale, opacity=0.6
        )
        layer.contour = 1
        self.viewer.layers.selection.active = image
        return layer

    def show(self, labels: np.ndarray, window: PreviewWindow) -> None:
        """Draw the labels the worker computed for ``window``."""
        image = self.image
        if image is None or image not in self.viewer.layers:
            return
        layer = self._layer()
        offset = [*window.frame, *window.start]
        translate = [
            t + o * s for t, o, s in zip(image.translate, offset, image.scale, strict=False)
        ]
        if not np.allclose(layer.translate, translate):  # each change redraws the layer
            layer.translate = translate
        layer.data = labels.reshape((1,) * len(window.frame) + labels.shape)
