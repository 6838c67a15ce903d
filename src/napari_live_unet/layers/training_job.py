"""The training job: what to train on, where to start from, and the run itself.

The widget reads the layers on the main thread (:func:`snapshot_pair`) and the starting
point from its controls (:class:`StartChoice`); :func:`training_job` runs in a worker (see
:mod:`.jobs`), builds the training pairs, loads the starting model and yields the engine's
training events.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..app.preview_pacing import PreviewPacing
from ..engine import events as ev
from ..engine.annotation_check import sparse_annotations
from ..engine.annotation_set import REGIONS_FILE
from ..engine.builtin_models import builtin_model_path
from ..engine.config import ModelConfig, TrainConfig
from ..engine.data import TrainingPair
from ..engine.errors import InputError
from ..engine.image_adapter import AUTO_FIT, AdaptOptions
from ..engine.model import SegmentationModel
from ..engine.model_file import load_model
from ..engine.regions import Region
from ..engine.run_record import RunRecorder, recorded, start_entry
from ..engine.train import PreviewHook, train
from ..engine.training_images import TrainingImage, folder_images, training_pairs
from .layer_pairs import layer_image_data, spatial_shape
from .shape_regions import regions_from_shapes
from .voxel_size import layer_voxel_size

if TYPE_CHECKING:
    from napari.layers import Image, Labels, Shapes


@dataclass(frozen=True)
class StartChoice:
    """What a run starts from: ``kind`` is builtin, current, file or scratch; ``source`` the
    built-in's name or the file's path; ``model`` the current model (taken at Start)."""

    kind: str
    source: str = ""
    model: SegmentationModel | None = None


@dataclass(frozen=True)
class AnnotationWarning:
    """A training-worker event: an annotated area looks incompletely painted."""

    message: str


@dataclass(frozen=True)
class StartNote:
    """A training-worker event: the run does not start where the user chose, and why."""

    message: str


def starting_model(
    choice: StartChoice, ndim: int, mode: str
) -> tuple[SegmentationModel | None, str | None]:
    """The model to fine-tune (None: train from scratch) and a note when the choice could
    not be followed. Runs in the training worker (it may read a model file).

    The built-in starter segments 2D images in distance mode: for 3D data or boundary mode
    the run starts from scratch instead.
    """
    if choice.kind in ("current", "continue"):
        return choice.model, None
    if choice.kind == "file":
        return load_model(choice.source), None
    if choice.kind != "builtin":
        return None, None
    path = builtin_model_path(choice.source)
    if ndim != 2 or mode != "distance":
        why = "these are 3D volumes" if ndim != 2 else "boundary mode is chosen"
        return None, (
            f"Starting from scratch: the built-in '{choice.source}' model starts 2D training "
            f"in distance mode only ({why})."
        )
    return load_model(path), None


def start_record(choice: StartChoice, model: SegmentationModel | None) -> dict[str, Any]:
    """The run record's entry for where a run started (scratch when ``model`` is None)."""
    if model is None:
        return start_entry("scratch")
    if choice.kind == "builtin":
        return start_entry("builtin", model, name=choice.source)
    if choice.kind == "file":
        return start_entry("file", model, path=str(Path(choice.source).resolve()))
    return start_entry("current", model)


@dataclass
class LayerSource:
    """A snapshot of one image / ground-truth pair taken when training starts."""

    name: str
    image: Any  # the image layer's array (numpy or dask), not copied
    labels: np.ndarray  # a copy
    regions: list[Region]
    spatial_ndim: int
    channel_axis: int | None
    layer_names: tuple[str, ...]
    voxel_size: tuple[float, ...] | None = None  # from the image layer's scale
    labels_name: str | None = None  # the ground-truth layer's name, for the run record
    image_path: str | None = None  # the file a layer was opened from, if any
    labels_path: str | None = None

    def training_image(self) -> TrainingImage:
        """This snapshot as the engine's description of a training image."""
        return TrainingImage(
            self.name,
            self.image,
            self.labels,
            self.regions,
            self.spatial_ndim,
            self.channel_axis,
            self.voxel_size,
            labels_name=self.labels_name,
            image_path=self.image_path,
            labels_path=self.labels_path,
        )


def training_images(sources: list[LayerSource], folder: str | None) -> list[TrainingImage]:
    """What a run trains on: the layer snapshots, then the folder's images (read now, in
    the worker)."""
    images = [s.training_image() for s in sources]
    if folder:
        root = Path(folder)
        regions = root / REGIONS_FILE
        if not regions.exists() and not ((root / "images").is_dir() and (root / "labels").is_dir()):
            raise InputError(
                f"{folder}: expected an annotation set (saved by the Annotate widget) or a "
                "folder with images/ and labels/ subfolders"
            )
        images += folder_images(
            root / "images", root / "labels", regions_file=regions if regions.exists() else None
        )
    return images


def build_pairs(
    sources: list[LayerSource], folder: str | None
) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """(train, val) pairs from layer snapshots and/or a folder; runs in the worker."""
    return pairs_of(training_images(sources, folder))


def pairs_of(images: list[TrainingImage]) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """(train, val) pairs of ``images``, the engine's one way (as a re-run builds them)."""
    if not images:
        raise InputError("no training data: add an image with its ground truth, or a folder")
    train, val = training_pairs(images)
    if not train:
        raise InputError("no training data: add an image with its ground truth, or a folder")
    return train, val


def snapshot_pair(
    image: Image, labels: Labels, regions: Shapes | None, spatial_ndim: int
) -> LayerSource:
    """What to train on from one image / ground truth / regions triple, read now on the
    main thread (the labels are copied, so painting during training cannot race the
    worker; the image is read at full resolution, level 0 of a multiscale image).

    Raises
    ------
    InputError
        When the ground truth does not fit the image, or a 2D image is to be trained as 3D.
    """
    rgb = bool(getattr(image, "rgb", False))
    image_shape = spatial_shape(image)
    if tuple(labels.data.shape) != image_shape:
        raise InputError(
            f"ground truth '{labels.name}' has shape {tuple(labels.data.shape)} but image "
            f"'{image.name}' has {image_shape}; create the ground truth from the image in the "
            "Annotate widget"
        )
    if len(image_shape) < spatial_ndim:
        raise InputError(f"image '{image.name}' is {len(image_shape)}D; it cannot be trained as 3D")
    return LayerSource(
        name=image.name,
        image=layer_image_data(image),
        labels=np.array(labels.data, copy=True),
        regions=(
            regions_from_shapes(regions, spatial_ndim, image_layer=image)
            if regions is not None
            else []
        ),
        spatial_ndim=spatial_ndim,
        channel_axis=-1 if rgb else None,
        layer_names=tuple(x.name for x in (image, labels, regions) if x is not None),
        voxel_size=layer_voxel_size(image, spatial_ndim),
        labels_name=labels.name,
        image_path=_source_path(image),
        labels_path=_source_path(labels),
    )


def _source_path(layer) -> str | None:
    """The file a layer was opened from (None for one made in the session)."""
    path = getattr(getattr(layer, "source", None), "path", None)
    return None if path is None else str(path)


@dataclass(frozen=True)
class TrainingSettings:
    """The widget's settings for one run, read on the main thread at Start."""

    train_config: TrainConfig
    model_config: Callable[[int, int], ModelConfig]  # (ndim, channels) -> architecture
    mode: str
    device: str


def training_job(
    sources: list[LayerSource],
    folder: str | None,
    settings: TrainingSettings,
    start: StartChoice,
    stop: threading.Event,
    preview: PreviewHook | None = None,
    preview_every: int = 1,
    adapt: AdaptOptions | None = None,
    pacing: PreviewPacing | None = None,
) -> Iterator[Any]:
    """Build the pairs and the starting model, then yield the engine's training events.

    Before them: a :class:`StartNote` when the run starts from scratch instead of the
    chosen model, and an :class:`AnnotationWarning` for each annotated area where the
    starting model sees far more objects than were painted. With ``pacing``, training
    waits after each :class:`~napari_live_unet.engine.events.PreviewReady` until the
    viewer has drawn it (see :mod:`.preview_pacing`).
    """
    images = training_images(sources, folder)
    pairs, val_pairs = pairs_of(images)
    ndim, channels = pairs[0].labels.ndim, pairs[0].image.shape[0]
    initial_model, note = starting_model(start, ndim, settings.mode)
    if note is not None:
        yield StartNote(note)
    if initial_model is not None:  # its predictions show objects left unpainted
        for sparse in sparse_annotations(initial_model, pairs, adapt or AUTO_FIT):
            yield AnnotationWarning(sparse.describe())
    model_config = settings.model_config(ndim, channels)
    with threads_left_for_the_viewer():
        recorder = RunRecorder(  # inside: it records the threads training runs on
            images,
            settings.train_config,
            model_config=model_config,
            adapt=adapt,
            start=start_record(start, initial_model),
            started_by="napari",
        )
        events = train(
            pairs,
            settings.train_config,
            model_config=model_config,
            val_pairs=val_pairs or None,
            initial_model=initial_model,
            device=settings.device,
            should_stop=stop.is_set,
            preview=preview,
            preview_every=preview_every,
            adapt=adapt,
        )
        events = recorded(events, recorder)
        with contextlib.closing(events):
            for event in events:
                yield event
                if pacing is not None and isinstance(event, ev.PreviewReady):
                    pacing.wait_until_drawn(stop.is_set)


@contextlib.contextmanager
def threads_left_for_the_viewer() -> Iterator[None]:
    """Train on all CPU cores but one while the viewer is open.

    With every core computing, the GUI thread and the software renderer wait for a core
    on each pan and brush stroke: on 2 cores the worst stall while training fell from
    ~124 ms to ~89 ms (33 ms on a quiet machine) with one torch thread, for ~9% slower
    training (``docs/benchmarks.md``, GUI stall). The headless engine keeps all cores.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, (os.cpu_count() or 1) - 1)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def replaces_current_model(event: ev.TrainingFinished) -> bool:
    """Whether a finished run's model should become the current model: only a run that
    completed at least one epoch (stopping before that leaves the current model as it
    was)."""
    return event.epochs > 0
