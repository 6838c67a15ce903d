"""Freezes of napari's event loop while the train widget trains and the user pans and
paints (needs a display).

    xvfb-run -a python benchmarks/gui_stall.py --runs 3

A shown viewer holds the bundled training sample and the Train widget (a small CPU run
from scratch: 10 epochs of 10 steps, validation data held out automatically, validation
AP every 2 epochs, live preview every epoch, the threshold search at the end). While it
trains, a 30 ms timer plays the user: it pans the camera and paints a brush stroke into
the ground-truth layer through napari's public API. The Qt event loop runs for real
(``QEventLoop.exec``, what ``napari.run`` runs); a 10 ms timer ticks on the GUI thread
from Start until the model is ready, and the gaps between ticks are the stalls.

Prints, per run, the median, 95th percentile and worst gap; the time each kind of
training event took on the GUI thread (the widget's event handler, wrapped); and, for the
worst gaps, what overlapped them: an event handler, the user's pan or paint, or nothing
of ours on the GUI thread (then the last event tells the phase the worker was in, e.g.
validation AP after ``EpochEnd``, the threshold search after ``Notice``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import napari
import numpy as np
from qtpy.QtCore import QEventLoop, QTimer

from napari_live_unet.engine.sample_data import load_sample
from napari_live_unet.widgets.train import TrainWidget


@dataclass
class Trace:
    """What happened on the GUI thread, as (label, start, end) intervals."""

    ticks: list[float] = field(default_factory=list)
    calls: list[tuple[str, float, float]] = field(default_factory=list)
    samples: list[tuple[float, str, str]] = field(default_factory=list)

    def tick(self) -> None:
        self.ticks.append(time.perf_counter())

    def timed(self, label, func):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.calls.append((label, t0, time.perf_counter()))

        return wrapper


class StackSampler(threading.Thread):
    """While the GUI thread has not ticked for 30 ms, samples what it and the other threads
    run (every 5 ms): says whether a stall is our Python code, Qt/vispy drawing, or the
    worker holding the GIL (then the sampler itself gets to run late)."""

    def __init__(self, trace: Trace) -> None:
        super().__init__(daemon=True)
        self.trace, self.main = trace, threading.main_thread().ident
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.005):
            ticks = self.trace.ticks
            now = time.perf_counter()
            if not ticks or now - ticks[-1] < 0.030:
                continue
            frames = sys._current_frames()
            main = _where(frames.get(self.main))
            others = [
                _where(f) for ident, f in frames.items() if ident not in (self.main, self.ident)
            ]
            busy = [w for w in others if w and "wait" not in w and "_bootstrap" not in w]
            self.trace.samples.append((now, main, " / ".join(busy)))


def _where(frame, depth: int = 3) -> str:
    """The innermost frames of a stack, ours and napari's/vispy's first."""
    names = []
    while frame is not None and len(names) < 40:
        code = frame.f_code
        names.append(f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_name}")
        frame = frame.f_back
    return " < ".join(names[:depth])


class User:
    """Every 30 ms: pan a little (the camera circles) and paint a short brush stroke."""

    def __init__(self, viewer, labels, trace: Trace) -> None:
        self.viewer, self.labels, self.trace = viewer, labels, trace
        self.centre = np.asarray(viewer.scene.camera.center, float)
        self.n = 0
        self.timer = QTimer(interval=30)
        self.timer.timeout.connect(self.act)

    def act(self) -> None:
        self.n += 1
        angle = self.n * 0.2
        t0 = time.perf_counter()
        offset = 20 * np.array([0, np.cos(angle), np.sin(angle)])[-len(self.centre) :]
        self.viewer.scene.camera.center = tuple(self.centre + offset)
        t1 = time.perf_counter()
        h, w = self.labels.data.shape[-2:]
        y = h * (0.2 + 0.6 * (0.5 + 0.5 * np.sin(angle * 0.37)))
        x = w * (0.2 + 0.6 * (0.5 + 0.5 * np.cos(angle * 0.23)))
        self.labels.brush_size = 6
        for k in range(3):  # a stroke: a few dabs along a line; a new object every ~1 s
            self.labels.paint((y + 2 * k, x + 3 * k), 1000 + self.n // 30)
        t2 = time.perf_counter()
        self.trace.calls += [("pan", t0, t1), ("paint", t1, t2)]


def one_run(
    show: bool, interact: bool, epochs: int, steps: int, idle: float = 0.0, pacing: bool = True
) -> dict:
    viewer = napari.Viewer(show=show)
    _, image, labels = load_sample("train")[0]
    viewer.add_image(image, name="nuclei")
    gt = viewer.add_labels(labels, name="nuclei ground truth")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.reset_choices()
    widget.start_from.choose("scratch (new model)")
    s = widget.settings
    s.device.setCurrentText("cpu")
    s.by_epochs.setChecked(True)
    s.epochs.setValue(epochs)
    s.steps_per_epoch.setValue(steps)
    s.patch_size.setValue(64)
    s.batch_size.setValue(4)
    widget.preview_every.setValue(1)
    if not pacing:  # the worker does not wait for previews to be drawn
        widget.preview.pacing.timeout = 0.0
    viewer.layers.selection.active = gt

    trace = Trace()
    # The handlers the widget hands to its JobRunner at Start: time each call by event type.
    on_event = widget._on_event
    widget._on_event = lambda event: trace.timed(type(event).__name__, on_event)(event)
    widget._on_end = trace.timed("JobEnd", widget._on_end)
    for name in ("add_epoch", "add_ap"):
        setattr(widget.plot, name, trace.timed(f"plot.{name}", getattr(widget.plot, name)))
    widget.preview.show = trace.timed("preview.show", widget.preview.show)

    user = User(viewer, gt, trace)
    ticker = QTimer(interval=10)
    ticker.timeout.connect(trace.tick)
    loop = QEventLoop()
    # The window is shown and drawn, and the user has painted once, before we measure:
    # napari's first Labels.paint of a session takes 300-460 ms with or without training.
    QTimer.singleShot(500, user.act)
    QTimer.singleShot(1500, loop.quit)
    loop.exec()
    trace.calls.clear()
    sampler = StackSampler(trace)
    sampler.start()
    watcher = QTimer(interval=20)
    watcher.timeout.connect(lambda: None if widget.is_busy else loop.quit())
    ticker.start()
    if interact:
        user.timer.start()
    started = time.perf_counter()
    if idle:  # the floor: the same user on the same viewer, no training
        QTimer.singleShot(int(idle * 1000), loop.quit)
    else:
        widget.start()
        watcher.start()
    loop.exec()
    seconds = time.perf_counter() - started
    sampler.done.set()
    for timer in (ticker, user.timer, watcher):
        timer.stop()
    viewer.close()
    return analyse(trace, seconds)


def analyse(trace: Trace, seconds: float) -> dict:
    ticks = np.asarray(trace.ticks)
    gaps = np.diff(ticks) * 1000
    events = sorted(
        (c for c in trace.calls if c[0] not in ("pan", "paint") and "." not in c[0]),
        key=lambda c: c[1],
    )
    handler_ms: dict[str, list[float]] = defaultdict(list)
    for label, t0, t1 in trace.calls:
        handler_ms[label].append((t1 - t0) * 1000)
    worst = []
    for i in np.argsort(gaps)[::-1][:6]:
        a, b = ticks[i], ticks[i + 1]
        overlapping = [
            f"{label} {1000 * (t1 - t0):.0f}"
            for label, t0, t1 in trace.calls
            if t0 < b and t1 > a and (t1 - t0) > 0.002
        ]
        before = [(label, t0) for label, t0, _ in events if t0 <= a]
        phase = f"{before[-1][0]} +{1000 * (a - before[-1][1]):.0f} ms" if before else "start"
        stacks = Counter(
            f"GUI: {main} || worker: {other or '-'}"
            for t, main, other in trace.samples
            if a < t <= b + 0.005
        )
        worst.append((float(gaps[i]), phase, overlapping, stacks.most_common(2)))
    return {
        "seconds": seconds,
        "median": float(np.median(gaps)),
        "p95": float(np.percentile(gaps, 95)),
        "worst": float(gaps.max()),
        "n": int(gaps.size),
        "handlers": handler_ms,
        "worst_gaps": worst,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--hidden", action="store_true", help="do not show the viewer window")
    parser.add_argument("--no-user", action="store_true", help="no panning or painting")
    parser.add_argument(
        "--idle", type=float, default=0.0, help="measure this many seconds without training"
    )
    parser.add_argument("--stacks", action="store_true", help="where the threads were in a gap")
    parser.add_argument(
        "--no-pacing", action="store_true", help="train on while previews are drawn"
    )
    parser.add_argument(
        "--switch-interval", type=float, help="sys.setswitchinterval in ms (Python's: 5)"
    )
    args = parser.parse_args()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval / 1000)
    results = []
    for run in range(args.runs):
        r = one_run(
            not args.hidden, not args.no_user, args.epochs, args.steps, args.idle,
            not args.no_pacing,
        )  # fmt: skip
        results.append(r)
        print(
            f"run {run + 1}: {r['seconds']:.1f} s, {r['n']} gaps: median {r['median']:.1f} ms, "
            f"p95 {r['p95']:.1f} ms, worst {r['worst']:.0f} ms"
        )
        for label, ms in sorted(r["handlers"].items()):
            print(
                f"    {label:<18} x{len(ms):<4} median {statistics.median(ms):6.1f} ms"
                f"  max {max(ms):6.1f} ms"
            )
        print("    worst gaps (ms): phase (last event before the gap) | overlapping calls (ms)")
        for gap, phase, overlapping, stacks in r["worst_gaps"]:
            print(f"    {gap:6.0f}  {phase:<28} | {', '.join(overlapping) or '-'}")
            for stack, count in stacks if args.stacks else ():
                print(f"            {count}x {stack}")
    print(
        "over all runs: median gap {:.1f} ms, p95 {:.1f} ms, worst {:.0f} ms "
        "(worst per run: {})".format(
            statistics.median(r["median"] for r in results),
            max(r["p95"] for r in results),
            max(r["worst"] for r in results),
            " ".join(f"{r['worst']:.0f}" for r in results),
        )
    )


if __name__ == "__main__":
    main()
