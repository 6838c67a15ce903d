"""Human in the loop with a simulated annotator: does correcting the objects the model doubts
most teach it more than correcting objects at random?

Starting from ``--start`` (a model file or a built-in name), each round predicts the next
image of the pool, "corrects" ``--objects`` of its predicted objects, chosen by the doubt
ranking (``ranked``) or at random (``random``): the true labels are copied inside a region
around each chosen object (grown to cover every true object it touches), and everything
else stays unannotated, so the loss ignores it (the sparse-region mechanism). Training then
continues for ``--budget`` seconds (or ``--steps`` steps, which repeat exactly under a busy
CPU) on every correction so far, with the recipe the product would choose. After each round
the model is scored on the images that no round uses::

    PYTHONPATH=src python benchmarks/hitl.py --images ../shared/data/dsb2018-histology-dev/images \\
        --labels ../shared/data/dsb2018-histology-dev/labels --start nuclei --rounds 4 \\
        --objects 10 --budget 60 --choose ranked --seed 0

It prints one line per round and, last, ``corrected N objects: AP50 x AP70 y``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from machine_info import cpu_model
from napari_live_unet.engine import (
    TrainConfig,
    TrainingFinished,
    assess_doubt,
    dataset_counts,
    load_model_source,
    make_pair,
    recommended_settings,
    train,
)
from napari_live_unet.engine.io import list_tiffs, read_tiff

MARGIN = 8  # pixels of context around each corrected object, as an annotator would paint


def correction_mask(
    truth: np.ndarray, boxes: list[tuple[tuple[int, int], ...]], margin: int = MARGIN
) -> np.ndarray:
    """Where the simulated annotator paints: each box grown by ``margin``, then grown until
    it covers every true object it touches (no object is left half-annotated)."""
    mask = np.zeros(truth.shape, bool)
    for box in boxes:
        region = tuple(
            slice(max(0, a - margin), min(n, b + margin))
            for (a, b), n in zip(box, truth.shape, strict=True)
        )
        mask[region] = True
    touched = np.unique(truth[mask])
    mask |= np.isin(truth, touched[touched > 0])
    return mask


def choose_objects(report, labels: np.ndarray, k: int, how: str, rng) -> list:
    """``k`` entries to correct: the most doubtful ones, or ``k`` predicted objects (and
    missed-object candidates) at random."""
    entries = list(report.objects)
    if how == "ranked":
        return entries[:k]
    # Drawn from an order that does not depend on the ranking, so changing the ranking
    # leaves the random choice as it was.
    entries.sort(key=lambda e: (e.label, e.centroid))
    order = rng.permutation(len(entries))
    return [entries[i] for i in order[:k]]


def score(model, images: list[np.ndarray], truths: list[np.ndarray]) -> dict[str, float]:
    preds = [model.segment(image) for image in images]
    counts = dataset_counts(truths, preds, thresholds=(0.5, 0.7))
    return {f"{c.threshold:.1f}": round(c.ap, 3) for c in counts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--start", default="nuclei", help="a model file or a built-in name")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--objects", type=int, default=10, help="objects corrected per round")
    parser.add_argument("--budget", type=float, default=60.0, help="training seconds per round")
    parser.add_argument("--steps", type=int, help="training steps per round instead of --budget")
    parser.add_argument("--choose", choices=["ranked", "random"], default="ranked")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--test-images", type=int, default=0, help="score on at most N images")
    parser.add_argument("--json", type=Path, help="append the rounds as one JSON line")
    args = parser.parse_args()
    if args.rounds < 1 or args.objects < 1:
        parser.error("--rounds and --objects must be at least 1")
    torch.set_num_threads(args.threads)
    labels = list_tiffs(args.labels)
    images = list_tiffs(args.images)
    names = sorted(set(labels) & set(images))
    if len(names) <= args.rounds:
        parser.error(f"{len(names)} image/label pairs: need more than --rounds ({args.rounds})")
    rng = np.random.default_rng(args.seed)
    order = [names[i] for i in rng.permutation(len(names))]
    pool, held_out = order[: args.rounds], order[args.rounds :]
    if args.test_images:
        held_out = held_out[: args.test_images]
    test_images = [read_tiff(images[n]) for n in held_out]
    test_truths = [read_tiff(labels[n]) for n in held_out]
    print(
        f"{cpu_model()}, torch {torch.__version__}, {args.threads} threads; start "
        f"{args.start}, {args.choose} choice of {args.objects} objects a round, "
        f"scored on {len(held_out)} images"
    )
    model = load_model_source(args.start)
    ap = score(model, test_images, test_truths)
    print(f"round 0: corrected 0 objects: AP50 {ap['0.5']:.3f} AP70 {ap['0.7']:.3f}")
    rounds = [{"round": 0, "corrected": 0, "ap": ap}]
    pairs, corrected = [], 0
    settings = recommended_settings("cpu")
    for r, name in enumerate(pool, start=1):
        image, truth = read_tiff(images[name]), read_tiff(labels[name])
        assessed = assess_doubt(model, image)
        assert assessed is not None  # nothing stops it
        _, predicted, report = assessed
        chosen = choose_objects(report, predicted, args.objects, args.choose, rng)
        mask = correction_mask(truth, [entry.bbox for entry in chosen])
        # A region without a true object is a false positive painted out: it teaches
        # background, so it is kept.
        sparse = np.where(mask, truth, 0)
        pairs.append(make_pair(image, sparse, annotated=mask, name=name, require_objects=False))
        corrected += len(chosen)
        config = TrainConfig(
            epochs=None if args.steps is None else max(1, args.steps // 50),
            time_budget=args.budget if args.steps is None else None,
            batch_size=settings["batch_size"],
            patch_size=settings["patch_size"],
            val_ap_every=0,
            seed=args.seed,
        )
        started, steps, recipe = time.perf_counter(), 0, ""
        if any(p.n_objects for p in pairs):  # training needs one object at least
            for event in train(pairs, config, initial_model=model):
                if getattr(event, "recipe", ""):
                    recipe = event.recipe.split(" (")[0]
                if isinstance(event, TrainingFinished):
                    model, steps = event.model, event.steps
        ap = score(model, test_images, test_truths)
        seconds = time.perf_counter() - started
        print(
            f"round {r}: {name}: corrected {len(chosen)} ({corrected} in all), "
            f"{int(mask.sum())} px annotated, trained {seconds:.0f} s ({steps} steps, "
            f"{recipe}): AP50 {ap['0.5']:.3f} AP70 {ap['0.7']:.3f}",
            flush=True,
        )
        rounds.append({"round": r, "image": name, "corrected": corrected, "ap": ap})
    print(f"corrected {corrected} objects: AP50 {ap['0.5']:.3f} AP70 {ap['0.7']:.3f}")
    if args.json is not None:
        with args.json.open("a") as out:
            out.write(
                json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rounds": rounds})
                + "\n"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
