"""The napari-aware floor: layers to arrays and back, with no Qt.

Code here knows napari layers and the viewer model (reading level 0 of an image, pairing
an image with its ground truth, turning Shapes into regions, writing predictions into
layers, snapshotting layers for training). It never imports Qt, so it is tested on a
``ViewerModel`` without a window. The widgets (:mod:`napari_live_unet.widgets`) sit on top;
below are the jobs and results without napari (:mod:`napari_live_unet.app`), then the
engine (:mod:`napari_live_unet.engine`).
"""
