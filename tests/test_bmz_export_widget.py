"""The Train dock's *Export to BioImage Model Zoo…*: a package written in a worker while
the dock says it is busy, that opens again as the model it was."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from napari_live_unet.app.current_model import current_model
from napari_live_unet.engine.bmz.output_roles import OutputRoles
from napari_live_unet.engine.bmz.package_reader import load_bmz_package
from napari_live_unet.widgets import model_file_actions
from napari_live_unet.widgets.train import TrainState

from .foreign_bmz import write_foreign_package
from .test_train_widget import make_widget, wait_done

pytest.importorskip("bioimageio.core")
pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("no_current_model")]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("BIOIMAGEIO_CACHE_PATH", str(tmp_path / "bmz-cache"))

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def shown(monkeypatch):
    messages = {"info": [], "warning": []}
    for kind in messages:
        monkeypatch.setattr(model_file_actions, f"show_{kind}", messages[kind].append)
    return messages


@pytest.mark.slow
def test_export_from_the_train_dock_writes_a_package_that_opens_as_the_model(
    make_napari_viewer, qtbot, tmp_path, shown
):
    viewer, widget = make_widget(make_napari_viewer, epochs=1)
    assert not widget.export_button.isEnabled()  # no model yet
    widget.start()
    wait_done(qtbot, widget)
    assert widget.export_button.isEnabled()
    trained = current_model.model
    path = tmp_path / "nuclei.zip"
    assert widget.export_to(path)
    assert widget.state is TrainState.SAVING and not widget.start_button.isEnabled()
    assert not widget.export_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.is_busy, timeout=120_000)
    assert path.exists(), shown
    assert "test_model" in shown["info"][-1]
    back = load_bmz_package(path)
    assert back.config == trained.config and back.postprocess == trained.postprocess
    image = viewer.layers["nuclei"].data
    np.testing.assert_array_equal(back.segment(image), trained.segment(image))
    assert widget.start_button.isEnabled()


def test_another_tools_model_is_not_exported(make_napari_viewer, tmp_path, shown):
    _viewer, widget = make_widget(make_napari_viewer, epochs=1)
    foreign = load_bmz_package(
        write_foreign_package(tmp_path / "foreign"), outputs=OutputRoles(1, 2, "boundary")
    )
    current_model.set(foreign, "foreign.zip")
    assert not widget.export_to(tmp_path / "again.zip")
    assert "another tool" in shown["warning"][-1]
    assert widget.state is TrainState.IDLE and not (tmp_path / "again.zip").exists()
