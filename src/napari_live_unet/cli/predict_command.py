"""``live-unet predict``: label a folder, a TIFF or a (OME-)Zarr image under a memory limit.

Small TIFFs are predicted whole, several at a time (tiles of consecutive images share
batches). Images that do not fit the memory limit whole, time series, Zarr inputs, OME-Zarr
outputs and runs on a dask cluster (``--workers``, ``--scheduler``) go block by block
(:mod:`napari_live_unet.engine.large_image`), frame by frame, with memory bounded by the
limit and not by the image.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from ..engine import load_model_source, resolve_device
from ..engine.atomic_write import remove_stale_temporaries
from ..engine.block_plan import FrameLayout, default_chunks
from ..engine.bmz.output_roles import parse_output_roles
from ..engine.errors import InputError, MemoryLimitError
from ..engine.image_adapter import AUTO_FIT
from ..engine.image_source import ImageSource, is_zarr_path, list_images, open_image
from ..engine.io import read_tiff, write_tiff_atomic
from ..engine.label_dtype import label_dtype
from ..engine.large_image import ImagePlan, labels_axes, labels_shape
from ..engine.memory_budget import MemoryBudget, default_memory_limit
from ..engine.memory_estimate import available_memory_bytes, format_bytes
from ..engine.output_checks import check_not_an_input, check_writable
from ..engine.predictor import (
    BlockDone,
    FrameDone,
    FrameFitted,
    Images,
    LabelsSink,
    Predictor,
    StoredFrames,
)
from ..engine.tiff_labels import TiffLabelsWriter
from ..engine.tile_plan import check_tile_shape
from ..engine.voxel_metadata import read_voxel_size
from .input_options import adapt_options

if TYPE_CHECKING:
    from ..engine.ome_zarr_labels import OmeZarrLabelsWriter

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text: str) -> int:
    """``--memory-limit`` as bytes: ``1.5G``, ``800M``, ``2GiB``, ``4e9``."""
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
    try:
        value = float(match.group(1)) * _UNITS[match.group(2).lower()] if match else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise InputError(
            f"--memory-limit must be a positive size such as 1.5G, 800M or 2GiB; got {text!r}"
        )
    return int(value)


@dataclass
class _Input:
    """One input image and how it will be predicted."""

    name: str
    path: Path
    plan: ImagePlan | None  # None: predicted whole, with the other small TIFFs
    voxel_size: tuple[float, ...] | None
    labels_shape: tuple[int, ...] = ()
    labels_axes: str = ""
    chunks: tuple[int, ...] = ()
    labels_voxel_size: tuple[float, ...] | None = None  # per z/y/x axis of the labels


def run_predict(args: argparse.Namespace) -> int:
    try:
        return _run_predict(args)
    except MemoryLimitError as exc:
        raise InputError(memory_message(exc)) from None


def memory_message(exc: MemoryLimitError) -> str:
    """A memory error in the CLI's words: what to do is raise ``--memory-limit`` (or, with
    workers, run fewer)."""
    if exc.workers:
        return exc.with_remedy(
            f"raise --memory-limit or use fewer workers (--workers {exc.workers})"
        )
    return exc.with_remedy("raise --memory-limit")


def _run_predict(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    adapt = adapt_options(args)
    zarr_out = args.out.suffix.lower() == ".zarr" or is_zarr_path(args.out)
    check_not_an_input(args.out, [args.images])
    check_writable(args.out, folder=True)
    distributed = args.workers is not None or args.scheduler is not None
    if args.workers is not None and args.scheduler is not None:
        raise InputError("give --workers (a cluster on this machine) or --scheduler, not both")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    outputs = None if args.bmz_outputs is None else parse_output_roles(args.bmz_outputs)
    model = load_model_source(args.model, device, outputs)
    if args.no_flip_average:
        model = model.without_flip_average()
    elif model.flip_average:
        print(
            "this model averages each tile and its three flips (chosen when it was trained, "
            "on its validation data); --no-flip-average predicts each tile once, about four "
            "times faster"
        )
    if distributed and not model.trainable:
        raise InputError(
            f"{args.model}: another tool's BioImage Model Zoo model runs in this process "
            "only; leave out --workers and --scheduler"
        )
    model.voxel_zoom(adapt.voxel_size)  # a wrong number of axes is refused now
    tile = None if args.tile_size is None else (args.tile_size,) * model.config.ndim
    check_tile_shape(tile, model.config.size_multiples)
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    limit = (
        parse_size(args.memory_limit)
        if args.memory_limit is not None
        else default_memory_limit(available_memory_bytes(torch.device("cpu")))
    )
    # The one budget of this run: each LocalCluster worker holds its own Python, torch and
    # model (about what this process holds) and shares what this process leaves of it.
    memory = MemoryBudget.split(limit, workers=args.workers)
    predictor = Predictor(
        model,
        memory=memory,
        tile_shape=tile,
        batch_size=args.batch_size,
        adapt=adapt,
        device=str(device),
        on_message=lambda m: tqdm.write(m, file=sys.stderr),
    )
    files = list_images(args.images)
    if not zarr_out:
        remove_stale_temporaries(args.out)
    _refuse_existing(args, files, zarr_out)
    # Check and plan every input before writing anything.
    inputs = [
        _plan_input(predictor, name, path, zarr_out or distributed)
        for name, path in tqdm(
            files.items(), desc="checking", unit="image", file=sys.stderr, leave=False, disable=None
        )
    ]
    if args.doubt and any(i.plan is not None for i in inputs):
        raise InputError(
            "--doubt assesses images predicted whole; leave it out for Zarr images, "
            "OME-Zarr output, --workers/--scheduler and images larger than --memory-limit"
        )
    if args.save_maps and any(i.plan is not None for i in inputs):
        raise InputError(
            "--save-maps writes maps of images predicted whole; leave it out for Zarr images, "
            "OME-Zarr output, --workers/--scheduler and images larger than --memory-limit"
        )
    start, pixels = time.perf_counter(), 0
    notes: collections.Counter[str] = collections.Counter()
    client = None
    if distributed:
        from ..engine.dask_blocks import start_client

        # A LocalCluster's workers get the share the blocks were planned for.
        client = start_client(args.workers, args.scheduler, memory.cluster_limit)
        predictor = dataclasses.replace(predictor, client=client)
    try:
        small = [i for i in inputs if i.plan is None]
        pixels += _predict_whole(predictor, small, args, notes)
        for item in (i for i in inputs if i.plan is not None):
            pixels += _predict_blocks(predictor, item, args, zarr_out, notes)
    finally:
        if client is not None:
            from ..engine.dask_blocks import stop_client

            stop_client(client)
    seconds = time.perf_counter() - start
    for description, n in notes.most_common():
        print(f"{n} image(s): {description}")
    where = f"{args.workers} dask worker(s)" if args.workers else str(device)
    where = f"the cluster at {args.scheduler}" if args.scheduler else where
    print(
        f"wrote {len(inputs)} label images to {args.out} "
        f"({pixels / 1e6 / seconds:.2f} MP/s end to end on {where}; "
        f"memory limit {format_bytes(limit)})"
    )
    return 0


def _refuse_existing(args: argparse.Namespace, files: dict[str, Path], zarr_out: bool) -> None:
    if zarr_out:
        existing = [n for n in files if (args.out / "labels" / n).exists()]
    else:
        written = ("{}.tif", "{}_doubt.tif", "{}_doubt.csv") if args.doubt else ("{}.tif",)
        existing = [n for n in files if any((args.out / w.format(n)).exists() for w in written)]
    if existing and not args.overwrite:
        raise InputError(
            f"--out {args.out}: already holds {len(existing)} of the label images this would "
            f"write ({', '.join(sorted(existing)[:3])}"
            + (", ..." if len(existing) > 3 else "")
            + "). Choose another output, or pass --overwrite to replace them."
        )


def _plan_input(predictor: Predictor, name: str, path: Path, always_blocks: bool) -> _Input:
    """Open one input (metadata only), check it fits the model and the memory limit, and
    plan it: whole (with the other small TIFFs) or block by block, as the predictor's rule
    says, or block by block for the CLI's own reasons (OME-Zarr output, a cluster, a Zarr
    input, a series)."""
    model, adapt = predictor.model, predictor.adapt or AUTO_FIT
    ndim = model.config.ndim
    with open_image(path) as source:
        layout = FrameLayout.of(source.axes, ndim, str(path))
        shape = tuple(int(s) for s in source.array.shape)
        spatial = layout.spatial_shape(shape)
        voxel = adapt.voxel_size or _source_voxel_size(source, ndim)
        blocks = (
            always_blocks
            or source.kind != "tiff"
            or any(
                source.axes[a] != "q" or shape[a] > 8 for a in layout.frame_axes
            )  # a series, not a few channels
        )
        if not blocks and predictor.whole(spatial, layout.n_channels(shape)):
            model.check_fits(read_tiff(path), adapt, name=str(path))
            return _Input(name, path, None, voxel or read_voxel_size(path, ndim))
        read_chunks = layout.spatial_shape(source.chunks)
        out_chunks = read_chunks if source.kind != "tiff" else default_chunks(spatial)
        plan = predictor.plan(
            StoredFrames(source.array, layout, str(path)),
            out_chunks=out_chunks,
            read_chunks=read_chunks,
            voxel_size=voxel,
            fit_chunks=source.kind == "tiff",
            blocks=True,
        )
        assert plan is not None
        axes = labels_axes(layout).replace("q", "t")
        if not re.fullmatch("t?z?yx", axes):
            raise InputError(
                f"{path}: axes '{source.axes}' leave labels with axes '{axes}'; "
                "at most one time axis is supported besides the spatial axes"
            )
        frames = (1,) * len(layout.frame_axes)
        return _Input(
            name,
            path,
            plan,
            voxel,
            labels_shape(shape, layout),
            axes,
            frames + plan.chunks,
            _labels_voxel_size(source, axes, voxel),
        )


def _labels_voxel_size(
    source: ImageSource, axes: str, voxel: tuple[float, ...] | None
) -> tuple[float, ...] | None:
    """Voxel size of every z/y/x axis of labels with ``axes``: the model's axes from
    ``voxel``, the others (z of a stack labelled slice by slice) from the image; None when
    one is unknown."""
    letters = [a for a in axes if a in "zyx"]
    known = dict(zip(source.spatial_axes, source.voxel_size or (), strict=False))
    if voxel is not None:
        known.update(zip(letters[len(letters) - len(voxel) :], voxel, strict=True))
    return tuple(known[a] for a in letters) if all(a in known for a in letters) else None


def _source_voxel_size(source: ImageSource, ndim: int) -> tuple[float, ...] | None:
    size = source.voxel_size
    return tuple(size[-ndim:]) if size is not None and len(size) >= ndim else None


def _predict_whole(predictor: Predictor, inputs: list[_Input], args, notes) -> int:
    """Small TIFFs, whole: tiles of consecutive images share batches, and post-processing
    of one image overlaps prediction of the next."""
    if not inputs:
        return 0
    if args.doubt:
        adapt = predictor.adapt or AUTO_FIT
        return _predict_with_doubt(predictor.model, inputs, adapt, args, notes)
    source = Images((read_tiff(i.path) for i in inputs), voxel_sizes=(i.voxel_size for i in inputs))
    pixels = 0
    with tqdm(
        total=len(inputs), desc="predicting", disable=None, unit="image", file=sys.stderr
    ) as bar:
        for event in predictor.run(source):
            if isinstance(event, FrameFitted):
                notes.update([event.note])
            elif isinstance(event, FrameDone):
                item, labels = inputs[event.position], event.labels
                write_tiff_atomic(
                    args.out / f"{item.name}.tif", labels.astype(label_dtype(int(labels.max())))
                )
                if args.save_maps:
                    maps = event.outputs.astype(np.float32)
                    write_tiff_atomic(args.out / f"{item.name}_maps.tif", maps)
                pixels += labels.size
                bar.update(1)
    return pixels


def _predict_with_doubt(model, inputs: list[_Input], adapt, args, notes) -> int:
    """Each image predicted as is and flipped: labels, and the doubt map and list beside."""
    from ..engine.doubt import assess_doubt, write_doubt

    pixels = 0
    for item in tqdm(inputs, desc="predicting", disable=None, unit="image", file=sys.stderr):
        image = read_tiff(item.path)
        if adapt.voxel_size is None and item.voxel_size is not None:
            adapt_item = dataclasses.replace(adapt, voxel_size=item.voxel_size)
        else:
            adapt_item = adapt
        result = assess_doubt(model, image, adapt=adapt_item)
        assert result is not None  # nothing asks it to stop
        maps, labels, report = result
        notes.update(["doubt assessed (as is and under three flips)"])
        write_tiff_atomic(
            args.out / f"{item.name}.tif", labels.astype(label_dtype(int(labels.max())))
        )
        if args.save_maps:
            write_tiff_atomic(args.out / f"{item.name}_maps.tif", maps.astype(np.float32))
        write_doubt(
            report, args.out / f"{item.name}_doubt.tif", args.out / f"{item.name}_doubt.csv"
        )
        pixels += labels.size
    return pixels


def _predict_blocks(predictor: Predictor, item: _Input, args, zarr_out, notes) -> int:
    """One image block by block, into an OME-Zarr labels group or a TIFF."""
    assert item.plan is not None and predictor.memory is not None
    writer: OmeZarrLabelsWriter | TiffLabelsWriter
    if zarr_out:
        # ome-zarr (and the dask it imports) only for OME-Zarr output
        from ..engine.ome_zarr_labels import OmeZarrLabelsWriter

        writer = OmeZarrLabelsWriter(
            args.out,
            item.name,
            item.labels_shape,
            item.labels_axes,
            item.chunks,
            voxel_size=item.labels_voxel_size,
            overwrite=args.overwrite,
        )
    else:
        writer = TiffLabelsWriter(args.out / f"{item.name}.tif", item.labels_shape, item.chunks)
    total = item.plan.blocks_per_frame * len(item.plan.frames)
    with (
        writer,
        open_image(item.path) as source,
        tqdm(total=total, desc=item.name, unit="block", file=sys.stderr, disable=None) as bar,
    ):
        frames = StoredFrames(source.array, item.plan.job.layout, str(item.path), str(item.path))
        sink = LabelsSink(writer.array, str(writer.level0_path))
        largest = 0
        for event in predictor.run(frames, sink, plan=item.plan):
            if isinstance(event, BlockDone):
                bar.update(1)
            elif isinstance(event, FrameFitted):
                notes.update([event.note])
            elif isinstance(event, FrameDone):
                largest = max(largest, event.count)
        if isinstance(writer, TiffLabelsWriter):
            writer.finish(largest, predictor.memory.finish_bytes)
        else:
            writer.finish(predictor.memory.finish_bytes)
    return math.prod(item.labels_shape)
