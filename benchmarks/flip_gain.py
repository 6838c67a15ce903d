"""What flip averaging gains for a model saved by ``few_shot.py --save``, on the validation
bands training chose it on and on the scored images, each with thresholds tuned for it.

The split is rebuilt as ``few_shot.py`` made it (same ``--folder``, ``--n-images``, ``--seed``;
without ``--folder``, the DSB2018 training images it picked), the bands as the few-shot
recipe holds them out, and the images fitted to the model as training fitted them::

    PYTHONPATH=src python benchmarks/few_shot.py --start scratch --epochs 12 --threads 1 \\
        --save /tmp/scratch.pt
    PYTHONPATH=src python benchmarks/flip_gain.py --model /tmp/scratch.pt --start scratch
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from few_shot import _folder_split, pick_images, validation_bands
from machine_info import cpu_model
from napari_live_unet.engine.builtin_models import load_model_source
from napari_live_unet.engine.config import PostprocessConfig, TrainConfig
from napari_live_unet.engine.data import load_folder_pairs, make_pair
from napari_live_unet.engine.evaluation import limit_pixels, tuned_thresholds
from napari_live_unet.engine.io import read_tiff
from napari_live_unet.engine.metrics import dataset_counts
from napari_live_unet.engine.model_file import load_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="saved by few_shot.py --save")
    parser.add_argument("--start", default="scratch", help="what few_shot.py started from")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018-fluo"))
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--n-images", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    if args.folder is not None:
        pairs, test, test_images = _folder_split(args.folder, args.n_images, args.seed)
    else:
        train_dir = args.data / "train"
        pairs = [
            make_pair(
                read_tiff(train_dir / "images" / f"{n}.tif"),
                read_tiff(train_dir / "labels" / f"{n}.tif"),
                name=n,
            )
            for n in pick_images(train_dir, args.n_images, args.seed)
        ]
        test = load_folder_pairs(args.data / "test" / "images", args.data / "test" / "labels")
        test_images = [p.image[0] for p in test]
    start = None if args.start == "scratch" else load_model_source(args.start)
    bands = validation_bands(pairs, model, start)
    bands = limit_pixels(bands, TrainConfig().tune_max_pixels)
    base = dataclasses.replace(model, postprocess=PostprocessConfig())
    if start is not None:
        base = dataclasses.replace(base, postprocess=start.postprocess)
    print(f"{cpu_model()}, torch {torch.__version__}, {args.threads} threads")
    for averaged in (False, True):
        # As training does: averaged outputs are tuned from the plain outputs' thresholds.
        candidate = dataclasses.replace(base, flip_average=averaged)
        params, counts, score = tuned_thresholds(candidate, bands)
        base = dataclasses.replace(base, postprocess=params)
        tuned = dataclasses.replace(candidate, postprocess=params)
        preds = [labels for _, labels in tuned.segment_many(test_images)]
        scored = dataset_counts([p.labels for p in test], preds, (0.5, 0.7))
        name = "flip-averaged" if averaged else "each tile once"
        print(
            f"{name}: bands ({counts[0].tp + counts[0].fn} objects) AP@0.5 {counts[0].ap:.3f} "
            f"score {score:.3f}; scored images AP@0.5 {scored[0].ap:.3f} AP@0.7 {scored[1].ap:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
