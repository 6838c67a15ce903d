"""Multi-process training (torch DDP): sharding, the ranks' agreements, and torchrun end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import torch.distributed as dist
from torch.multiprocessing.spawn import spawn

from napari_live_unet.engine import (
    ModelConfig,
    TrainConfig,
    load_folder_pairs,
    load_model,
    run_training,
)
from napari_live_unet.engine.distributed import (
    DistributedContext,
    DistributedError,
    agree_on_step,
    all_ranks,
    check_identical,
    from_main,
    mean_over_ranks,
    process_group,
    rank_seed,
    torchrun_ranks,
    training_device,
)
from napari_live_unet.engine.errors import InputError
from napari_live_unet.engine.sampler import PatchSampler
from napari_live_unet.engine.unet import UNet

from .conftest import write_dataset

TORCHRUN_ENV = (
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
)


def _draws(pairs, seed: int | None, n: int = 3) -> list[np.ndarray]:
    sampler = PatchSampler(pairs, "boundary", (32, 32), torch.device("cpu"), seed=seed)
    return [sampler.sample(2)[0].numpy() for _ in range(n)]


def test_each_rank_draws_its_own_patches(dataset):
    pairs = load_folder_pairs(*dataset)
    single = _draws(pairs, 0)
    rank0, rank1 = _draws(pairs, rank_seed(0, 0)), _draws(pairs, rank_seed(0, 1))
    # Rank 0 draws what a single process draws; another rank draws other patches.
    assert all(np.array_equal(a, b) for a, b in zip(single, rank0, strict=True))
    assert not any(np.array_equal(a, b) for a, b in zip(rank0, rank1, strict=True))
    assert len({rank_seed(0, r) for r in range(8)}) == 8
    assert rank_seed(None, 0) is None


def test_outside_torchrun_nothing_changes(monkeypatch):
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    assert torchrun_ranks() is None
    assert torchrun_ranks({"WORLD_SIZE": "1", "RANK": "0"}) is None
    with process_group(torch.device("cpu")) as ranks:
        assert ranks is None
        assert not dist.is_initialized()


def test_torchrun_environment_and_refused_devices(monkeypatch):
    env = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    with pytest.raises(InputError, match="MASTER_ADDR, MASTER_PORT not set"):
        torchrun_ranks(env)
    env |= {"MASTER_ADDR": "node1", "MASTER_PORT": "29500"}
    assert torchrun_ranks(env) == (3, 1, 4, 2)

    cpu = torch.device("cpu")
    assert training_device(cpu, 1, 2) == cpu
    with pytest.raises(InputError, match="not on mps"):
        training_device(torch.device("mps"), 0, 2)
    with pytest.raises(InputError, match="give --device cuda"):
        training_device(torch.device("cuda", 1), 0, 2)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InputError, match="2 processes on this machine but only 1 CUDA GPU"):
        training_device(torch.device("cuda"), 1, 2)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert training_device(torch.device("cuda"), 1, 2) == torch.device("cuda", 1)


def _rank_worker(rank: int, folder: str) -> None:
    """One of two gloo ranks: the agreements, the weight check, and a training run that
    one rank alone is asked to stop."""
    root = Path(folder)
    torch.set_num_threads(1)  # two ranks on two cores
    dist.init_process_group("gloo", init_method=(root / "store").as_uri(), rank=rank, world_size=2)
    try:
        ctx = DistributedContext(rank, rank, 2, torch.device("cpu"))
        # Rank 0's clock, and a stop asked of rank 1 only, reach both ranks.
        assert agree_on_step(ctx, 5.0 + 4 * rank, stop=rank == 1) == (5.0, True)
        assert agree_on_step(ctx, 1.0, stop=False) == (1.0, False)
        assert not all_ranks(rank == 0, ctx)  # a step not finite on one rank is skipped on all
        assert all_ranks(True, ctx)
        assert from_main(rank == 0, ctx)
        assert mean_over_ranks(float(rank), ctx) == 0.5

        tiny = ModelConfig(base_channels=4, depth=2)
        torch.manual_seed(rank)  # different weights: DDP copies rank 0's at the start
        network = UNet(tiny)
        with torch.no_grad():
            for param in network.parameters():
                dist.broadcast(param, src=0)
        assert check_identical(network, ctx) == "model identical on 2 ranks"
        if rank == 1:
            with torch.no_grad():
                next(network.parameters())[0].flatten()[0] += 1e-6
        try:
            check_identical(network, ctx)
        except DistributedError as exc:
            assert "rank(s) 1 differ" in str(exc)
        else:
            raise AssertionError("differing weights were not noticed")

        pairs = load_folder_pairs(root / "data" / "images", root / "data" / "labels")
        config = TrainConfig(
            epochs=5, steps_per_epoch=4, batch_size=2, patch_size=32, val_ap_every=0, seed=0
        )
        polls = []

        def should_stop() -> bool:  # rank 1 alone is asked to stop before its 7th step
            polls.append(1)
            return rank == 1 and len(polls) >= 7

        model = run_training(
            pairs,
            config,
            model_config=tiny,
            device="cpu",
            should_stop=should_stop,
            distributed=ctx,
        )
        record = {"steps": model.history[-1]["step"], "epochs": len(model.history)}
        (root / f"rank{rank}.json").write_text(json.dumps(record))
        dist.barrier()  # leave together, as process_group() does (gloo can abort otherwise)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_agree_and_stop_together(tmp_path):
    write_dataset(tmp_path / "data", n_images=3, shape=(48, 48))
    spawn(_rank_worker, args=(str(tmp_path),), nprocs=2)
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    # Both ranks stopped at rank 1's request after the same 6 steps (one full epoch and
    # half of the next).
    assert rank0["steps"] == rank1["steps"] == 6
    assert rank0["epochs"] == rank1["epochs"] == 2


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.slow
def test_torchrun_trains_on_two_cpu_processes(tmp_path):
    images, labels = write_dataset(tmp_path / "data", n_images=4, shape=(64, 64))
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
        "napari_live_unet.cli",
        "train",
        "--images",
        str(images),
        "--labels",
        str(labels),
        "--out",
        str(out / "model.pt"),
        "--epochs",
        "2",
        "--steps-per-epoch",
        "3",
        "--batch-size",
        "2",
        "--patch-size",
        "32",
        "--base-channels",
        "4",
        "--depth",
        "2",
        "--val-ap-every",
        "1",
        "--device",
        "cpu",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=110)
    text = done.stdout + done.stderr
    assert done.returncode == 0, text
    # One model file, no per-rank copies or temporaries.
    assert _listing(out) == ["model.pt"]
    # Rank 0 alone reports: each line once.
    assert text.count("model identical on 2 ranks") == 1, text
    assert text.count("2 processes (torch DDP, gloo): each step takes 2 x 2 patches") == 1
    assert text.count("training on patches") == 1
    assert text.count("epoch   1  train") == 1 and text.count("epoch   2  train") == 1
    assert text.count("validation AP@0.5") == 2
    assert done.stdout.count("model written to") == 1
    assert "trained 2 epochs (6 steps)" in done.stdout

    model = load_model(out / "model.pt")
    assert [r["step"] for r in model.history] == [3, 6]
    image = tifffile.imread(images / "img0.tif")
    labels_out = model.segment(image)
    assert labels_out.shape == image.shape
