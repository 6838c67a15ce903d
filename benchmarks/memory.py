"""Peak memory of tiled prediction on a large 2D image or 3D volume.

Measures the process's peak resident memory while predicting, and compares it with the sizes
of the input and the output arrays (which any method must hold). The working memory beyond
those stays bounded by one band of tiles.

    PYTHONPATH=src python benchmarks/memory.py --shape 8192 8192
    PYTHONPATH=src python benchmarks/memory.py --shape 64 2048 2048
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np
import torch

from napari_live_unet.engine import ModelConfig, SegmentationModel, resolve_device


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs="+", default=[8192, 8192])
    p.add_argument("--device", default="auto")
    p.add_argument("--base-channels", type=int, default=8)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--tile", type=int, nargs="+", default=None)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--postprocess", action="store_true", help="also measure instances")
    args = p.parse_args()

    device = resolve_device(args.device)
    shape = tuple(args.shape)
    model = SegmentationModel.create(
        ModelConfig(ndim=len(shape), base_channels=args.base_channels, depth=args.depth)
    ).to(device)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, shape, dtype=np.uint8)  # uint8 like most microscopy data
    baseline = current_rss_mb()
    t0 = time.perf_counter()
    outputs = model.predict_outputs(
        image, tile_shape=tuple(args.tile) if args.tile else None, batch_size=args.batch_size
    )
    seconds = time.perf_counter() - t0
    peak = rss_mb()
    result = {
        "command": " ".join(sys.argv),
        "device": str(device),
        "shape": list(shape),
        "input_mb": round(image.nbytes / 1e6, 1),
        "output_mb": round(outputs.nbytes / 1e6, 1),
        "float32_copy_of_input_mb": round(image.size * 4 / 1e6, 1),
        "rss_before_mb": round(baseline, 1),
        "peak_rss_mb": round(peak, 1),
        "working_mb_beyond_output": round(peak - baseline - outputs.nbytes / 1e6, 1),
        "network_seconds": round(seconds, 1),
        "megapixels_per_s": round(image.size / 1e6 / seconds, 2),
    }
    if device.type == "cuda":
        result["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 1e6, 1)
    if args.postprocess:
        t0 = time.perf_counter()
        labels = model.instances(outputs)
        result["postprocess_seconds"] = round(time.perf_counter() - t0, 1)
        result["peak_rss_with_postprocess_mb"] = round(rss_mb(), 1)
        del labels
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
