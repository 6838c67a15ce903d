"""Issue 11, item 6: settings whose training cannot fit in memory are refused up front, with
the estimate and the limit, instead of the process being killed by the OS with no message."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_live_unet.cli import main
from napari_live_unet.engine import (
    InputError,
    ModelConfig,
    TrainConfig,
    make_pair,
    memory_estimate,
    recommended_settings,
    train,
)
from napari_live_unet.engine.memory_estimate import (
    available_memory_bytes,
    check_training_memory,
    format_bytes,
    training_memory_bytes,
)

from .conftest import synthetic_nuclei
from .test_cli import _train_argv

GIB = 2**30


def _limit(monkeypatch, value):
    monkeypatch.setattr(memory_estimate, "available_memory_bytes", lambda device: value)


def _configs(device_type):
    s = recommended_settings(device_type)
    model = ModelConfig(base_channels=s["base_channels"], depth=s["depth"])
    return model, TrainConfig(patch_size=s["patch_size"], batch_size=s["batch_size"])


def test_terabytes_are_refused_naming_the_estimate_the_limit_and_what_to_do(monkeypatch):
    model, config = ModelConfig(), TrainConfig(patch_size=65536, batch_size=64)
    needed = training_memory_bytes(model, config)
    assert needed > 2**40  # terabytes
    _limit(monkeypatch, 16 * GIB)
    with pytest.raises(InputError) as caught:
        check_training_memory(model, config, "cpu")
    message = str(caught.value)
    assert format_bytes(needed) in message and "16.0 GiB" in message
    assert "batch size" in message and "patch size" in message and "depth" in message


def test_the_real_limit_refuses_terabytes_too():
    limit = available_memory_bytes(torch.device("cpu"))
    assert limit is not None and 0 < limit < 2**50
    with pytest.raises(InputError, match="TiB"):
        check_training_memory(ModelConfig(), TrainConfig(patch_size=65536, batch_size=64), "cpu")


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_the_default_settings_pass(monkeypatch, device_type):
    model, config = _configs(device_type)
    assert training_memory_bytes(model, config) < 8 * GIB
    check_training_memory(model, config, "cpu")  # on this machine, with its real limit
    _limit(monkeypatch, 8 * GIB)  # a modest laptop or GPU
    check_training_memory(model, config, "cpu")


def test_the_estimate_is_linear_in_batch_size_and_in_patch_voxels():
    model = ModelConfig(base_channels=8, depth=3)

    def estimate(batch=16, patch=128):
        return training_memory_bytes(model, TrainConfig(batch_size=batch, patch_size=patch))

    assert estimate(64) - estimate(32) == pytest.approx(2 * (estimate(32) - estimate(16)))
    # patch edge x2 -> voxels x4
    step1 = estimate(patch=256) - estimate(patch=128)
    step2 = estimate(patch=512) - estimate(patch=256)
    assert step2 == pytest.approx(4 * step1)
    three_d = ModelConfig(ndim=3, base_channels=8, depth=3)
    z16, z32, z64 = (
        training_memory_bytes(three_d, TrainConfig(batch_size=16, patch_size_z=z))
        for z in (16, 32, 64)
    )
    assert z64 - z32 == pytest.approx(2 * (z32 - z16))


def test_a_huge_network_is_estimated_without_being_built():
    # 8 levels from 512 channels: ~10^11 parameters, which would be killed on allocation.
    needed = training_memory_bytes(ModelConfig(base_channels=512, depth=8), TrainConfig())
    assert needed > 2**40


def test_cuda_is_refused_only_when_one_patch_per_batch_cannot_fit(monkeypatch):
    # On CUDA the loop halves the batch when the GPU runs out, down to one patch.
    model, config = ModelConfig(base_channels=32, depth=4), TrainConfig(batch_size=256)
    one = training_memory_bytes(model, config, batch_size=1)
    assert training_memory_bytes(model, config) > 4 * one
    _limit(monkeypatch, 2 * one)
    with pytest.raises(InputError, match="memory"):
        check_training_memory(model, config, "cpu")
    check_training_memory(model, config, torch.device("cuda"))
    _limit(monkeypatch, one // 4)
    with pytest.raises(InputError, match="one patch per batch"):
        check_training_memory(model, config, torch.device("cuda"))


def test_an_unknown_limit_checks_nothing(monkeypatch):
    _limit(monkeypatch, None)
    check_training_memory(ModelConfig(), TrainConfig(patch_size=65536, batch_size=64), "cpu")


def test_training_is_refused_before_the_network_is_built(monkeypatch):
    # engine.train (the CLI's and the GUI training job's loop) checks in set_up
    _limit(monkeypatch, 64 * 2**20)
    built = []
    monkeypatch.setattr(
        "napari_live_unet.engine.training_run.SegmentationModel.create",
        lambda *a, **k: built.append(1),
    )
    pairs = [make_pair(*synthetic_nuclei((64, 64), seed=i)) for i in range(2)]
    config = TrainConfig(epochs=1, steps_per_epoch=1, batch_size=4096, patch_size=64)
    with pytest.raises(InputError, match=r"64\.0 MiB"):
        next(train(pairs, config, device="cpu"))
    assert not built


def test_the_cli_refuses_before_reading_any_data(monkeypatch, tmp_path, capsys):
    _limit(monkeypatch, GIB)
    out = tmp_path / "m.pt"
    argv = _train_argv(tmp_path / "no-images", tmp_path / "no-labels", out)
    assert main([*argv, "--patch-size", "20000", "--batch-size", "64"]) == 2
    err = capsys.readouterr().err
    assert "1.0 GiB" in err and "no-images" not in err and "Traceback" not in err
    assert not out.exists()


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(3 * 2**20) == "3.0 MiB"
    assert format_bytes(int(1.5 * 2**40)) == "1.5 TiB"
    assert np.isfinite(float(format_bytes(2**60).split()[0]))
