"""Run records: which data, settings and starting model produced a model, and how.

Every training run, from the command line or the Train dock, wraps the engine's events in
:func:`recorded`; when training finishes, the model gets a ``record`` (plain JSON data,
saved in its file) holding

- the images and labels by name and content hash (:func:`~.content_hash.array_sha256`:
  dtype, shape and pixel values, so a napari layer's array and the TIFF file saved from it
  hash the same), the regions annotated in them, and where they were read from;
- every setting: the training and model configuration given and as resolved, the input
  fitting options, the recipe used;
- the starting model: a built-in's name, a file's name, or the current model, with a hash
  of its weights; or scratch;
- the seed, the versions of napari-live-unet, torch, numpy and Python, the device and
  number of CPU threads, start and end time (UTC), and the optimiser steps and epochs run
  (with each step's learning rate when a time budget or a stop ended the run, which a
  re-run replays: see :mod:`.run_replay`).
"""

from __future__ import annotations

import datetime
import json
import platform
from collections.abc import Generator, Sequence
from dataclasses import asdict
from importlib import metadata
from typing import Any

import numpy as np
import torch

from .config import ModelConfig, TrainConfig
from .content_hash import array_sha256, weights_sha256
from .events import TrainingEvent, TrainingFinished, TrainingStarted
from .image_adapter import AdaptOptions
from .model import SegmentationModel
from .regions import Region
from .training_images import TrainingImage

RECORD_FORMAT = "napari-live-unet run record"
RECORD_VERSION = 1
START_KINDS = ("builtin", "file", "current", "scratch")


def start_entry(
    kind: str,
    model: SegmentationModel | None = None,
    *,
    name: str | None = None,
    path: str | None = None,
) -> dict[str, Any]:
    """What a run started from, for its record.

    Parameters
    ----------
    kind : {"builtin", "file", "current", "scratch"}
        A built-in model (``name``), a model file (``path``), the model trained or opened
        before ("continued from the current model"), or a new network.
    model : SegmentationModel, optional
        The starting model (all kinds but scratch): its weights are hashed, and its own
        record, when it has one, is kept as ``record`` (the model's lineage).
    """
    if kind not in START_KINDS:
        raise ValueError(f"start kind must be one of {START_KINDS}, got {kind!r}")
    if kind == "scratch" or model is None:
        return {"kind": "scratch"}
    entry: dict[str, Any] = {"kind": kind}
    if kind == "builtin":
        entry["name"] = name
    elif kind == "file":
        entry["file"] = None if path is None else _file_name(path)
        entry["path"] = path
    else:
        entry["description"] = "continued from the current model"
    entry["weights_sha256"] = weights_sha256(model.network.state_dict())
    if model.record:
        entry["record"] = model.record
    return entry


def image_entry(item: TrainingImage) -> dict[str, Any]:
    """One training image in a record: names, content hashes, regions, layout."""
    image = {"name": item.name, **_array_entry(item.image), "path": item.image_path}
    labels = {
        "name": item.labels_name or item.name,
        **_array_entry(item.labels),
        "path": item.labels_path,
    }
    return {
        "name": item.name,
        "role": item.role,
        "image": image,
        "labels": labels,
        "regions": None if item.regions is None else [region_entry(r) for r in item.regions],
        "spatial_ndim": item.spatial_ndim,
        "channel_axis": item.channel_axis,
        "voxel_size": None if item.voxel_size is None else list(item.voxel_size),
    }


def region_entry(region: Region) -> dict[str, Any]:
    """A region as JSON data (as ``regions.json`` stores it)."""
    entry: dict[str, Any] = {
        "role": region.role,
        "frame": list(region.frame),
        "vertices": region.vertices.tolist(),
    }
    if region.slices is not None:
        entry["slices"] = list(region.slices)
    return entry


def adapt_entry(adapt: AdaptOptions | None) -> dict[str, Any]:
    """The input-fitting options as JSON data."""
    d = asdict(adapt or AdaptOptions())
    d["voxel_size"] = None if d["voxel_size"] is None else list(d["voxel_size"])
    return d


class RunRecorder:
    """Collects a run's record: the data and settings at the start, the outcome at the end.

    Create it just before training (it hashes the data, which reads every image once) and
    pass the training events through :func:`recorded`.

    Parameters
    ----------
    images : sequence of TrainingImage
        What the run trains on, as given.
    config : TrainConfig
        The training settings given to :func:`~.train.train`.
    model_config : ModelConfig, optional
        The architecture given for a new model.
    adapt : AdaptOptions, optional
        The input-fitting options given.
    start : dict
        :func:`start_entry` of the starting model.
    learning_rates : sequence of float, optional
        The recorded rates this run replays (see :mod:`.run_replay`).
    started_by : str
        ``"cli"`` or ``"napari"``.
    """

    def __init__(
        self,
        images: Sequence[TrainingImage],
        config: TrainConfig,
        *,
        model_config: ModelConfig | None,
        adapt: AdaptOptions | None,
        start: dict[str, Any],
        learning_rates: Sequence[float] | None = None,
        started_by: str = "cli",
    ) -> None:
        self.started = _now()
        self.record: dict[str, Any] = {
            "format": RECORD_FORMAT,
            "version": RECORD_VERSION,
            "started_by": started_by,
            "data": [image_entry(item) for item in images],
            "train_config": config.to_dict(),
            "model_config": None if model_config is None else model_config.to_dict(),
            "adapt": adapt_entry(adapt),
            "start_model": start,
            "seed": config.seed,
            "versions": versions(),
            "torch_threads": torch.get_num_threads(),
        }
        if learning_rates is not None:
            self.record["replayed_steps"] = len(learning_rates)
        self.recipe: str = ""
        self.device: str = ""

    def saw(self, event: TrainingEvent) -> None:
        """Note what the run reports about itself (device, recipe)."""
        if isinstance(event, TrainingStarted):
            self.device, self.recipe = event.device, event.recipe

    def finish(self, event: TrainingFinished) -> dict[str, Any]:
        """The whole record, also stored as ``event.model.record``."""
        model = event.model
        config = TrainConfig.from_dict(model.train_config) if model.train_config else None
        schedule: dict[str, Any] = {
            "steps": event.steps,
            "epochs": event.epochs,
            "stop_reason": str(event.reason),
            "elapsed_seconds": round(event.elapsed, 3),
            "kept_start": event.kept_start,
        }
        timed = config is not None and config.time_budget is not None
        if timed or str(event.reason) == "stopped":
            # Time budgets and stops are not reproducible: a re-run replays these steps.
            schedule["learning_rates"] = list(event.learning_rates)
        record = dict(self.record)
        record.update(
            resolved_train_config=model.train_config,
            resolved_model_config=model.config.to_dict(),
            recipe={
                "chosen": self.record["train_config"]["recipe"],
                # TrainingStarted.recipe reads "few-shot recipe (...)" or "standard recipe ..."
                "used": self.recipe.partition(" recipe")[0] or None,
                "reason": self.recipe,
            },
            device=self.device,
            schedule=schedule,
            started=self.started,
            ended=_now(),
        )
        # Plain JSON data: model files are read with weights_only, and --json prints it.
        model.record = json.loads(json.dumps(record))
        return model.record


def recorded(
    events: Generator[TrainingEvent, None, SegmentationModel], recorder: RunRecorder
) -> Generator[TrainingEvent, None, SegmentationModel]:
    """``events`` passed through; the finished model gets the run's record before its
    :class:`~.events.TrainingFinished` is yielded. Returns what ``events`` returns."""
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            return stop.value
        recorder.saw(event)
        if isinstance(event, TrainingFinished):
            recorder.finish(event)
        try:
            yield event
        except GeneratorExit:
            events.close()
            raise


def versions() -> dict[str, str]:
    """Versions of what trained a model: napari-live-unet, torch, numpy, Python."""
    try:
        own = metadata.version("napari-live-unet")
    except metadata.PackageNotFoundError:
        own = "unknown"
    return {
        "napari-live-unet": own,
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _array_entry(array: Any) -> dict[str, Any]:
    return {
        "sha256": array_sha256(array),
        "shape": [int(n) for n in array.shape],
        "dtype": str(np.dtype(array.dtype)),
    }


def _file_name(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
