"""Few-shot training on this machine: a few annotated images, a short budget, scored on the
DSB2018 test split. Compares training from scratch with fine-tuning the built-in starter.

``--variant inverted-rgb`` turns every image (training and test) into dark purple nuclei on a
bright background in RGB: a stand-in for a new modality (H&E, brightfield) that exercises the
luminance and polarity fitting. The training images come from the training split only::

    PYTHONPATH=src python benchmarks/few_shot.py --start scratch --time-budget 300
    PYTHONPATH=src python benchmarks/few_shot.py --start nuclei --time-budget 300
    PYTHONPATH=src python benchmarks/few_shot.py --start nuclei --variant inverted-rgb

``--folder DIR`` takes ``DIR/images`` and ``DIR/labels`` instead: ``--n-images`` of them
(chosen with ``--seed``) train, all the others are scored, e.g. the H&E development split::

    PYTHONPATH=src python benchmarks/few_shot.py --folder ../shared/data/dsb2018-histology-dev \
        --n-images 4 --start nuclei --epochs 12 --recipe auto

``--epochs`` (50 steps each) instead of ``--time-budget`` repeats exactly on a busy CPU.
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
    AdaptOptions,
    ModelConfig,
    Notice,
    TrainConfig,
    TrainingFinished,
    TrainingStarted,
    dataset_counts,
    load_folder_pairs,
    load_model_source,
    make_pair,
    recommended_settings,
    train,
)
from napari_live_unet.engine.io import list_tiffs, read_tiff
from napari_live_unet.engine.model_file import save_model

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dsb2018-fluo"
# Dark purple nuclei on white: the fraction of each RGB channel a bright nucleus removes.
_STAIN = np.array([0.55, 0.85, 0.45], np.float32)


def inverted_rgb(image: np.ndarray) -> np.ndarray:
    """A fluorescence image as dark, tinted nuclei on a bright background (uint8 RGB)."""
    scaled = image.astype(np.float32) / max(float(image.max()), 1.0)
    return np.clip(255.0 * (1.0 - scaled[..., None] * _STAIN), 0, 255).astype(np.uint8)


def pick_images(folder: Path, n: int, seed: int) -> list[str]:
    """``n`` training images with 15-60 nuclei each, chosen at random with ``seed``."""
    labels = list_tiffs(folder / "labels")
    names = sorted(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for i in rng.permutation(len(names)):
        count = len(np.unique(read_tiff(labels[names[i]]))) - 1
        if 15 <= count <= 60:
            chosen.append(names[i])
        if len(chosen) == n:
            break
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--start", default="scratch", help="scratch, or a model name/file")
    parser.add_argument("--variant", default="plain", choices=["plain", "inverted-rgb"])
    parser.add_argument("--n-images", type=int, default=3)
    parser.add_argument("--time-budget", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--save", type=Path, help="save the trained model to this file")
    parser.add_argument(
        "--folder", type=Path, help="images/ and labels/: train on a few, score the rest"
    )
    parser.add_argument("--epochs", type=int, help="50-step epochs instead of --time-budget")
    parser.add_argument("--recipe", default="auto", choices=["auto", "few-shot", "standard"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--all-channels", action="store_true", help="widen the start model's first layer"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    convert = inverted_rgb if args.variant == "inverted-rgb" else (lambda image: image)
    if args.folder is not None:
        pairs, test, test_images = _folder_split(args.folder, args.n_images, args.seed)
        names = [p.name for p in pairs]
    else:
        train_dir = args.data / "train"
        names = pick_images(train_dir, args.n_images, args.seed)
        pairs = [
            make_pair(
                convert(read_tiff(train_dir / "images" / f"{name}.tif")),
                read_tiff(train_dir / "labels" / f"{name}.tif"),
                name=name,
            )
            for name in names
        ]
        test = load_folder_pairs(args.data / "test" / "images", args.data / "test" / "labels")
        test_images = [convert(p.image[0]) for p in test]
    n_objects = sum(p.n_objects for p in pairs)
    print(f"{cpu_model()}, torch {torch.__version__}, {args.threads} threads")
    print(f"training images: {names} ({n_objects} nuclei), variant {args.variant}")

    settings = recommended_settings("cpu")
    config = TrainConfig(
        epochs=args.epochs,
        time_budget=None if args.epochs else args.time_budget,
        recipe=args.recipe,
        batch_size=settings["batch_size"],
        patch_size=settings["patch_size"],
        val_ap_every=0,
        seed=args.seed,
    )
    initial = None if args.start == "scratch" else load_model_source(args.start)
    result: dict = {"start": args.start, "variant": args.variant, "train_images": names}
    if initial is not None:
        result["zero_shot"] = _score(initial, test, test_images)
        print(f"zero-shot: {result['zero_shot']}")
    model_config = ModelConfig(
        ndim=2,
        in_channels=pairs[0].image.shape[0],
        base_channels=settings["base_channels"],
        depth=settings["depth"],
    )
    t0 = time.perf_counter()
    adapt = AdaptOptions(all_channels=args.all_channels)
    result["all_channels"] = args.all_channels
    for event in train(
        pairs, config, model_config=model_config, initial_model=initial, adapt=adapt
    ):
        if isinstance(event, TrainingStarted) and event.recipe:
            print(event.recipe)
            result["recipe"] = event.recipe
        if isinstance(event, Notice):
            print(event.message)
        elif isinstance(event, TrainingFinished):
            model = event.model
            result.update(steps=event.steps, kept_start=event.kept_start)
    result["train_seconds"] = round(time.perf_counter() - t0, 1)
    result["postprocess"] = model.postprocess.to_dict()
    result["input"] = model.input.to_dict()
    if args.save is not None:
        save_model(model, args.save)
    result["after_training"] = _score(model, test, test_images)
    print(json.dumps(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


def _folder_split(folder: Path, n: int, seed: int):
    """``n`` pairs of ``folder`` to train on (chosen with ``seed``), the rest to score."""
    labels = list_tiffs(folder / "labels")
    names = sorted(labels)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    pairs = [
        make_pair(read_tiff(folder / "images" / f"{m}.tif"), read_tiff(labels[m]), name=m)
        for m in order[:n]
    ]
    test = [
        make_pair(read_tiff(folder / "images" / f"{m}.tif"), read_tiff(labels[m]), name=m)
        for m in order[n:]
    ]
    return pairs, test, [read_tiff(folder / "images" / f"{m}.tif") for m in order[n:]]


def validation_bands(pairs, model, start=None) -> list:
    """The bands the few-shot recipe validates ``model`` on (a quarter of each of
    ``pairs``), fitted as training fitted them: to ``start`` when it was fine-tuned from
    one, reading every colour channel when the model was widened to them."""
    from napari_live_unet.engine.data import split_regions
    from napari_live_unet.engine.image_adapter import InputSpec
    from napari_live_unet.engine.training_input import fit_training_data

    spec = InputSpec() if start is None else start.input
    channels = pairs[0].image.shape[0] if start is None else start.config.in_channels
    parts, bands = split_regions(pairs, 0.25)
    widened = model.config.in_channels > 1 and channels == 1
    _, bands, _, _ = fit_training_data(
        parts,
        bands,
        spec,
        channels,
        AdaptOptions(all_channels=widened),
        fine_tuning=start is not None,
    )
    return bands


def _score(model, test, images) -> dict[str, float]:
    preds = [labels for _, labels in model.segment_many(images)]
    counts = dataset_counts([p.labels for p in test], preds)
    return {f"{c.threshold:.1f}": round(c.ap, 3) for c in counts}


if __name__ == "__main__":
    sys.exit(main())
