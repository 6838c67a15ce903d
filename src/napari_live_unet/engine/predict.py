"""Tiled, blended inference for images of any size under a fixed working-memory cap."""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from .device import autocast, autocast_dtype
from .errors import InputError
from .normalize import channel_percentiles
from .prediction_events import TilesDone
from .tile_plan import (
    SizeMultiple,
    Tiling,
    activation_bytes_per_voxel,
    blend_window,
    check_tile_shape,
    tile_budget_voxels,
    tile_starts,
)
from .unet import activate, memory_format

MessageCallback = Callable[[str], None]

__all__ = ["MessageCallback", "TilesDone", "predict_stream"]


def predict_stream(
    network: torch.nn.Module,
    images: Iterable[np.ndarray],
    *,
    mode: str,
    size_multiple: SizeMultiple,
    stats: Iterable[tuple[np.ndarray, np.ndarray]] | None = None,
    tile_shape: tuple[int, ...] | None = None,
    overlap: int | None = None,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    out_dtype: np.dtype | type = np.float16,
    on_message: MessageCallback | None = None,
    stop: threading.Event | None = None,
    max_tile_bytes: int | None = None,
) -> Iterator[np.ndarray | TilesDone]:
    """Run the network tile by tile over a stream of channel-first images.

    Tiles of consecutive small images share batches, which keeps a GPU busy on folders of
    many small images. Images are read from ``images`` only as their tiles are needed, and
    each output is yielded, in order, as soon as its last tile is blended.

    Parameters
    ----------
    network : torch.nn.Module
        The U-net, already on ``device`` and in eval mode.
    images : iterable of ndarray, shape (C, *spatial)
        Raw images (any dtype, any size). None is copied as a whole: each tile is read,
        normalised and padded on its own.
    mode : {"boundary", "distance"}
        How to activate the raw output.
    size_multiple : int or tuple of int
        Tiles are padded to a multiple of this, one for all axes or one per spatial axis
        (anisotropic 3D networks pool z less).
    stats : iterable of (low, high), optional
        Normalisation percentiles of each image, shape (C,) each; computed from the image
        when omitted.
    tile_shape : tuple of int, optional
        Tile size. By default it is chosen per image (:func:`plan_tile`): the whole image,
        padded to the size multiples, when the network's activations for it fit a memory
        budget (:func:`tile_budget_voxels`: a quarter of the free memory, at most 1 GiB on
        a CPU); otherwise the fewest near-equal tiles that cover it with an overlap of the
        network's receptive radius (:func:`context_margin`). Batches hold at most the
        budget's voxels of tiles.
    overlap : int, optional
        Overlap between tiles in pixels; defaults to the receptive radius for automatic
        tiles and to 1/8 of the smallest tile edge (at least 8) for a given ``tile_shape``.
    batch_size : int
        Tiles per forward pass. Halved automatically on CUDA out-of-memory.
    device : torch.device or str
        Where the network runs.
    out_dtype : dtype
        Storage type of the result (float16 halves memory; values are in [0, 1]).
    on_message : callable(str), optional
        Receives notices such as out-of-memory retries.
    stop : threading.Event, optional
        Checked between batches; once it is set, the stream ends early.
    max_tile_bytes : int, optional
        Working memory one forward pass may take (replaces the budget from the free
        memory, so that a caller under a memory cap can share it out).

    Yields
    ------
    ndarray, shape (2, *spatial), or TilesDone
        Foreground probability and auxiliary map of each image, and after each batch of
        tiles a :class:`TilesDone` (its ``total`` counts the tiles of the images planned so
        far), so a caller can show progress within one large image without a thread.

    Notes
    -----
    Tile starts fall on multiples of the size multiple, so tiles see the pooling grid as
    the whole image does. Tiles are visited in order along the longest axis. Float32
    accumulators cover only one band of tiles along that axis; each band is finalised into
    the output as soon as no later tile can touch it. Working memory is therefore bounded
    by the band size, not the image size.
    """
    check_tile_shape(tile_shape, size_multiple)
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    device = torch.device(device)
    stats_iter = iter(stats) if stats is not None else None
    tiling = Tiling(
        network,
        size_multiple,
        None if tile_shape is None else tuple(int(t) for t in tile_shape),
        overlap,
        tile_budget_voxels(network, device)
        if max_tile_bytes is None
        else max(1, max_tile_bytes // activation_bytes_per_voxel(network)),
    )
    windows: dict[tuple[tuple[int, ...], tuple[int, ...]], torch.Tensor] = {}
    pending: list[tuple[_Job, tuple[int, ...]]] = []
    in_flight: list[_Job] = []
    done = total = 0

    def run_pending() -> Iterator[np.ndarray | TilesDone]:
        nonlocal batch_size, done
        if stop is not None and stop.is_set():
            raise _Stopped
        batch = np.stack([_read_tile(job.image, start, job.tile) for job, start in pending])
        low = torch.cat([job.low for job, _ in pending])
        scale = torch.cat([job.scale for job, _ in pending])
        result, batch_size = _run(network, batch, mode, device, batch_size, low, scale, on_message)
        for (job, start), pred in zip(pending, result, strict=True):
            job.band.add(start, pred, job.out)
            job.remaining -= 1
        done += len(pending)
        pending.clear()
        yield TilesDone(done, total)
        while in_flight and in_flight[0].remaining == 0:
            job = in_flight.pop(0)
            job.band.flush_all(job.out)
            yield job.out

    try:
        for image in images:
            image_stats = next(stats_iter) if stats_iter is not None else None
            job = _Job.plan(image, image_stats, tiling, device, out_dtype, windows)
            in_flight.append(job)
            total += len(job.tiles)
            # Large tiles go fewer to a batch, so a batch's activations stay bounded.
            tile_batch = min(batch_size, max(1, tiling.budget // math.prod(job.tile)))
            for start in job.tiles:
                if pending and (len(pending) >= tile_batch or pending[0][0].tile != job.tile):
                    yield from run_pending()
                pending.append((job, start))
        if pending:
            yield from run_pending()
    except _Stopped:
        return


class _Stopped(Exception):
    """Raised inside the tile loop when the caller asks to stop."""


class _Job:
    """One image's tiling plan, normalisation and accumulators."""

    def __init__(self, image, tile, tiles, low, scale, out, band) -> None:
        self.image, self.tile, self.tiles = image, tile, tiles
        self.low, self.scale, self.out, self.band = low, scale, out, band
        self.remaining = len(tiles)

    @classmethod
    def plan(cls, image, stats, tiling: Tiling, device, out_dtype, windows):
        spatial = tuple(image.shape[1:])
        ndim = len(spatial)
        tile, ov = tiling.choose(spatial)
        low, high = channel_percentiles(image) if stats is None else stats
        stat_shape = (1, -1) + (1,) * ndim
        low_t = torch.as_tensor(np.asarray(low, np.float32), device=device).reshape(stat_shape)
        scale_t = torch.as_tensor(
            1.0 / np.maximum(np.asarray(high, np.float32) - np.asarray(low, np.float32), 1e-6),
            device=device,
        ).reshape(stat_shape)
        starts = [
            tile_starts(s, t, o, m)
            for s, t, o, m in zip(spatial, tile, ov, tiling.multiples(ndim), strict=True)
        ]
        band_axis = int(np.argmax(spatial))
        order = [band_axis] + [a for a in range(ndim) if a != band_axis]
        tiles = sorted(itertools.product(*starts), key=lambda s: [s[a] for a in order])
        if (tile, ov) not in windows:
            windows[(tile, ov)] = torch.from_numpy(blend_window(tile, ov)).to(device)
        out = np.empty((2, *spatial), dtype=out_dtype)
        band = _Band(spatial, tile, band_axis, windows[(tile, ov)])
        return cls(image, tile, tiles, low_t, scale_t, out, band)


_TORCH_DTYPE = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32}
_TORCH_NATIVE = {
    np.dtype(t) for t in (np.uint8, np.int8, np.int16, np.int32, np.float16, np.float32, np.float64)
}


def _read_tile(image: np.ndarray, start: tuple[int, ...], tile: tuple[int, ...]) -> np.ndarray:
    """One tile in its stored dtype, padded to the full tile size.

    Normalisation happens on the device, so a uint8 image travels as uint8.
    """
    box = tuple(slice(s, s + t) for s, t in zip(start, tile, strict=True))
    data = np.asarray(image[(slice(None), *box)])
    if data.dtype not in _TORCH_NATIVE:
        data = data.astype(np.float32)
    pad = [(0, t - d) for t, d in zip(tile, data.shape[1:], strict=True)]
    if any(p for _, p in pad):
        fits = all(p < d for (_, p), d in zip(pad, data.shape[1:], strict=True))
        data = np.pad(data, [(0, 0), *pad], mode="reflect" if fits else "edge")
    return data


def _run(
    network,
    batch: np.ndarray,
    mode: str,
    device: torch.device,
    batch_size: int,
    low: torch.Tensor,
    scale: torch.Tensor,
    on_message: MessageCallback | None,
) -> tuple[torch.Tensor, int]:
    """Normalise and forward a batch on the device; on CUDA out-of-memory, retry in smaller
    pieces and say so. Returns activated outputs, still on the device."""
    x = torch.from_numpy(batch)
    amp = autocast_dtype(device)
    while True:
        try:
            outs = []
            for i in range(0, len(x), batch_size):
                part = x[i : i + batch_size].to(device, non_blocking=True).float()
                part = (part - low[i : i + batch_size]) * scale[i : i + batch_size]
                part = part.contiguous(memory_format=memory_format(part.ndim - 2))
                with torch.inference_mode(), autocast(device, amp):
                    raw = network(part)
                    # A foreign (BMZ) network already returns the two maps in [0, 1].
                    activated = getattr(network, "outputs_activated", False)
                    outs.append(raw.float() if activated else activate(raw, mode))
            return torch.cat(outs), batch_size
        except torch.cuda.OutOfMemoryError:
            if batch_size == 1:
                raise
            torch.cuda.empty_cache()
            batch_size = max(1, batch_size // 2)
            if on_message is not None:
                on_message(
                    f"CUDA out of memory during prediction; retrying with batch size {batch_size}"
                )


class _Band:
    """Float32 accumulators for one band of tiles along ``axis``."""

    def __init__(self, spatial, tile, axis, window: torch.Tensor) -> None:
        self.spatial, self.tile, self.axis, self.window = spatial, tile, axis, window
        self.origin = 0  # image coordinate of the accumulator's first row along axis
        shape = list(spatial)
        shape[axis] = min(tile[axis], spatial[axis])
        # Accumulators live on the network's device: only finished rows travel back.
        self.acc = torch.zeros((2, *shape), device=window.device)
        self.weight = torch.zeros(shape, device=window.device)

    def add(self, start, pred: torch.Tensor, out: np.ndarray) -> None:
        a = self.axis
        if start[a] > self.origin:
            self._flush_until(start[a], out)
        offset = list(start)
        offset[a] -= self.origin
        size = [min(t, s - o) for t, s, o in zip(self.tile, self.spatial, start, strict=True)]
        box = tuple(slice(o, o + n) for o, n in zip(offset, size, strict=True))
        crop = tuple(slice(0, n) for n in size)
        w = self.window[crop]
        self.acc[(slice(None), *box)] += pred[(slice(None), *crop)] * w
        self.weight[box] += w

    def _flush_until(self, new_origin: int, out: np.ndarray) -> None:
        a, n = self.axis, new_origin - self.origin
        self._write(n, out)
        length = self.acc.shape[1 + a]
        keep = length - n
        self.acc = torch.roll(self.acc, -n, dims=1 + a)
        self.weight = torch.roll(self.weight, -n, dims=a)
        self.acc.narrow(1 + a, keep, n).zero_()
        self.weight.narrow(a, keep, n).zero_()
        self.origin = new_origin

    def _write(self, n: int, out: np.ndarray) -> None:
        a = self.axis
        values = self.acc.narrow(1 + a, 0, n) / self.weight.narrow(a, 0, n).clamp_min(1e-8)
        values = values.to(_TORCH_DTYPE.get(out.dtype, torch.float32)).cpu()
        index = [slice(None)] * (out.ndim)
        index[1 + a] = slice(self.origin, self.origin + n)
        out[tuple(index)] = values.numpy().astype(out.dtype, copy=False)

    def flush_all(self, out: np.ndarray) -> None:
        n = min(self.acc.shape[1 + self.axis], self.spatial[self.axis] - self.origin)
        self._write(n, out)
