"""A run trained in the Train dock, recorded, and re-run from the command line to the same
weights: the dock and the CLI build the same data, settings and steps from a record."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from napari_live_unet.app.current_model import current_model
from napari_live_unet.cli import main
from napari_live_unet.engine.content_hash import array_sha256
from napari_live_unet.engine.model_file import load_model
from napari_live_unet.widgets.train import TrainWidget

from .conftest import synthetic_nuclei
from .test_train_widget import tiny_settings, wait_done

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("no_current_model")]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _dock_with_sparse_regions(make_napari_viewer, by_time: bool):
    """Layers made from arrays: an image, its ground truth painted in part, and a
    training and a validation region marking what was painted."""
    viewer = make_napari_viewer()
    image, labels = synthetic_nuclei((120, 120), n=12, seed=4)
    labels[:, 100:] = 0  # the right edge left unpainted: outside both regions
    viewer.add_image(image, name="nuclei")
    viewer.add_labels(labels, name="nuclei ground truth")
    train_box = np.array([[0, 0], [0, 99], [79, 99], [79, 0]], float)
    val_box = np.array([[80, 0], [80, 99], [119, 99], [119, 0]], float)
    viewer.add_shapes(
        [train_box, val_box],
        shape_type="rectangle",
        name="nuclei regions",
        features={"role": ["train", "val"]},
    )
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    tiny_settings(widget, epochs=2, steps=3, batch=2)
    if by_time:
        widget.settings.by_time.setChecked(True)
        widget.settings.time_budget.setValue(5)
    widget.reset_choices()
    widget.preview_every.setValue(1)  # previews between epochs must not change the run
    return viewer, widget


def _save_layers(viewer, folder):
    """The layers' arrays as TIFFs named like the layers."""
    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    tifffile.imwrite(images / "nuclei.tif", viewer.layers["nuclei"].data)
    truth = viewer.layers["nuclei ground truth"]
    tifffile.imwrite(labels / "nuclei ground truth.tif", truth.data)
    return images, labels


@pytest.mark.slow
@pytest.mark.parametrize("by_time", [False, True], ids=["epochs", "time budget"])
def test_a_dock_run_re_run_from_the_cli_gives_the_same_model(
    make_napari_viewer, qtbot, tmp_path, capsys, by_time
):
    viewer, widget = _dock_with_sparse_regions(make_napari_viewer, by_time)
    assert widget.data.regions.value is viewer.layers["nuclei regions"]
    assert widget.start()
    wait_done(qtbot, widget)
    model = current_model.model
    assert model is not None
    record = model.record
    assert record["started_by"] == "napari"
    (entry,) = record["data"]
    assert entry["name"] == "nuclei" and entry["labels"]["name"] == "nuclei ground truth"
    assert entry["image"]["sha256"] == array_sha256(viewer.layers["nuclei"].data)
    assert entry["image"]["path"] is None  # made from an array, not opened from a file
    assert [r["role"] for r in entry["regions"]] == ["train", "val"]
    assert record["start_model"] == {"kind": "scratch"}
    assert record["model_config"]["base_channels"] == 8
    if by_time:
        assert record["train_config"]["time_budget"] == 5.0
        assert len(record["schedule"]["learning_rates"]) == record["schedule"]["steps"]

    images, labels = _save_layers(viewer, tmp_path / "data")
    run = tmp_path / "run.json"
    run.write_text(json.dumps(record))
    out = tmp_path / "again.pt"
    argv = ["train", "--config", str(run), "--images", str(images), "--labels", str(labels)]
    assert main([*argv, "--out", str(out)]) == 0, capsys.readouterr().err
    again = load_model(out)
    assert again.record["schedule"]["steps"] == record["schedule"]["steps"]
    gui, cli = model.network.state_dict(), again.network.state_dict()
    assert gui.keys() == cli.keys()
    for key in gui:
        assert torch.equal(gui[key].cpu(), cli[key]), key
    assert again.postprocess == model.postprocess
