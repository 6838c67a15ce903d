"""The whole human-in-the-loop round in one real viewer: annotate, train, predict, correct,
train again."""

from __future__ import annotations

import numpy as np
import pytest

from napari_live_unet.app.current_model import current_model
from napari_live_unet.widgets.annotate import AnnotateWidget
from napari_live_unet.widgets.predict import PredictWidget
from napari_live_unet.widgets.train import TrainWidget

from .conftest import synthetic_nuclei
from .test_train_widget import tiny_settings

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("no_current_model")]


def test_annotate_train_predict_correct_retrain(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, truth = synthetic_nuclei((160, 160), n=14, seed=4)
    viewer.add_image(image, name="cells")
    annotate, trainer, predictor = (w(viewer) for w in (AnnotateWidget, TrainWidget, PredictWidget))
    for widget in (annotate, trainer, predictor):
        viewer.window.add_dock_widget(widget)

    # Annotate: ground truth painted in the left half, which a training rectangle marks.
    annotate.reset_choices()
    gt = annotate.new_ground_truth()
    assert gt.name == "cells ground truth" and gt.data.shape == image.shape
    regions = annotate.show_regions()
    gt.data[:, :100] = truth[:, :100]
    regions.add_rectangles(np.array([[0.0, 0.0], [159.0, 99.0]]))
    painted = gt.data.copy()

    # Train (tiny, CPU): the plot gets a point per epoch and the model becomes current.
    trainer.reset_choices()
    assert trainer.data.regions.value is regions
    tiny_settings(trainer, epochs=3, steps=4, batch=4)
    trainer.start()
    qtbot.waitUntil(lambda: not trainer.is_busy, timeout=120_000)
    assert trainer.plot.epochs == [1, 2, 3]
    assert current_model.model is not None

    # Predict: an instance Labels layer the size of the image appears.
    predictor.reset_choices()
    predictor.image_combo.value = viewer.layers["cells"]
    predictor.predict()
    qtbot.waitUntil(lambda: "cells predictions" in viewer.layers, timeout=60_000)
    qtbot.waitUntil(lambda: not predictor.is_busy, timeout=60_000)
    predictions = viewer.layers["cells predictions"]
    assert predictions.data.shape == image.shape
    assert np.issubdtype(predictions.data.dtype, np.integer)

    # Correct: copy the predictions into the ground truth; painted pixels are kept.
    predictions.data[...] = 0
    predictions.data[120:140, 120:140] = 7  # one predicted object in the unannotated part
    predictions.data[0:10, 0:10] = 3  # one over the annotated part, where it must not land
    predictor.reset_choices()
    predictor.gt_combo.value = gt
    predictor.copy_to_ground_truth()
    np.testing.assert_array_equal(
        gt.data[:, :100][painted[:, :100] > 0], painted[:, :100][painted[:, :100] > 0]
    )
    assert (gt.data[120:140, 120:140] > 0).all()
    gt.undo()
    np.testing.assert_array_equal(gt.data, painted)

    # Retrain: Continue fine-tunes the model on the corrected labels.
    first = current_model.model
    trainer.start(continue_training=True)
    qtbot.waitUntil(lambda: not trainer.is_busy, timeout=120_000)
    assert current_model.model is not first
    # the first run's curve stays; the continued run starts (its epoch 0) at its end
    assert trainer.plot.epochs == [1, 2, 3, 3, 4, 5, 6]
    assert len(current_model.model.history) == 7
