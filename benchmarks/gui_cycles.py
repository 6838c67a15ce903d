"""Train/stop/continue and predict/cancel, ten times each in one viewer: what stays behind
(threads, memory, layers) after each cycle (needs a display).

    xvfb-run -a python benchmarks/gui_cycles.py --cycles 10

One viewer holds the bundled sample (``viewer.open_sample("napari-live-unet", "nuclei")``),
a larger copy of it for prediction (the sample tiled 8×8, 2048×2048, so a prediction
with the built-in model takes long enough to cancel), the Train widget (a tiny CPU run
from scratch with live preview) and the Predict widget.

Train cycle: Start, wait for the first epoch, Stop, wait until idle, Continue, wait until
it trains, Stop, wait until idle. Predict cycle (built-in ``nuclei`` model): Predict, wait
for the first tiles, Cancel, wait until idle. After each cycle (and ``gc.collect()``) it
records the resident memory (VmRSS), Qt's global thread pool's active threads (after
waiting up to 5 s for them to finish), ``threading.active_count()`` and the layers, then
prints a table and a verdict: RSS of the last cycle within 10% of the first, no thread
left running, no layers but the expected "<image> live preview" and "<image> predictions".
"""

from __future__ import annotations

import argparse
import gc
import threading
import time

import napari
import numpy as np
from qtpy.QtCore import QThreadPool
from qtpy.QtWidgets import QApplication

from napari_live_unet.widgets.predict import PredictState, PredictWidget
from napari_live_unet.widgets.train import TrainState, TrainWidget
from napari_live_unet.widgets.train_start import SCRATCH

SAMPLE = "nuclei (DSB2018 sample)"
BIG = "nuclei 2048"
EXPECTED_NEW = (" live preview", " predictions")


def wait(condition, timeout: float = 120.0) -> float:
    """Run the Qt event loop until ``condition()`` holds; returns the seconds it took."""
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {condition}")
        QApplication.processEvents()
        time.sleep(0.005)
    return time.perf_counter() - start


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def pool_threads() -> int:
    return QThreadPool.globalInstance().activeThreadCount()


def record(kind: str, cycle: int, viewer, seconds: float, note: str = "") -> dict:
    settle = wait(lambda: pool_threads() == 0, timeout=5.0) if pool_threads() else 0.0
    gc.collect()
    return {
        "kind": kind,
        "cycle": cycle,
        "seconds": seconds,
        "rss": rss_mb(),
        "pool": pool_threads(),
        "pool_settle": settle,
        "threads": threading.active_count(),
        "layers": tuple(layer.name for layer in viewer.layers),
        "note": note,
    }


def train_cycle(trainer: TrainWidget) -> dict:
    epochs = len(trainer.plot.epochs)
    assert trainer.start()
    first = wait(lambda: len(trainer.plot.epochs) > epochs)  # the first epoch ended
    trainer.stop()
    stopped = wait(lambda: not trainer.is_busy)
    assert trainer.start(continue_training=True)
    wait(lambda: trainer.state is not TrainState.PREPARING)  # data prepared: training
    trainer.stop()
    again = wait(lambda: not trainer.is_busy)
    assert trainer.state is TrainState.IDLE
    return {
        "note": f"first epoch after {first:.1f} s, idle {stopped:.1f} s and {again:.1f} s "
        "after the Stops"
    }


def predict_cycle(predictor: PredictWidget) -> dict:
    assert predictor.predict()
    first = wait(lambda: predictor.progress.value() > 0 or not predictor.is_busy)
    predictor.cancel()
    cancel = wait(lambda: not predictor.is_busy)
    assert predictor.state is PredictState.IDLE
    return {"note": f"first tiles after {first:.1f} s, idle {cancel:.1f} s after Cancel"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=10)
    args = parser.parse_args()

    viewer = napari.Viewer(show=False)
    viewer.open_sample("napari-live-unet", "nuclei")
    viewer.add_image(np.tile(viewer.layers[SAMPLE].data, (8, 8)), name=BIG)
    trainer = TrainWidget(viewer)
    viewer.window.add_dock_widget(trainer)
    predictor = PredictWidget(viewer)
    viewer.window.add_dock_widget(predictor)
    trainer.reset_choices()
    predictor.reset_choices()
    trainer.data.image.value = viewer.layers[SAMPLE]
    trainer.start_from.choose(SCRATCH)
    s = trainer.settings
    s.device.setCurrentText("cpu")
    s.model_size.setCurrentIndex(0)
    s.by_epochs.setChecked(True)
    s.epochs.setValue(10_000)
    s.steps_per_epoch.setValue(3)
    s.patch_size.setValue(32)
    s.batch_size.setValue(2)
    trainer.preview_every.setValue(1)
    predictor.device_combo.setCurrentText("cpu")
    before = set(viewer.layers)
    start_layers = tuple(layer.name for layer in viewer.layers)
    rows = [record("start", 0, viewer, 0.0)]

    for cycle in range(1, args.cycles + 1):
        t = time.perf_counter()
        note = train_cycle(trainer)["note"]
        rows.append(record("train", cycle, viewer, time.perf_counter() - t, note))
        print_row(rows[-1], start_layers)
    predictor.models.choose("nuclei (built-in)")
    wait(lambda: not predictor.is_busy)
    predictor.image_combo.value = viewer.layers[BIG]
    for cycle in range(1, args.cycles + 1):
        t = time.perf_counter()
        note = predict_cycle(predictor)["note"]
        rows.append(record("predict", cycle, viewer, time.perf_counter() - t, note))
        print_row(rows[-1], start_layers)

    verdict(rows, start_layers)
    assert set(viewer.layers) >= before
    viewer.close()


def print_row(row: dict, start_layers: tuple[str, ...]) -> None:
    new = [n for n in row["layers"] if n not in start_layers]
    print(
        f"{row['kind']:<8}{row['cycle']:>3}  {row['seconds']:6.1f} s  RSS {row['rss']:7.1f} MB"
        f"  pool {row['pool']} (settled in {row['pool_settle']:.2f} s)"
        f"  threading {row['threads']:>2}  new layers: {', '.join(new) or '-'}"
        f"  ({row['note']})",
        flush=True,
    )


def verdict(rows: list[dict], start_layers: tuple[str, ...]) -> None:
    ok = True
    for kind in ("train", "predict"):
        cycles = [r for r in rows if r["kind"] == kind]
        first, last = cycles[0]["rss"], cycles[-1]["rss"]
        growth = (last - first) / first
        within = abs(growth) <= 0.10
        ok &= within
        print(
            f"{kind}: RSS first cycle {first:.0f} MB, last {last:.0f} MB ({growth:+.1%}, "
            f"{'within' if within else 'NOT within'} 10%); "
            f"max {max(r['rss'] for r in cycles):.0f} MB"
        )
    leftover = [r for r in rows if r["pool"] != 0]
    threads = sorted({r["threads"] for r in rows})
    layer_sets = {r["layers"] for r in rows[1:]}
    new = {n for r in rows for n in r["layers"] if n not in start_layers}
    stale = {n for n in new if not n.endswith(EXPECTED_NEW)}
    # Python threads: none added by a cycle beyond those the first cycle started.
    ok &= not leftover and max(r["threads"] for r in rows[1:]) <= rows[1]["threads"]
    ok &= len(layer_sets) == 1 and not stale
    print(
        f"pool threads left running after a cycle: {len(leftover)}; "
        f"threading.active_count after cycles: {threads}; "
        f"layer sets seen: {len(layer_sets)}; unexpected layers: {sorted(stale) or 'none'}"
    )
    print("VERDICT:", "PASS" if ok else "FAIL")


if __name__ == "__main__":
    main()
