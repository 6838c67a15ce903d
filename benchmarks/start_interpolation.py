"""A fine-tuned model moved part of the way back to its starting weights: validation-band
and test scores for each share of fine-tuning's change kept (measured, not part of the
recipe: docs/benchmarks.md, "Few-shot recipe on the H&E development split").

``start + share * (fine_tuned - start)`` for weights and batch-norm statistics (Wortsman et
al., "Robust fine-tuning of zero-shot models", CVPR 2022); the model's own thresholds. The
split is rebuilt as ``few_shot.py --folder`` made it::

    PYTHONPATH=src python benchmarks/few_shot.py --folder ../shared/data/dsb2018-histology-dev \\
        --n-images 4 --start nuclei --epochs 12 --threads 1 --save /tmp/he.pt
    PYTHONPATH=src python benchmarks/start_interpolation.py --model /tmp/he.pt \\
        --folder ../shared/data/dsb2018-histology-dev --shares 1 0.9 0.75 0.6 0.5
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

from few_shot import _folder_split, validation_bands
from machine_info import cpu_model
from napari_live_unet.engine.builtin_models import load_model_source
from napari_live_unet.engine.evaluation import CachedValidation, tuning_score
from napari_live_unet.engine.image_adapter import channel_weights
from napari_live_unet.engine.metrics import dataset_counts
from napari_live_unet.engine.model_file import load_model
from napari_live_unet.engine.unet import widen_input


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="saved by few_shot.py --save")
    parser.add_argument("--start", default="nuclei")
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--n-images", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shares", type=float, nargs="+", default=[1.0, 0.9, 0.75, 0.6, 0.5])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tuned, start = load_model(args.model), load_model_source(args.start)
    start_network = copy.deepcopy(start.network)
    if tuned.config.in_channels != start.config.in_channels:  # fine-tuning widened it
        n = tuned.config.in_channels
        start_network = widen_input(start_network, torch.from_numpy(channel_weights(n, True)))
    pairs, test, images = _folder_split(args.folder, args.n_images, args.seed)
    bands = validation_bands(pairs, tuned, start)
    first, last = start_network.state_dict(), tuned.network.state_dict()
    print(f"{cpu_model()}, torch {torch.__version__}, {args.threads} threads")
    for share in args.shares:
        state = {
            k: first[k] + share * (v - first[k]) if v.is_floating_point() else v
            for k, v in last.items()
        }
        model = copy.deepcopy(tuned)
        model.network.load_state_dict(state)
        model.network.eval()
        counts = CachedValidation(model, bands).counts(model.postprocess, (0.5, 0.7))
        preds = [labels for _, labels in model.segment_many(images)]
        scored = dataset_counts([p.labels for p in test], preds, (0.5, 0.7))
        print(
            f"share {share:.2f}: bands ({counts[0].tp + counts[0].fn} objects) AP@0.5 "
            f"{counts[0].ap:.3f} score {tuning_score(counts):.3f}; scored images AP@0.5 "
            f"{scored[0].ap:.3f} AP@0.7 {scored[1].ap:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
