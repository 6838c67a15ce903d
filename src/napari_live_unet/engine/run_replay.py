"""Re-running a recorded run: its data found and checked, its settings and start restored.

A record (:mod:`.run_record`) names every image and labels array with a content hash. A
re-run finds them by name in the folders it is given, checks every hash before any
training, and trains with the recorded settings, seed and starting model. A run that a time
budget or a stop ended is replayed step for step: the same number of optimiser steps at the
recorded learning rates (a time budget gives different steps on every run).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from .config import ModelConfig, TrainConfig
from .content_hash import array_sha256, weights_sha256
from .errors import InputError
from .image_adapter import AdaptOptions
from .io import list_tiffs, read_tiff
from .model import SegmentationModel
from .regions import Region
from .run_record import RECORD_FORMAT, RECORD_VERSION
from .training_images import TrainingImage


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What a re-run trains with, from a record.

    Attributes
    ----------
    config : TrainConfig
        The recorded training settings (a replay's schedule: its steps, no time budget).
    model_config : ModelConfig or None
        The architecture given for a new model.
    adapt : AdaptOptions
        The input-fitting options.
    learning_rates : tuple of float or None
        Each step's learning rate, when the recorded run is replayed step for step.
    threads : int or None
        The CPU threads the recorded run used (results on a CPU can depend on them).
    """

    config: TrainConfig
    model_config: ModelConfig | None
    adapt: AdaptOptions
    learning_rates: tuple[float, ...] | None
    threads: int | None


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """A run record from a JSON file: a record, or anything holding one as ``"record"``.

    Raises
    ------
    InputError
        If the file cannot be read or holds no run record.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON file ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("record"), dict):
        data = data["record"]
    return check_record(data, str(path))


def check_record(data: Any, source: str) -> dict[str, Any]:
    """``data`` if it is a run record this version reads; InputError naming ``source``."""
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
        raise InputError(
            f'{source}: not a run record of napari-live-unet (expected "format": '
            f'"{RECORD_FORMAT}"). Write one with `live-unet models --show MODEL --json`.'
        )
    version = data.get("version")
    if not isinstance(version, int) or version > RECORD_VERSION:
        raise InputError(
            f"{source}: run record version {version!r} is newer than this napari-live-unet "
            f"reads (up to {RECORD_VERSION}); update the plugin"
        )
    for key in ("data", "train_config", "adapt", "start_model", "schedule"):
        if key not in data:
            raise InputError(f"{source}: the run record has no {key!r}; it is incomplete")
    return data


def recorded_settings(record: dict[str, Any], source: str = "run record") -> RunSettings:
    """The settings a re-run of ``record`` trains with.

    Raises
    ------
    InputError
        If a recorded setting is not valid.
    """
    try:
        config = TrainConfig.from_dict(record["train_config"])
        given = record.get("model_config")
        model_config = None if given is None else ModelConfig.from_dict(given)
        adapt_data = dict(record["adapt"])
        if adapt_data.get("voxel_size") is not None:
            adapt_data["voxel_size"] = tuple(adapt_data["voxel_size"])
        adapt = AdaptOptions(**adapt_data)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{source}: recorded settings are not valid ({exc})") from None
    rates = record["schedule"].get("learning_rates")
    if rates is not None:
        rates = tuple(float(r) for r in rates)
        if not rates:
            raise InputError(f"{source}: the recorded run took no step; there is nothing to re-run")
        # The replay takes the recorded steps; TrainConfig needs a schedule of its own.
        epochs = math.ceil(len(rates) / config.steps_per_epoch)
        config = dataclasses.replace(config, epochs=epochs, time_budget=None)
    threads = record.get("torch_threads")
    return RunSettings(
        config, model_config, adapt, rates, threads if isinstance(threads, int) else None
    )


def recorded_images(
    record: dict[str, Any],
    images_dir: str | os.PathLike,
    labels_dir: str | os.PathLike,
    *,
    val_images_dir: str | os.PathLike | None = None,
    val_labels_dir: str | os.PathLike | None = None,
) -> list[TrainingImage]:
    """The recorded images, read from the folders by name and checked against their hashes.

    An image ``NAME`` is ``images_dir/NAME.tif``; its labels ``labels_dir/NAME.tif``, else
    the file named after the recorded labels (a labels layer's name, say). Validation images
    given apart are looked up in the ``val_*`` folders when given.

    Raises
    ------
    InputError
        Before any training: for a missing file, or one whose pixels differ from the
        recorded ones (naming the file, and what to do).
    """
    folders = {"images": list_tiffs(images_dir), "labels": list_tiffs(labels_dir)}
    val_folders = folders
    if val_images_dir is not None and val_labels_dir is not None:
        val_folders = {"images": list_tiffs(val_images_dir), "labels": list_tiffs(val_labels_dir)}
    dirs = {"images": images_dir, "labels": labels_dir}
    items = []
    for entry in record["data"]:
        role = entry.get("role", "train")
        found = val_folders if role == "val" and val_folders is not folders else folders
        where = dirs if found is folders else {"images": val_images_dir, "labels": val_labels_dir}
        image_path = _find(found["images"], [entry["image"]["name"]], where["images"], "image")
        label_names = [entry["name"], entry["labels"].get("name") or entry["name"]]
        labels_path = _find(found["labels"], label_names, where["labels"], "labels")
        image = _checked(image_path, entry["image"], "image")
        labels = _checked(labels_path, entry["labels"], "labels")
        regions = entry.get("regions")
        voxel_size = entry.get("voxel_size")
        items.append(
            TrainingImage(
                entry["name"],
                image,
                labels,
                None if regions is None else [_region(r) for r in regions],
                int(entry.get("spatial_ndim", labels.ndim)),
                entry.get("channel_axis"),
                None if voxel_size is None else tuple(float(v) for v in voxel_size),
                role=role,
                labels_name=entry["labels"].get("name"),
                image_path=str(image_path),
                labels_path=str(labels_path),
            )
        )
    return items


def check_start_model(record: dict[str, Any], model: SegmentationModel | None, source: str) -> None:
    """Raise InputError unless ``model`` (loaded from ``source``) is the recorded start.

    Raises
    ------
    InputError
        If the weights' hash differs, or a model is given for a run from scratch.
    """
    start = record["start_model"]
    if start.get("kind") == "scratch":
        if model is not None:
            raise InputError(
                f"{source}: the recorded run trained a new network from scratch; leave "
                "--init-model out"
            )
        return
    if model is None:
        raise InputError("no starting model: the recorded run fine-tuned one")
    expected = start.get("weights_sha256")
    found = weights_sha256(model.network.state_dict())
    if found != expected:
        raise InputError(
            f"{source}: its weights are not those the recorded run started from (weights "
            f"{_short(found)}, recorded {_short(expected)}). Pass the model file the run "
            "started from with --init-model (save the current model first when a run "
            "continued it)."
        )


def _find(files: dict[str, Path], names: list[str], folder: Any, what: str) -> Path:
    for name in names:
        if name in files:
            return files[name]
    wanted = " or ".join(f"{name}.tif" for name in dict.fromkeys(names))
    raise InputError(
        f"{folder}: no {wanted}, the {what} the recorded run trained on. Put the file there "
        "(saved from the layer of that name, or copied from the recorded path) or pass the "
        "folder that holds it."
    )


def _checked(path: Path, entry: dict[str, Any], what: str) -> Any:
    array = read_tiff(path)
    expected = entry.get("sha256")
    found = array_sha256(array)
    if found != expected:
        recorded = f"{entry.get('dtype')} {tuple(entry.get('shape') or ())}"
        raise InputError(
            f"{path}: its pixels differ from the {what} the recorded run trained on (it holds "
            f"{array.dtype} {array.shape}, hash {_short(found)}; recorded {recorded}, hash "
            f"{_short(expected)}). Use the original file, or train anew without --config."
        )
    return array


def _region(entry: dict[str, Any]) -> Region:
    slices = entry.get("slices")
    return Region(
        str(entry["role"]),
        tuple(entry["frame"]),
        entry["vertices"],
        None if slices is None else tuple(slices),
    )


def _short(digest: Any) -> str:
    return str(digest)[:19] if digest else "none"
