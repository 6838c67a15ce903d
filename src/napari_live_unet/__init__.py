"""napari-live-unet: interactive U-net segmentation for napari.

The headless engine lives in :mod:`napari_live_unet.engine` and never imports napari or Qt.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
