"""Prediction averaged over flips: chosen in training where it gains, kept in the model
file, used by every prediction, and switched off from the CLI."""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pytest
import torch

from napari_live_unet.cli import main
from napari_live_unet.engine import (
    ModelConfig,
    Notice,
    SegmentationModel,
    TrainConfig,
    TrainingFinished,
    make_pair,
    save_model,
    train,
)
from napari_live_unet.engine.doubt import assess_doubt
from napari_live_unet.engine.flip_average import FlipAveraged, choose_flip_average
from napari_live_unet.engine.io import read_tiff, write_tiff_atomic
from napari_live_unet.engine.model_file import load_model, model_from_dict, model_to_dict
from napari_live_unet.engine.unet import activate

from .conftest import synthetic_nuclei

training_end = importlib.import_module("napari_live_unet.engine.training_end")
doubt_module = importlib.import_module("napari_live_unet.engine.doubt")


@pytest.fixture(scope="module")
def model() -> SegmentationModel:
    torch.manual_seed(0)
    model = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    # Random weights are not flip-equivariant: averaging changes the maps.
    model.network.eval()
    return model


def _plain_mean(network, x, mode="distance"):
    outs = []
    for dims in ((), (-1,), (-2,), (-2, -1)):
        raw = network(x.flip(dims) if dims else x)
        out = activate(raw, mode)
        outs.append(out.flip(dims) if dims else out)
    return torch.stack(outs).mean(0)


def test_averaged_network_is_the_mean_of_its_flips_and_is_flip_equivariant(model):
    x = torch.rand(2, 1, 32, 48)
    averaged = FlipAveraged(model.network, "distance").eval()
    with torch.no_grad():
        out = averaged(x)
        torch.testing.assert_close(out, _plain_mean(model.network, x))
        torch.testing.assert_close(averaged(x.flip(-1)), out.flip(-1))
        assert not torch.allclose(out, activate(model.network(x), "distance"), atol=1e-4)


def test_a_model_that_averages_flips_predicts_the_mean_of_its_flips(model):
    image, _ = synthetic_nuclei((64, 64), seed=3)
    plain = model.predict_outputs(image).astype(np.float32)
    flipped = [
        np.flip(model.predict_outputs(np.ascontiguousarray(np.flip(image, a))), a2)
        for a, a2 in (((1,), (2,)), ((0,), (1,)), ((0, 1), (1, 2)))
    ]
    averaging = dataclasses.replace(model, flip_average=True)
    averaged = averaging.predict_outputs(image).astype(np.float32)
    expected = np.mean([plain, *[f.astype(np.float32) for f in flipped]], axis=0)
    np.testing.assert_allclose(averaged, expected, atol=2e-3)  # float16 outputs
    assert not np.allclose(averaged, plain, atol=1e-3)
    assert averaging.without_flip_average().flip_average is False
    assert averaging.without_flip_average().network is model.network  # no copy


def test_the_choice_is_kept_in_the_model_file_and_older_files_predict_once(model, tmp_path):
    averaging = dataclasses.replace(model, flip_average=True)
    path = save_model(averaging, tmp_path / "m.pt")
    assert load_model(path).flip_average is True
    old = model_to_dict(model)
    del old["flip_average"]  # as files saved before the choice existed
    assert model_from_dict(old, "old.pt").flip_average is False


def test_averaging_must_gain_an_object_and_a_point_of_ap():
    assert not choose_flip_average(0.60, 0.62, 30)  # less than one of 30 objects
    assert choose_flip_average(0.60, 0.64, 30)
    assert not choose_flip_average(0.800, 0.805, 2000)  # half a point on many objects
    assert not choose_flip_average(0.60, 0.55, 30)


def _pairs():
    return [make_pair(*synthetic_nuclei((64, 64), n=6, seed=s), name=f"p{s}") for s in range(3)]


def _config():
    return TrainConfig(
        epochs=2, steps_per_epoch=3, batch_size=2, patch_size=32, val_ap_every=0, seed=0
    )


@pytest.mark.parametrize("gains", [True, False])
def test_training_turns_averaging_on_only_where_validation_says_it_gains(monkeypatch, gains):
    scores = []

    def decide(plain, flipped, n_objects):
        scores.append((plain, flipped, n_objects))
        return gains

    monkeypatch.setattr(training_end, "choose_flip_average", decide)
    events = list(train(_pairs(), _config(), model_config=ModelConfig(base_channels=4, depth=2)))
    finished = events[-1]
    assert isinstance(finished, TrainingFinished)
    assert finished.model.flip_average is gains
    ((plain, flipped, n_objects),) = scores  # decided once, on the validation objects
    assert 0.0 <= plain <= 1.0 and 0.0 <= flipped <= 1.0 and n_objects > 0
    said = [e.message for e in events if isinstance(e, Notice) and "three flips" in e.message]
    assert bool(said) is gains


def test_doubt_of_an_averaging_model_flips_the_plain_network(model, monkeypatch):
    averaging = dataclasses.replace(model, flip_average=True)
    image, _ = synthetic_nuclei((64, 64), seed=4)
    seen = {}
    real = doubt_module.doubt_from_outputs

    def capture(outputs, labels, mode, **kwargs):
        seen.update(kwargs, outputs=outputs)
        return real(outputs, labels, mode, **kwargs)

    monkeypatch.setattr(doubt_module, "doubt_from_outputs", capture)
    result = assess_doubt(averaging, image)
    assert result is not None
    np.testing.assert_array_equal(seen["outputs"], averaging.predict_outputs(image))
    once = model.predict_outputs(np.ascontiguousarray(np.flip(image, 1)))
    np.testing.assert_array_equal(seen["flipped_outputs"][0], np.flip(once, 2))
    # The flips differ from each other: averaged ones would all be the same map.
    first, second = seen["flipped_outputs"][:2]
    assert not np.array_equal(first, second)


def test_cli_predicts_once_with_no_flip_average(model, tmp_path, capsys):
    averaging = dataclasses.replace(model, flip_average=True)
    path = save_model(averaging, tmp_path / "m.pt")
    images = tmp_path / "images"
    images.mkdir()
    write_tiff_atomic(images / "a.tif", synthetic_nuclei((64, 64), seed=5)[0])
    base = ["predict", "--model", str(path), "--images", str(images), "--device", "cpu"]
    assert main([*base, "--out", str(tmp_path / "avg"), "--save-maps"]) == 0
    assert "averages each tile and its three flips" in capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "once"), "--save-maps", "--no-flip-average"]) == 0
    once = read_tiff(tmp_path / "once" / "a_maps.tif")
    averaged = read_tiff(tmp_path / "avg" / "a_maps.tif")
    image = read_tiff(images / "a.tif")
    np.testing.assert_allclose(once, model.predict_outputs(image), atol=1e-3)
    np.testing.assert_allclose(averaged, averaging.predict_outputs(image), atol=1e-3)
    assert not np.allclose(once, averaged, atol=1e-3)
