"""Time to re-run post-processing on cached network outputs when one threshold changes.

This is what the predict widget does when a slider moves: the network outputs of the image
are kept, and only ``instances_from_outputs`` runs again, with one ``cache`` dict per image
so intermediate maps that a parameter does not affect are reused.

Outputs are built from synthetic nuclei labels (foreground probability from the blurred mask,
normalised distance from ``engine.targets``, plus noise), which look like a trained
network's; ``--source untrained`` predicts them with an untrained model instead (flat maps,
the worst case for seeds).

    PYTHONPATH=src python benchmarks/repostprocess.py --size 2048
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import numpy as np
from scipy import ndimage as ndi

from napari_live_unet.engine import ModelConfig, PostprocessConfig, SegmentationModel
from napari_live_unet.engine.postprocess import instances_from_outputs
from napari_live_unet.engine.targets import BOUNDARY, boundary_classes, normalized_distance


def synthetic_labels(size: int, density: float = 1 / 900, seed: int = 0) -> np.ndarray:
    """Discs of radius 6-14 px, about one per ``1/density`` pixels, touching at times."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.int32)
    next_id = 1
    for _ in range(int(size * size * density)):
        r = rng.uniform(6, 14)
        cy, cx = rng.uniform(r, size - r, 2)
        y0, y1 = int(cy - r), min(size, int(cy + r) + 2)
        x0, x1 = int(cx - r), min(size, int(cx + r) + 2)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        box = labels[y0:y1, x0:x1]
        if (box[disc] > 0).mean() > 0.15:
            continue
        box[disc & (box == 0)] = next_id
        next_id += 1
    return labels


def synthetic_outputs(labels: np.ndarray, mode: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fg = ndi.gaussian_filter((labels > 0).astype(np.float32), 1.5)
    if mode == "distance":
        aux = ndi.gaussian_filter(normalized_distance(labels), 1.0)
    else:
        aux = ndi.gaussian_filter((boundary_classes(labels) == BOUNDARY).astype(np.float32), 1.0)
    out = np.stack([fg, aux]) + rng.normal(0, 0.03, (2, *labels.shape)).astype(np.float32)
    return np.clip(out, 0, 1).astype(np.float16)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=2048, help="image side in pixels")
    p.add_argument("--mode", choices=["distance", "boundary", "both"], default="both")
    p.add_argument("--source", choices=["synthetic", "untrained"], default="synthetic")
    p.add_argument("--repeats", type=int, default=5, help="runs per parameter change")
    args = p.parse_args()

    labels = synthetic_labels(args.size)
    print(f"{args.size}x{args.size} image, {labels.max()} synthetic nuclei, source={args.source}")
    modes = ["distance", "boundary"] if args.mode == "both" else [args.mode]
    for mode in modes:
        if args.source == "untrained":
            model = SegmentationModel.create(ModelConfig(mode=mode, base_channels=4, depth=2))
            image = ndi.gaussian_filter((labels > 0).astype(np.float32), 1.0) * 200 + 20
            outputs = model.predict_outputs(image)
        else:
            outputs = synthetic_outputs(labels, mode)
        base = PostprocessConfig(min_size=15)
        cache: dict = {}
        t0 = time.perf_counter()
        first = instances_from_outputs(outputs, mode, base, cache)
        cold = time.perf_counter() - t0
        print(f"\n[{mode}] first run (empty cache): {cold:.3f} s, {first.max()} objects")
        # A new value every run, as when a slider moves: nothing for that value is cached.
        changes = {
            "fg_threshold": [0.40 + 0.02 * k for k in range(args.repeats)],
            "seed_threshold": [0.30 + 0.02 * k for k in range(args.repeats)],
            "min_size": [5 + 5 * k for k in range(args.repeats)],
        }
        if mode == "distance":
            changes["seed_prominence"] = [0.02 + 0.01 * k for k in range(args.repeats)]
        for name, values in changes.items():
            times = []
            for value in values:
                params = replace(base, **{name: value})
                t0 = time.perf_counter()
                instances_from_outputs(outputs, mode, params, cache)
                times.append(time.perf_counter() - t0)
            instances_from_outputs(outputs, mode, base, cache)  # back to the base settings
            print(
                f"  change {name:<16} median {statistics.median(times):.3f} s "
                f"(min {min(times):.3f}, max {max(times):.3f}, n={len(times)})"
            )


if __name__ == "__main__":
    main()
