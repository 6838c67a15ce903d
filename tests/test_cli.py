"""The ``live-unet`` command end to end on a tiny dataset, and its bad-input messages."""

import numpy as np
import pytest
import tifffile

from napari_live_unet.cli import main
from napari_live_unet.engine.model_file import load_model

from .conftest import predict_argv, write_dataset

TINY = [
    "--base-channels",
    "4",
    "--depth",
    "2",
    "--patch-size",
    "32",
    "--batch-size",
    "4",
    "--steps-per-epoch",
    "3",
    "--device",
    "cpu",
]


def _train_argv(images, labels, out, epochs="1"):
    return [
        "train",
        "--images",
        str(images),
        "--labels",
        str(labels),
        "--out",
        str(out),
        "--epochs",
        epochs,
        *TINY,
    ]


def _train(images, labels, out):
    return main(_train_argv(images, labels, out, epochs="2"))


def _expect_error(capsys, argv, pattern, out_path=None):
    """The command fails with a message containing ``pattern`` and writes nothing."""
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "error:" in err and pattern in err, err
    if out_path is not None:
        assert not out_path.exists()


@pytest.mark.slow
def test_train_predict_evaluate(dataset, tmp_path, capsys):
    images, labels = dataset
    model = tmp_path / "model.pt"
    assert _train(images, labels, model) == 0
    assert model.is_file()
    out = tmp_path / "pred"
    assert main([*predict_argv(model, images, out), "--save-maps"]) == 0
    for name in ("img0", "img1", "img2", "img3"):
        pred = tifffile.imread(out / f"{name}.tif")
        assert pred.shape == (96, 96) and np.issubdtype(pred.dtype, np.integer)
        assert tifffile.imread(out / f"{name}_maps.tif").shape == (2, 96, 96)
        (out / f"{name}_maps.tif").unlink()
    capsys.readouterr()
    assert main(["evaluate", "--labels", str(labels), "--pred", str(out)]) == 0
    text = capsys.readouterr().out
    for t in ("0.5", "0.6", "0.7", "0.8", "0.9"):
        assert f"\n{t}  " in text
    assert "TP" in text and "FN" in text


def test_evaluate_perfect_prediction(dataset, capsys):
    _, labels = dataset
    assert main(["evaluate", "--labels", str(labels), "--pred", str(labels)]) == 0
    assert "0.5  1.0000" in capsys.readouterr().out


def test_evaluate_names_missing_predictions_and_shape_mismatch(dataset, tmp_path, capsys):
    _, labels = dataset
    pred = tmp_path / "pred"
    pred.mkdir()
    tifffile.imwrite(pred / "img0.tif", np.zeros((96, 96), np.uint16))
    _expect_error(
        capsys, ["evaluate", "--labels", str(labels), "--pred", str(pred)], "no prediction for img1"
    )
    for i in (1, 2, 3):
        tifffile.imwrite(pred / f"img{i}.tif", np.zeros((96, 90), np.uint16))
    _expect_error(capsys, ["evaluate", "--labels", str(labels), "--pred", str(pred)], "(96, 90)")


def test_shape_mismatch_named(dataset, tmp_path, capsys):
    images, labels = dataset
    tifffile.imwrite(labels / "img1.tif", np.ones((90, 96), np.uint16))
    out = tmp_path / "m.pt"
    _expect_error(capsys, _train_argv(images, labels, out), "(96, 96)", out)


def test_float_labels(dataset, tmp_path, capsys):
    images, labels = dataset
    tifffile.imwrite(labels / "img2.tif", np.ones((96, 96), np.float32))
    out = tmp_path / "m.pt"
    # the message names the label file, not its image
    _expect_error(capsys, _train_argv(images, labels, out), str(labels / "img2.tif"), out)


def test_unmatched_names_and_empty_folder(dataset, tmp_path, capsys):
    images, labels = dataset
    (images / "img3.tif").rename(images / "extra.tif")
    out = tmp_path / "m.pt"
    _expect_error(capsys, _train_argv(images, labels, out), "extra", out)
    empty = tmp_path / "empty"
    empty.mkdir()
    _expect_error(capsys, _train_argv(empty, labels, out), "no .tif images", out)


def test_labels_without_objects(dataset, tmp_path, capsys):
    images, labels = dataset
    tifffile.imwrite(labels / "img0.tif", np.zeros((96, 96), np.uint16))
    out = tmp_path / "m.pt"
    _expect_error(capsys, _train_argv(images, labels, out), "no objects", out)


def test_nan_pixels_and_unreadable_tiff(dataset, tmp_path, capsys):
    images, labels = dataset
    tifffile.imwrite(images / "img1.tif", np.full((96, 96), np.nan, np.float32))
    out = tmp_path / "m.pt"
    _expect_error(capsys, _train_argv(images, labels, out), "NaN", out)
    (images / "img1.tif").write_bytes(b"garbage")
    _expect_error(capsys, _train_argv(images, labels, out), "not a readable TIFF", out)


@pytest.mark.parametrize("device,message", [("tpu", "unknown device"), ("cuda:7", "not available")])
def test_bad_device(dataset, tmp_path, capsys, device, message):
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    images, labels = dataset
    out = tmp_path / "m.pt"
    argv = _train_argv(images, labels, out)
    argv[argv.index("--device") + 1] = device
    _expect_error(capsys, argv, message, out)


def test_bad_numbers_rejected_before_training(dataset, tmp_path, capsys):
    images, labels = dataset
    out = tmp_path / "m.pt"
    _expect_error(
        capsys, [*_train_argv(images, labels, out), "--batch-size", "0"], "--batch-size", out
    )
    argv = [
        "train",
        "--images",
        str(images),
        "--labels",
        str(labels),
        "--out",
        str(out),
        "--time-budget",
        "-5",
        "--device",
        "cpu",
    ]
    _expect_error(capsys, argv, "--time-budget", out)
    _expect_error(capsys, _train_argv(images, labels, tmp_path), "is a folder")
    _expect_error(
        capsys, [*_train_argv(images, labels, out), "--patch-size", "4"], "patch_size", out
    )


def test_small_images_are_padded_not_rejected(tmp_path):
    images, labels = write_dataset(tmp_path / "small", n_images=3, shape=(24, 20))
    assert _train(images, labels, tmp_path / "m.pt") == 0


def test_predict_refuses_bad_inputs_before_writing(dataset, tmp_path, capsys):
    images, labels = dataset
    model = tmp_path / "model.pt"
    assert _train(images, labels, model) == 0
    capsys.readouterr()
    tifffile.imwrite(images / "img3.tif", np.full((96, 96), np.inf, np.float32))
    out = tmp_path / "pred"
    predict = predict_argv(model, images, out)
    _expect_error(capsys, predict, "img3.tif", out)
    _expect_error(
        capsys,
        [
            "predict",
            "--model",
            str(images / "img0.tif"),
            "--images",
            str(images),
            "--out",
            str(out),
        ],
        "model",
        out,
    )
    _expect_error(
        capsys,
        ["predict", "--model", str(model), "--images", str(images), "--out", str(images)],
        "overwritten",
    )


def test_help_on_every_command(capsys):
    for cmd in ([], ["train"], ["predict"], ["evaluate"], ["demo"], ["models"]):
        with pytest.raises(SystemExit) as exc:
            main([*cmd, "--help"])
        assert exc.value.code == 0
        assert "usage: live-unet" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_runs_on_bundled_sample(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--time-budget", "8", "--device", "cpu"]) == 0
    assert (out / "model.pt").is_file()
    for stage in ("starter", "fine-tuned"):  # zero-shot first, then after fine-tuning
        preds = list((out / "predictions" / stage).glob("*.tif"))
        assert len(preds) == 1 and tifffile.imread(preds[0]).max() > 0
    printed = capsys.readouterr().out
    assert printed.index("no training") < printed.index("Fine-tuning")
    assert "starter (no training)" in printed and "fine-tuned" in printed
    # Every model file says what made it, the demo's too.
    record = load_model(out / "model.pt").record
    assert record["start_model"]["kind"] == "builtin" and record["data"]
    assert record["schedule"]["steps"] > 0


def test_predict_doubt_writes_the_map_and_ranked_objects_beside_the_labels(dataset, tmp_path):
    import csv

    images, _ = dataset
    out = tmp_path / "pred"
    assert main(predict_argv("nuclei", images, out, "--doubt")) == 0
    names = sorted(p.stem for p in images.glob("*.tif"))
    for name in names:
        labels = tifffile.imread(out / f"{name}.tif")
        doubt = tifffile.imread(out / f"{name}_doubt.tif")
        assert doubt.shape == labels.shape and doubt.dtype == np.float32
        assert doubt.min() >= 0 and doubt.max() <= 1
        with open(out / f"{name}_doubt.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        listed = {int(r["label"]) for r in rows} - {0}
        assert listed == set(np.unique(labels[labels > 0]).tolist())
        priorities = [float(r["priority"]) for r in rows]
        assert priorities == sorted(priorities, reverse=True)
    # the labels are those a plain prediction writes
    plain = tmp_path / "plain"
    assert main(predict_argv("nuclei", images, plain)) == 0
    for name in names:
        assert np.array_equal(
            tifffile.imread(plain / f"{name}.tif"), tifffile.imread(out / f"{name}.tif")
        )
    assert not list(plain.glob("*_doubt.*"))


def test_predict_doubt_refuses_block_by_block_runs_and_existing_doubt_files(
    dataset, tmp_path, capsys
):
    images, _ = dataset
    out = tmp_path / "pred"
    _expect_error(
        capsys,
        predict_argv("nuclei", images, out, "--doubt", "--workers", "1"),
        "--doubt assesses images predicted whole",
    )
    assert not out.exists() or not list(out.iterdir())  # nothing written
    out.mkdir(exist_ok=True)
    name = sorted(images.glob("*.tif"))[0].stem
    (out / f"{name}_doubt.csv").write_text("my notes")
    _expect_error(capsys, predict_argv("nuclei", images, out, "--doubt"), "--overwrite")
    assert (out / f"{name}_doubt.csv").read_text() == "my notes"
