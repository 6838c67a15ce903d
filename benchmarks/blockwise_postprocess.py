"""Whole-image against blockwise post-processing: time, peak memory and agreement.

Outputs are synthetic, as in ``repostprocess.py``: discs of radius 6-14 px, touching at
times, turned into network-like float16 outputs (blurred foreground, blurred distance or
boundary map, noise). They are saved to a temporary ``.npy`` file; each method then runs in
a fresh subprocess that memory-maps them, so its peak RSS (``VmHWM``) is its own. The
mapped outputs (4 bytes per pixel) and the int32 labels (4 bytes per pixel) count in both.
Agreement: AP at IoU 0.5 and 0.9 with the whole-image labels as reference, and the object
counts.

    PYTHONPATH=src flock /tmp/bench.lock python benchmarks/blockwise_postprocess.py \\
        --size 4096 8192 --block 1024
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_live_unet.engine import PostprocessConfig
from napari_live_unet.engine.blockwise import instances_blockwise
from napari_live_unet.engine.metrics import match_counts
from napari_live_unet.engine.postprocess import instances_from_outputs

PARAMS = PostprocessConfig(min_size=15)


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_one(args: argparse.Namespace) -> None:
    """Child process: one method on memory-mapped outputs; prints one JSON line."""
    outputs = np.load(args.outputs, mmap_mode="r")
    start_rss = _status_mb("VmRSS")
    t0 = time.perf_counter()
    if args.method == "whole":
        labels = instances_from_outputs(outputs, args.mode, PARAMS)
    else:
        labels = instances_blockwise(
            outputs, args.mode, PARAMS, block_shape=args.block, halo=args.halo
        )
    seconds = time.perf_counter() - t0
    # Not ru_maxrss: Linux carries the parent's resident size at fork over into it.
    peak = _status_mb("VmHWM")
    np.save(args.labels_out, labels)
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "start_mb": start_rss}))


def measure(method: str, outputs: Path, labels_out: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--outputs", str(outputs)]
    cmd += ["--labels-out", str(labels_out), "--mode", args.mode, "--block", str(args.block)]
    if args.halo is not None:
        cmd += ["--halo", str(args.halo)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--size", type=int, nargs="+", default=[4096], help="image sides in pixels")
    p.add_argument("--mode", choices=["distance", "boundary"], default="distance")
    p.add_argument("--block", type=int, default=1024, help="block side in pixels")
    p.add_argument("--halo", type=int, default=None, help="halo in pixels (default 32)")
    p.add_argument("--child", choices=["whole", "blockwise"], help=argparse.SUPPRESS)
    p.add_argument("--outputs", help=argparse.SUPPRESS)
    p.add_argument("--labels-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.method = args.child
        run_one(args)
        return

    sys.path.insert(0, str(Path(__file__).parent))
    from repostprocess import synthetic_labels, synthetic_outputs

    halo = "default (32)" if args.halo is None else args.halo
    print(f"mode={args.mode}, min_size={PARAMS.min_size}, block={args.block}, halo={halo}")
    print("size        method     seconds  peak RSS MB  (above start)  objects  AP@0.5  AP@0.9")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for size in args.size:
            outputs_path = folder / "outputs.npy"
            np.save(outputs_path, synthetic_outputs(synthetic_labels(size), args.mode))
            results = {}
            for method in ("whole", "blockwise"):
                results[method] = measure(method, outputs_path, folder / f"{method}.npy", args)
            whole = np.load(folder / "whole.npy")
            blockwise = np.load(folder / "blockwise.npy")
            counts = match_counts(whole, blockwise, [0.5, 0.9])
            for method, labels in (("whole", whole), ("blockwise", blockwise)):
                r = results[method]
                ap = (
                    "  1.0000  1.0000"
                    if method == "whole"
                    else "".join(f"  {c.ap:.4f}" for c in counts)
                )
                print(
                    f"{size}x{size:<6} {method:<9} {r['seconds']:8.2f} {r['peak_mb']:12.0f}"
                    f" {r['peak_mb'] - r['start_mb']:14.0f}"
                    f" {int(labels.max()):8d}{ap}"
                )
            diff = int(blockwise.max()) - int(whole.max())
            print(f"  count difference {diff:+d} ({100 * diff / max(1, int(whole.max())):+.3f} %)")
            del whole, blockwise


if __name__ == "__main__":
    main()
