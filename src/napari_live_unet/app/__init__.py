"""The application floor: what the docks do, without napari or Qt.

Jobs the widgets run in workers (predict, re-threshold, doubt, the block-by-block path for
layers too large to predict whole) and the typed events they yield, the results they fill
(outputs kept for live thresholds, or labels stored on disk), the current model, and the
pacing and crop window of the live training preview. Nothing here imports napari: it takes
arrays, shapes and numbers, never a layer or a viewer, so it is tested without one. The
layers floor (:mod:`napari_live_unet.layers`) turns layers into these inputs and results
back into layers; the engine (:mod:`napari_live_unet.engine`) sits below.
"""
