"""Turn a trained starter into the built-in ``nuclei`` model shipped in the package.

Sets what the model file says about itself (name, description, training data and licence,
the command that made it, the object size of its training labels), lets it judge polarity
per image (``image_polarity="auto"``), scores it on the test split (reporting only: nothing
is chosen on it), and writes float16 weights::

    PYTHONPATH=src python benchmarks/package_starter.py --raw starter_raw.pt \
        --train ../shared/data/dsb2018-fluo/train --test ../shared/data/dsb2018-fluo/test \
        --out src/napari_live_unet/models/nuclei.pt --command "..."
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_live_unet.engine import load_folder_pairs, load_model, save_model
from napari_live_unet.engine.image_adapter import InputSpec, diameter_range, object_diameters
from napari_live_unet.engine.metrics import dataset_counts, format_counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, required=True, help="model from train_starter.py")
    parser.add_argument("--train", type=Path, required=True, help="training split folder")
    parser.add_argument("--test", type=Path, help="test split folder (reporting only)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--command", default="", help="how the raw model was trained")
    parser.add_argument("--results", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.raw)
    train_pairs = load_folder_pairs(args.train / "images", args.train / "labels", ndim=2)
    sizes = np.concatenate([object_diameters(p.labels) for p in train_pairs])
    model.input = InputSpec(
        polarity="bright",
        image_polarity="auto",
        diameter=float(np.median(sizes)),
        diameter_range=diameter_range(sizes),
        image_diameter=None,
    )
    figures: dict = {}
    if args.test is not None:
        test = load_folder_pairs(args.test / "images", args.test / "labels", ndim=2)
        t0 = time.perf_counter()
        preds = [labels for _, labels in model.segment_many(p.image for p in test)]
        seconds = time.perf_counter() - t0
        counts = dataset_counts([p.labels for p in test], preds)
        print(format_counts(counts))
        pixels = sum(p.labels.size for p in test)
        figures = {
            "test_ap": {f"{c.threshold:.1f}": round(c.ap, 3) for c in counts},
            "test_images": len(test),
            "predict_mp_per_s": round(pixels / 1e6 / seconds, 2),
        }
        print(f"{pixels / 1e6 / seconds:.2f} MP/s (in memory, segment_many)")
    steps = model.history[-1]["step"] if model.history else 0
    model.info = {
        "name": "nuclei",
        "description": "Nuclei in fluorescence images (bright on dark); adapts to "
        "dark-on-bright, colour and multi-channel images and other object sizes.",
        "training_data": "DSB2018 stage 1 fluorescence nuclei, training split "
        f"({len(train_pairs)} images; Caicedo et al. 2019)",
        "licence": "CC0 1.0 (training data); model under the package's BSD-3-Clause",
        "command": args.command,
        "training_steps": steps,
        "object_diameter_px": round(model.input.diameter, 1),
        **figures,
    }
    model.history = model.history[-1:]  # keep the file small: the last epoch is enough
    save_model(model, args.out, half_precision=True)
    size_mb = args.out.stat().st_size / 1e6
    print(f"wrote {args.out} ({size_mb:.1f} MB)")
    if args.results is not None:
        args.results.write_text(json.dumps({**model.info, "file_mb": round(size_mb, 2)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
