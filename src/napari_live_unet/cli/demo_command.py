"""``live-unet demo``: the built-in starter on a bundled sample image, then fine-tuned on
the bundled training images for a short time budget, and the two compared."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..engine import STARTER_MODEL, TrainConfig, load_folder_pairs, load_model_source, save_model
from ..engine.device import resolve_device
from ..engine.errors import InputError
from ..engine.io import write_tiff_atomic
from ..engine.label_dtype import label_dtype
from ..engine.metrics import dataset_counts
from ..engine.model import SegmentationModel
from ..engine.run_record import RunRecorder, start_entry
from ..engine.sample_data import sample_folder
from ..engine.training_images import folder_images, training_pairs
from .commands import train_with_progress


def run_demo(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    if not (args.time_budget > 0 and np.isfinite(args.time_budget)):
        raise InputError(
            f"--time-budget must be a positive number of seconds, got {args.time_budget}"
        )
    train_dir, test_dir = sample_folder("train"), sample_folder("test")
    images = folder_images(train_dir / "images", train_dir / "labels")
    pairs, _ = training_pairs(images)
    test = load_folder_pairs(test_dir / "images", test_dir / "labels")
    starter = load_model_source(STARTER_MODEL, device)

    print(f"1. The built-in '{STARTER_MODEL}' model on a held-out sample image, no training:")
    zero_shot = _demo_predict(starter, test, out / "predictions" / "starter")
    print(
        f"2. Fine-tuning it on {len(pairs)} bundled nuclei images for "
        f"{args.time_budget:.0f} s on {device} ..."
    )
    config = TrainConfig(
        epochs=None,
        time_budget=args.time_budget,
        steps_per_epoch=25,
        val_ap_every=0,
        batch_size=8,
        val_fraction=0.2,
    )
    recorder = RunRecorder(  # the demo's model says what made it, like any other
        images,
        config,
        model_config=None,
        adapt=None,
        start=start_entry("builtin", starter, name=STARTER_MODEL),
        started_by="demo",
    )
    model, summary = train_with_progress(
        pairs, config, initial_model=starter, device=device, recorder=recorder
    )
    save_model(model, out / "model.pt")
    if summary.get("kept_start"):
        print("   kept the starting model: fine-tuning did not improve validation AP")
    tuned = _demo_predict(model, test, out / "predictions" / "fine-tuned")

    n_true = zero_shot[0].tp + zero_shot[0].fn
    print(f"\nHeld-out image, {n_true} nuclei: found (AP) per IoU threshold")
    print("IoU   starter (no training)   fine-tuned")
    for a, b in zip(zero_shot, tuned, strict=True):
        print(
            f"{a.threshold:.1f}   {a.tp + a.fp:4d} found (AP {a.ap:.3f})   "
            f"{b.tp + b.fp:4d} found (AP {b.ap:.3f})"
        )
    print(f"Model: {out / 'model.pt'}; labels: {out / 'predictions'}/starter and /fine-tuned")
    print(f"Next: live-unet predict --model {STARTER_MODEL} --images YOUR_FOLDER --out OUT_FOLDER")
    return 0


def _demo_predict(model: SegmentationModel, test, folder: Path) -> list:
    preds = []
    for pair in test:
        labels = model.segment(pair.image, channel_axis=0)
        write_tiff_atomic(
            folder / f"{Path(pair.name).stem}.tif",
            labels.astype(label_dtype(int(labels.max()))),
        )
        preds.append(labels)
    counts = dataset_counts([p.labels for p in test], preds)
    print(f"   AP@0.5 {counts[0].ap:.3f}, AP@0.7 {counts[2].ap:.3f}")
    return counts
