"""Opening BioImage Model Zoo packages: another tool's model through this plugin's
post-processing, and bad packages refused with a message that says what they hold."""

import socket
import zipfile

import numpy as np
import pytest
import tifffile

from napari_live_unet.cli import main
from napari_live_unet.engine import ModelConfig, SegmentationModel, save_model, train
from napari_live_unet.engine.bmz.output_roles import (
    OutputRoles,
    parse_output_roles,
    roles_from_names,
)
from napari_live_unet.engine.bmz.package_reader import OutputRolesNeeded, load_bmz_package
from napari_live_unet.engine.builtin_models import load_model_source
from napari_live_unet.engine.data import make_pair
from napari_live_unet.engine.errors import InputError
from napari_live_unet.engine.metrics import match_counts

from .conftest import predict_argv
from .foreign_bmz import disks_image, write_foreign_package

pytest.importorskip("bioimageio.core")
ROLES = OutputRoles(foreground=1, auxiliary=2, kind="boundary")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network: any connection attempt fails the test; bioimageio caches under tmp."""
    monkeypatch.setenv("BIOIMAGEIO_CACHE_PATH", str(tmp_path / "bmz-cache"))

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def foreign_zip(tmp_path_factory):
    return write_foreign_package(tmp_path_factory.mktemp("foreign"))


def matched_objects(truth, labels):
    """Number of true objects matched at IoU 0.5."""
    return match_counts(truth, labels, [0.5])[0].tp


def test_a_foreign_package_runs_through_the_plugins_post_processing(foreign_zip):
    model = load_bmz_package(foreign_zip, outputs=ROLES)
    assert model.config.mode == "boundary" and model.config.in_channels == 1
    assert not model.trainable
    image, truth = disks_image((96, 140))
    labels = model.segment(image)
    assert labels.shape == truth.shape
    assert len(np.unique(labels)) - 1 == 3
    assert matched_objects(truth, labels) == 3
    # Which channel is the foreground matters: the always-low channel finds nothing.
    swapped = load_bmz_package(foreign_zip, outputs=OutputRoles(2, 1, "boundary"))
    assert swapped.segment(image).max() == 0


def test_a_foreign_package_with_state_dict_weights_runs(tmp_path):
    path = write_foreign_package(tmp_path, weights_format="pytorch_state_dict")
    with zipfile.ZipFile(path) as archive:
        assert not any(n.endswith("weights.pt") for n in archive.namelist())
    image, truth = disks_image()
    labels = load_bmz_package(path, outputs=ROLES).segment(image)
    assert matched_objects(truth, labels) == 3


def test_a_foreign_package_without_roles_lists_its_channels(foreign_zip):
    with pytest.raises(OutputRolesNeeded) as caught:
        load_bmz_package(foreign_zip)
    assert caught.value.channels == ["out0", "out1", "out2"]
    assert "0: out0, 1: out1, 2: out2" in str(caught.value)
    assert "--bmz-outputs foreground=" in str(caught.value)


def test_channel_names_that_say_it_need_no_roles(tmp_path):
    path = write_foreign_package(tmp_path, names=["background", "foreground", "boundary"])
    model = load_model_source(path)
    image, truth = disks_image()
    assert matched_objects(truth, model.segment(image)) == 3


def test_roles_are_parsed_and_checked():
    assert parse_output_roles("foreground=1, distance=0") == OutputRoles(1, 0, "distance")
    for bad in ("foreground=1", "fg=1,boundary=2", "foreground=1,boundary=x", "foreground=1"):
        with pytest.raises(InputError, match="bmz-outputs"):
            parse_output_roles(bad)
    with pytest.raises(InputError, match="different channels"):
        parse_output_roles("foreground=1,boundary=1")
    with pytest.raises(InputError, match="exactly one"):
        parse_output_roles("foreground=0,boundary=1,distance=2")
    assert roles_from_names(["Foreground", "distance"]) == OutputRoles(0, 1, "distance")
    assert roles_from_names(["a", "b"]) is None


def test_a_channel_the_package_lacks_is_refused_naming_what_it_outputs(tmp_path):
    path = write_foreign_package(tmp_path, channels=2)
    with pytest.raises(InputError, match=r"channel 2 does not exist.*2 channel\(s\): out0, out1"):
        load_bmz_package(path, outputs=ROLES)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("not a zip", "not a BioImage Model Zoo package"),
        ("zip without a description", "not a BioImage Model Zoo package"),
        ("damaged description", "description"),
        ("corrupt weights", "TorchScript weights .* damaged"),
        ("other normalisation", "zero_mean_unit_variance"),
        ("scores, not maps", r"output maps has axes \['batch', 'channel'\], not the input's"),
    ],
)
def test_bad_packages_are_refused_with_what_is_wrong(tmp_path, foreign_zip, kind, message):
    path = tmp_path / "bad.zip"
    if kind == "not a zip":
        path.write_bytes(b"PK but not really a zip")
    elif kind == "zip without a description":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("weights.pt", b"123")
    elif kind == "other normalisation":
        path = write_foreign_package(tmp_path / "zmuv", preprocessing="zero_mean_unit_variance")
    elif kind == "scores, not maps":
        path = write_foreign_package(tmp_path / "scores", scores=True)
    else:
        with zipfile.ZipFile(foreign_zip) as src, zipfile.ZipFile(path, "w") as dst:
            for item in src.infolist():
                data = src.read(item)
                if kind == "damaged description" and item.filename == "rdf.yaml":
                    data = b"type: model\nformat_version: 0.5.4\nname: [unclosed\n"
                if kind == "corrupt weights" and item.filename == "weights.pt":
                    data = b"garbage" * 100
                dst.writestr(item, data)
    with pytest.raises(InputError, match=message):
        load_bmz_package(path, outputs=ROLES)


def test_a_foreign_model_predicts_only(foreign_zip, tmp_path):
    model = load_bmz_package(foreign_zip, outputs=ROLES)
    with pytest.raises(InputError, match="can only predict; it cannot be saved"):
        save_model(model, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()
    image, truth = disks_image()
    events = train([make_pair(image, truth)], initial_model=model, device="cpu")
    with pytest.raises(InputError, match="cannot be fine-tuned"):
        next(events)


def test_roles_for_a_plugin_model_file_are_refused(tmp_path):
    path = save_model(
        SegmentationModel.create(ModelConfig(base_channels=4, depth=2)), tmp_path / "m.pt"
    )
    with pytest.raises(InputError, match="only for BioImage Model Zoo packages"):
        load_model_source(path, outputs=ROLES)


def test_cli_predicts_with_a_foreign_package(foreign_zip, tmp_path, capsys):
    images, out = tmp_path / "images", tmp_path / "out"
    images.mkdir()
    image, truth = disks_image((80, 120))
    tifffile.imwrite(images / "a.tif", image)

    assert main(predict_argv(foreign_zip, images, out)) != 0
    assert "--bmz-outputs" in capsys.readouterr().err
    assert not (out / "a.tif").exists()

    assert (
        main(predict_argv(foreign_zip, images, out, "--bmz-outputs", "foreground=1,boundary=2"))
        == 0
    )
    labels = tifffile.imread(out / "a.tif")
    assert matched_objects(truth, labels) == 3

    assert (
        main(
            predict_argv(
                foreign_zip,
                images,
                out,
                "--bmz-outputs",
                "foreground=1,boundary=2",
                "--workers",
                "1",
            )
        )
        != 0
    )
    assert "leave out --workers" in capsys.readouterr().err
