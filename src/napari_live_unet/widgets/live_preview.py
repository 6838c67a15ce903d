"""Keeping the live preview in step with the view while a model trains."""

from __future__ import annotations

import numpy as np
from napari.layers import Image
from qtpy.QtCore import QObject, QTimer

from ..app.preview_pacing import PreviewPacing
from ..app.visible_crop import PreviewWindow, VisibleCrop, preview_context
from ..engine.config import ModelConfig
from ..layers.layer_pairs import layer_image_data
from ..layers.preview_layer import preview_layer, show_preview, visible_window_of


class LivePreviewController(QObject):
    """Every half second, records the visible crop of the image being previewed; draws
    the labels the training worker returns for it.

    The training worker reads the crop through :attr:`crop` (thread-safe) and never sees
    a layer; :meth:`show` runs on the main thread. A 3D model seen slice by slice is
    previewed on a slab of slices around the shown one (enough z context for the network);
    in a 3D view, on a bounded sub-volume around the camera's centre. :attr:`pacing` tells
    the worker when each preview has been drawn, so that it can wait for that.
    """

    def __init__(self, viewer, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.crop = VisibleCrop()
        self.pacing = PreviewPacing()
        self.image: Image | None = None
        self._spatial_ndim = 2
        self._context: tuple[int, ...] = preview_context(None)
        self._timer = QTimer(self)
        self._timer.setInterval(500)
        self._timer.timeout.connect(self._update_view)

    def start(
        self, image: Image | None, spatial_ndim: int, model_config: ModelConfig | None = None
    ) -> None:
        """Preview ``image`` (None: no preview) for a run that is starting.

        Parameters
        ----------
        image : Image or None
            The image to preview; None: no preview.
        spatial_ndim : int
            Spatial axes of the model being trained (2 or 3).
        model_config : ModelConfig, optional
            Its architecture, which sets how many slices around the shown one a 3D
            preview takes in (see :func:`preview_context`); None: the default one.
        """
        self.stop()
        self.pacing.reset()
        if image is None:
            return
        self.image, self._spatial_ndim = image, spatial_ndim
        self._context = preview_context(model_config, spatial_ndim)
        preview_layer(self.viewer, image)
        self._update_view()
        self._timer.start()

    def stop(self) -> None:
        """No more crops are handed out (the run ended or the image went away)."""
        self._timer.stop()
        self.crop.clear()
        self.image = None

    def show(self, labels: np.ndarray, window: PreviewWindow) -> None:
        """Draw the labels the worker computed for ``window``; tell :attr:`pacing` once
        the canvas has redrawn."""
        if self.image is not None and self.image in self.viewer.layers:
            show_preview(self.viewer, self.image, labels, window)
        # The canvas redraw the refresh asked for runs in the next pass of the event loop;
        # the second pass comes after it.
        QTimer.singleShot(0, lambda: QTimer.singleShot(0, self.pacing.drawn))

    def _update_view(self) -> None:
        layer = self.image
        if layer is None or layer not in self.viewer.layers:
            self.crop.clear()
            return
        window = visible_window_of(
            self.viewer,
            layer,
            self._spatial_ndim,
            self.crop.max_size,
            self._context,
            self.crop.max_voxels,
            previous=self.crop.window,
        )
        self.crop.set_view(layer_image_data(layer), window, bool(getattr(layer, "rgb", False)))
