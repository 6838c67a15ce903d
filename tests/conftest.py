"""Shared fixtures: small synthetic nuclei images with known instance labels."""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from napari_live_unet.engine.predict import TilesDone, predict_stream

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _closing_during_training_discards(monkeypatch):
    """No test waits on a dialog: closing away a running training discards it unless a
    test answers the question itself."""
    try:
        from napari_live_unet.widgets.close_question import RunCloseGuard, WhileTraining
    except ImportError:  # the headless environment has no Qt
        return
    monkeypatch.setattr(RunCloseGuard, "ask", lambda self, closing: WhileTraining.DISCARD)


@pytest.fixture(autouse=True, scope="session")
def _coverage_follows_qt_workers():
    """Under ``pytest --cov``, trace the code that napari's thread workers run.

    Coverage hooks Python's ``threading``; napari's workers run on QThreadPool threads,
    which that hook never sees, so job code would count as never run.
    """
    hook = sys.gettrace() and threading.gettrace()
    try:
        from napari.qt.threading import WorkerBase
    except ImportError:  # the headless environment has no napari
        hook = None
    if hook is None:
        yield
        return
    original = WorkerBase.run

    def traced_run(self):
        sys.settrace(hook)
        return original(self)

    WorkerBase.run = traced_run
    yield
    WorkerBase.run = original


def synthetic_nuclei(shape=(96, 96), n=8, radius=(6, 10), seed=0, touching=True):
    """Blurred bright discs on a dark noisy background, with their instance labels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint16)
    grid = np.indices(shape)
    next_id = 1
    for _ in range(n * 4):
        if next_id > n:
            break
        r = rng.uniform(*radius)
        centre = [rng.uniform(r, s - r) for s in shape]
        disc = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= r**2
        overlap = labels[disc] > 0
        if overlap.mean() > (0.15 if touching else 0.0):
            continue
        labels[disc & (labels == 0)] = next_id
        next_id += 1
    image = ndi.gaussian_filter((labels > 0).astype(np.float32), 1.0) * 200 + 20
    image += rng.normal(0, 8, shape)
    return np.clip(image, 0, 255).astype(np.uint8), labels


def touching_pair(shape=(64, 64), radius=10):
    """Two discs that touch along a line: one connected foreground, two objects."""
    grid = np.indices(shape)
    cy = shape[0] // 2
    labels = np.zeros(shape, np.uint16)
    for k, cx in enumerate((shape[1] // 2 - radius + 1, shape[1] // 2 + radius - 1), start=1):
        disc = (grid[0] - cy) ** 2 + (grid[1] - cx) ** 2 <= radius**2
        labels[disc & (labels == 0)] = k
    return labels


def write_dataset(root: Path, n_images=4, shape=(96, 96), seed=0) -> tuple[Path, Path]:
    """Write images/ and labels/ folders the CLI reads; returns both paths."""
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i in range(n_images):
        img, lab = synthetic_nuclei(shape, seed=seed + i)
        tifffile.imwrite(images / f"img{i}.tif", img)
        tifffile.imwrite(labels / f"img{i}.tif", lab)
    return images, labels


def predict_argv(model, images, out, *extra) -> list[str]:
    """``live-unet predict`` arguments on the CPU: ``model`` (a path or a built-in name) on
    ``images`` into ``out``, then ``extra`` options."""
    return [
        "predict",
        "--model",
        str(model),
        "--images",
        str(images),
        "--out",
        str(out),
        "--device",
        "cpu",
        *map(str, extra),
    ]


def predict_one(network, image, low=None, high=None, progress=None, **kwargs):
    """Outputs for a single image, or None when stopped early; ``progress(done, total)``
    sees each :class:`TilesDone`."""
    stats = None if low is None else [(low, high)]
    outputs = None
    for item in predict_stream(network, [image], stats=stats, **kwargs):
        if isinstance(item, TilesDone):
            if progress is not None:
                progress(item.done, item.total)
        else:
            outputs = item
    return outputs


@pytest.fixture
def no_current_model():
    """The widgets' shared current model starts and ends each test empty."""
    from napari_live_unet.app.current_model import current_model

    current_model.set(None, "")
    yield current_model
    current_model.set(None, "")


@pytest.fixture
def dataset(tmp_path) -> tuple[Path, Path]:
    return write_dataset(tmp_path / "train")


@dataclass
class BlockedRemoval:
    """``shutil.rmtree`` patched to wait for ``release`` and record the threads it ran on."""

    release: threading.Event
    threads: list[threading.Thread]

    def on_caller(self) -> bool:
        """Whether a removal ran on this (the calling) thread."""
        return threading.current_thread() in self.threads


@pytest.fixture
def blocked_removal(monkeypatch):
    """Directory removals wait until the test sets ``release`` (at most 2 s: on the
    calling thread that freezes ``close()``), then remove as usual."""
    import shutil

    blocked = BlockedRemoval(threading.Event(), [])
    rmtree = shutil.rmtree

    def waiting_rmtree(path, *args, **kwargs):
        blocked.threads.append(threading.current_thread())
        blocked.release.wait(timeout=2)
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", waiting_rmtree)
    yield blocked
    blocked.release.set()
