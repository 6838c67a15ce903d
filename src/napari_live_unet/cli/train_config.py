"""``live-unet train --config RUN.json``: re-run a recorded run.

The record (``live-unet models --show MODEL --json``) gives the data by name and hash, the
regions, every setting, the starting model and the seed; the command line gives where the
files are (``--images``, ``--labels``, ``--val-images``, ``--val-labels``), the model file
a run started from (``--init-model``), the output (``--out``) and, optionally, the device.
Any other training option is refused: the record decides it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from ..engine import load_model_source, resolve_device, save_model
from ..engine.atomic_write import remove_stale_temporaries
from ..engine.errors import InputError
from ..engine.model import SegmentationModel
from ..engine.output_checks import check_not_an_input, check_writable
from ..engine.run_record import RunRecorder, start_entry
from ..engine.run_replay import (
    check_start_model,
    read_record,
    recorded_images,
    recorded_settings,
)
from ..engine.training_images import training_pairs
from .commands import train_with_progress
from .stop_on_signal import StopOnSignal

# Options that say where things are, or where to run: a re-run may give them.
ALLOWED = {"command", "config", "images", "labels", "val_images", "val_labels", "out"}
ALLOWED |= {"device", "init_model"}


def run_recorded_train(args: argparse.Namespace) -> int:
    """Re-run the run recorded in ``args.config``; every check runs before training."""
    record = read_record(args.config)
    refuse_recorded_options(args)
    check_writable(args.out)
    inputs = [args.images, args.labels, args.val_images, args.val_labels, args.config]
    check_not_an_input(args.out, inputs)
    if (args.val_images is None) != (args.val_labels is None):
        raise InputError("give both --val-images and --val-labels, or neither")
    settings = recorded_settings(record, str(args.config))
    device = _device(args.device, record)
    initial, start = _start_model(record, args.init_model, device)
    images = recorded_images(
        record,
        args.images,
        args.labels,
        val_images_dir=args.val_images,
        val_labels_dir=args.val_labels,
    )
    pairs, val = training_pairs(images)
    remove_stale_temporaries(args.out.parent)
    print(
        f"re-running the recorded run: {len(images)} image(s) checked against their "
        f"recorded hashes, seed {settings.config.seed}"
        + (
            f", {len(settings.learning_rates)} recorded steps replayed"
            if settings.learning_rates is not None
            else ""
        ),
        file=sys.stderr,
    )
    stop = StopOnSignal(
        f"stopping after this step: the model so far will be written to {args.out} "
        "(press Ctrl-C again to quit without writing it)"
    )
    recorder = RunRecorder(
        images,
        settings.config,
        model_config=settings.model_config,
        adapt=settings.adapt,
        start=start,
        learning_rates=settings.learning_rates,
    )
    threads = settings.threads if device.type == "cpu" else None
    with stop, torch_threads(threads):
        model, summary = train_with_progress(
            pairs,
            settings.config,
            model_config=settings.model_config,
            val_pairs=val or None,
            initial_model=initial,
            device=device,
            adapt=settings.adapt,
            should_stop=stop.requested,
            recorder=recorder,
            learning_rates=settings.learning_rates,
        )
        save_model(model, args.out)
    print(
        f"trained {summary['epochs']} epochs ({summary['steps']} steps) in "
        f"{summary['elapsed']:.0f} s on {device} ({summary['reason']})"
    )
    print(f"model written to {args.out}")
    if stop.requested():
        print(f"interrupted: the model so far is in {args.out}", file=sys.stderr)
        return 130
    return 0


def refuse_recorded_options(args: argparse.Namespace) -> None:
    """Raise InputError for training options given with ``--config``: the record holds
    them. Options left at their defaults are taken from the record."""
    from . import build_parser  # the parser's defaults tell given options apart

    minimal = ["train", "--images", "-", "--labels", "-", "--out", "-"]
    defaults = vars(build_parser().parse_args(minimal))
    given = [
        name
        for name, value in vars(args).items()
        if name not in ALLOWED and name in defaults and value != defaults[name]
    ]
    if given:
        options = ", ".join(f"--{name.replace('_', '-')}" for name in sorted(given))
        raise InputError(
            f"{options}: a re-run with --config takes every setting from the record; leave "
            "these out (or train anew without --config to change them)"
        )


def _device(choice: str, record: dict) -> torch.device:
    """The device given, else the recorded one where this machine has it."""
    if choice != "auto":
        return resolve_device(choice)
    recorded = str(record.get("device") or "auto")
    try:
        return resolve_device(recorded)
    except InputError:
        print(
            f"note: the recorded run ran on {recorded}, which this machine does not have; "
            "training on the best device here (the result will not be identical)",
            file=sys.stderr,
        )
        return resolve_device("auto")


def _start_model(
    record: dict, init_model: str, device: torch.device
) -> tuple[SegmentationModel | None, dict]:
    """The recorded starting model, checked against its hash, and its record entry."""
    start = record["start_model"]
    kind = start.get("kind")
    given = init_model not in ("auto", "scratch")
    if kind == "scratch":
        check_start_model(
            record, load_model_source(init_model, device) if given else None, init_model
        )
        return None, start_entry("scratch")
    if not given and kind != "builtin":
        where = start.get("path") or start.get("file") or "the current model"
        raise InputError(
            f"the recorded run started from {where} ({start.get('description') or kind}); "
            "pass that model file with --init-model (for a run that continued the current "
            "model, the model file saved before it)"
        )
    source = init_model if given else str(start.get("name"))
    model = load_model_source(source, device)
    check_start_model(record, model, source if given else f"the built-in '{source}' model")
    if Path(source).is_file():
        return model, start_entry("file", model, path=str(Path(source).resolve()))
    return model, start_entry("builtin", model, name=source)


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Train on ``count`` CPU threads (None: as set): a CPU's results can depend on it."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
