"""What each ``live-unet`` subcommand does (argument parsing lives in :mod:`.cli`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from ..engine import (
    STARTER_MODEL,
    EpochEnd,
    ModelConfig,
    Notice,
    StepEnd,
    ThresholdsChosen,
    TrainConfig,
    TrainingFinished,
    TrainingStarted,
    ValidationMetrics,
    builtin_model_info,
    load_model_source,
    resolve_device,
    save_model,
    train,
)
from ..engine.atomic_write import remove_stale_temporaries
from ..engine.data import check_labels
from ..engine.distributed import DistributedContext, process_group
from ..engine.errors import InputError
from ..engine.io import list_tiffs, read_tiff
from ..engine.memory_estimate import check_training_memory
from ..engine.metrics import dataset_counts, format_counts
from ..engine.model import SegmentationModel
from ..engine.output_checks import check_not_an_input, check_writable
from ..engine.presets import recommended_settings
from ..engine.run_record import RunRecorder, recorded, start_entry
from ..engine.training_images import folder_images, training_pairs
from ..engine.training_run import StopReason
from .input_options import adapt_options
from .stop_on_signal import StopOnSignal

if TYPE_CHECKING:
    import torch


def train_with_progress(
    pairs,
    config,
    *,
    model_config=None,
    val_pairs=None,
    initial_model=None,
    device: str | torch.device = "auto",
    adapt=None,
    should_stop=None,
    distributed: DistributedContext | None = None,
    recorder: RunRecorder | None = None,
    learning_rates=None,
) -> tuple[SegmentationModel, dict]:
    """Run training, drawing a progress bar and one line per epoch on stderr; with
    ``recorder``, the model gets the run's record."""
    bar = tqdm(
        total=1000,
        disable=None,  # no bar when stderr is not a terminal (logs keep the epoch lines)
        desc="training",
        unit="‰",
        file=sys.stderr,
        bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}",
    )
    summary: dict = {}
    model: SegmentationModel | None = None
    events = train(
        pairs,
        config,
        model_config=model_config,
        val_pairs=val_pairs,
        initial_model=initial_model,
        device=device,
        adapt=adapt,
        should_stop=should_stop,
        distributed=distributed,
        learning_rates=learning_rates,
    )
    if recorder is not None:
        events = recorded(events, recorder)
    try:
        for event in events:
            if isinstance(event, StepEnd):
                bar.n = int(event.progress * 1000)
                bar.set_postfix_str(f"epoch {event.epoch} loss {event.loss:.3f}")
            elif isinstance(event, EpochEnd):
                bar.n = int(event.progress * 1000)
                val = "" if event.val_loss is None else f" val {event.val_loss:.4f}"
                rate = (
                    "  (starting model, before training)"
                    if event.epoch == 0
                    else f"  lr {event.learning_rate:.2e}  {event.samples_per_second:.0f} "
                    f"patches/s{'  *' if event.is_best else ''}"
                )
                bar.write(
                    f"epoch {event.epoch:3d}  train {event.train_loss:.4f}{val}{rate}",
                    file=sys.stderr,
                )
            elif isinstance(event, ValidationMetrics):
                bar.write(
                    "   validation "
                    + "  ".join(f"AP@{k:.1f} {v:.3f}" for k, v in event.ap.items()),
                    file=sys.stderr,
                )
            elif isinstance(event, TrainingStarted):
                bar.write(f"training on {event.describe_sizes()}", file=sys.stderr)
                if event.recipe:
                    bar.write(event.recipe, file=sys.stderr)
            elif isinstance(event, Notice):
                bar.write(event.message, file=sys.stderr)
            elif isinstance(event, ThresholdsChosen):
                summary["thresholds"] = event.params
                summary["val_ap"] = event.ap
            elif isinstance(event, TrainingFinished):
                bar.n = 1000
                summary.update(
                    kept_start=event.kept_start,
                    reason=event.reason,
                    epochs=event.epochs,
                    steps=event.steps,
                    elapsed=event.elapsed,
                )
                model = event.model
            bar.refresh()
    finally:
        bar.close()
    assert model is not None  # train() always ends with TrainingFinished
    return model, summary


def _train_quietly(pairs, config, **kwargs) -> tuple[SegmentationModel, dict]:
    """Run training without any output (ranks other than 0 of a multi-process run)."""
    for event in train(pairs, config, **kwargs):
        if isinstance(event, TrainingFinished):
            return event.model, {"reason": event.reason}
    raise AssertionError("train() always ends with TrainingFinished")


def cli_start_entry(source: str, model: SegmentationModel | None) -> dict:
    """The record's start model of ``train --init-model SOURCE`` (``auto`` resolved)."""
    if model is None:
        return start_entry("scratch")
    if Path(source).is_file():
        return start_entry("file", model, path=str(Path(source).resolve()))
    return start_entry("builtin", model, name=source)


def run_train(args: argparse.Namespace) -> int:
    """``live-unet train``; under ``torchrun`` one rank of a multi-process (DDP) run."""
    if getattr(args, "config", None) is not None:
        from .train_config import run_recorded_train

        return run_recorded_train(args)
    device = resolve_device(args.device)
    with process_group(device) as ranks:
        return _train_command(args, device if ranks is None else ranks.device, ranks)


def _train_command(
    args: argparse.Namespace, device: torch.device, ranks: DistributedContext | None
) -> int:
    main = ranks is None or ranks.is_main  # only rank 0 writes files and prints
    check_writable(args.out)
    inputs = [args.images, args.labels, args.val_images, args.val_labels, args.regions]
    check_not_an_input(args.out, inputs)
    if main:
        remove_stale_temporaries(args.out.parent)
    if (args.val_images is None) != (args.val_labels is None):
        raise InputError("give both --val-images and --val-labels, or neither")
    adapt = adapt_options(args)
    size_given = args.base_channels is not None or args.depth is not None
    sized = ("batch_size", "patch_size", "patch_size_z", "base_channels", "depth")
    for name in ("epochs", "steps_per_epoch", *sized):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.time_budget is not None and args.time_budget <= 0:
        raise InputError(f"--time-budget must be positive, got {args.time_budget}")
    # Defaults depend on the device and, once the data is read, on 2D or 3D.
    not_given = {name for name in sized if getattr(args, name) is None}
    for key, value in recommended_settings(device.type).items():
        if key in not_given:
            setattr(args, key, value)
    assert args.base_channels is not None and args.depth is not None  # filled in just above
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
            **({} if args.patch_size_z is None else {"patch_size_z": args.patch_size_z}),
            learning_rate=args.learning_rate,
            val_ap_every=args.val_ap_every,
            early_stopping_patience=args.patience or None,
            seed=args.seed,
            compile=args.compile,
            recipe=args.recipe,
        )
        # the network's size, checked for a 2D one-channel image: the data decides those
        smallest = ModelConfig(
            mode=args.mode, base_channels=args.base_channels, depth=args.depth, norm=args.norm
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None
    initial = None
    if args.init_model not in ("auto", "scratch"):
        initial = load_model_source(args.init_model, device)
    # Before any data is read: settings that cannot fit even for the smallest data (2D, one
    # channel) are refused now; set_up checks again with the data's dimensions.
    check_training_memory(initial.config if initial is not None else smallest, config, device)
    images = folder_images(
        args.images, args.labels, regions_file=args.regions, voxel_size=adapt.voxel_size
    )
    if args.val_images is not None:
        images += folder_images(
            args.val_images, args.val_labels, voxel_size=adapt.voxel_size, role="val"
        )
        region_val = sum(r.role == "val" for i in images for r in i.regions or [])
        if region_val and main:
            print(
                f"note: --val-images given; ignoring {region_val} validation regions "
                f"of {args.regions}",
                file=sys.stderr,
            )
    pairs, val = training_pairs(images)
    val_pairs = val or None  # None: hold out validation data automatically
    ndim = pairs[0].labels.ndim
    if ndim == 3:  # volumes: smaller patches and batches, unless chosen
        settings = recommended_settings(device.type, ndim)
        given_size = {k: settings[k] for k in ("base_channels", "depth") if k in not_given}
        vars(args).update(given_size)
        config = dataclasses.replace(
            config,
            **{
                k: settings[k]
                for k in ("batch_size", "patch_size", "patch_size_z")
                if k in not_given
            },
        )
        smallest = dataclasses.replace(smallest, **given_size)
    channels = {p.image.shape[0] for p in pairs}
    if len(channels) > 1 or any(p.labels.ndim != ndim for p in pairs):
        raise InputError(f"{args.images}: images differ in dimensionality or channel count")
    start_name = args.init_model
    if args.init_model == "auto" and ndim == 2 and args.mode == "distance" and not size_given:
        start_name = STARTER_MODEL
        initial = load_model_source(STARTER_MODEL, device)
        if main:
            print(
                f"starting from the built-in '{STARTER_MODEL}' model "
                "(--init-model scratch trains a new network)",
                file=sys.stderr,
            )
    in_channels = 1 if adapt.channel is not None else channels.pop()
    try:
        model_config = dataclasses.replace(smallest, ndim=ndim, in_channels=in_channels)
    except ValueError as exc:  # e.g. more channels than a network reads
        raise InputError(f"{args.images}: {exc}") from None
    if initial is not None and initial.config.mode != args.mode and main:
        print(f"note: fine-tuning keeps the model's mode ({initial.config.mode})", file=sys.stderr)
    if ranks is not None and main:
        print(
            f"{ranks.world_size} processes (torch DDP, {ranks.backend}): each step takes "
            f"{ranks.world_size} x {config.batch_size} patches",
            file=sys.stderr,
        )
    stop = StopOnSignal(
        "stopping after this step: the best model so far will be written to "
        f"{args.out} (press Ctrl-C again to quit without writing it)"
    )
    with stop:
        if main:
            recorder = RunRecorder(
                images,
                config,
                model_config=model_config,
                adapt=adapt,
                start=cli_start_entry(start_name, initial),
            )
            model, summary = train_with_progress(
                pairs,
                config,
                model_config=model_config,
                val_pairs=val_pairs,
                initial_model=initial,
                device=device,
                adapt=adapt,
                should_stop=stop.requested,
                distributed=ranks,
                recorder=recorder,
            )
        else:
            model, summary = _train_quietly(
                pairs,
                config,
                model_config=model_config,
                val_pairs=val_pairs,
                initial_model=initial,
                device=device,
                adapt=adapt,
                should_stop=stop.requested,
                distributed=ranks,
            )
        if not main:  # rank 0 reports how training ended: torchrun would end it on an error
            return 0
        save_model(model, args.out)
    print(
        f"trained {summary['epochs']} epochs ({summary['steps']} steps) in "
        f"{summary['elapsed']:.0f} s on {device} ({summary['reason']})"
    )
    if "val_ap" in summary:
        aps = "  ".join(f"AP@{k:.1f} {v:.3f}" for k, v in summary["val_ap"].items())
        print(f"validation: {aps}")
        print(f"thresholds: {summary['thresholds']}")
    if summary.get("kept_start"):
        print("kept the starting model: fine-tuning did not improve validation AP")
    print(f"model written to {args.out}")
    # In a multi-process run, a stop asked of another rank stopped this one too.
    if stop.requested() or (ranks is not None and summary["reason"] is StopReason.STOPPED):
        print(f"interrupted: the best model so far is in {args.out}", file=sys.stderr)
        return 130
    return 0


def _image_files(folder: Path) -> dict[str, Path]:
    files = list_tiffs(folder)
    if not files:
        raise InputError(f"{folder}: no .tif images found")
    return files


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


def run_models(args: argparse.Namespace) -> int:
    if getattr(args, "show", None) is not None:
        return _show_record(args.show, as_json=args.json)
    if getattr(args, "json", False):
        raise InputError("--json goes with --show MODEL")
    infos = builtin_model_info()
    if not infos:
        print("no built-in models are installed")
        return 0
    for info in infos:
        print(f"{info['name']}: {info.get('description', '')}")
        aps = info.get("test_ap", {})
        if aps:
            figures = "  ".join(f"AP@{k} {v:.3f}" for k, v in aps.items())
            print(f"    test split ({info.get('test_images', '?')} images): {figures}")
        if info.get("diameter"):
            print(f"    trained on objects about {info['diameter']:.0f} px across")
        for key in ("training_data", "licence", "command"):
            if info.get(key):
                print(f"    {key.replace('_', ' ')}: {info[key]}")
    return 0


def _show_record(source: str, *, as_json: bool) -> int:
    """``models --show MODEL``: the model's run record, in words or as JSON."""
    from ..engine.run_record_text import describe_record

    model = load_model_source(source)
    if as_json:
        if not model.record:
            raise InputError(
                f"{source}: this model has no run record (saved before napari-live-unet "
                "recorded runs, or from another tool), so there is nothing to re-run"
            )
        print(json.dumps(model.record, indent=1))
        return 0
    print(f"{source}:")
    for line in describe_record(model.record):
        print(f"  {line}")
    return 0


def run_export_bmz(args: argparse.Namespace) -> int:
    """``live-unet export-bmz MODEL OUT.zip``."""
    from ..engine.bmz.package_writer import export_bmz_package

    model = load_model_source(args.model)
    print(f"exporting {args.model} and testing the package with bioimageio.core ...")
    out = export_bmz_package(
        model,
        args.out,
        name=args.name,
        authors=args.author,
        license=args.license,
        overwrite=args.overwrite,
    )
    print(f"wrote {out}: passed bioimageio.core's test_model (PyTorch state dict and TorchScript)")
    return 0
