"""``live-unet`` on anisotropic volumes: sizes from the data, voxel size from the TIFF or
``--voxel-size``, and clear errors for bad voxel sizes (issue 12)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_live_unet.cli import main
from napari_live_unet.engine import load_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from synthetic_volumes import make_volume, write_volume


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """Two small anisotropic volumes (z steps 3x the pixel size) with ImageJ metadata."""
    root = tmp_path_factory.mktemp("vol")
    for kind in ("images", "labels"):
        (root / kind).mkdir()
    for index in range(2):
        image, labels = make_volume((8, 48, 56), (3.0, 1.0, 1.0), n=8, seed=(1, index))
        write_volume(root / "images" / f"v{index}.tif", image, (3.0, 1.0, 1.0))
        write_volume(root / "labels" / f"v{index}.tif", labels, (3.0, 1.0, 1.0))
    return root


def _train_argv(root, out, *extra):
    return [
        "train",
        "--images",
        str(root / "images"),
        "--labels",
        str(root / "labels"),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--device",
        "cpu",
        *extra,
    ]


@pytest.mark.slow
def test_train_and_predict_a_volume_with_the_voxel_size_from_its_metadata(
    volumes, tmp_path, capsys
):
    model_path = tmp_path / "m.pt"
    # standard recipe: the few-shot one validates on a band of each volume, which narrows it
    assert main(_train_argv(volumes, model_path, "--recipe", "standard")) == 0
    err = capsys.readouterr().err
    # the CPU's 3D defaults (16x64x64) capped by the 8x48x56 volumes; z pooled once less
    assert "training on patches 8x48x56, batch 4, pooling (1,2,2)" in err, err
    model = load_model(model_path)
    assert model.config.voxel_size == pytest.approx((3.0, 1.0, 1.0))
    assert model.config.level_pooling[0] == (1, 2, 2)

    out = tmp_path / "pred"
    argv = ["predict", "--model", str(model_path), "--images", str(volumes / "images")]
    # declared with 1.5 µm z steps: half as many slices of 3 µm for the network, labels at
    # the input's shape
    assert main([*argv, "--out", str(out), "--device", "cpu", "--voxel-size", "1.5,1,1"]) == 0
    printed = capsys.readouterr().out
    assert "resampled ×(0.50 x 1.00 x 1.00) to the model's voxel size" in printed, printed
    labels = tifffile.imread(out / "v0.tif")
    assert labels.shape == (8, 48, 56) and np.issubdtype(labels.dtype, np.integer)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0,1,1", "positive"),
        ("-3,1,1", "positive"),
        ("nan,1,1", "positive"),
        ("3;1;1", "numbers separated by commas"),
    ],
)
def test_bad_voxel_sizes_are_refused_before_training(volumes, tmp_path, capsys, value, message):
    out = tmp_path / "m.pt"
    assert main(_train_argv(volumes, out, f"--voxel-size={value}")) != 0
    err = capsys.readouterr().err
    assert "error:" in err and message in err, err
    assert not out.exists()


def test_a_voxel_size_with_the_wrong_number_of_axes_is_refused(volumes, tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(_train_argv(volumes, out, "--voxel-size", "1,1")) != 0
    err = capsys.readouterr().err
    assert "Z,Y,X" in err and "3 numbers" in err, err
    assert not out.exists()
