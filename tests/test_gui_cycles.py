"""Train/stop/continue and predict/cancel, again and again in one viewer: each cycle ends
with no worker running, the widgets idle and the same layers (issue 11, item 19).

``benchmarks/gui_cycles.py`` runs ten cycles of each and measures the memory; this is the
short version for CI.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from qtpy.QtCore import QThreadPool

from napari_live_unet.app.current_model import current_model
from napari_live_unet.engine import ModelConfig, SegmentationModel
from napari_live_unet.widgets.predict import PredictState, PredictWidget
from napari_live_unet.widgets.train import TrainState, TrainWidget

from .conftest import synthetic_nuclei
from .test_predict_widget import FakeNetwork
from .test_train_widget import tiny_settings

pytestmark = [pytest.mark.gui, pytest.mark.slow, pytest.mark.usefixtures("no_current_model")]
CYCLES = 3
WAIT_MS = 60_000


def idle_afterwards(qtbot, viewer) -> tuple[tuple[str, ...], int]:
    """Once a cycle ended: no worker thread left running; the layers and Python threads."""
    pool = QThreadPool.globalInstance()
    # A worker emits `finished` just before its thread returns to the pool.
    qtbot.waitUntil(lambda: pool.activeThreadCount() == 0, timeout=5_000)
    return tuple(layer.name for layer in viewer.layers), threading.active_count()


def test_train_stop_continue_and_predict_cancel_leave_nothing_behind(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, labels = synthetic_nuclei((160, 160), n=14, seed=1)
    viewer.add_image(image, name="nuclei")
    viewer.add_labels(labels, name="nuclei ground truth")
    trainer = TrainWidget(viewer)
    viewer.window.add_dock_widget(trainer)
    predictor = PredictWidget(viewer)
    viewer.window.add_dock_widget(predictor)
    tiny_settings(trainer, epochs=10_000)
    trainer.preview_every.setValue(1)
    trainer.reset_choices()
    predictor.reset_choices()

    seen = []
    for _ in range(CYCLES):
        epochs = len(trainer.plot.epochs)
        assert trainer.start()
        qtbot.waitUntil(lambda n=epochs: len(trainer.plot.epochs) > n, timeout=WAIT_MS)
        trainer.stop()
        qtbot.waitUntil(lambda: not trainer.is_busy, timeout=WAIT_MS)
        assert trainer.state is TrainState.IDLE
        assert trainer.start(continue_training=True)
        qtbot.waitUntil(lambda: trainer.state is TrainState.TRAINING, timeout=WAIT_MS)
        trainer.stop()
        qtbot.waitUntil(lambda: not trainer.is_busy, timeout=WAIT_MS)
        assert trainer.state is TrainState.IDLE
        assert trainer.start_button.isEnabled() and trainer.continue_button.isEnabled()
        seen.append(idle_afterwards(qtbot, viewer))
    layers, threads = seen[0]
    assert layers == ("nuclei", "nuclei ground truth", "nuclei live preview")
    assert seen == [(layers, threads)] * CYCLES

    model = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    fake = FakeNetwork(lambda image: np.zeros(image.shape, np.int32), slow=True)
    model.predict_stream = fake  # 5 s a prediction unless stopped
    current_model.set(model, "slow test model")
    predictor.image_combo.value = viewer.layers["nuclei"]
    for cycle in range(CYCLES):
        fake.stopped.clear()
        assert predictor.predict()
        qtbot.waitUntil(lambda: predictor.progress.value() > 0, timeout=WAIT_MS)
        predictor.cancel()
        qtbot.waitUntil(lambda: not predictor.is_busy, timeout=WAIT_MS)
        assert fake.stopped.is_set()  # the network was asked to stop and did
        assert predictor.state is PredictState.IDLE and predictor.predict_button.isEnabled()
        assert "cancelled" in predictor.status.text().lower()
        assert idle_afterwards(qtbot, viewer) == (layers, threads), f"predict cycle {cycle + 1}"
    assert fake.calls == CYCLES
