import numpy as np
import pytest
import torch

from napari_live_unet.engine import (
    InputError,
    ModelConfig,
    PostprocessConfig,
    SegmentationModel,
    load_model,
    save_model,
)


def _model():
    model = SegmentationModel.create(ModelConfig(mode="boundary", base_channels=4, depth=2))
    model.postprocess = PostprocessConfig(fg_threshold=0.42, seed_threshold=0.61, min_size=7)
    model.history = [{"epoch": 1, "train_loss": 0.5, "val_loss": 0.6}]
    with torch.no_grad():
        for p in model.network.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def test_roundtrip_restores_everything(tmp_path):
    model = _model()
    path = save_model(model, tmp_path / "sub" / "m.pt")
    loaded = load_model(path)
    assert loaded.config == model.config
    assert loaded.postprocess == model.postprocess
    assert loaded.history == model.history
    image = np.random.default_rng(1).random((40, 40)).astype(np.float32)
    # Equal up to one float16 rounding step: CPU kernels may split sums differently per run.
    np.testing.assert_allclose(
        model.predict_outputs(image).astype(np.float32),
        loaded.predict_outputs(image).astype(np.float32),
        atol=1e-3,
    )


def test_truncated_file_gives_clear_error(tmp_path):
    path = save_model(_model(), tmp_path / "m.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a readable model file"):
        load_model(path)


def test_foreign_files_rejected(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other)
    with pytest.raises(InputError, match="not a napari-live-unet model"):
        load_model(other)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(InputError, match="m.pt|notes.pt"):
        load_model(text)
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "missing.pt")


def test_save_leaves_no_partial_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    save_model(_model(), path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("napari_live_unet.engine.model_file.os.replace", boom)
    with pytest.raises(OSError):
        save_model(_model(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


@pytest.mark.parametrize(
    "field, value",
    [
        ("depth", 60),
        ("base_channels", -4),
        ("base_channels", "16"),
        ("mode", "cells"),
        ("in_channels", 10**6),
    ],
)
def test_crafted_config_fields_give_the_clear_error(tmp_path, field, value):
    from napari_live_unet.engine.model_file import model_to_dict

    data = model_to_dict(_model())
    data["model_config"][field] = value  # a crafted or foreign file
    path = tmp_path / "crafted.pt"
    torch.save(data, path)
    with pytest.raises(InputError, match="crafted.pt: model file is inconsistent"):
        load_model(path)


def test_input_record_and_description_survive_a_round_trip(tmp_path):
    from napari_live_unet.engine import InputSpec

    model = _model()
    model.input = InputSpec(
        image_polarity="dark",
        channel=2,
        diameter=14.0,
        diameter_range=(9.0, 20.0),
        image_diameter=28.0,
    )
    model.info = {"name": "mine", "description": "test"}
    loaded = load_model(save_model(model, tmp_path / "m.pt", half_precision=True))
    assert loaded.input == model.input and loaded.info == model.info
    assert loaded.zoom_for(None) == pytest.approx(20 / 28)  # 28 px objects into 9-20 px
