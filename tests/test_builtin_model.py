"""The built-in starter model: shipped in the package, used by name, fitted to any image."""

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from napari_live_unet.cli import main
from napari_live_unet.engine import (
    STARTER_MODEL,
    AdaptOptions,
    EpochEnd,
    InputError,
    Notice,
    TrainConfig,
    TrainingFinished,
    builtin_model_names,
    estimate_diameter,
    load_folder_pairs,
    load_model_source,
    resolve_model,
    train,
)
from napari_live_unet.engine.image_adapter import resize
from napari_live_unet.engine.metrics import dataset_counts
from napari_live_unet.engine.sample_data import load_sample, sample_folder

PACKAGE = Path(__import__("napari_live_unet").__file__).parent


@pytest.fixture(scope="module")
def starter():
    return load_model_source(STARTER_MODEL)


@pytest.fixture(scope="module")
def sample():
    _, image, labels = load_sample("test")[0]
    return image, labels


def _ap50(truth, predicted) -> float:
    return dataset_counts([truth], [predicted], (0.5,))[0].ap


def _package_files() -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in PACKAGE.rglob("*") if "__pycache__" not in str(p)}


def test_built_in_models_are_listed_and_resolved_by_name():
    assert STARTER_MODEL in builtin_model_names()
    path = resolve_model(STARTER_MODEL)
    assert path.parent == PACKAGE / "models" and path.stat().st_size <= 10_000_000
    with pytest.raises(InputError, match="unknown model 'nucleii'.*Built-in models: nuclei"):
        resolve_model("nucleii")
    with pytest.raises(InputError, match="model file not found"):
        resolve_model("missing/model.pt")


def test_starter_describes_itself(starter):
    info = starter.info
    for key in ("name", "description", "training_data", "licence", "command", "test_ap"):
        assert info.get(key), key
    assert "CC0" in info["licence"] and "DSB2018" in info["training_data"]
    assert starter.input.diameter > 0 and starter.input.image_polarity == "auto"


def test_starter_segments_the_sample_without_training_and_writes_nothing(starter, sample):
    image, truth = sample
    before = _package_files()
    labels = starter.segment(image)
    assert labels.shape == truth.shape
    assert _ap50(truth, labels) >= 0.65  # 0.71 when the starter shipped
    assert _package_files() == before  # nothing written into the package folder


def test_rgb_and_inverted_images_predict_like_the_original(starter, sample):
    image, truth = sample
    original = _ap50(truth, starter.segment(image))
    rgb = np.repeat(image[..., None], 3, axis=-1)
    inverted_rgb = 255 - rgb  # dark nuclei on a bright background, in colour
    for variant in (rgb, inverted_rgb, 255 - image):
        assert _ap50(truth, starter.segment(variant)) >= original - 0.05


def test_rescaled_image_predicts_at_the_input_shape(starter, sample):
    image, truth = sample
    big = resize(image[None].astype(np.float32), (2 * image.shape[0], 2 * image.shape[1]))[0]
    big_truth = resize(truth[None], big.shape, nearest=True)[0]
    diameter = estimate_diameter(truth)
    at_size = _ap50(truth, starter.segment(image, adapt=AdaptOptions(diameter=diameter)))
    labels = starter.segment(big, adapt=AdaptOptions(diameter=2 * diameter))
    assert labels.shape == big.shape
    assert _ap50(big_truth, labels) >= at_size - 0.1
    # a wrong diameter (twice the truth) still gives labels of the input's shape
    wrong = starter.segment(image, adapt=AdaptOptions(diameter=2 * diameter))
    assert wrong.shape == image.shape


def test_fine_tuning_scores_the_start_first_and_keeps_it_when_training_fails(starter):
    folder = sample_folder("train")
    pairs = load_folder_pairs(folder / "images", folder / "labels")
    config = TrainConfig(
        epochs=2,
        steps_per_epoch=3,
        batch_size=4,
        patch_size=64,
        learning_rate=50.0,  # training made to fail validation
        val_fraction=0.3,
        val_ap_every=1,
        tune_max_pixels=300_000,
        mixed_precision=False,
    )
    events = list(train(pairs, config, initial_model=starter, device="cpu"))
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert epochs[0].epoch == 0 and epochs[0].step == 0 and epochs[0].val_loss is not None
    finished = events[-1]
    assert isinstance(finished, TrainingFinished) and finished.kept_start
    assert any("Kept the starting model" in e.message for e in events if isinstance(e, Notice))
    kept = finished.model.network.state_dict()
    for key, value in starter.network.state_dict().items():
        assert np.array_equal(kept[key].numpy(), value.numpy()), key


def test_cli_uses_built_in_names_and_refuses_bad_options(tmp_path, capsys):
    folder = sample_folder("test")
    out = tmp_path / "pred"
    base = ["predict", "--images", str(folder / "images"), "--out", str(out), "--device", "cpu"]
    assert main([*base, "--model", STARTER_MODEL]) == 0
    assert len(list(out.glob("*.tif"))) == 1
    capsys.readouterr()
    bad = [
        (["--model", "nucleii"], "unknown model 'nucleii'"),
        (["--model", STARTER_MODEL, "--diameter", "0"], "diameter"),
        (["--model", STARTER_MODEL, "--diameter", "-1"], "diameter"),
        (["--model", STARTER_MODEL, "--diameter", "nan"], "diameter"),
        (["--model", STARTER_MODEL, "--channel", "-1"], "channel"),
        (["--model", STARTER_MODEL, "--channel", "2"], "channel 2 does not exist"),
    ]
    fresh = tmp_path / "fresh"
    for extra, message in bad:
        argv = [*base[:4], str(fresh), *base[5:], *extra]
        assert main(argv) == 2, extra
        err = capsys.readouterr().err
        assert "error:" in err and message in err, err
        assert not fresh.exists()
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith(f"{STARTER_MODEL}:") and "CC0" in listed


@pytest.mark.slow
def test_built_in_model_loads_from_the_built_wheel(tmp_path):
    root = Path(__file__).parents[1]
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=root,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert f"napari_live_unet/models/{STARTER_MODEL}.pt" in zf.namelist()
        zf.extractall(tmp_path / "installed")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path / "installed")!r})
        import napari_live_unet
        assert napari_live_unet.__file__.startswith({str(tmp_path)!r}), napari_live_unet.__file__
        from napari_live_unet.engine import load_model_source
        from napari_live_unet.engine.sample_data import load_sample
        _, image, labels = load_sample("test")[0]
        assert load_model_source("nuclei").segment(image).max() > 10
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
