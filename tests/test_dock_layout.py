"""Issue 11 (16): the three docks fit a 1920x1080 screen; training keeps the brush."""

from __future__ import annotations

import pytest
from qtpy.QtWidgets import QPushButton, QScrollArea

from napari_live_unet.widgets._region_table import MIN_VISIBLE_ROWS

pytestmark = pytest.mark.gui


def test_three_docks_fit_a_1080p_window_and_every_button_is_reachable(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1920, 1080)
    viewer.open_sample("napari-live-unet", "nuclei")
    widgets = [
        viewer.window.add_plugin_dock_widget("napari-live-unet", name)[1]
        for name in ("Annotate", "Train", "Predict")
    ]
    qtbot.wait(200)  # the docks share the height once shown
    assert window.height() <= 1080
    for widget in widgets:
        (area,) = widget.findChildren(QScrollArea)[:1]
        assert widget.height() >= 100, type(widget).__name__
        inner = area.widget()
        # Every button lies inside the scroll area's content: scrolling reaches it.
        for button in widget.findChildren(QPushButton):
            assert inner.isAncestorOf(button), button.text()
    table = widgets[0]._table
    header = table.horizontalHeader().height()
    shown = min(table.height(), table.minimumSizeHint().height())
    rows = (shown - header - 2 * table.frameWidth()) / table.verticalHeader().defaultSectionSize()
    assert rows >= MIN_VISIBLE_ROWS


def test_starting_training_keeps_the_layer_being_painted_active(make_napari_viewer, qtbot):
    from .test_train_widget import make_widget, wait_done

    viewer, widget = make_widget(make_napari_viewer, epochs=1)
    labels = viewer.layers["nuclei ground truth"]
    viewer.layers.selection.active = labels
    labels.mode = "paint"
    assert widget.start()
    assert "nuclei live preview" in viewer.layers  # the preview layer was added...
    assert viewer.layers.selection.active is labels  # ...without taking the brush away
    assert labels.mode == "paint"
    wait_done(qtbot, widget)
