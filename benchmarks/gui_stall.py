"""Longest freeze of napari's event loop while the train widget trains (needs a display).

    xvfb-run -a python benchmarks/gui_stall.py --runs 4

A 10 ms QTimer ticks on the GUI thread from Start until the model is ready (10 epochs of a
small CPU run, live preview every epoch); the longest gap between ticks is the longest
stall. The test suite asserts it stays under 100 ms; this prints the figures.
"""

from __future__ import annotations

import argparse
import statistics
import time

import napari
import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

from napari_live_unet.engine.sample_data import load_sample
from napari_live_unet.widgets.train import TrainWidget


def one_run() -> float:
    viewer = napari.Viewer(show=False)
    _, image, labels = load_sample("train")[0]
    viewer.add_image(image, name="nuclei")
    viewer.add_labels(labels, name="nuclei ground truth")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.reset_choices()
    widget.start_from.choose("scratch (new model)")  # the figures were taken from scratch
    s = widget.settings
    s.device.setCurrentText("cpu")
    s.by_epochs.setChecked(True)
    s.epochs.setValue(10)
    s.steps_per_epoch.setValue(10)
    s.patch_size.setValue(64)
    s.batch_size.setValue(4)
    widget.preview_every.setValue(1)
    ticks: list[float] = []
    timer = QTimer(interval=10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    widget.start()
    while widget.is_busy:
        QApplication.processEvents()
        time.sleep(0.002)
    timer.stop()
    viewer.close()
    return float(np.diff(ticks).max() * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    args = parser.parse_args()
    stalls = [one_run() for _ in range(args.runs)]
    print("longest stall per run (ms):", " ".join(f"{s:.0f}" for s in stalls))
    print(f"median {statistics.median(stalls):.0f} ms, max {max(stalls):.0f} ms")


if __name__ == "__main__":
    main()
