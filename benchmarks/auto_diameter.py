"""Does zooming by the predicted object size help the starter? Scored on the starter's own
validation part of the training split (the images `train_starter.py` held out), so a choice
made here never looks at the test split; ``--test`` reports the same on the test split.

For each image: predict at its native size, measure the median diameter of the predicted
objects, then predict again zoomed so that diameter becomes TARGET (only when that enlarges
the image, or both ways with --both-ways)::

    PYTHONPATH=src python benchmarks/auto_diameter.py --model starter_raw.pt --targets 20 28
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from napari_live_unet.engine import (
    AdaptOptions,
    dataset_counts,
    estimate_diameter,
    load_folder_pairs,
    load_model_source,
    split_validation,
)
from napari_live_unet.engine.image_adapter import resize, zoomed_shape

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dsb2018-fluo"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--targets", type=float, nargs="+", default=[20.0, 28.0])
    parser.add_argument("--test", action="store_true", help="score the test split instead")
    parser.add_argument("--both-ways", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_model_source(args.model)
    if args.test:
        pairs = load_folder_pairs(args.data / "test" / "images", args.data / "test" / "labels")
    else:  # the validation part train_starter.py held out (same split, same seed)
        train = load_folder_pairs(args.data / "train" / "images", args.data / "train" / "labels")
        pairs = split_validation(train, 0.12, 0)[1]
    truths = [p.labels for p in pairs]
    native = [model.segment(p.image, channel_axis=0) for p in pairs]
    measured = [estimate_diameter(labels) or 0.0 for labels in native]
    report("native", truths, native)
    for target in args.targets:
        preds = []
        for pair, labels, d in zip(pairs, native, measured, strict=True):
            if d <= 0 or (d >= target and not args.both_ways):
                preds.append(labels)
                continue
            preds.append(_zoomed(model, pair.image, target / d))
        report(f"target {target:g} px", truths, preds)
    return 0


def _zoomed(model, image, zoom):
    """Labels predicted and post-processed on the zoomed image, resized back."""
    shape = tuple(image.shape[1:])
    big = resize(np.asarray(image, np.float32), zoomed_shape(shape, zoom))
    outputs = model.predict_outputs(big, channel_axis=0, adapt=AdaptOptions())
    labels = model.instances(outputs, model.postprocess)
    return resize(labels[None], shape, nearest=True)[0]


def report(name, truths, preds) -> None:
    counts = dataset_counts(truths, preds)
    aps = "  ".join(f"AP@{c.threshold:.1f} {c.ap:.3f}" for c in counts)
    print(f"{name:>14}: {aps}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
