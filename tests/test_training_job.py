"""The training job's inputs: folders, starting points, snapshots of layers (no Qt)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_live_unet.engine import ModelConfig, SegmentationModel, save_model
from napari_live_unet.engine.annotation_set import AnnotatedImage, save_annotation_set
from napari_live_unet.engine.errors import InputError
from napari_live_unet.engine.regions import Region
from napari_live_unet.layers.training_job import StartChoice, build_pairs, starting_model

from .conftest import synthetic_nuclei, write_dataset


def test_a_folder_of_images_and_labels_is_training_data(tmp_path):
    write_dataset(tmp_path, n_images=2)
    train, val = build_pairs([], str(tmp_path))
    assert len(train) == 2 and val == []


def test_an_annotation_set_brings_its_validation_regions(tmp_path):
    image, labels = synthetic_nuclei((64, 64), n=6, seed=4)
    square = np.array([[0, 0], [0, 63], [31, 63], [31, 0]], float)
    regions = [Region("train", (), square), Region("val", (), square + np.array([32, 0]))]
    save_annotation_set(tmp_path, [AnnotatedImage("cells", image, labels, regions, 2, None)])
    train, val = build_pairs([], str(tmp_path))
    assert len(train) == 1 and len(val) == 1


@pytest.mark.parametrize("content", ["empty", "other files"])
def test_a_folder_that_is_neither_is_refused_with_what_is_expected(tmp_path, content):
    if content == "other files":
        (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="annotation set .* images/ and labels/"):
        build_pairs([], str(tmp_path))
    with pytest.raises(InputError, match="no training data"):
        build_pairs([], None)


def test_starting_points(tmp_path):
    current = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    assert starting_model(StartChoice("current", model=current), 2, "distance") == (current, None)
    assert starting_model(StartChoice("scratch"), 2, "distance") == (None, None)

    path = save_model(current, tmp_path / "start.pt")
    loaded, note = starting_model(StartChoice("file", str(path)), 2, "distance")
    assert loaded is not None and loaded.config == current.config and note is None

    starter, note = starting_model(StartChoice("builtin", "nuclei"), 2, "distance")
    assert starter is not None and note is None
    # The built-in starter is 2D distance-mode only: 3D data or boundary mode say why.
    for ndim, mode, why in ((3, "distance", "3D volumes"), (2, "boundary", "boundary mode")):
        model, note = starting_model(StartChoice("builtin", "nuclei"), ndim, mode)
        assert model is None and "from scratch" in note and why in note


def test_training_from_the_viewer_leaves_a_core_to_it(tmp_path, monkeypatch):
    # Every core training starves the GUI thread and the renderer (issue 11, item 18): the
    # job trains on all cores but one, and gives them back when it ends.
    import threading

    import torch

    from napari_live_unet.engine.config import TrainConfig
    from napari_live_unet.layers import training_job as job

    seen: list[int] = []

    def fake_train(*_args, **_kwargs):
        seen.append(torch.get_num_threads())
        yield "event"

    monkeypatch.setattr(job, "train", fake_train)
    monkeypatch.setattr(job.os, "cpu_count", lambda: 4)
    write_dataset(tmp_path, n_images=2)
    settings = job.TrainingSettings(
        TrainConfig(epochs=1), lambda ndim, ch: ModelConfig(ndim=ndim), "distance", "cpu"
    )
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        events = list(
            job.training_job([], str(tmp_path), settings, StartChoice("scratch"), threading.Event())
        )
        assert events == ["event"] and seen == [3]
        assert torch.get_num_threads() == 4  # restored
    finally:
        torch.set_num_threads(before)
