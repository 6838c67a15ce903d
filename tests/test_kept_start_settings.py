"""A starting model that fine-tuning keeps also keeps what it was validated with.

Re-tuning the built-in starter's thresholds and fixing its input fitting to three
fluorescence images, while its weights stayed, cost 0.058 test AP@0.5 (docs/benchmarks.md,
"Few-shot recipe on three fluorescence images").
"""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pytest

from napari_live_unet.engine import (
    AdaptOptions,
    ModelConfig,
    Notice,
    TrainConfig,
    TrainingFinished,
    make_pair,
    train,
)
from napari_live_unet.engine.config import PostprocessConfig
from napari_live_unet.engine.evaluation import CachedValidation, required_gain
from napari_live_unet.engine.image_adapter import InputSpec
from napari_live_unet.engine.targets import normalized_distance

from .conftest import synthetic_nuclei

evaluation = importlib.import_module("napari_live_unet.engine.evaluation")


class _Pair:
    annotated = None


def _spread_nuclei(n_big: int, n_small: int) -> tuple[np.ndarray, np.ndarray]:
    """Separate discs, ``n_small`` of them smaller than a 40-pixel minimum size, and the
    distance-mode outputs a perfect network gives for them."""
    shape = (128, 128)
    labels = np.zeros(shape, np.int32)
    yy, xx = np.indices(shape)
    centres = [(cy, cx) for cy in range(12, 128, 24) for cx in range(12, 128, 24)]
    for i, (cy, cx) in enumerate(centres[: n_big + n_small], start=1):
        radius = 6 if i <= n_big else 2.5
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius] = i
    return np.stack([(labels > 0).astype(np.float32), normalized_distance(labels)]), labels


class _FixedOutputsModel:
    """What tuned_thresholds reads of a model, with outputs given instead of predicted."""

    def __init__(self, postprocess: PostprocessConfig) -> None:
        self.postprocess = postprocess
        self.config = ModelConfig(mode="distance")


@pytest.fixture
def two_of_twenty_too_small(monkeypatch):
    """Validation of 20 nuclei where the model's minimum size (40 px) drops 2 small ones:
    its thresholds score 0.9 and re-tuned ones 1.0, two objects' worth better."""
    outputs, labels = _spread_nuclei(18, 2)

    def cached(model, pairs):
        cache = CachedValidation.__new__(CachedValidation)
        cache.mode, cache.sampling = "distance", None
        cache.pairs, cache.outputs, cache.gts = [_Pair()], [outputs], [labels]
        cache.caches = [{}]
        return cache

    monkeypatch.setattr(evaluation, "CachedValidation", cached)
    return _FixedOutputsModel(PostprocessConfig(min_size=40))


def test_a_gain_of_two_objects_replaces_new_thresholds_but_not_validated_ones(
    two_of_twenty_too_small,
):
    model = two_of_twenty_too_small
    new, new_counts, _ = evaluation.tuned_thresholds(model, [])
    assert new.min_size < 40 and new_counts[0].ap == pytest.approx(1.0)
    kept, kept_counts, score = evaluation.tuned_thresholds(model, [], validated=True)
    assert kept == model.postprocess
    assert kept_counts[0].ap == pytest.approx(0.9) and score == pytest.approx(0.9)


def test_validated_thresholds_need_two_standard_errors_of_their_score():
    assert required_gain(0.9, 20) == pytest.approx(1 / 20)
    assert required_gain(0.9, 20, validated=True) == pytest.approx(2 * np.sqrt(0.09 / 20))
    # More objects: a smaller gain is clear; a perfect score still needs one object.
    assert required_gain(0.9, 500, validated=True) < required_gain(0.9, 20, validated=True)
    assert required_gain(1.0, 20, validated=True) == pytest.approx(1 / 20)


STARTER_LIKE = InputSpec(
    polarity="bright",
    image_polarity="auto",  # judged image by image, as the built-in starter does
    diameter=14.0,
    diameter_range=(4.0, 60.0),
    image_diameter=None,
)


@pytest.fixture(scope="module")
def starter_like():
    """A small trained model whose fitting decides per image, like the built-in starter."""
    pairs = [make_pair(*synthetic_nuclei((64, 64), n=6, seed=s), name=f"s{s}") for s in range(3)]
    config = TrainConfig(
        epochs=2, steps_per_epoch=4, batch_size=2, patch_size=32, val_ap_every=0, seed=0
    )
    events = list(train(pairs, config, model_config=ModelConfig(base_channels=4, depth=2)))
    model = events[-1].model
    model.input = STARTER_LIKE
    model.postprocess = dataclasses.replace(model.postprocess, min_size=12)
    return model


def _fine_tune_that_fails(start, adapt=None):
    pairs = [
        make_pair(*synthetic_nuclei((64, 64), n=6, seed=s), name=f"u{s}") for s in range(10, 13)
    ]
    config = TrainConfig(
        epochs=2,
        steps_per_epoch=3,
        batch_size=2,
        patch_size=32,
        learning_rate=50.0,  # training made to fail validation: the start is kept
        val_ap_every=0,
        seed=0,
    )
    events = list(train(pairs, config, initial_model=start, device="cpu", adapt=adapt))
    finished = events[-1]
    assert isinstance(finished, TrainingFinished) and finished.kept_start
    notes = [e.message for e in events if isinstance(e, Notice)]
    return finished.model, notes


def test_a_kept_starting_model_keeps_its_thresholds_and_per_image_fitting(starter_like):
    model, notes = _fine_tune_that_fails(starter_like)
    assert model.postprocess == starter_like.postprocess
    assert model.input == STARTER_LIKE  # not fixed to the three training images
    kept = [n for n in notes if n.startswith("Kept the starting model")]
    assert kept and "its own thresholds and its own input fitting" in kept[0]


def test_a_kept_starting_model_keeps_the_users_explicit_choices(starter_like):
    model, notes = _fine_tune_that_fails(
        starter_like, AdaptOptions(polarity="bright", diameter=12.0)
    )
    assert model.input.image_polarity == "bright" and model.input.image_diameter == 12.0
    assert any("input fitting fixed to your images" in n for n in notes)
