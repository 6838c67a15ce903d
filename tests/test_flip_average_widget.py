"""The Predict dock's "Average flips" box follows the current model and decides how it
predicts."""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pytest
import torch

from napari_live_unet.app.current_model import current_model
from napari_live_unet.engine import ModelConfig, SegmentationModel
from napari_live_unet.widgets.predict import PredictWidget

from .conftest import synthetic_nuclei
from .test_train_widget import make_widget, wait_done

training_end = importlib.import_module("napari_live_unet.engine.training_end")

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("no_current_model")]


def _foreground(qtbot, viewer, widget, layer) -> np.ndarray:
    widget.image_combo.value = layer
    widget.predict_button.click()
    qtbot.waitUntil(lambda: not widget.is_busy, timeout=30_000)
    return np.asarray(viewer.layers["cells foreground"].data, np.float32)


def test_average_flips_box_follows_the_model_and_decides_how_it_predicts(make_napari_viewer, qtbot):
    torch.manual_seed(0)
    plain = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    averaging = dataclasses.replace(plain, flip_average=True)
    viewer = make_napari_viewer()
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    image, _ = synthetic_nuclei((64, 64), seed=2)
    layer = viewer.add_image(image, name="cells")
    widget.show_outputs.setChecked(True)

    current_model.set(plain, "plain")
    assert not widget.flip_average.isChecked() and not widget.flip_average.isEnabled()

    current_model.set(averaging, "averaging")
    assert widget.flip_average.isChecked() and widget.flip_average.isEnabled()
    averaged = _foreground(qtbot, viewer, widget, layer)
    np.testing.assert_allclose(averaged, averaging.predict_outputs(image)[0], atol=2e-3)

    widget.flip_average.setChecked(False)  # predict each tile once
    once = _foreground(qtbot, viewer, widget, layer)
    np.testing.assert_allclose(once, plain.predict_outputs(image)[0], atol=2e-3)
    assert not np.allclose(once, averaged, atol=1e-3)
    assert current_model.model is averaging and averaging.flip_average  # the model is unchanged


def test_train_dock_says_when_training_chose_to_average_flips(
    make_napari_viewer, qtbot, monkeypatch
):
    monkeypatch.setattr(training_end, "choose_flip_average", lambda *args: True)
    _, widget = make_widget(make_napari_viewer, epochs=2)
    assert widget.start()
    wait_done(qtbot, widget)
    assert current_model.model is not None and current_model.model.flip_average
    assert "Predictions average each tile's flips" in widget.status.text()
