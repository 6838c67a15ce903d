"""The pieces of the few-shot recipe: validation on every image, checkpoints chosen by AP,
colour and blur augmentation, frozen normalisation statistics."""

import importlib

import numpy as np
import pytest
import torch

from napari_live_unet.engine import (
    AdaptOptions,
    AugmentConfig,
    EpochEnd,
    ModelConfig,
    TrainConfig,
    TrainingFinished,
    make_pair,
    run_training,
    train,
)
from napari_live_unet.engine.augment import augment_batch
from napari_live_unet.engine.data import split_regions
from napari_live_unet.engine.recipe import FEW_SHOT_MAX_OBJECTS, choose_recipe

from .conftest import synthetic_nuclei

train_module = importlib.import_module("napari_live_unet.engine.train")
TINY = ModelConfig(base_channels=4, depth=2)


def _pairs(n=3, shape=(64, 80)):
    return [make_pair(*synthetic_nuclei(shape, n=8, seed=i), name=f"p{i}") for i in range(n)]


def _config(**kw):
    base = dict(
        epochs=3,
        steps_per_epoch=3,
        batch_size=2,
        patch_size=32,
        val_ap_every=0,
        tune_thresholds=False,
        recipe="standard",
    )
    base.update(kw)
    return TrainConfig(**base)


def test_region_validation_holds_out_a_band_of_every_image():
    pairs = _pairs(3)
    train_parts, val_parts = split_regions(pairs, 0.25)
    assert [p.name for p in val_parts] == ["p0[val]", "p1[val]", "p2[val]"]
    for whole, kept, held in zip(pairs, train_parts, val_parts, strict=True):
        # split along the longest axis (x, 80 px): 20 px held out, nothing lost or shared
        assert held.spatial_shape == (64, 20) and kept.spatial_shape == (64, 60)
        rebuilt = np.concatenate([kept.labels, held.labels], axis=1)
        assert np.array_equal(rebuilt, whole.labels)
        assert held.n_objects > 0
        # both parts are scaled as the whole image will be when predicting
        assert held.intensity_range is not None


def test_training_validates_on_regions_of_every_image():
    events = list(train(_pairs(3), _config(validation="regions"), model_config=TINY, device="cpu"))
    assert events[0].n_train == 3 and events[0].n_val == 3
    default = list(train(_pairs(3), _config(), model_config=TINY, device="cpu"))
    assert default[0].n_train == 2 and default[0].n_val == 1


def test_checkpoint_selected_by_ap_follows_ap_not_loss(monkeypatch):
    # Scripted validation AP: epoch 2 is best by AP. The kept weights must be epoch 2's.
    scores = iter([0.1, 0.2, 0.9, 0.3])
    monkeypatch.setattr(
        train_module, "validation_ap", lambda *a, **k: {0.5: (s := next(scores)), 0.7: s}
    )
    states = {}
    original = train_module.state_copy

    def recording(network):
        state = original(network)
        states[len(states)] = state
        return state

    monkeypatch.setattr(train_module, "state_copy", recording)
    start = run_training(_pairs(), _config(epochs=1), model_config=TINY, device="cpu")
    events = list(train(_pairs(), _config(select_by="ap"), initial_model=start, device="cpu"))
    best = [e.epoch for e in events if isinstance(e, EpochEnd) and e.is_best]
    assert best == [0, 1, 2]  # epoch 3 (AP 0.3) is worse than epoch 2 (AP 0.9)
    finished = events[-1]
    assert isinstance(finished, TrainingFinished)
    kept = finished.model.network.state_dict()
    epoch2 = states[max(states)]
    assert all(torch.equal(kept[k].cpu(), v) for k, v in epoch2.items())


def test_bad_validation_and_selection_names_are_refused():
    with pytest.raises(ValueError, match="validation"):
        _config(validation="folds")
    with pytest.raises(ValueError, match="select_by"):
        _config(select_by="dice")


def test_frozen_normalisation_keeps_the_starting_statistics():
    start = run_training(_pairs(), _config(epochs=1), model_config=TINY, device="cpu")
    before = {k: v.clone() for k, v in start.network.state_dict().items() if "running" in k}
    tuned = run_training(_pairs(), _config(freeze_norm=True), initial_model=start, device="cpu")
    after = tuned.network.state_dict()
    assert before and all(torch.equal(after[k].cpu(), v.cpu()) for k, v in before.items())
    moved = run_training(_pairs(), _config(), initial_model=start, device="cpu")
    assert any(
        not torch.equal(moved.network.state_dict()[k].cpu(), v.cpu()) for k, v in before.items()
    )


def _batch(channels, n=6):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(n, channels, 32, 32, generator=g)
    targets = torch.zeros(n, 2, 32, 32)
    mask = torch.ones(n, 1, 32, 32)
    return image, targets, mask


def _only(**kw):
    off = dict(flips=False, rot90=False, rotate_scale=False, intensity=False)
    return AugmentConfig(**{**off, **kw})


def test_colour_augmentation_mixes_the_channels_of_colour_patches():
    image, targets, mask = _batch(3)
    out, _, _ = augment_batch(
        image,
        targets,
        mask,
        _only(colour=0.3),
        categorical=(True, False),
        generator=torch.Generator().manual_seed(1),
    )
    assert out.shape == image.shape and not torch.equal(out, image)
    # each output channel is a weighted mix of the input channels: solve for the weights
    for i in range(image.shape[0]):
        src = image[i].reshape(3, -1).T
        weights = torch.linalg.lstsq(src, out[i].reshape(3, -1).T).solution
        off_diagonal = weights - torch.diag(torch.diagonal(weights))
        assert off_diagonal.abs().max() <= 0.3 + 1e-4 and off_diagonal.abs().max() > 0
    gray, targets, mask = _batch(1)
    same, _, _ = augment_batch(gray, targets, mask, _only(colour=0.3), categorical=(True, False))
    assert torch.equal(same, gray)  # one channel: nothing to mix


def test_blur_augmentation_smooths_or_sharpens_only_a_fraction_of_patches():
    image, targets, mask = _batch(1, n=24)
    out, t, m = augment_batch(
        image,
        targets,
        mask,
        _only(blur=0.5),
        categorical=(True, False),
        generator=torch.Generator().manual_seed(3),
    )
    changed = [not torch.equal(out[i], image[i]) for i in range(24)]
    assert 4 < sum(changed) < 20
    assert torch.equal(t, targets) and torch.equal(m, mask)  # only the image changes
    for i in np.flatnonzero(changed):
        # a blur lowers and a sharpening raises the pixel-to-pixel variation
        before = image[i].diff(dim=-1).abs().mean()
        after = out[i].diff(dim=-1).abs().mean()
        assert not torch.isclose(before, after, rtol=0.05)
    volume = torch.rand(2, 1, 4, 16, 16)
    blurred, _, _ = augment_batch(
        volume,
        torch.zeros(2, 2, 4, 16, 16),
        torch.ones(2, 1, 4, 16, 16),
        _only(blur=1.0),
        categorical=(True, False),
    )
    assert blurred.shape == volume.shape


def test_auto_recipe_is_few_shot_for_a_few_images_and_says_why():
    config, adapt, choice = choose_recipe(
        _config(recipe="auto"), _pairs(3), validation_given=False, model_channels=1
    )
    assert choice.name == "few-shot"
    assert "3 images, 24 objects" in choice.reason and "at most 4 images" in choice.reason
    assert "band of every image" in choice.reason
    assert config.validation == "regions" and config.val_fraction >= 0.25
    assert not adapt.all_channels  # one-channel images: nothing to widen
    # validation data given by the user: nothing is held out of the training images
    _, _, given = choose_recipe(_config(recipe="auto"), _pairs(3), validation_given=True)
    assert "band" not in given.reason


def _colour_pairs(n=2):
    pairs = []
    for i in range(n):
        image, labels = synthetic_nuclei((64, 64), n=6, seed=i)
        rgb = np.stack([image, image * 0.5, 255 - image], axis=-1).astype(np.uint8)
        pairs.append(make_pair(rgb, labels, name=f"rgb{i}"))
    return pairs


def test_few_shot_recipe_reads_every_colour_channel_unless_the_user_chose_one():
    pairs = _colour_pairs()
    _, adapt, choice = choose_recipe(
        _config(recipe="auto"), pairs, validation_given=False, model_channels=1
    )
    assert adapt.all_channels and "every colour channel" in choice.reason
    chosen = AdaptOptions(channel=0)
    _, adapt, _ = choose_recipe(
        _config(recipe="auto"), pairs, validation_given=False, adapt=chosen, model_channels=1
    )
    assert adapt == chosen
    _, adapt, _ = choose_recipe(_config(recipe="auto"), pairs, validation_given=False)
    assert not adapt.all_channels  # a new model reads the channels it is built with


def test_auto_recipe_is_standard_for_many_annotated_objects():
    many = _pairs(8, shape=(64, 64)) * 3  # 24 images, 192 objects
    assert sum(p.n_objects for p in many) >= FEW_SHOT_MAX_OBJECTS
    config, _, choice = choose_recipe(_config(recipe="auto"), many, validation_given=False)
    assert choice.name == "standard" and config == _config(recipe="auto")
    # many images but few objects (sparse corrections): still few-shot
    sparse = _pairs(6)
    _, _, choice = choose_recipe(_config(recipe="auto"), sparse, validation_given=False)
    assert choice.name == "few-shot" and "fewer than" in choice.reason


def test_a_forced_recipe_wins_over_the_data():
    many = _pairs(8, shape=(64, 64)) * 3
    _, _, choice = choose_recipe(_config(recipe="few-shot"), many, validation_given=False)
    assert choice.name == "few-shot" and "chosen" in choice.reason
    config, _, choice = choose_recipe(_config(recipe="standard"), _pairs(2), validation_given=False)
    assert choice.name == "standard" and config.select_by == "loss"


def test_training_announces_the_recipe_and_records_its_settings():
    events = list(train(_pairs(3), _config(recipe="auto"), model_config=TINY, device="cpu"))
    started = events[0]
    assert started.recipe.startswith("few-shot recipe") and started.n_val == 3
    model = events[-1].model
    assert model.train_config["validation"] == "regions"


def test_fine_tuning_a_one_channel_model_on_colour_images_widens_it():
    start = run_training(_pairs(), _config(epochs=1), model_config=TINY, device="cpu")
    tuned = run_training(_colour_pairs(), _config(recipe="auto"), initial_model=start)
    assert tuned.config.in_channels == 3 and start.config.in_channels == 1
    rgb = _colour_pairs(1)[0].image
    assert tuned.segment(rgb, channel_axis=0).shape == (64, 64)


def test_few_shot_recipe_keeps_a_run_without_validation_without_it():
    config, _, choice = choose_recipe(
        _config(recipe="auto", val_fraction=0.0), _pairs(3), validation_given=False
    )
    assert choice.name == "few-shot" and config.val_fraction == 0.0
    assert "band" not in choice.reason
