"""How well the doubt ranking finds wrong objects: for each predicted object, "wrong" means
no true object overlaps it with IoU >= 0.5. Prints the AUROC of the doubt score for telling
wrong from right objects, and the share of wrong objects among the top-ranked tenth against
all objects; flips on and off::

    PYTHONPATH=src python benchmarks/doubt_quality.py --images DIR --labels DIR --model nuclei
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from machine_info import cpu_model
from napari_live_unet.engine import assess_doubt, load_model_source
from napari_live_unet.engine.io import list_tiffs, read_tiff


def wrong_objects(labels: np.ndarray, truth: np.ndarray) -> dict[int, bool]:
    """Predicted label -> whether no true object matches it at IoU >= 0.5."""
    wrong = {}
    for label in np.unique(labels[labels > 0]):
        inside = labels == label
        ids, counts = np.unique(truth[inside], return_counts=True)
        best = 0.0
        for i, c in zip(ids, counts, strict=True):
            if i:
                best = max(best, c / (inside.sum() + (truth == i).sum() - c))
        wrong[int(label)] = best < 0.5
    return wrong


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random wrong object scores above a random right one."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--model", default="nuclei", help="a model file or a built-in name")
    parser.add_argument("--max-images", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model_source(args.model)
    images, labels = list_tiffs(args.images), list_tiffs(args.labels)
    names = sorted(set(images) & set(labels))
    if args.max_images:
        names = names[: args.max_images]
    print(f"{cpu_model()}, torch {torch.__version__}; model {args.model}, {len(names)} images")
    for flips in (True, False):
        scores, wrong, missed = [], [], 0
        for name in names:
            result = assess_doubt(model, read_tiff(images[name]), flips=flips)
            assert result is not None
            _, predicted, report = result
            truth_wrong = wrong_objects(predicted, read_tiff(labels[name]))
            for entry in report.objects:
                if entry.label:
                    scores.append(entry.score)
                    wrong.append(truth_wrong[entry.label])
                else:
                    missed += 1
        s, w = np.array(scores), np.array(wrong)
        top = np.argsort(-s)[: max(1, len(s) // 10)]
        print(
            f"flips {'on ' if flips else 'off'}: {len(s)} objects, {w.mean():.1%} wrong; "
            f"AUROC {auroc(s, w):.3f}; wrong among the top tenth {w[top].mean():.1%}; "
            f"{missed} possibly-missed entries"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
