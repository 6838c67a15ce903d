"""Where to correct next, on the napari side: the doubt map layer, the ranked entries of a
prediction's doubtful objects, and moving the view onto one of them.

Main-thread helpers, no Qt. The doubt itself is computed in the prediction worker
(:mod:`.doubt_job`); this module only shows what it found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels

from .layer_pairs import find_layer
from .prediction_layers import geometry, layer_names, set_layer

if TYPE_CHECKING:
    from ..app.prediction_job import FramePlan, PredictionResult
    from ..engine.doubt import DoubtReport, ObjectDoubt
    from ..engine.output_cache import FrameOutputCache

DOUBT_SUFFIX = " doubt"

SMALLEST_ON_SCREEN = 24.0
"""Screen pixels an object spans at least after a jump: a smaller one (the view is zoomed
far out) is zoomed in on to :data:`ZOOMED_ON_SCREEN`."""

ZOOMED_ON_SCREEN = 96.0

DOUBT_STYLE = {
    "colormap": "inferno",
    "blending": "additive",
    "opacity": 0.6,
    "contrast_limits": (0.0, 1.0),
}


@dataclass(frozen=True)
class DoubtEntry:
    """One line of the ranked list: an object (or a possibly missed one) of one frame.

    Attributes
    ----------
    rank : int
        1 for the object of all frames most worth correcting.
    frame : tuple of int
        Index of the object's frame into the leading (time, stack) axes; empty for a single
        image or volume.
    doubt : ObjectDoubt
        What the engine says about the object.
    """

    rank: int
    frame: tuple[int, ...]
    doubt: ObjectDoubt

    @property
    def missed(self) -> bool:
        """Whether the entry is a possibly missed object (no label yet)."""
        return self.doubt.label == 0

    def data_position(self) -> tuple[float, ...]:
        """The object's centroid in the labels' data coordinates (frame axes first)."""
        return tuple(float(i) for i in self.frame) + tuple(float(c) for c in self.doubt.centroid)


class DoubtSet:
    """The doubt reports of one prediction, frame by frame.

    Parameters
    ----------
    plan : FramePlan
        How the predicted layer splits into frames.
    flips : FrameOutputCache, optional
        The flipped outputs of each frame, kept to rank the objects again when the labels
        change (:func:`~.doubt_job.rescore_job`); closed with the set.
    """

    def __init__(self, plan: FramePlan, flips: FrameOutputCache | None = None) -> None:
        self.plan = plan
        self.flips = flips
        self.reports: dict[int, DoubtReport] = {}

    def put(self, position: int, report: DoubtReport) -> None:
        """Store the report of frame ``position`` (in frame order)."""
        self.reports[int(position)] = report

    @property
    def complete(self) -> bool:
        """Whether every frame has its report."""
        return len(self.reports) == self.plan.n_frames

    def close(self) -> None:
        """Drop the kept flipped outputs (and their files on disk)."""
        if self.flips is not None:
            self.flips.close()

    def entries(self) -> list[DoubtEntry]:
        """Every frame's objects, most worth correcting first (ties: the frame order, then
        the engine's order)."""
        found = [
            (obj.priority, position, k, obj)
            for position, report in self.reports.items()
            for k, obj in enumerate(report.objects)
        ]
        found.sort(key=lambda item: (-item[0], item[1], item[2]))
        return [
            DoubtEntry(rank, self.plan.index(position), obj)
            for rank, (_, position, _, obj) in enumerate(found, start=1)
        ]

    def map_array(self) -> np.ndarray:
        """The doubt map of all frames, float32, the labels' shape (the report's own array
        for a single frame; frames without a report are 0)."""
        if not self.plan.leading and 0 in self.reports:
            return np.asarray(self.reports[0].map, np.float32)
        stack = np.zeros(self.plan.labels_shape, np.float32)
        for position, report in self.reports.items():
            stack[self.plan.index(position)] = report.map
        return stack


def doubt_layer_name(image_name: str) -> str:
    """Name of the doubt map layer of ``image_name``'s predictions."""
    return image_name + DOUBT_SUFFIX


def show_doubt_map(viewer: Any, result: PredictionResult, doubts: DoubtSet, image_layer=None):
    """Add the ``<image> doubt`` Image layer, or update it in place (its visibility,
    colormap and opacity stay as the user left them).

    A new layer goes just below the predictions layer, so the labels stay on top.
    """
    name = doubt_layer_name(result.image_name)
    is_new = find_layer(viewer, name, Image) is None
    kwargs = geometry(viewer, result, image_layer)
    layer = set_layer(viewer, Image, name, doubts.map_array(), {**DOUBT_STYLE, **kwargs})
    labels = find_layer(viewer, layer_names(result)[0], Labels)
    if is_new and labels is not None:
        layers = viewer.layers
        layers.move(layers.index(layer), layers.index(labels))
    layer.contrast_limits = (0.0, 1.0)
    return layer


def focus_on(viewer: Any, labels: Labels | None, entry: DoubtEntry, zoom_in: bool = True) -> None:
    """Centre the view on ``entry``'s object and select it for correcting.

    The camera centre goes to the object's centroid (in world coordinates, through the
    labels layer's scale and translate), the sliders of the axes not shown move to its
    frame and plane, the labels layer becomes the active layer and its selected label the
    object's (a new label for a possibly missed object, ready to paint it). With
    ``zoom_in``, a view zoomed out so far that the object would span fewer than
    :data:`SMALLEST_ON_SCREEN` screen pixels zooms in on it.
    """
    if labels is None:
        return
    world = np.asarray(labels.data_to_world(entry.data_position()), float)
    offset = viewer.dims.ndim - labels.ndim  # world axes are aligned on the right
    displayed = [axis for axis in viewer.dims.displayed if axis >= offset]
    for axis in range(offset, viewer.dims.ndim):
        if axis not in displayed:
            viewer.dims.set_point(axis, world[axis - offset])
    camera = camera_of(viewer)
    camera.center = tuple(world[axis - offset] for axis in displayed)
    if zoom_in:
        size = object_world_size(labels, entry, [a - offset for a in displayed])
        if size > 0 and size * camera.zoom < SMALLEST_ON_SCREEN:
            camera.zoom = ZOOMED_ON_SCREEN / size
    viewer.layers.selection.active = labels
    labels.selected_label = entry.doubt.label if not entry.missed else free_label(labels, entry)


def camera_of(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9, ``viewer.camera``
    before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def object_world_size(labels: Labels, entry: DoubtEntry, axes: Sequence[int]) -> float:
    """The largest extent of ``entry``'s bounding box along the layer ``axes`` shown, in
    world units."""
    n_leading = len(entry.frame)
    sizes = [
        (entry.doubt.bbox[axis - n_leading][1] - entry.doubt.bbox[axis - n_leading][0])
        * abs(float(labels.scale[axis]))
        for axis in axes
        if axis >= n_leading
    ]
    return max(sizes, default=0.0)


def free_label(labels: Labels, entry: DoubtEntry) -> int:
    """A label not used in ``entry``'s frame (frames are numbered independently)."""
    data: Any = labels.data
    return int(np.asarray(data[entry.frame]).max(initial=0)) + 1
