"""Configurations are frozen values: every field checked, plain data derived from fields."""

import dataclasses
import json

import pytest
import torch

from napari_live_unet import engine
from napari_live_unet.engine import (
    AugmentConfig,
    InputError,
    InputSpec,
    ModelConfig,
    NormalizationConfig,
    PostprocessConfig,
    SegmentationModel,
    TrainConfig,
    load_model,
    presets,
)
from napari_live_unet.engine.model_file import model_to_dict

CONFIGS = [
    ModelConfig,
    PostprocessConfig,
    NormalizationConfig,
    AugmentConfig,
    TrainConfig,
    InputSpec,
]

# Not the defaults, so a round trip that dropped a field would show.
EXAMPLES = [
    ModelConfig(
        ndim=3,
        in_channels=2,
        mode="boundary",
        base_channels=8,
        depth=3,
        norm="group",
        voxel_size=(5.0, 1.0, 1.0),
        pooling=((1, 2, 2), (1, 2, 2), (2, 2, 2)),
        kernels=((1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3)),
    ),
    PostprocessConfig(0.3, 0.55, 20, 0.0, 2.0),
    NormalizationConfig(0.5, 99.0),
    AugmentConfig(flips=False, scale_range=(0.67, 1.5), noise_std=0.05, colour=0.3, blur=0.5),
    TrainConfig(
        epochs=None,
        time_budget=300.0,
        patch_size=64,
        patch_size_z=16,
        learning_rate=1e-3,
        seed=None,
        early_stopping_patience=None,
        augment=AugmentConfig(rot90=False, scale_range=(1.0, 1.0)),
        validation="regions",
        select_by="ap",
        freeze_norm=True,
        recipe="few-shot",
    ),
    InputSpec("dark", "auto", 1, 14.0, (9.0, 20.0), 28.0),
]

# The configuration of the built-in nuclei.pt, as it was saved (before voxel sizes,
# pooling, colour and blur augmentation, recipes and run records existed).
OLD_MODEL_FILE = {
    "model_config": {
        "ndim": 2,
        "in_channels": 1,
        "mode": "distance",
        "base_channels": 16,
        "depth": 4,
        "norm": "batch",
    },
    "normalization": {"low_percentile": 1.0, "high_percentile": 99.8},
    "postprocess": {
        "fg_threshold": 0.3,
        "seed_threshold": 0.5,
        "min_size": 20,
        "seed_prominence": 0.0,
        "smoothing": 1.0,
    },
    "input": {
        "polarity": "bright",
        "image_polarity": "auto",
        "channel": None,
        "diameter": 20.216574731145414,
        "diameter_range": [9.0270333367641, 38.01984519002767],
        "image_diameter": None,
    },
    "train_config": {
        "epochs": None,
        "time_budget": 6000.0,
        "steps_per_epoch": 200,
        "batch_size": 8,
        "patch_size": 192,
        "patch_size_z": 32,
        "learning_rate": 0.003,
        "weight_decay": 0.0001,
        "warmup_fraction": 0.05,
        "val_fraction": 0.12,
        "val_ap_every": 5,
        "early_stopping_patience": None,
        "seed": 0,
        "mixed_precision": True,
        "compile": False,
        "foreground_sampling": 0.5,
        "tune_thresholds": True,
        "val_ap_max_pixels": 2000000,
        "tune_max_pixels": 8000000,
        "augment": {
            "flips": True,
            "rot90": True,
            "rotate_scale": True,
            "max_rotation_deg": 20.0,
            "scale_range": [0.67, 1.5],
            "intensity": True,
            "noise_std": 0.05,
        },
    },
}

# TrainConfig().to_dict() as written into model files and run records before configs
# became frozen values: the keys and values files hold today.
CURRENT_TRAIN_CONFIG = {
    **OLD_MODEL_FILE["train_config"],
    "epochs": 100,
    "time_budget": None,
    "steps_per_epoch": 50,
    "patch_size": 128,
    "learning_rate": None,
    "warmup_fraction": None,
    "early_stopping_patience": 30,
    "augment": {
        "flips": True,
        "rot90": True,
        "rotate_scale": True,
        "max_rotation_deg": 20.0,
        "scale_range": [0.8, 1.25],
        "intensity": True,
        "noise_std": 0.03,
        "colour": 0.0,
        "blur": 0.0,
    },
    "validation": "images",
    "select_by": "loss",
    "freeze_norm": False,
    "recipe": "auto",
}


@pytest.mark.parametrize("config", EXAMPLES, ids=lambda c: type(c).__name__)
def test_configs_are_frozen(config):
    name = dataclasses.fields(config)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, name, getattr(config, name))
    assert hash(config) == hash(dataclasses.replace(config))


@pytest.mark.parametrize(
    "cls, name, value",
    [
        (ModelConfig, "ndim", 4),
        (ModelConfig, "in_channels", 0),
        (ModelConfig, "mode", "cells"),
        (ModelConfig, "base_channels", 1000),
        (ModelConfig, "depth", 9),
        (ModelConfig, "norm", "layer"),
        (ModelConfig, "pooling", ((2, 2),)),
        (ModelConfig, "kernels", ((3, 5),) * 4),
        (PostprocessConfig, "fg_threshold", 1.7),
        (PostprocessConfig, "seed_threshold", -0.1),
        (PostprocessConfig, "min_size", -1),
        (PostprocessConfig, "min_size", 2.5),
        (PostprocessConfig, "seed_prominence", float("nan")),
        (PostprocessConfig, "smoothing", -1.0),
        (NormalizationConfig, "low_percentile", -1.0),
        (NormalizationConfig, "high_percentile", 101.0),
        (AugmentConfig, "flips", 1),
        (AugmentConfig, "rot90", "yes"),
        (AugmentConfig, "rotate_scale", None),
        (AugmentConfig, "max_rotation_deg", 400.0),
        (AugmentConfig, "scale_range", (1.25, 0.8)),
        (AugmentConfig, "scale_range", (0.0, 1.0)),
        (AugmentConfig, "intensity", 0),
        (AugmentConfig, "noise_std", -0.1),
        (AugmentConfig, "colour", 2.0),
        (AugmentConfig, "blur", 1.5),
        (TrainConfig, "epochs", 0),
        (TrainConfig, "time_budget", 0.0),
        (TrainConfig, "time_budget", float("inf")),
        (TrainConfig, "steps_per_epoch", 0),
        (TrainConfig, "batch_size", 0),
        (TrainConfig, "patch_size", 4),
        (TrainConfig, "patch_size_z", 0),
        (TrainConfig, "learning_rate", -1e-3),
        (TrainConfig, "weight_decay", -1.0),
        (TrainConfig, "warmup_fraction", 1.0),
        (TrainConfig, "val_fraction", 1.0),
        (TrainConfig, "val_ap_every", -1),
        (TrainConfig, "early_stopping_patience", -1),
        (TrainConfig, "seed", -1),
        (TrainConfig, "mixed_precision", "no"),
        (TrainConfig, "compile", 1),
        (TrainConfig, "foreground_sampling", 1.5),
        (TrainConfig, "tune_thresholds", None),
        (TrainConfig, "val_ap_max_pixels", 0),
        (TrainConfig, "tune_max_pixels", 1.5),
        (TrainConfig, "augment", {"flips": True}),
        (TrainConfig, "validation", "bands"),
        (TrainConfig, "select_by", "f1"),
        (TrainConfig, "freeze_norm", "true"),
        (TrainConfig, "recipe", "quick"),
        (InputSpec, "polarity", "auto"),
        (InputSpec, "image_polarity", "grey"),
        (InputSpec, "channel", -1),
        (InputSpec, "diameter", 0.0),
        (InputSpec, "diameter_range", (20.0, 9.0)),
        (InputSpec, "image_diameter", -3.0),
    ],
)
def test_a_bad_field_is_refused_naming_it_and_its_value(cls, name, value):
    with pytest.raises(ValueError, match=name) as refused:
        cls(**{name: value})
    if name not in ("pooling", "kernels", "augment"):  # tables and configs are summarised
        assert repr(value) in str(refused.value)


def test_messages_say_what_is_allowed():
    with pytest.raises(ValueError, match=r"fg_threshold must be a number from 0 to 1, got 1.7"):
        PostprocessConfig(fg_threshold=1.7)
    with pytest.raises(ValueError, match=r"val_fraction must be a number in \[0, 1\), got 1"):
        TrainConfig(val_fraction=1)
    with pytest.raises(ValueError, match="learning_rate must be None or a number greater than 0"):
        TrainConfig(learning_rate=0.0)
    with pytest.raises(ValueError, match=r"recipe must be one of \('auto', 'few-shot'"):
        TrainConfig(recipe="quick")


def test_fields_checked_together():
    with pytest.raises(ValueError, match="set epochs, time_budget, or both"):
        TrainConfig(epochs=None, time_budget=None)
    with pytest.raises(ValueError, match="low_percentile must be below high_percentile"):
        NormalizationConfig(50.0, 50.0)


@pytest.mark.parametrize("config", EXAMPLES, ids=lambda c: type(c).__name__)
def test_to_dict_and_from_dict_round_trip_through_json(config):
    data = config.to_dict()
    assert list(data) == [f.name for f in dataclasses.fields(config)]
    text = json.dumps(data)  # JSON-ready: tuples are lists, nested configs dicts
    assert "(" not in text
    again = type(config).from_dict(json.loads(text))
    assert again == config
    assert again.to_dict() == data


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_unknown_fields_are_refused(cls):
    with pytest.raises(ValueError, match=rf"unknown {cls.__name__} fields: \['colour_space'\]"):
        cls.from_dict({"colour_space": "rgb"})


def test_values_are_normalised_on_construction():
    augment = AugmentConfig(scale_range=[1, 2])  # a list from JSON, ints
    assert augment.scale_range == (1.0, 2.0) and isinstance(augment.scale_range, tuple)
    model = ModelConfig.from_dict({"ndim": 3, "pooling": [[1, 2, 2]] * 3, "voxel_size": [2, 1, 1]})
    assert model.pooling == ((1, 2, 2),) * 3 and model.voxel_size == (2.0, 1.0, 1.0)
    assert InputSpec.from_dict({"diameter_range": [9, 20]}).diameter_range == (9.0, 20.0)
    assert TrainConfig.from_dict({"augment": {"blur": 0.5}}).augment == AugmentConfig(blur=0.5)


def test_the_current_and_old_formats_load_unchanged():
    config = TrainConfig.from_dict(CURRENT_TRAIN_CONFIG)
    assert config == TrainConfig()
    assert config.to_dict() == CURRENT_TRAIN_CONFIG
    old = OLD_MODEL_FILE
    train = TrainConfig.from_dict(old["train_config"])
    assert (train.patch_size, train.patch_size_z) == (192, 32)
    assert train.augment.scale_range == (0.67, 1.5) and train.recipe == "auto"
    assert ModelConfig.from_dict(old["model_config"]).pooling is None
    assert PostprocessConfig.from_dict(old["postprocess"]).to_dict() == old["postprocess"]
    assert NormalizationConfig.from_dict(old["normalization"]).to_dict() == old["normalization"]
    assert InputSpec.from_dict(old["input"]).to_dict() == old["input"]


def _model_file_data(**sections):
    model = SegmentationModel.create(ModelConfig.from_dict(OLD_MODEL_FILE["model_config"]))
    data = model_to_dict(model)
    data.update({k: v for k, v in OLD_MODEL_FILE.items() if k != "model_config"})
    for section, values in sections.items():
        data[section] = {**data[section], **values}
    return data


def test_an_old_model_file_loads(tmp_path):
    path = tmp_path / "old.pt"
    torch.save(_model_file_data(), path)
    model = load_model(path)
    assert model.postprocess.to_dict() == OLD_MODEL_FILE["postprocess"]
    assert model.input.diameter_range == (9.0270333367641, 38.01984519002767)
    assert TrainConfig.from_dict(model.train_config).patch_size == 192


@pytest.mark.parametrize(
    "section, name, value",
    [
        ("postprocess", "fg_threshold", 1.7),
        ("postprocess", "min_size", -5),
        ("normalization", "high_percentile", 250.0),
        ("input", "polarity", "grey"),
    ],
)
def test_a_model_file_with_a_bad_value_is_refused_naming_it(tmp_path, section, name, value):
    path = tmp_path / "crafted.pt"
    torch.save(_model_file_data(**{section: {name: value}}), path)
    with pytest.raises(InputError, match=rf"crafted.pt: model file is inconsistent \({name}.*"):
        load_model(path)


def test_the_wanted_patch_shape_is_per_axis():
    config = TrainConfig(patch_size=96, patch_size_z=24)
    assert config.wanted_patch_shape(2) == (96, 96)
    assert config.wanted_patch_shape(3) == (24, 96, 96)


def test_presets_live_in_their_own_module():
    assert engine.recommended_settings is presets.recommended_settings
    assert presets.recommended_settings("cpu") == {
        "base_channels": 8,
        "depth": 3,
        "patch_size": 128,
        "batch_size": 8,
    }
    assert presets.recommended_settings("cuda", 3)["patch_size_z"] == 32
    assert presets.recommended_settings("mps") == presets.recommended_settings("cuda")
    # a change to the returned dict does not change the preset
    presets.recommended_settings("cpu")["batch_size"] = 1
    assert presets.recommended_settings("cpu")["batch_size"] == 8
    assert presets.volume_sizes("cpu", 8, 128) == (4, 64)  # still the 2D preset
    assert presets.volume_sizes("cpu", 8, 96) == (8, 96)  # chosen by the user
    for settings in (presets.recommended_settings(d, n) for d in ("cpu", "cuda") for n in (2, 3)):
        size = (settings["base_channels"], settings["depth"])
        assert size in presets.MODEL_SIZES.values()
        TrainConfig(**{k: v for k, v in settings.items() if k.endswith("_size") or "_z" in k})
