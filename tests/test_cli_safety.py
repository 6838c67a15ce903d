"""The command line never writes over the user's inputs and checks outputs before working."""

import numpy as np
import pytest
import tifffile

from napari_live_unet.cli import main

from .conftest import predict_argv
from .test_cli import _expect_error, _train_argv


@pytest.fixture
def trained(dataset, tmp_path):
    images, labels = dataset
    model = tmp_path / "model.pt"
    assert main(_train_argv(images, labels, model)) == 0
    return images, labels, model


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_predict_never_writes_over_labels_or_images(trained, tmp_path, capsys):
    images, labels, model = trained
    before = _snapshot(labels), _snapshot(images)
    capsys.readouterr()
    _expect_error(capsys, predict_argv(model, images, labels), "--overwrite")
    _expect_error(capsys, predict_argv(model, images, images / "sub"), "inside the input")
    assert (_snapshot(labels), _snapshot(images)) == before
    out = tmp_path / "pred"
    assert main(predict_argv(model, images, out)) == 0
    capsys.readouterr()
    _expect_error(capsys, predict_argv(model, images, out), "already holds")
    assert main([*predict_argv(model, images, out), "--overwrite"]) == 0


def test_train_never_writes_over_an_input_and_checks_the_output_first(dataset, capsys):
    images, labels = dataset
    image = images / "img0.tif"
    before = image.read_bytes()
    _expect_error(capsys, _train_argv(images, labels, image), "inside the input")
    assert image.read_bytes() == before
    # a location that cannot be written is refused before any data is read or trained on
    _expect_error(capsys, _train_argv(images, labels, "/proc/live-unet/model.pt"), "cannot write")


def test_same_stem_twice_is_an_error_naming_both(dataset, tmp_path, capsys):
    images, labels = dataset
    tifffile.imwrite(images / "img0.TIFF", np.zeros((96, 96), np.uint8))
    _expect_error(capsys, _train_argv(images, labels, tmp_path / "m.pt"), "img0.TIFF and img0.tif")


def test_bad_numbers_get_a_clear_error_before_any_work(trained, tmp_path, capsys):
    images, labels, model = trained
    out = tmp_path / "m2.pt"
    capsys.readouterr()
    for option, value, message in [
        ("--time-budget", "nan", "time_budget"),
        ("--time-budget", "inf", "time_budget"),
        ("--learning-rate", "0", "learning_rate"),
        ("--learning-rate", "nan", "learning_rate"),
        ("--seed", "-1", "seed"),
        ("--patience", "-1", "patience"),
    ]:
        argv = [a for a in _train_argv(images, labels, out) if a not in ("--epochs", "1")]
        _expect_error(capsys, [*argv, option, value], message, out)
    for option, value, message in [
        ("--depth", "9", "depth must be an integer from 1 to 8"),  # was a ValueError traceback
        ("--base-channels", "1000", "base_channels must be an integer from 1 to 512"),
    ]:
        argv = _train_argv(tmp_path / "no-images", labels, out)  # refused before any reading
        _expect_error(capsys, [*argv, option, value], message, out)
    pred = tmp_path / "pred"
    for option, value, message in [
        ("--tile-size", "4", "too small"),  # the tiny test network needs at least 8
        ("--tile-size", "0", "too small"),
        ("--tile-size", "-3", "too small"),
        ("--batch-size", "0", "batch"),
    ]:
        _expect_error(capsys, [*predict_argv(model, images, pred), option, value], message, pred)
    demo = tmp_path / "demo"
    _expect_error(capsys, ["demo", "--out", str(demo), "--time-budget", "0"], "time-budget", demo)


@pytest.mark.slow
def test_ctrl_c_during_training_writes_the_best_model_and_exits_non_zero(dataset, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    images, labels = dataset
    out = tmp_path / "m.pt"
    argv = [a for a in _train_argv(images, labels, out) if a not in ("--epochs", "1")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_live_unet.cli", *argv, "--time-budget", "600"],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    seen = ""
    deadline = time.monotonic() + 120
    while "epoch   1" not in seen and time.monotonic() < deadline:
        seen += proc.stderr.readline()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "best model so far" in stderr and out.is_file()
    from napari_live_unet.engine import load_model

    assert load_model(out).history  # a complete, loadable model
    assert not list(tmp_path.glob(".*"))  # no partial files
