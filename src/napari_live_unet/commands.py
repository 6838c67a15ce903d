"""What each ``live-unet`` subcommand does (argument parsing lives in :mod:`.cli`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .engine import (
    EpochEnd,
    ModelConfig,
    Notice,
    StepEnd,
    ThresholdsChosen,
    TrainConfig,
    TrainingFinished,
    ValidationMetrics,
    load_folder_pairs,
    load_model,
    load_region_pairs,
    resolve_device,
    save_model,
    train,
)
from .engine.config import recommended_settings
from .engine.data import check_labels
from .engine.errors import InputError
from .engine.io import list_tiffs, read_tiff, smallest_label_dtype, write_tiff_atomic
from .engine.metrics import dataset_counts, format_counts
from .engine.model import SegmentationModel


def _check_model_out(path: Path) -> None:
    if path.is_dir():
        raise InputError(f"--out {path}: is a folder; give a file name such as model.pt")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise InputError(f"--out {path}: {parent} is not a folder")


def _train_with_progress(
    pairs, config, *, model_config=None, val_pairs=None, initial_model=None, device="auto"
) -> tuple[SegmentationModel, dict]:
    """Run training, drawing a progress bar and one line per epoch on stderr."""
    bar = tqdm(
        total=1000,
        disable=None,  # no bar when stderr is not a terminal (logs keep the epoch lines)
        desc="training",
        unit="‰",
        file=sys.stderr,
        bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}",
    )
    summary: dict = {}
    try:
        for event in train(
            pairs,
            config,
            model_config=model_config,
            val_pairs=val_pairs,
            initial_model=initial_model,
            device=device,
        ):
            if isinstance(event, StepEnd):
                bar.n = int(event.progress * 1000)
                bar.set_postfix_str(f"epoch {event.epoch} loss {event.loss:.3f}")
            elif isinstance(event, EpochEnd):
                bar.n = int(event.progress * 1000)
                val = "" if event.val_loss is None else f" val {event.val_loss:.4f}"
                bar.write(
                    f"epoch {event.epoch:3d}  train {event.train_loss:.4f}{val}  "
                    f"lr {event.learning_rate:.2e}  {event.samples_per_second:.0f} "
                    f"patches/s{'  *' if event.is_best else ''}",
                    file=sys.stderr,
                )
            elif isinstance(event, ValidationMetrics):
                bar.write(
                    "   validation "
                    + "  ".join(f"AP@{k:.1f} {v:.3f}" for k, v in event.ap.items()),
                    file=sys.stderr,
                )
            elif isinstance(event, Notice):
                bar.write(event.message, file=sys.stderr)
            elif isinstance(event, ThresholdsChosen):
                summary["thresholds"] = event.params
                summary["val_ap"] = event.ap
            elif isinstance(event, TrainingFinished):
                bar.n = 1000
                summary.update(
                    reason=event.reason,
                    epochs=event.epochs,
                    steps=event.steps,
                    elapsed=event.elapsed,
                )
                model = event.model
            bar.refresh()
    finally:
        bar.close()
    return model, summary


def run_train(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    _check_model_out(args.out)
    if (args.val_images is None) != (args.val_labels is None):
        raise InputError("give both --val-images and --val-labels, or neither")
    for name in ("epochs", "batch_size", "patch_size", "steps_per_epoch", "base_channels", "depth"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.time_budget is not None and args.time_budget <= 0:
        raise InputError(f"--time-budget must be positive, got {args.time_budget}")
    for key, value in recommended_settings(device.type).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    time_budget = args.time_budget if args.epochs is None else None
    if args.epochs is None and time_budget is None:
        time_budget = 300.0
    try:  # settings are checked before any data is read
        config = TrainConfig(
            epochs=args.epochs,
            time_budget=time_budget,
            steps_per_epoch=args.steps_per_epoch,
            batch_size=args.batch_size,
            patch_size=args.patch_size,
            learning_rate=args.learning_rate,
            val_ap_every=args.val_ap_every,
            early_stopping_patience=args.patience or None,
            seed=args.seed,
            compile=args.compile,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None
    initial = load_model(args.init_model, device) if args.init_model else None
    if args.regions is not None:
        pairs, region_val = load_region_pairs(args.images, args.labels, args.regions)
    else:
        pairs, region_val = load_folder_pairs(args.images, args.labels), []
    if args.val_images is not None:
        val_pairs = load_folder_pairs(args.val_images, args.val_labels)
        if region_val:
            print(
                f"note: --val-images given; ignoring {len(region_val)} validation regions "
                f"of {args.regions}",
                file=sys.stderr,
            )
    else:
        val_pairs = region_val or None  # None: hold out validation data automatically
    ndim = pairs[0].labels.ndim
    channels = {p.image.shape[0] for p in pairs}
    if len(channels) > 1 or any(p.labels.ndim != ndim for p in pairs):
        raise InputError(f"{args.images}: images differ in dimensionality or channel count")
    model_config = ModelConfig(
        ndim=ndim,
        in_channels=channels.pop(),
        mode=args.mode,
        base_channels=args.base_channels,
        depth=args.depth,
        norm=args.norm,
    )
    if initial is not None and initial.config.mode != args.mode:
        print(f"note: fine-tuning keeps the model's mode ({initial.config.mode})", file=sys.stderr)
    model, summary = _train_with_progress(
        pairs,
        config,
        model_config=model_config,
        val_pairs=val_pairs,
        initial_model=initial,
        device=device,
    )
    save_model(model, args.out)
    print(
        f"trained {summary['epochs']} epochs ({summary['steps']} steps) in "
        f"{summary['elapsed']:.0f} s on {device} ({summary['reason']})"
    )
    if "val_ap" in summary:
        aps = "  ".join(f"AP@{k:.1f} {v:.3f}" for k, v in summary["val_ap"].items())
        print(f"validation: {aps}")
        print(f"thresholds: {summary['thresholds']}")
    print(f"model written to {args.out}")
    return 0


def _image_files(folder: Path) -> dict[str, Path]:
    files = list_tiffs(folder)
    if not files:
        raise InputError(f"{folder}: no .tif images found")
    return files


def run_predict(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    model = load_model(args.model, device)
    files = _image_files(args.images)
    if args.out.resolve() == args.images.resolve():
        raise InputError("--out must differ from --images, or the images would be overwritten")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out}: exists and is not a folder")
    # Check every input before writing anything.
    for path in tqdm(
        files.values(), desc="checking", unit="image", file=sys.stderr, leave=False, disable=None
    ):
        try:
            model.prepare_image(read_tiff(path))
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
    tile = None if args.tile_size is None else (args.tile_size,) * model.config.ndim
    start, pixels = time.perf_counter(), 0
    names = list(files)
    # Tiles of consecutive small images share GPU batches; files are read as needed, and
    # post-processing of one image overlaps prediction of the next.
    results = model.segment_many(
        (read_tiff(files[name]) for name in names),
        tile_shape=tile,
        batch_size=args.batch_size,
        on_message=lambda m: tqdm.write(m, file=sys.stderr),
    )
    for name, (maps, labels) in tqdm(
        zip(names, results, strict=True),
        total=len(names),
        desc="predicting",
        disable=None,
        unit="image",
        file=sys.stderr,
    ):
        write_tiff_atomic(
            args.out / f"{name}.tif", labels.astype(smallest_label_dtype(int(labels.max())))
        )
        if args.save_maps:
            write_tiff_atomic(args.out / f"{name}_maps.tif", maps.astype(np.float32))
        pixels += labels.size
    seconds = time.perf_counter() - start
    print(
        f"wrote {len(files)} label images to {args.out} "
        f"({pixels / 1e6 / seconds:.2f} MP/s end to end on {device})"
    )
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    gts_files, pred_files = _image_files(args.labels), _image_files(args.pred)
    missing = sorted(set(gts_files) - set(pred_files))
    extra = sorted(set(pred_files) - set(gts_files))
    if missing:
        raise InputError(
            f"{args.pred}: no prediction for {', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        )
    if extra:
        print(f"note: ignoring {len(extra)} predictions without ground truth", file=sys.stderr)
    gts, preds = [], []
    for name in gts_files:
        gt, pred = read_tiff(gts_files[name]), read_tiff(pred_files[name])
        check_labels(gt, str(gts_files[name]))
        check_labels(pred, str(pred_files[name]))
        if gt.shape != pred.shape:
            raise InputError(
                f"{name}: ground truth shape {gt.shape} differs from prediction shape {pred.shape}"
            )
        gts.append(gt)
        preds.append(pred)
    counts = dataset_counts(gts, preds)
    print(f"{len(gts)} images, counts pooled over the dataset")
    print(format_counts(counts))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from .sample_data import sample_folder

    device = resolve_device(args.device)
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    train_dir, test_dir = sample_folder("train"), sample_folder("test")
    pairs = load_folder_pairs(train_dir / "images", train_dir / "labels")
    print(
        f"Training on {len(pairs)} bundled nuclei images for {args.time_budget:.0f} s "
        f"on {device} ..."
    )
    config = TrainConfig(
        epochs=None,
        time_budget=args.time_budget,
        steps_per_epoch=25,
        val_ap_every=0,
        batch_size=8,
        val_fraction=0.2,
    )
    model_config = ModelConfig(ndim=2, in_channels=1, mode="distance", base_channels=8)
    model, _ = _train_with_progress(pairs, config, model_config=model_config, device=device)
    save_model(model, out / "model.pt")
    test = load_folder_pairs(test_dir / "images", test_dir / "labels")
    preds = []
    for pair in test:
        labels = model.segment(pair.image, channel_axis=0)
        write_tiff_atomic(
            out / "predictions" / f"{Path(pair.name).stem}.tif",
            labels.astype(smallest_label_dtype(int(labels.max()))),
        )
        preds.append(labels)
    counts = dataset_counts([p.labels for p in test], preds)
    print(
        f"Held-out sample image: {counts[0].tp + counts[0].fn} nuclei, "
        f"{counts[0].tp + counts[0].fp} found"
    )
    print(format_counts(counts))
    print(f"Model: {out / 'model.pt'}; labels: {out / 'predictions'}/")
    print(
        f"Next: live-unet predict --model {out / 'model.pt'} --images YOUR_FOLDER --out OUT_FOLDER"
    )
    return 0
