"""End-to-end prediction speed with given tiles and with tiles chosen per image.

2D: the built-in starter model (``nuclei``) segments the DSB2018 test images (read from
disk, network, post-processing), once per tile setting, median of ``--repeats`` runs; AP@0.5
shows the setting does not change the result. 3D: an untrained 3D U-net (default
``ModelConfig(ndim=3)``) segments one synthetic volume (``synthetic_volumes.make_volume``).

    PYTHONPATH=src python benchmarks/predict_speed.py --tiles 256 512 1024 auto
    PYTHONPATH=src python benchmarks/predict_speed.py --volume 64 512 512 --tiles-3d 32x256x256 auto
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_live_unet.engine import ModelConfig, SegmentationModel, dataset_counts
from napari_live_unet.engine.builtin_models import load_model_source
from napari_live_unet.engine.io import list_tiffs, read_tiff

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_volumes import make_volume

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dsb2018-fluo"


def parse_tile(text: str, ndim: int) -> tuple[int, ...] | None:
    """``auto`` -> None; ``256`` -> (256,) * ndim; ``32x256x256`` -> (32, 256, 256)."""
    if text == "auto":
        return None
    parts = tuple(int(v) for v in text.split("x"))
    return parts * ndim if len(parts) == 1 else parts


def timed_segment(model, load, tile, repeats: int) -> tuple[float, int, list[np.ndarray]]:
    """Median seconds of ``repeats`` end-to-end runs, the pixels, and the last labels."""
    times, labels = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        labels = [lab for _, lab in model.segment_many(load(), tile_shape=tile)]
        times.append(time.perf_counter() - start)
    return statistics.median(times), sum(lab.size for lab in labels), labels


def bench_2d(args: argparse.Namespace) -> None:
    model = load_model_source("nuclei", "cpu")
    images = list_tiffs(args.data / "test" / "images")
    gts = [read_tiff(args.data / "test" / "labels" / p.name) for p in images.values()]

    def load():
        return (read_tiff(path) for path in images.values())

    print("2D tile | s (median) | MP/s | AP@0.5")
    for text in args.tiles:
        seconds, pixels, labels = timed_segment(model, load, parse_tile(text, 2), args.repeats)
        ap = dataset_counts(gts, labels, (0.5,))[0].ap
        print(f"{text} | {seconds:.2f} | {pixels / 1e6 / seconds:.2f} | {ap:.3f}", flush=True)


def bench_3d(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    model = SegmentationModel.create(ModelConfig(ndim=3))
    volume, _ = make_volume(tuple(args.volume), n=args.nuclei, seed=0)
    print(f"3D tile ({'x'.join(map(str, args.volume))} volume) | s (median) | MP/s")
    for text in args.tiles_3d:
        seconds, voxels, _ = timed_segment(
            model, lambda: iter([volume]), parse_tile(text, 3), args.repeats
        )
        print(f"{text} | {seconds:.2f} | {voxels / 1e6 / seconds:.2f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--tiles", nargs="*", default=["256", "512", "1024", "auto"])
    p.add_argument("--volume", type=int, nargs=3, default=None, help="Z Y X of a 3D volume")
    p.add_argument("--nuclei", type=int, default=400)
    p.add_argument("--tiles-3d", nargs="*", default=["32x256x256", "auto"])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if args.tiles:
        bench_2d(args)
    if args.volume:
        bench_3d(args)


if __name__ == "__main__":
    main()
