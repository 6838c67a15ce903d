"""One way to predict: a :class:`Predictor` and its one generator, :meth:`Predictor.run`.

A predictor is built once from a model, a memory budget and a tiling. ``run(source, sink,
stop)`` predicts the frames of a source and yields typed events
(:mod:`.prediction_events`) in the calling thread: the CLI and the viewer choose a source
and a sink and show the events; neither decides how to predict.

What it decides, by one rule (:meth:`Predictor.whole`): a frame is predicted whole when it
fits the memory budget (:meth:`~.memory_budget.MemoryBudget.fits_whole`) and no dask
client is given; otherwise block by block (:func:`~.large_image.segment_stored`), in this
process or on the client's cluster (:class:`~.dask_blocks.DaskBlocks`). Frames predicted
whole run through one stream (:meth:`SegmentationModel.predict_stream`: the model's
fitting, flip averaging and tiled network), so tiles of consecutive small frames share
batches; their post-processing runs in a thread pool while the network moves on.

Stopping is one :class:`threading.Event`, checked between batches of tiles and between
blocks; a stopped run ends without a :class:`~.prediction_events.FrameDone` for the frame
in progress and writes nothing after it ends.
"""

from __future__ import annotations

import collections
import itertools
import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import KW_ONLY, dataclass
from typing import Any

import numpy as np

from .block_plan import FrameLayout, default_chunks
from .image_adapter import AUTO_FIT, Adaptation, AdaptOptions
from .large_image import ImagePlan, plan_image, segment_stored
from .memory_budget import MemoryBudget
from .model import SegmentationModel
from .predict import MessageCallback
from .prediction_events import (
    BlockDone,
    FrameDone,
    FrameFitted,
    PredictionEvent,
    TilesDone,
)
from .voxel_zoom import combined_zoom

__all__ = [
    "BlockDone",
    "FrameDone",
    "FrameFitted",
    "Images",
    "LabelsSink",
    "PredictionEvent",
    "Predictor",
    "StoredFrames",
    "TilesDone",
]


@dataclass(frozen=True)
class Images:
    """A source of whole images in memory, predicted whole in one stream (tiles of
    consecutive images share batches), read one at a time as their tiles are needed.

    Attributes
    ----------
    images : iterable of ndarray
        Images in any layout the model can be fitted to (or, with ``adapt=None``, in the
        network's terms).
    channel_axis : int, optional
        Channel axis of the images, when it is ambiguous.
    intensity_ranges : iterable of (low, high) or None, optional
        Each image's normalisation percentiles (None entries: computed from the image),
        for crops that must be scaled like their whole image.
    voxel_sizes : iterable of tuple or None, optional
        Each image's voxel size (None entries: the predictor's ``adapt.voxel_size``).
    """

    images: Iterable[np.ndarray]
    channel_axis: int | None = None
    intensity_ranges: Iterable[tuple[np.ndarray, np.ndarray] | None] | None = None
    voxel_sizes: Iterable[tuple[float, ...] | None] | None = None


@dataclass(frozen=True)
class StoredFrames:
    """A source of the frames of one image array, stored or lazy (zarr, a TIFF's zarr
    store, dask, numpy), read frame by frame or block by block.

    Attributes
    ----------
    array : array-like
        The image, with numpy slicing.
    layout : FrameLayout
        Its frame, channel and spatial axes.
    name : str
        The image, for messages.
    path : str, optional
        Where the image is stored: dask workers open it there.
    """

    array: Any
    layout: FrameLayout
    name: str = "image"
    path: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.layout.spatial_shape(self.shape)

    @property
    def channels(self) -> int:
        return self.layout.n_channels(self.shape)


@dataclass(frozen=True)
class LabelsSink:
    """Where a source's labels are written: an unsigned integer array of shape ``frame
    axes + spatial`` (zarr when frames go block by block), and its path when dask workers
    write it (the level-0 zarr array, opened on each worker)."""

    array: Any
    path: str | None = None


@dataclass(frozen=True)
class Predictor:
    """Predicts sources with one model, one memory budget and one tiling (frozen: a
    variant, e.g. with a dask client, is ``dataclasses.replace(predictor, client=...)``).

    Parameters
    ----------
    model : SegmentationModel
        The model (on its device; flip averaging as it says).
    memory : MemoryBudget, optional
        The budget that decides whole or blocks (:meth:`whole`) and sizes the blocks.
        None: every frame is predicted whole (for images already in memory).
    tile_shape : tuple of int, optional
        Network tile (default: chosen per image, see ``predict_stream``).
    batch_size : int
        Tiles per forward pass.
    adapt : AdaptOptions or None
        How images are fitted to the network (default: automatic); None: they are in its
        terms already (training data).
    postprocess : bool
        Post-process frames predicted whole into labels (False: outputs only, e.g. for a
        viewer that re-thresholds them). Frames block by block are always labelled.
    client : distributed.Client, optional
        Run blocks on this dask cluster (every frame goes block by block).
    device : str
        Where dask workers run the network.
    on_message : callable(str), optional
        Receives notices such as out-of-memory retries.
    max_tile_bytes : int, optional
        Working memory of one forward pass for frames predicted whole (default: from the
        free memory; blocks use ``memory.network``).
    workers : int, optional
        Post-processing threads for frames predicted whole (default: one per core). At
        most ``2 * workers`` frames are in flight, so memory stays bounded.
    """

    model: SegmentationModel
    _: KW_ONLY
    memory: MemoryBudget | None = None
    tile_shape: tuple[int, ...] | None = None
    batch_size: int = 8
    adapt: AdaptOptions | None = AUTO_FIT
    postprocess: bool = True
    client: Any = None
    device: str = "cpu"
    on_message: MessageCallback | None = None
    max_tile_bytes: int | None = None
    workers: int | None = None

    def whole(self, spatial: tuple[int, ...], channels: int = 1) -> bool:
        """The one rule: whether a frame of ``spatial`` shape is predicted whole (it fits
        the budget, and no cluster is to run it), rather than block by block."""
        if self.client is not None:
            return False
        return self.memory is None or self.memory.fits_whole(spatial, channels)

    def plan(
        self,
        source: StoredFrames,
        *,
        out_chunks: tuple[int, ...] | None = None,
        read_chunks: tuple[int, ...] | None = None,
        voxel_size: tuple[float, ...] | None = None,
        fit_chunks: bool | None = None,
        blocks: bool = False,
    ) -> ImagePlan | None:
        """The block plan of ``source``, or None when its frames are predicted whole.

        ``blocks`` forces blocks (a caller's format reason, e.g. OME-Zarr output). The
        other arguments go to :func:`~.large_image.plan_image`: ``out_chunks`` default
        to the CLI's chunks for the frame, halved to fit when ``fit_chunks`` (default:
        when ``out_chunks`` are not given, i.e. they are not the output's storage).

        Raises
        ------
        MemoryLimitError
            If the budget cannot hold one block (or the input's storage chunks).
        """
        if not blocks and self.whole(source.spatial, source.channels):
            return None
        if self.memory is None:
            raise ValueError("predicting block by block needs a memory budget")
        return plan_image(
            self.model,
            source.shape,
            source.layout,
            self.memory,
            out_chunks or default_chunks(source.spatial),
            read_chunks=read_chunks,
            itemsize=np.dtype(source.array.dtype).itemsize,
            adapt=self.adapt or AUTO_FIT,
            voxel_size=voxel_size,
            tile_shape=self.tile_shape,
            batch_size=self.batch_size,
            name=source.name,
            fit_chunks=out_chunks is None if fit_chunks is None else fit_chunks,
        )

    def run(
        self,
        source: Images | StoredFrames,
        sink: LabelsSink | Any = None,
        stop: threading.Event | None = None,
        *,
        plan: ImagePlan | None = None,
    ) -> Iterator[PredictionEvent]:
        """Predict every frame of ``source``, yielding events as it goes.

        Parameters
        ----------
        source : Images or StoredFrames
            Whole images in memory, or the frames of one array (whole or block by block
            as :meth:`plan` decides, unless ``plan`` is given).
        sink : LabelsSink or array, optional
            Where labels go (indexed by frame). Required block by block. None: labels
            and outputs travel in the :class:`FrameDone` events.
        stop : threading.Event, optional
            Once set, the run ends between batches of tiles or blocks.
        plan : ImagePlan, optional
            A block plan made by :meth:`plan` (not planned again).

        Yields
        ------
        TilesDone, BlockDone, FrameFitted, FrameDone
            See :mod:`.prediction_events`.
        """
        out = sink.array if isinstance(sink, LabelsSink) else sink
        if isinstance(source, Images):
            indices = ((i,) for i in itertools.count())  # a sink holds image i at [i]
            yield from self._whole(source, indices, out, stop)
            return
        if plan is None:
            plan = self.plan(source)
        if plan is None:
            indices = source.layout.frames(source.shape)
            yield from self._whole(_frames_of(source), indices, out, stop)
            return
        if out is None:
            raise ValueError("predicting block by block needs a sink for the labels")
        runner = None
        if self.client is not None:
            from .dask_blocks import DaskBlocks

            path = sink.path if isinstance(sink, LabelsSink) else None
            if source.path is None or path is None:
                raise ValueError("dask workers need the paths of the image and its labels")
            runner = DaskBlocks(self.client, self.model, source.path, path, self.device)
        yield from segment_stored(
            self.model, source.array, plan, out, runner=runner, stop=stop, name=source.name
        )

    def _whole(
        self,
        source: Images,
        indices: Iterable[tuple[int, ...]],
        out: Any,
        stop: threading.Event | None,
    ) -> Iterator[PredictionEvent]:
        """Frames predicted whole in one stream; post-processing in a thread pool."""
        stream = self.model.predict_stream(
            source.images,
            channel_axis=source.channel_axis,
            adapt=self.adapt,
            tile_shape=self.tile_shape,
            batch_size=self.batch_size,
            on_message=self.on_message,
            stop=stop,
            intensity_ranges=source.intensity_ranges,
            voxel_sizes=source.voxel_sizes,
            max_tile_bytes=self.max_tile_bytes,
        )
        index_of = iter(indices)
        fitted: collections.deque[Adaptation] = collections.deque()
        pending: collections.deque[tuple[int, tuple[int, ...], np.ndarray, Future | None]]
        pending = collections.deque()
        n_fitted = position = 0
        workers = self.workers or os.cpu_count() or 1
        pool = ThreadPoolExecutor(workers) if self.postprocess else None
        try:
            for item in stream:
                if isinstance(item, TilesDone):
                    yield item
                elif isinstance(item, Adaptation):
                    fitted.append(item)
                    yield FrameFitted(n_fitted, item.describe(), item)
                    n_fitted += 1
                else:
                    adaptation = fitted.popleft() if fitted else None
                    future = None
                    if pool is not None:
                        future = pool.submit(self._instances, item, adaptation)
                    pending.append((position, next(index_of), item, future))
                    position += 1
                    limit = 2 * workers if pool is not None else 1
                    while len(pending) >= limit:
                        yield self._done(pending.popleft(), out)
            if stop is None or not stop.is_set():
                while pending:
                    yield self._done(pending.popleft(), out)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)

    def _instances(self, outputs: np.ndarray, adaptation: Adaptation | None) -> np.ndarray:
        ndim = self.model.config.ndim
        if adaptation is None:
            return self.model.instances(outputs, zoom=1.0)
        zoom = combined_zoom(adaptation.zoom, adaptation.voxel_zoom, ndim)
        return self.model.instances(outputs, zoom=zoom, voxel_size=adaptation.voxel_size)

    @staticmethod
    def _done(item: tuple[int, tuple[int, ...], np.ndarray, Future | None], out: Any) -> FrameDone:
        position, index, outputs, future = item
        if future is None:
            return FrameDone(position, index, outputs, None)
        labels = future.result()
        count = int(labels.max()) if labels.size else 0
        if out is None:
            return FrameDone(position, index, outputs, labels, count)
        out[index] = labels.astype(out.dtype, copy=False)
        return FrameDone(position, index, outputs, None, count)


def _frames_of(source: StoredFrames) -> Images:
    """The frames of ``source`` as whole images, read one at a time."""
    layout = source.layout
    box = tuple(slice(None) for _ in source.spatial)
    frames = (layout.read(source.array, frame, box)[0] for frame in layout.frames(source.shape))
    return Images(frames, channel_axis=_read_channel_axis(layout, source.shape))


def _read_channel_axis(layout: FrameLayout, shape: tuple[int, ...]) -> int:
    """The channel axis of a frame as :meth:`FrameLayout.read` returns it."""
    if layout.channel_axis is None:
        return 0
    kept = layout.kept_axes
    position = sum(1 for a in kept if a < layout.channel_axis)
    if position == len(kept) - 1 and shape[layout.channel_axis] in (3, 4):
        return len(kept) - 1
    return 0
