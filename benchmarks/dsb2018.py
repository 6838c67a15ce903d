"""DSB2018 fluorescence nuclei: train on the train split, report on the test split.

Prints AP at IoU 0.5-0.9, training wall seconds and throughput, and prediction speed
(network alone and end to end with post-processing). Results also go to --json.

    PYTHONPATH=src python benchmarks/dsb2018.py --time-budget 300 --device cpu
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_live_unet.engine import (
    EpochEnd,
    ModelConfig,
    ThresholdsChosen,
    TrainConfig,
    TrainingFinished,
    ValidationMetrics,
    dataset_counts,
    load_folder_pairs,
    recommended_settings,
    resolve_device,
    train,
)
from napari_live_unet.engine.metrics import format_counts

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dsb2018-fluo"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--mode", default="distance", choices=["distance", "boundary"])
    p.add_argument("--time-budget", type=float, default=300.0)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--base-channels", type=int, default=None)
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--patch-size", type=int, default=None)
    p.add_argument("--steps-per-epoch", type=int, default=50)
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--val-ap-every", type=int, default=0)
    p.add_argument("--predict-batch", type=int, default=8)
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    device = resolve_device(args.device)
    for key, value in recommended_settings(device.type).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    t0 = time.perf_counter()
    train_pairs = load_folder_pairs(args.data / "train" / "images", args.data / "train" / "labels")
    test_pairs = load_folder_pairs(args.data / "test" / "images", args.data / "test" / "labels")
    load_s = time.perf_counter() - t0
    config = TrainConfig(
        epochs=args.epochs,
        time_budget=None if args.epochs else args.time_budget,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        learning_rate=args.learning_rate,
        val_ap_every=args.val_ap_every,
        compile=args.compile,
        seed=args.seed,
        early_stopping_patience=None,
    )
    model_config = ModelConfig(mode=args.mode, base_channels=args.base_channels, depth=args.depth)
    t0 = time.perf_counter()
    first_step_at = None
    for event in train(train_pairs, config, model_config=model_config, device=device):
        if first_step_at is None and not isinstance(event, (TrainingFinished,)):
            first_step_at = time.perf_counter()
        if isinstance(event, EpochEnd):
            print(
                f"epoch {event.epoch:3d} train {event.train_loss:.4f} val {event.val_loss:.4f}"
                f" {event.samples_per_second:.1f} patches/s t={event.elapsed:.0f}s",
                file=sys.stderr,
            )
        elif isinstance(event, ValidationMetrics):
            print(f"   val AP {event.ap}", file=sys.stderr)
        elif isinstance(event, ThresholdsChosen):
            print(f"thresholds {event.params} val AP {event.ap}", file=sys.stderr)
        elif isinstance(event, TrainingFinished):
            finished = event
    total_train_s = time.perf_counter() - t0
    model = finished.model
    loop_s = model.history[-1]["elapsed"]
    patches = finished.steps * args.batch_size
    patches_per_s = patches / loop_s
    mp_per_s_train = patches_per_s * args.patch_size**2 / 1e6

    # Prediction: warm up once, then time the network alone and end to end.
    tile = (args.tile, args.tile)
    model.predict_outputs(
        test_pairs[0].image, channel_axis=0, tile_shape=tile, batch_size=args.predict_batch
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    pixels = sum(int(np.prod(p.spatial_shape)) for p in test_pairs)
    t0 = time.perf_counter()
    for _ in model.predict_outputs_many(
        (p.image for p in test_pairs),
        channel_axis=0,
        tile_shape=tile,
        batch_size=args.predict_batch,
    ):
        pass
    if device.type == "cuda":
        torch.cuda.synchronize()
    net_s = time.perf_counter() - t0
    # End to end: network and post-processing overlapped, as `live-unet predict` runs them.
    t0 = time.perf_counter()
    preds = [
        labels
        for _, labels in model.segment_many(
            (p.image for p in test_pairs),
            channel_axis=0,
            tile_shape=tile,
            batch_size=args.predict_batch,
        )
    ]
    end_to_end_s = time.perf_counter() - t0
    counts = dataset_counts([p.labels for p in test_pairs], preds)

    result = {
        "command": " ".join(sys.argv),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "mode": args.mode,
        "train_images": len(train_pairs),
        "test_images": len(test_pairs),
        "load_seconds": round(load_s, 1),
        "train_wall_seconds": round(total_train_s, 1),
        "train_loop_seconds": round(loop_s, 1),
        "epochs": finished.epochs,
        "steps": finished.steps,
        "train_patches_per_s": round(patches_per_s, 1),
        "train_megapixels_per_s": round(mp_per_s_train, 2),
        "predict_network_mp_per_s": round(pixels / 1e6 / net_s, 2),
        "predict_end_to_end_mp_per_s": round(pixels / 1e6 / end_to_end_s, 2),
        "thresholds": model.postprocess.to_dict(),
        "ap": {f"{c.threshold:.1f}": round(c.ap, 4) for c in counts},
        "counts": {f"{c.threshold:.1f}": [c.tp, c.fp, c.fn] for c in counts},
        "parameters": sum(p.numel() for p in model.network.parameters()),
    }
    print(format_counts(counts))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
