import numpy as np
import pytest

from napari_live_unet.engine import (
    EpochEnd,
    ModelConfig,
    PreviewReady,
    StepEnd,
    ThresholdsChosen,
    TrainConfig,
    TrainingFinished,
    TrainingStarted,
    make_pair,
    run_training,
    train,
)
from napari_live_unet.engine.train import PreviewRequest, learning_rate_at

from .conftest import synthetic_nuclei

TINY = ModelConfig(base_channels=4, depth=2)


def _pairs(n=4, shape=(64, 64)):
    return [make_pair(*synthetic_nuclei(shape, n=6, seed=i), name=f"p{i}") for i in range(n)]


def _config(**kw):
    base = dict(
        epochs=3,
        steps_per_epoch=4,
        batch_size=4,
        patch_size=32,
        val_ap_every=2,
        tune_max_pixels=20_000,
        recipe="standard",  # the loop itself; tests/test_few_shot.py covers the recipe
    )
    base.update(kw)
    return TrainConfig(**base)


def test_events_stream_and_history():
    events = list(train(_pairs(), _config(), model_config=TINY, device="cpu"))
    assert isinstance(events[0], TrainingStarted)
    assert events[0].n_train == 3 and events[0].n_val == 1
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert [e.epoch for e in epochs] == [1, 2, 3]
    assert all(e.val_loss is not None and e.samples_per_second > 0 for e in epochs)
    assert epochs[-1].progress == pytest.approx(1.0)
    assert any(isinstance(e, ThresholdsChosen) for e in events)
    finished = events[-1]
    assert isinstance(finished, TrainingFinished)
    assert finished.reason == "finished" and finished.steps == 12
    model = finished.model
    assert len(model.history) == 3 and "val_ap" in model.history[1]
    assert model.segment(_pairs(1)[0].image, channel_axis=0).shape == (64, 64)


def test_training_reduces_loss():
    cfg = _config(
        epochs=6, steps_per_epoch=8, learning_rate=5e-3, tune_thresholds=False, val_ap_every=0
    )
    events = list(train(_pairs(), cfg, model_config=TINY, device="cpu"))
    losses = [e.train_loss for e in events if isinstance(e, EpochEnd)]
    assert losses[-1] < losses[0] * 0.8


def test_seed_makes_runs_repeatable():
    cfg = _config(epochs=2, val_ap_every=0, tune_thresholds=False)
    a = run_training(_pairs(), cfg, model_config=TINY, device="cpu")
    b = run_training(_pairs(), cfg, model_config=TINY, device="cpu")
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]


def test_stop_request_ends_early_and_keeps_best_model():
    steps = []

    def should_stop():
        return len(steps) >= 6

    gen = train(
        _pairs(),
        _config(epochs=50, val_ap_every=0),
        model_config=TINY,
        device="cpu",
        should_stop=should_stop,
    )
    events = []
    for event in gen:
        events.append(event)
        if isinstance(event, EpochEnd):
            steps.extend([0] * 4)
    finished = events[-1]
    assert finished.reason == "stopped"
    assert finished.epochs < 50
    assert finished.model.segment(np.zeros((32, 32), np.uint8)).shape == (32, 32)


def test_time_budget_ends_training():
    import time

    start = time.perf_counter()
    model = run_training(
        _pairs(),
        _config(epochs=None, time_budget=2.0, val_ap_every=0, tune_thresholds=False),
        model_config=TINY,
        device="cpu",
    )
    assert time.perf_counter() - start < 30
    assert model.history[-1]["elapsed"] <= 3.5


def test_sparse_annotations_and_explicit_validation():
    img, lab = synthetic_nuclei((96, 96), n=8, seed=9)
    sparse = make_pair(img, lab, annotated=[((0, 48), (0, 96))], name="sparse")
    model = run_training(
        [sparse], _config(epochs=2), model_config=TINY, val_pairs=_pairs(1), device="cpu"
    )
    assert len(model.history) == 2


def test_fine_tune_continues_from_model():
    first = run_training(
        _pairs(), _config(epochs=2, tune_thresholds=False), model_config=TINY, device="cpu"
    )
    second = run_training(
        _pairs(), _config(epochs=1, tune_thresholds=False), initial_model=first, device="cpu"
    )
    assert second.config == first.config
    # the first run's 2 epochs, the starting model's score (epoch 0), then 1 new epoch
    assert [r["epoch"] for r in second.history] == [1, 2, 0, 1]
    assert len(first.history) == 2  # the original model is left untouched


def test_boundary_mode_trains_3d():
    lab = np.zeros((16, 32, 32), np.uint16)
    lab[4:10, 4:14, 4:14] = 1
    lab[6:12, 16:28, 16:28] = 2
    img = (lab > 0).astype(np.float32) + np.random.default_rng(0).normal(0, 0.1, lab.shape)
    pair = make_pair(img.astype(np.float32), lab)
    cfg = _config(epochs=1, patch_size=16, patch_size_z=8, val_fraction=0.0)
    model = run_training(
        [pair],
        cfg,
        model_config=ModelConfig(ndim=3, mode="boundary", base_channels=4, depth=2),
        device="cpu",
    )
    assert model.segment(img.astype(np.float32), tile_shape=(8, 16, 16)).shape == lab.shape


def test_learning_rate_schedule_warms_up_then_decays():
    lrs = [learning_rate_at(p, 1.0, 0.1) for p in np.linspace(0, 1, 101)]
    peak = int(np.argmax(lrs))
    assert 8 <= peak <= 12
    assert lrs[0] < 0.1 and lrs[-1] == pytest.approx(0.02)
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :], strict=False))


def test_step_events_report_progress():
    events = list(
        train(
            _pairs(),
            _config(epochs=1, steps_per_epoch=30, val_ap_every=0, tune_thresholds=False),
            model_config=TINY,
            device="cpu",
        )
    )
    steps = [e for e in events if isinstance(e, StepEnd)]
    assert steps and all(0 <= e.progress <= 1 for e in steps)


def test_preview_segments_the_requested_crop_with_the_current_weights():
    image, _ = synthetic_nuclei((80, 80), n=6, seed=9)
    calls = []

    def preview():
        calls.append(len(calls))
        if len(calls) == 1:
            return None  # e.g. the image is not on screen: skipped, no event
        return PreviewRequest(image[10:58, 20:76], ("crop", len(calls)))

    events = list(
        train(
            _pairs(),
            _config(epochs=4, tune_thresholds=False, val_ap_every=0),
            model_config=TINY,
            device="cpu",
            preview=preview,
            preview_every=2,
        )
    )
    previews = [e for e in events if isinstance(e, PreviewReady)]
    assert len(calls) == 2  # epochs 2 and 4
    assert [p.epoch for p in previews] == [4]
    assert previews[0].key == ("crop", 2)
    assert previews[0].labels.shape == (48, 56)
    assert previews[0].outputs.shape == (2, 48, 56)


def test_stop_before_the_first_step_keeps_the_starting_model():
    from napari_live_unet.engine import TrainingFinished, train
    from napari_live_unet.engine.train import StopReason

    first = run_training(
        _pairs(), _config(epochs=1, tune_thresholds=False), model_config=TINY, device="cpu"
    )
    events = list(
        train(
            _pairs(), _config(epochs=3), initial_model=first, device="cpu", should_stop=lambda: True
        )
    )
    finished = events[-1]
    assert isinstance(finished, TrainingFinished)
    assert finished.reason is StopReason.STOPPED and finished.reason == "stopped"
    assert finished.steps == 0 and finished.kept_start
    kept, start = finished.model.network.state_dict(), first.network.state_dict()
    assert all(np.array_equal(kept[k].numpy(), v.numpy()) for k, v in start.items())


def test_a_step_with_a_non_finite_loss_is_skipped_and_the_weights_stay_finite(monkeypatch):
    # One NaN loss (seen on sparse 3D data under bf16) used to turn every weight into NaN;
    # the run then early-stopped with an untrained model.
    import importlib
    import math

    import torch

    from napari_live_unet.engine import Notice, TrainConfig, TrainingFinished, make_pair, train

    # the module, not the function the package exports under the same name
    train_module = importlib.import_module("napari_live_unet.engine.train")

    real_loss = train_module.segmentation_loss
    calls = []

    def sometimes_nan(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * math.nan if len(calls) == 3 else loss

    monkeypatch.setattr(train_module, "segmentation_loss", sometimes_nan)
    pair = make_pair(*synthetic_nuclei((64, 64), n=6, seed=1))
    config = TrainConfig(epochs=2, steps_per_epoch=4, batch_size=2, patch_size=32, seed=0)
    events = list(
        train([pair], config, model_config=ModelConfig(base_channels=4, depth=2), device="cpu")
    )
    finished = events[-1]
    assert isinstance(finished, TrainingFinished) and finished.epochs == 2
    notices = [e.message for e in events if isinstance(e, Notice) and "not finite" in e.message]
    assert len(notices) == 1
    for tensor in [*finished.model.network.parameters(), *finished.model.network.buffers()]:
        assert torch.isfinite(tensor.float()).all()
