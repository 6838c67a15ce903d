"""Exporting to the BioImage Model Zoo: packages that bioimageio.core's test_model passes
offline (2D and 3D, both weight formats), that come back as the same model, and that never
overwrite a user's file."""

from __future__ import annotations

import socket
import zipfile

import numpy as np
import pytest
import torch
import yaml

from napari_live_unet.cli import main
from napari_live_unet.engine import ModelConfig, SegmentationModel
from napari_live_unet.engine.bmz.package_reader import load_bmz_package
from napari_live_unet.engine.bmz.package_writer import export_bmz_package
from napari_live_unet.engine.errors import InputError
from napari_live_unet.engine.model_file import load_model

from .conftest import synthetic_nuclei, write_dataset
from .foreign_bmz import bioimageio_leaks_ignored, write_foreign_package

pytest.importorskip("bioimageio.core")

TINY = [
    *("--base-channels", "8", "--depth", "2", "--patch-size", "32", "--batch-size", "4"),
    *("--steps-per-epoch", "10", "--epochs", "6", "--device", "cpu", "--val-ap-every", "0"),
]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network: any connection attempt fails the test; bioimageio caches under tmp."""
    monkeypatch.setenv("BIOIMAGEIO_CACHE_PATH", str(tmp_path / "bmz-cache"))

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def trained_model_file(tmp_path_factory):
    """A tiny 2D model trained by the CLI: thresholds chosen, history and run record."""
    root = tmp_path_factory.mktemp("trained")
    images, labels = write_dataset(root / "data", n_images=3, shape=(64, 64))
    out = root / "model.pt"
    argv = ["train", "--images", str(images), "--labels", str(labels), "--out", str(out)]
    assert main([*argv, *TINY]) == 0
    return out


def _test_model(path, weight_format):
    from bioimageio.core import test_model

    with bioimageio_leaks_ignored():
        return test_model(path, weight_format=weight_format)


TINY_3D = ModelConfig(
    ndim=3,
    mode="boundary",
    base_channels=4,
    depth=2,
    pooling=((1, 2, 2), (2, 2, 2)),
    kernels=((1, 3, 3), (3, 3, 3), (3, 3, 3)),
    voxel_size=(2.0, 1.0, 1.0),
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "config",
    [ModelConfig(ndim=2, mode="distance", base_channels=4, depth=2, in_channels=2), TINY_3D],
    ids=["2d-distance-2ch", "3d-boundary-anisotropic"],
)
def test_exported_packages_pass_test_model_offline_with_both_weight_formats(config, tmp_path):
    model = SegmentationModel.create(config)
    path = export_bmz_package(model, tmp_path / "model.zip")
    for weight_format in ("pytorch_state_dict", "torchscript"):
        summary = _test_model(path, weight_format)
        assert summary.status == "passed", summary.display() or weight_format
    with zipfile.ZipFile(path) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        names = set(archive.namelist())
    assert {"weights.pt", "weights_torchscript.pt", "unet.py", "README.md"} <= names
    assert "documentation" not in rdf  # spec 0.5.7.4 (ilastik) rejects it as 0.5.12 writes it
    assert all("github_user" not in a for a in rdf["authors"])
    assert [c["doi"] for c in rdf["cite"]] and all("url" not in c for c in rdf["cite"])
    (raw,) = rdf["inputs"]
    assert [s["id"] for s in raw["preprocessing"]][:2] == ["ensure_dtype", "scale_range"]
    spatial = [a for a in raw["axes"] if a.get("type") == "space"]
    steps = [a["size"]["step"] for a in spatial]
    assert steps == list(config.size_multiples)
    if config.voxel_size:
        assert [a["scale"] for a in spatial] == list(config.voxel_size)
    (out,) = rdf["outputs"]
    channels = next(a for a in out["axes"] if a.get("type") == "channel")["channel_names"]
    assert channels == ["foreground", "boundary" if config.mode == "boundary" else "distance"]
    assert all(a["halo"] > 0 for a in out["axes"] if a.get("type") == "space")
    # The architecture file needs nothing but torch: it runs outside this package.
    with zipfile.ZipFile(path) as archive:
        code = archive.read("unet.py").decode()
    runtime_imports = [line for line in code.splitlines() if line.startswith(("import ", "from "))]
    assert all(
        line.split()[1].split(".")[0] in ("__future__", "dataclasses", "typing", "torch")
        for line in runtime_imports
    ), runtime_imports


@pytest.mark.slow
def test_an_exported_model_comes_back_as_the_same_model(trained_model_file, tmp_path):
    model = load_model(trained_model_file)
    path = tmp_path / "model.zip"
    assert main(["export-bmz", str(trained_model_file), str(path)]) == 0
    back = load_bmz_package(path)
    assert back.trainable  # this plugin's own export: fine-tunable like the file
    assert back.postprocess == model.postprocess
    assert back.input == model.input and back.normalization == model.normalization
    assert back.record == model.record and back.record["data"]
    assert back.history == model.history
    image = synthetic_nuclei((80, 96), seed=5)[0].astype(np.float32)
    x = torch.from_numpy(np.random.default_rng(0).random((1, 1, 64, 64), np.float32))
    with torch.inference_mode():
        assert torch.allclose(back.network(x), model.network(x), atol=1e-4)
    labels = model.segment(image)
    assert labels.max() > 0  # the model finds objects: equal labels mean something
    np.testing.assert_array_equal(back.segment(image), labels)
    # The package's own network (what other tools run) gives the outputs predict computes.
    np.testing.assert_allclose(back.predict_outputs(image), model.predict_outputs(image), atol=1e-3)


@pytest.mark.slow
def test_the_record_of_an_export_is_shown_by_models_show(trained_model_file, tmp_path, capsys):
    path = export_bmz_package(load_model(trained_model_file), tmp_path / "model.zip")
    capsys.readouterr()
    assert main(["models", "--show", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "trained from cli" in shown and "seed" in shown


def test_an_existing_file_is_not_overwritten_without_overwrite(tmp_path, capsys):
    model_file = tmp_path / "m.pt"
    from napari_live_unet.engine import save_model

    save_model(SegmentationModel.create(ModelConfig(base_channels=4, depth=2)), model_file)
    out = tmp_path / "mine.zip"
    out.write_bytes(b"the user's own file")
    assert main(["export-bmz", str(model_file), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"the user's own file"
    assert main(["export-bmz", str(model_file), str(tmp_path / "m.pt.tar")]) == 2
    assert ".zip" in capsys.readouterr().err
    assert not (tmp_path / "m.pt.tar").exists()


def test_a_failed_package_test_writes_nothing(tmp_path, monkeypatch):
    from napari_live_unet.engine.bmz import package_writer

    def failing(package):
        raise InputError("the exported package failed bioimageio.core's test_model (x)")

    monkeypatch.setattr(package_writer, "check_package", failing)
    out = tmp_path / "model.zip"
    model = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    with pytest.raises(InputError, match="test_model"):
        export_bmz_package(model, out)
    assert list(tmp_path.iterdir()) == []


def test_another_tools_package_is_not_re_exported(tmp_path):
    from napari_live_unet.engine.bmz.output_roles import OutputRoles

    foreign = load_bmz_package(
        write_foreign_package(tmp_path / "foreign"), outputs=OutputRoles(1, 2, "boundary")
    )
    with pytest.raises(InputError, match="can only predict"):
        export_bmz_package(foreign, tmp_path / "again.zip")
    assert not (tmp_path / "again.zip").exists()
