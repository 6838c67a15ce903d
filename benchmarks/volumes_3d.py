"""3D on a CPU: synthetic anisotropic nuclei, isotropic vs anisotropic ("flat-then-3D") U-net.

Makes train and test volumes with ``synthetic_volumes.make_volume`` (nothing downloaded),
trains each network for the same time budget with the engine's 3D defaults, and reports
AP@0.5-0.9 on the test volumes, training patches/s and end-to-end prediction MP/s
(network, resampling and post-processing). A second scenario mimics a user with one small
volume: train on one half (split along x), score the other half.

    PYTHONPATH=src python benchmarks/volumes_3d.py --time-budget 300 \
        --json benchmarks/results/volumes_3d_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from napari_live_unet.engine import (
    AdaptOptions,
    EpochEnd,
    ModelConfig,
    TrainConfig,
    TrainingFinished,
    TrainingStarted,
    dataset_counts,
    make_pair,
    recommended_settings,
    train,
)
from napari_live_unet.engine.config import anisotropic_layout
from napari_live_unet.engine.model_file import save_model
from synthetic_volumes import make_volume


def cpu_model() -> str:
    """The CPU's model name and whether it has AVX512-BF16 (figures differ with it)."""
    name, flags = platform.processor() or "unknown CPU", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = line
    except OSError:
        pass
    return f"{name} ({'with' if 'avx512_bf16' in flags else 'without'} AVX512-BF16)"


def network(
    kind: str, voxel: tuple[float, ...], base: int, depth: int, mode: str = "distance"
) -> ModelConfig:
    """``aniso``: flat first levels from the voxel size; ``iso``: 2x2x2 pooling throughout."""
    if kind == "aniso":
        pooling, kernels = anisotropic_layout(voxel, depth)
    else:
        pooling, kernels = ((2, 2, 2),) * depth, ((3, 3, 3),) * (depth + 1)
    return ModelConfig(
        ndim=3, base_channels=base, depth=depth, pooling=pooling, kernels=kernels,
        voxel_size=voxel, mode=mode,
    )  # fmt: skip


def run(
    kind, train_pairs, test, voxel, budget, seed, save_to=None, mode="distance", base=None,
    model_voxel=None,
) -> dict:  # fmt: skip
    """Train one network for ``budget`` seconds, then predict and score ``test``.

    ``save_to``: a model file to write the trained model to (for looking at its errors).
    """
    settings = recommended_settings("cpu", 3)
    config = TrainConfig(
        epochs=None,
        time_budget=budget,
        batch_size=settings["batch_size"],
        patch_size=settings["patch_size"],
        patch_size_z=settings["patch_size_z"],
        seed=seed,
    )
    base = base or settings["base_channels"]
    model_config = network(kind, model_voxel or voxel, base, settings["depth"], mode)
    rates, model, started = [], None, None
    for event in train(train_pairs, config, model_config=model_config, device="cpu"):
        if isinstance(event, TrainingStarted):
            started = event
        elif isinstance(event, EpochEnd) and event.epoch > 0:
            rates.append(event.samples_per_second)
        elif isinstance(event, TrainingFinished):
            model, steps, elapsed = event.model, event.steps, event.elapsed
    assert model is not None and started is not None
    if save_to is not None:
        save_model(model, save_to)
    adapt = AdaptOptions(voxel_size=voxel)
    images = [image for image, _ in test]
    tic = time.perf_counter()
    preds = [labels for _, labels in model.segment_many(images, adapt=adapt)]
    seconds = time.perf_counter() - tic
    counts = dataset_counts([gt for _, gt in test], preds)
    return {
        "network": kind,
        "mode": mode,
        "pooling": [list(p) for p in model.config.level_pooling],
        "patch": list(started.patch_shape),
        "batch": started.batch_size,
        "parameters": started.n_parameters,
        "train_seconds": round(elapsed, 1),
        "steps": steps,
        "patches_per_s_median": round(statistics.median(rates), 1) if rates else None,
        "predict_mp_per_s": round(sum(i.size for i in images) / 1e6 / seconds, 3),
        "ap": {f"{c.threshold:.1f}": round(c.ap, 3) for c in counts},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--time-budget", type=float, default=300.0)
    p.add_argument("--small-budget", type=float, default=120.0)
    p.add_argument("--shape", type=int, nargs=3, default=[32, 128, 128])
    p.add_argument("--voxel-size", type=float, nargs=3, default=[3.0, 1.0, 1.0])
    p.add_argument("--n-train", type=int, default=4)
    p.add_argument("--n-test", type=int, default=2)
    p.add_argument("--networks", nargs="*", default=["aniso", "iso"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    p.add_argument("--save-models", type=Path, help="folder for the trained models")
    p.add_argument("--mode", choices=["distance", "boundary"], default="distance")
    p.add_argument("--base-channels", type=int, help="default: the engine's for a CPU")
    p.add_argument("--model-voxel-size", type=float, nargs=3, help="default: the data's")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    voxel = tuple(args.voxel_size)
    model_voxel = tuple(args.model_voxel_size) if args.model_voxel_size else None
    volumes = [
        make_volume(args.shape, voxel, n=40, seed=(args.seed, i))
        for i in range(args.n_train + args.n_test)
    ]
    train_pairs = [
        make_pair(image, labels, name=f"vol{i}", voxel_size=voxel)
        for i, (image, labels) in enumerate(volumes[: args.n_train])
    ]
    test = volumes[args.n_train :]
    results = {
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "shape": args.shape,
        "voxel_size": list(voxel),
        "nuclei_test": int(sum(len(np.unique(gt)) - 1 for _, gt in test)),
        "runs": [],
    }
    for kind in args.networks:
        save_to = None if args.save_models is None else args.save_models / f"{kind}.pt"
        result = run(
            kind, train_pairs, test, voxel, args.time_budget, args.seed, save_to, args.mode,
            args.base_channels, model_voxel,
        )  # fmt: skip
        results["runs"].append(result)
        print(json.dumps(result), flush=True)
    if args.small_budget > 0:
        # One small volume, as a user has it: train on the left half, score the right half.
        image, labels = make_volume((24, 128, 160), voxel, n=150, seed=(args.seed, 99))
        half = image.shape[-1] // 2
        pair = make_pair(image[..., :half], labels[..., :half], name="left", voxel_size=voxel)
        result = run(
            "aniso", [pair], [(image[..., half:], labels[..., half:])], voxel,
            args.small_budget, args.seed, mode=args.mode, base=args.base_channels,
            save_to=None if args.save_models is None else args.save_models / "small.pt",
            model_voxel=model_voxel,
        )  # fmt: skip
        result["scenario"] = f"one volume 24x128x160, {int(labels.max())} nuclei, halves"
        results["small_volume"] = result
        print(json.dumps(result), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
