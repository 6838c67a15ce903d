"""Take the user guide's screenshots from a real napari viewer.

Run from the repository root (needs a display; on a server use a virtual one):

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshots.py

Writes docs/images/{annotate,train,predict,doubt}.png (name some of them to write only
those: ``python docs/screenshots.py doubt``). Nothing is drawn by hand: the script
annotates the bundled sample the way a user would (ground truth painted inside a training
rectangle, a validation rectangle), trains for a short time budget on the CPU, predicts,
goes to the object the model doubts most, and grabs the window after each step.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication, QScrollArea

from napari_live_unet.app.current_model import current_model
from napari_live_unet.engine.builtin_models import STARTER_MODEL, load_model_source
from napari_live_unet.engine.sample_data import load_sample
from napari_live_unet.layers.doubt_layer import camera_of
from napari_live_unet.widgets.annotate import AnnotateWidget
from napari_live_unet.widgets.predict import PredictWidget
from napari_live_unet.widgets.train import TrainWidget

OUT = Path(__file__).parent / "images"
TRAIN_SECONDS = 40
WANTED = set(sys.argv[1:])  # screenshots to write; none named: all
QUICK = bool(WANTED) and not WANTED & {"annotate", "train"}
"""Only prediction screenshots asked for: the built-in starter predicts, nothing is trained."""


def wait(condition, timeout: float = 300.0) -> None:
    """Run the Qt event loop until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {condition}")
        QApplication.processEvents()
        time.sleep(0.02)


def settle(seconds: float = 0.5) -> None:
    start = time.monotonic()
    wait(lambda: time.monotonic() - start > seconds)


def snap(viewer: napari.Viewer, name: str) -> None:
    if WANTED and name not in WANTED:
        return
    settle()
    path = OUT / f"{name}.png"
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print("wrote", path)


def annotate_and_train(viewer: napari.Viewer, image: np.ndarray, truth: np.ndarray) -> None:
    """Steps 1 and 2: paint the ground truth, mark regions, train; snap each."""
    # 1. Annotate: ground truth painted inside a training rectangle, plus a validation one.
    annotate = AnnotateWidget(viewer)
    dock = viewer.window.add_dock_widget(annotate, name="Annotate", area="right")
    annotate.reset_choices()
    gt = annotate.new_ground_truth()
    regions = annotate.show_regions()
    h, w = image.shape
    train_box, val_box = (slice(0, h), slice(0, 2 * w // 3)), (slice(0, h), slice(2 * w // 3, w))
    for box, role in ((train_box, "train"), (val_box, "val")):
        gt.data[box] = np.where(truth[box] > 0, truth[box], gt.data[box])
        corners = [[box[0].start, box[1].start], [box[0].stop - 1, box[1].stop - 1]]
        regions.feature_defaults["role"] = role
        regions.add_rectangles(np.array(corners, float))
    gt.refresh()
    annotate.refresh()
    viewer.layers.selection.active = gt
    snap(viewer, "annotate")
    viewer.window.remove_dock_widget(dock)

    # 2. Train with the live plot and the live preview.
    trainer = TrainWidget(viewer)
    dock = viewer.window.add_dock_widget(trainer, name="Train", area="right")
    trainer.reset_choices()
    trainer.settings.device.setCurrentText("cpu")
    trainer.settings.time_budget.setValue(TRAIN_SECONDS)
    trainer.start()
    wait(lambda: len(trainer.plot.epochs) >= 6)
    snap(viewer, "train")
    wait(lambda: not trainer.is_busy)
    viewer.window.remove_dock_widget(dock)
    assert current_model.model is not None, "training did not produce a model"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    viewer = napari.Viewer(title="napari-live-unet")
    viewer.window._qt_window.resize(1500, 950)
    _, image, truth = next(s for s in load_sample("train") if s[0].endswith("_crop"))
    viewer.add_image(image, name="nuclei")

    if QUICK:
        current_model.set(load_model_source(STARTER_MODEL), f"{STARTER_MODEL} (built-in)")
    else:
        annotate_and_train(viewer, image, truth)

    # 3. Predict the image and show the instance labels.
    predictor = PredictWidget(viewer)
    viewer.window.add_dock_widget(predictor, name="Predict", area="right")
    predictor.reset_choices()
    predictor.image_combo.value = viewer.layers["nuclei"]
    predictor.predict()
    wait(lambda: "nuclei predictions" in viewer.layers and not predictor.is_busy)
    for layer in viewer.layers:
        layer.visible = layer.name in ("nuclei", "nuclei predictions")
    snap(viewer, "predict")

    # 4. Where to correct next: the doubt map under the predictions' outlines, and the
    # ranked list; go to the most doubtful labelled object clear of the image's border.
    viewer.layers["nuclei doubt"].visible = True
    viewer.layers["nuclei predictions"].contour = 2
    doubt = predictor.doubt
    inside = [
        row
        for row, entry in enumerate(doubt.entries)
        if not entry.missed
        and all(a > 0 and b < n for (a, b), n in zip(entry.doubt.bbox, image.shape, strict=True))
    ]
    doubt.go_to(inside[0] if inside else 0)
    area = predictor.findChild(QScrollArea)
    if area is not None:
        area.ensureWidgetVisible(doubt)
    camera_of(viewer).zoom *= 2
    snap(viewer, "doubt")
    viewer.close()


if __name__ == "__main__":
    main()
