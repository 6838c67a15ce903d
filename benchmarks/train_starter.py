"""Train the built-in ``nuclei`` starter model on the DSB2018 training split only.

The test split is never read here: the validation part is held out of the training split
(``val_fraction``), thresholds are tuned on it, and ``package_starter.py`` reports test AP
afterwards. Usage (about 70 minutes on the 2-core CPU)::

    PYTHONPATH=src python benchmarks/train_starter.py \
        --data ../shared/data/dsb2018-fluo/train --out starter_raw.pt --time-budget 4200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from napari_live_unet.engine import (
    AugmentConfig,
    EpochEnd,
    ModelConfig,
    Notice,
    ThresholdsChosen,
    TrainConfig,
    TrainingFinished,
    ValidationMetrics,
    load_folder_pairs,
    save_model,
    train,
)

# The starter recipe: wider and deeper than the interactive CPU default (base 8, depth 3),
# larger patches for context around big nuclei, wider zoom and stronger noise so the model
# meets other object sizes and cameras.
STARTER_MODEL = ModelConfig(ndim=2, in_channels=1, mode="distance", base_channels=16, depth=4)


def starter_train_config(time_budget: float, seed: int) -> TrainConfig:
    """The training settings of the starter model."""
    return TrainConfig(
        epochs=None,
        time_budget=time_budget,
        steps_per_epoch=200,
        batch_size=8,
        patch_size=192,
        learning_rate=3e-3,
        val_fraction=0.12,
        val_ap_every=5,
        early_stopping_patience=None,
        seed=seed,
        augment=AugmentConfig(scale_range=(0.67, 1.5), noise_std=0.05),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with images/, labels/")
    parser.add_argument("--out", type=Path, required=True, help="model file to write")
    parser.add_argument("--time-budget", type=float, default=4200.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if "test" in args.data.resolve().parts:
        parser.error("the starter is trained on the training split only")
    torch.set_num_threads(args.threads)
    pairs = load_folder_pairs(args.data / "images", args.data / "labels", ndim=2)
    config = starter_train_config(args.time_budget, args.seed)
    log = []
    t0 = time.perf_counter()
    for event in train(pairs, config, model_config=STARTER_MODEL, device="cpu"):
        if isinstance(event, EpochEnd):
            log.append(
                {
                    "epoch": event.epoch,
                    "step": event.step,
                    "train": event.train_loss,
                    "val": event.val_loss,
                    "elapsed": event.elapsed,
                }
            )
            print(
                f"epoch {event.epoch} step {event.step} train {event.train_loss:.4f} "
                f"val {event.val_loss:.4f} {event.elapsed:.0f}s",
                flush=True,
            )
        elif isinstance(event, ValidationMetrics):
            print(f"  val AP {event.ap}", flush=True)
        elif isinstance(event, (Notice, ThresholdsChosen)):
            print(event, flush=True)
        elif isinstance(event, TrainingFinished):
            save_model(event.model, args.out)
            print(
                f"finished ({event.reason}): {event.steps} steps, "
                f"{time.perf_counter() - t0:.0f} s; wrote {args.out}",
                flush=True,
            )
    args.out.with_suffix(".log.json").write_text(json.dumps(log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
