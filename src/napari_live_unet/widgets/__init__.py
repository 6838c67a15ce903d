"""napari dock widgets (Qt). The engine under them never imports napari or Qt."""
