"""Predicting images larger than memory: peak RSS and MP/s of ``live-unet predict``.

Scenarios (each a fresh process running the CLI; its peak RSS is its own ``VmHWM``):

* ``2d``: a 16384x16384 uint8 OME-Zarr mosaic (DSB2018 train images, CC0, with flips) to an
  OME-Zarr output under ``--memory-limit 1.5G``; an 8192x8192 crop of it under the default
  limit, under 1.5G, and predicted whole the way ``predict`` did before issue 13 (a TIFF
  with a limit large enough to take it whole), for the MP/s ratio.
* ``workers``: the 8192x8192 crop with ``--workers 1`` and ``--workers 2``.
* ``series``: a 2048x2048 time series of 10 and of 100 frames (peak RSS must not grow).
* ``3d``: a 64x2048x2048 synthetic volume (``synthetic_volumes.make_volume``, tiled) with a
  3D model trained for ``--train-seconds`` on synthetic volumes, under the default limit.

    PYTHONPATH=src flock /tmp/bench.lock python benchmarks/large_predict.py \\
        --scenarios 2d workers series 3d --work /tmp/large_predict
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

DSB_TRAIN = Path(__file__).resolve().parents[1].parent / "shared/data/dsb2018-fluo/train/images"
CHUNK = 1024

_RUN = """
import sys
from pathlib import Path
from napari_live_unet.cli import main
code = main(sys.argv[1:])
for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmHWM:"):
        print("PEAK_MB", int(line.split()[1]) / 1024)
sys.exit(code)
"""


def predict(images: Path, out: Path, *options: str, model: str = "nuclei") -> dict:
    """Run ``live-unet predict`` in a fresh process: MP/s, peak RSS, wall time."""
    args = ["--model", model, "--device", "cpu", "--overwrite", "--images", str(images)]
    args += ["--out", str(out), *options]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _RUN, "predict", *args], capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"predict {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    speed = re.search(r"\(([0-9.]+) MP/s", done.stdout)
    peak = re.search(r"PEAK_MB ([0-9.]+)", done.stdout)
    return {
        "args": " ".join(args),
        "mp_per_s": float(speed.group(1)) if speed else None,
        "peak_mb": float(peak.group(1)) if peak else None,
        "wall_s": round(wall, 1),
    }


def mosaic(side: int, seed: int = 0) -> np.ndarray:
    """A ``side`` x ``side`` uint8 mosaic of DSB2018 train images (grey, random flips)."""
    import tifffile

    rng = np.random.default_rng(seed)
    tiles = []
    for path in sorted(DSB_TRAIN.glob("*.tif"))[:64]:
        image = tifffile.imread(path)
        image = image if image.ndim == 2 else image[..., :3].mean(-1)
        if min(image.shape) >= 256:
            tiles.append(np.asarray(image[:256, :256], np.uint8))
    out = np.zeros((side, side), np.uint8)
    for y in range(0, side, 256):
        for x in range(0, side, 256):
            tile = tiles[rng.integers(len(tiles))]
            tile = tile[:: rng.choice([-1, 1]), :: rng.choice([-1, 1])]
            out[y : y + 256, x : x + 256] = tile[: side - y, : side - x]
    return out


def write_ome_zarr(path: Path, data, axes: str, chunks: tuple[int, ...], scale=None) -> None:
    """An OME-Zarr image (level 0 only) written chunk by chunk from a dask array."""
    import dask.array as da
    import zarr
    from ome_zarr.writer import write_image

    group = zarr.open_group(str(path), mode="w")
    write_image(
        da.from_array(data, chunks=chunks) if isinstance(data, np.ndarray) else data,
        group,
        axes=axes,
        scale_factors=None,
        scale=scale,
    )


def scenario_2d(work: Path, results: dict) -> None:
    big = work / "mosaic16k.ome.zarr"
    if not big.exists():
        write_ome_zarr(big, mosaic(16384), "yx", (CHUNK, CHUNK))
    crop = work / "mosaic8k.ome.zarr"
    crop_tif = work / "tif8k" / "mosaic8k.tif"
    if not crop.exists():
        import tifffile

        image = mosaic(16384)[:8192, :8192]
        write_ome_zarr(crop, image, "yx", (CHUNK, CHUNK))
        crop_tif.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(crop_tif, image, tile=(256, 256))
    results["8k_whole_before_issue13"] = predict(
        crop_tif.parent, work / "out_tif", "--memory-limit", "20G"
    )
    results["8k_blocks_default_limit"] = predict(crop, work / "out8k_default.zarr")
    results["8k_blocks_1.5G"] = predict(crop, work / "out8k.zarr", "--memory-limit", "1.5G")
    results["16k_blocks_1.5G"] = predict(big, work / "out16k.zarr", "--memory-limit", "1.5G")


def scenario_workers(work: Path, results: dict) -> None:
    crop = work / "mosaic8k.ome.zarr"
    for n in (1, 2):
        results[f"8k_workers_{n}"] = predict(crop, work / f"out8k_w{n}.zarr", "--workers", str(n))


def scenario_series(work: Path, results: dict) -> None:
    import tifffile

    frames = mosaic(4096, seed=1)
    for n in (10, 100):
        path = work / f"series{n}" / f"series{n}.tif"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            shifts = [((t * 97) % 2048, (t * 193) % 2048) for t in range(n)]
            tifffile.imwrite(
                path,
                data=(frames[y : y + 2048, x : x + 2048] for y, x in shifts),
                shape=(n, 2048, 2048),
                dtype=np.uint8,
                imagej=True,
                metadata={"axes": "TYX"},
            )
        results[f"series_{n}x2048x2048"] = predict(path, work / f"out_series{n}.zarr")


def scenario_3d(work: Path, results: dict, train_seconds: float) -> None:
    from synthetic_volumes import make_volume, write_volume

    voxel = (2.0, 0.5, 0.5)
    data = work / "vol_train"
    if not data.exists():
        (data / "images").mkdir(parents=True)
        (data / "labels").mkdir(parents=True)
        for i in range(2):
            image, labels = make_volume((32, 128, 128), voxel, seed=i)
            write_volume(data / "images" / f"v{i}.tif", image, voxel)
            write_volume(data / "labels" / f"v{i}.tif", labels, voxel)
    model = work / "model3d.pt"
    if not model.exists():
        subprocess.run(
            [sys.executable, "-m", "napari_live_unet.cli", "train", "--images",
             str(data / "images"), "--labels", str(data / "labels"), "--out", str(model),
             "--time-budget", str(train_seconds), "--device", "cpu"],
            check=True,
        )  # fmt: skip
    volume = work / "vol64x2048.ome.zarr"
    if not volume.exists():
        import dask.array as da

        image, _ = make_volume((32, 256, 256), voxel, seed=7)
        tiled = da.tile(da.from_array(image, chunks=(32, 256, 256)), (2, 8, 8))
        write_ome_zarr(
            volume, tiled.rechunk((32, 256, 256)), "zyx", (32, 256, 256),
            scale={"z": voxel[0], "y": voxel[1], "x": voxel[2]},
        )  # fmt: skip
    results["3d_64x2048x2048_default_limit"] = predict(
        volume, work / "out3d.zarr", model=str(model)
    )


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--scenarios", nargs="+", default=["2d", "workers", "series", "3d"])
    p.add_argument("--work", type=Path, default=Path("/tmp/large_predict"))
    p.add_argument("--train-seconds", type=float, default=60.0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    from volumes_3d import cpu_model

    results: dict = {"cpu": cpu_model()}
    for name in args.scenarios:
        if name == "3d":
            scenario_3d(args.work, results, args.train_seconds)
        else:
            {"2d": scenario_2d, "workers": scenario_workers, "series": scenario_series}[name](
                args.work, results
            )
        print(json.dumps(results, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
