"""BMZ packages in a real viewer: dropped on it, or chosen in the Predict dock, which asks
which output channel of another tool's model is which."""

import zipfile

import numpy as np
import pytest

from napari_live_unet.app.current_model import current_model
from napari_live_unet.engine import ModelConfig, SegmentationModel
from napari_live_unet.engine.bmz.output_roles import OutputRoles
from napari_live_unet.engine.metrics import match_counts
from napari_live_unet.layers.model_reader import get_reader
from napari_live_unet.widgets import model_chooser
from napari_live_unet.widgets.output_roles_dialog import OutputRolesDialog
from napari_live_unet.widgets.predict import PredictWidget

from .foreign_bmz import disks_image, write_foreign_package

pytest.importorskip("bioimageio.core")
pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("no_current_model")]
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def foreign_zip(tmp_path_factory):
    return write_foreign_package(tmp_path_factory.mktemp("foreign"))


@pytest.fixture
def dock(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def test_choosing_a_foreign_package_asks_which_output_is_which(
    dock, qtbot, foreign_zip, monkeypatch
):
    viewer, widget = dock
    asked = []

    def answer(package, channels, parent=None):
        asked.append((package, channels))
        return OutputRoles(1, 2, "boundary")

    monkeypatch.setattr(model_chooser, "ask_output_roles", answer)
    widget.load_model_file(foreign_zip)
    qtbot.waitUntil(lambda: current_model.model is not None, timeout=WAIT_MS)
    assert asked == [("foreign.zip", ["out0", "out1", "out2"])]
    assert current_model.source == str(foreign_zip)
    assert "another tool's BMZ model, boundary mode" in widget.model_label.text()
    assert "predicts only" in widget.model_label.text()

    image, truth = disks_image()
    layer = viewer.add_image(image, name="disks")
    widget.image_combo.value = layer
    widget.predict_button.click()
    qtbot.waitUntil(lambda: not widget.is_busy, timeout=WAIT_MS)
    labels = np.asarray(viewer.layers["disks predictions"].data)
    assert len(np.unique(labels)) - 1 == 3
    assert match_counts(truth, labels, [0.5])[0].tp == 3


def test_cancelling_the_question_keeps_the_current_model(dock, qtbot, foreign_zip, monkeypatch):
    _, widget = dock
    current = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    current_model.set(current, "test model")
    monkeypatch.setattr(model_chooser, "ask_output_roles", lambda *a, **k: None)
    widget.load_model_file(foreign_zip)
    qtbot.waitUntil(lambda: "No output channels chosen" in widget.status.text(), timeout=WAIT_MS)
    assert current_model.model is current


def test_a_bad_package_keeps_the_current_model_and_says_why(dock, qtbot, tmp_path):
    _, widget = dock
    current = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    current_model.set(current, "test model")
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("rdf.yaml", "type: model\nname: [unclosed\n")
    widget.load_model_file(bad)
    qtbot.waitUntil(lambda: not widget.is_busy, timeout=WAIT_MS)
    assert "Could not load" in widget.status.text()
    assert "description" in widget.status.text()
    assert current_model.model is current


def test_the_dialog_guesses_from_names_and_needs_two_channels(qtbot):
    dialog = OutputRolesDialog("m.zip", ["background", "foreground prob", "distance"])
    qtbot.addWidget(dialog)
    assert dialog.roles() == OutputRoles(1, 2, "distance")
    dialog.auxiliary.setCurrentIndex(1)
    assert not dialog.ok_button.isEnabled()
    dialog.auxiliary.setCurrentIndex(0)
    dialog.kind.setCurrentIndex(0)
    assert dialog.ok_button.isEnabled()
    assert dialog.roles() == OutputRoles(1, 0, "boundary")


def test_the_viewer_opens_packages_and_leaves_other_zips_alone(
    make_napari_viewer, tmp_path, foreign_zip
):
    other = tmp_path / "photos.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("a.txt", "hello")
    assert get_reader(str(other)) is None
    assert get_reader(str(foreign_zip)) is not None

    named = write_foreign_package(tmp_path / "named", names=["bg", "foreground", "boundary"])
    viewer = make_napari_viewer()
    viewer.open(str(named), plugin="napari-live-unet")
    assert current_model.source == str(named)
    assert current_model.model.config.mode == "boundary"
    assert len(viewer.layers) == 0
