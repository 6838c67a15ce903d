"""This project against a plain PyTorch loop, as whole processes, for prediction and training.

Each side runs as its own process started with this Python and is timed from process start
to exit, so imports, model loading and data preparation count. Runs interleave (plain,
project, then project, plain, ...) and the median of ``--repeats`` is reported; one untimed
process first imports torch, scipy, scikit-image and the package so that neither side pays
for a cold disk cache.

Prediction: ``live-unet predict --model MODEL --images DIR --out TMP --overwrite --device cpu``
(with ``--diameter`` set to the model's trained object diameter, so no image is zoomed)
against ``--role plain-predict``: a minimal U-net with the module names of
``engine/unet.py`` loads the same state_dict and, per image, reads it, takes luminance of
colour images, inverts dark-on-bright images (the project's automatic polarity rule),
normalises with the model's percentiles, pads to ``2**depth``, runs one fp32 forward of the
whole image (eval, channels-last, inference mode), thresholds the foreground, seeds from
the smoothed distance map and grows them by watershed with the model's thresholds, and
writes the labels as TIFF. It imports only torch, numpy, tifffile, scipy.ndimage and
scikit-image. Both sides are scored (AP@0.5 against ``--labels``) after timing.

Training: ``live-unet train --init-model scratch --base-channels 8 --depth 3 --batch-size 8
--patch-size 128 --patience 0 --val-ap-every 0 --device cpu`` for ``--train-steps`` steps
(``--epochs E --steps-per-epoch S``, E x S steps) on the first ``--train-count`` pairs of
the training split, validating on the next ``--val-count``, against ``--role plain-train``:
the same network (batch norm, distance mode), targets made once per image with scipy,
random 128x128 crops in batches of 8, AdamW, BCE-with-logits on the foreground plus MSE on
the distance inside objects, fp32, the same number of steps.

    PYTHONPATH=src python benchmarks/vs_plain_loop.py --repeats 3 \\
        --json benchmarks/results/vs_plain_loop.jsonl
    PYTHONPATH=src python benchmarks/vs_plain_loop.py --limit 3 --train-steps 5 --repeats 1

Ratios are project/plain: above 1 the project is faster. The plain sides on their own::

    python benchmarks/vs_plain_loop.py --role plain-predict \\
        --model src/napari_live_unet/models/nuclei.pt \\
        --images ../shared/data/dsb2018-fluo/test/images --out /tmp/plain_labels
    python benchmarks/vs_plain_loop.py --role plain-train --images DIR --labels DIR \\
        --out /tmp/plain.pt --train-steps 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine_info import cpu_model

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018-fluo"
TIFF_SUFFIXES = (".tif", ".tiff")
LUMA = (0.2125, 0.7154, 0.0721)  # Rec. 709, as the project and scikit-image's rgb2gray
# The training settings both sides use (the project's CPU defaults, engine/config.py).
BASE_CHANNELS, DEPTH, BATCH, PATCH = 8, 3, 8, 128
LEARNING_RATE, WEIGHT_DECAY = 3e-3, 1e-4  # the project's scratch learning rate, its decay
MAX_STEPS_PER_EPOCH = 50  # the project's default epoch length


# ---------------------------------------------------------------------------------------
# The plain side. Nothing here may import napari_live_unet: its import time is measured.
# ---------------------------------------------------------------------------------------


def tiff_files(folder: Path) -> list[Path]:
    """The TIFFs directly in ``folder``, sorted by name, hidden files skipped."""
    return sorted(
        p
        for p in Path(folder).iterdir()
        if p.suffix.lower() in TIFF_SUFFIXES and not p.name.startswith(".")
    )


def plain_unet(in_channels: int, out_channels: int, base: int, depth: int, norm: str):
    """A 2D U-net with the module names and layout of ``engine/unet.py`` (2**depth pooling,
    3x3 convolutions), so it loads the project's state_dict."""
    import torch
    from torch import nn

    def norm_layer(channels: int) -> nn.Module:
        if norm == "batch":
            return nn.BatchNorm2d(channels)
        if norm == "instance":
            return nn.InstanceNorm2d(channels, affine=True)
        if norm == "group":
            return nn.GroupNorm(min(8, channels), channels)
        return nn.Identity()

    def block(cin: int, cout: int) -> nn.Sequential:
        bias = norm == "none"
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=bias),
            norm_layer(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=bias),
            norm_layer(cout),
            nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            widths = [base * 2**i for i in range(depth + 1)]
            self.down = nn.ModuleList()
            cin = in_channels
            for w in widths:
                self.down.append(block(cin, w))
                cin = w
            self.pools = nn.ModuleList(nn.MaxPool2d(2, stride=2) for _ in range(depth))
            levels = list(reversed(range(depth)))
            self.up = nn.ModuleList(
                nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in levels
            )
            self.up_blocks = nn.ModuleList(block(2 * widths[i], widths[i]) for i in levels)
            self.head = nn.Conv2d(widths[0], out_channels, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, down in enumerate(self.down):
                x = down(x)
                if i < depth:
                    skips.append(x)
                    x = self.pools[i](x)
            for up, up_block in zip(self.up, self.up_blocks, strict=True):
                x = up_block(torch.cat([up(x), skips.pop()], dim=1))
            return self.head(x)

    return UNet()


def channel_first(image, in_channels: int, channel: int | None):
    """A 2D image as float32 (C, H, W) for a network reading ``in_channels`` channels: grey
    as is, RGB(A) as luminance for a one-channel network (or RGB for a three-channel one),
    other multi-channel images as they are or their ``channel``."""
    import numpy as np

    if image.ndim == 2:
        data, rgb = image[None], False
    elif image.ndim == 3 and image.shape[-1] in (3, 4) and min(image.shape[:2]) > 8:
        data, rgb = np.moveaxis(image, -1, 0), True
    elif image.ndim == 3 and image.shape[0] <= 8:
        data, rgb = image, False
    else:
        raise SystemExit(f"plain side: cannot read an image of shape {image.shape}")
    if channel is not None and in_channels == 1 and data.shape[0] > 1 and not rgb:
        data = data[channel : channel + 1]
    if rgb and in_channels == 1:
        return np.tensordot(np.asarray(LUMA, np.float32), data[:3].astype(np.float32), axes=1)[None]
    if rgb and in_channels == 3:
        data = data[:3]
    if data.shape[0] != in_channels:
        raise SystemExit(f"plain side: {data.shape[0]} channels for a {in_channels}-channel model")
    return data.astype(np.float32)


def normalise(data, low: float, high: float):
    """Per-channel percentile normalisation, float32, as the project computes it."""
    import numpy as np

    lo, hi = np.percentile(data.reshape(len(data), -1), [low, high], axis=1).astype(np.float32)
    scale = 1.0 / np.maximum(hi - lo, 1e-6)
    return (data - lo[:, None, None]) * scale[:, None, None]


def distance_labels(fg_prob, distance, post: dict):
    """Instance labels from the foreground probability and the normalised distance: the
    distance mode of ``engine/postprocess.py`` written plainly (whole-image watershed)."""
    import numpy as np
    from scipy import ndimage as ndi
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    foreground = fg_prob > post["fg_threshold"]
    components, n_components = ndi.label(foreground)
    smooth = ndi.gaussian_filter(distance, post["smoothing"]) if post["smoothing"] else distance
    high = (smooth > post["seed_threshold"]) & foreground
    if post["seed_prominence"] > 0:
        high &= h_maxima(smooth, post["seed_prominence"]).astype(bool)
    seeds, n_seeds = ndi.label(high)
    labels = watershed(-smooth, markers=seeds, mask=foreground)
    # Foreground components without a seed become objects of their own.
    seeded = np.zeros(n_components + 1, bool)
    seeded[components[seeds > 0]] = True
    seeded[0] = True
    ids = np.zeros(n_components + 1, np.int64)
    ids[~seeded] = n_seeds + np.arange(1, int((~seeded).sum()) + 1)
    labels = np.where(labels > 0, labels, ids[components])
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(1, post["min_size"])
    keep[0] = False
    lut = np.zeros(len(sizes), np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[labels]


def write_labels(path: Path, labels) -> None:
    """Labels in the smallest unsigned type, zlib-compressed, as the project writes them."""
    import numpy as np
    import tifffile

    top = int(labels.max())
    dtype = next(t for t in (np.uint8, np.uint16, np.uint32) if top <= np.iinfo(t).max)
    tifffile.imwrite(path, labels.astype(dtype), compression="zlib")


def plain_predict(args: argparse.Namespace) -> int:
    import numpy as np
    import tifffile
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data = torch.load(args.model, map_location="cpu", weights_only=True)
    cfg = data["model_config"]
    if cfg["ndim"] != 2 or cfg.get("pooling") or cfg.get("kernels") or cfg["mode"] != "distance":
        raise SystemExit("plain side: only 2D distance-mode models with 2x2 pooling")
    depth = cfg["depth"]
    network = plain_unet(cfg["in_channels"], 2, cfg["base_channels"], depth, cfg["norm"])
    network.load_state_dict(data["state_dict"])
    network.eval().to(memory_format=torch.channels_last)
    norm, post, spec = data["normalization"], data["postprocess"], data.get("input", {})
    multiple = 2**depth
    args.out.mkdir(parents=True, exist_ok=True)
    started, pixels = time.perf_counter(), 0
    for path in tiff_files(args.images):
        image = channel_first(tifffile.imread(path), cfg["in_channels"], spec.get("channel"))
        polarity = spec.get("image_polarity", "bright")
        if polarity == "auto":  # the project's rule: a bright median means a bright background
            low, median, high = np.percentile(image[0], [1.0, 50.0, 99.8])
            polarity = "dark" if high > low and (median - low) / (high - low) > 0.5 else "bright"
        if polarity != spec.get("polarity", "bright"):
            image = -image
        image = normalise(image, norm["low_percentile"], norm["high_percentile"])
        h, w = image.shape[1:]
        pad = [(0, 0), (0, -h % multiple), (0, -w % multiple)]
        reflect = -h % multiple < h and -w % multiple < w
        image = np.pad(image, pad, mode="reflect" if reflect else "edge")
        x = torch.from_numpy(image)[None].contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            raw = network(x)[0, :, :h, :w]
            fg_prob = torch.sigmoid(raw[0]).numpy()
            distance = raw[1].clamp(0.0, 1.0).numpy()
        labels = distance_labels(fg_prob, distance, post)
        write_labels(args.out / f"{path.stem}.tif", labels)
        pixels += h * w
    seconds = time.perf_counter() - started
    assert "napari_live_unet" not in sys.modules  # the plain side stays plain
    print(f"plain predict: {pixels / 1e6:.2f} MP in {seconds:.2f} s after start-up")
    return 0


def distance_target(labels):
    """Per-object Euclidean distance to the object's edge, scaled to 1 at its peak."""
    import numpy as np
    from scipy import ndimage as ndi

    out = np.zeros(labels.shape, np.float32)
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        box = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in box)
        obj = labels[box] == index
        dist = ndi.distance_transform_edt(np.pad(obj, 1))[1:-1, 1:-1]
        if dist.max() > 0:
            out[box][obj] = dist[obj] / dist.max()
    return out


def plain_train(args: argparse.Namespace) -> int:
    import numpy as np
    import tifffile
    import torch
    import torch.nn.functional as F

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    images, targets = [], []
    for path in tiff_files(args.images):
        raw = tifffile.imread(path)
        labels = tifffile.imread(args.labels / path.name)
        image = channel_first(raw, raw.shape[-1] if raw.ndim == 3 else 1, None)
        image = normalise(image, 1.0, 99.8)
        target = np.stack([(labels > 0).astype(np.float32), distance_target(labels)])
        pad = [(0, 0), *((0, max(0, PATCH - s)) for s in labels.shape)]
        images.append(torch.from_numpy(np.pad(image, pad, mode="reflect")))
        targets.append(torch.from_numpy(np.pad(target, pad)))
    network = plain_unet(images[0].shape[0], 2, BASE_CHANNELS, DEPTH, "batch")
    network.train().to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(network.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    started = time.perf_counter()
    loss = torch.zeros(())
    for _ in range(args.train_steps):
        xs, ts = [], []
        for k in rng.integers(len(images), size=BATCH):
            h, w = images[k].shape[1:]
            y0, x0 = int(rng.integers(h - PATCH + 1)), int(rng.integers(w - PATCH + 1))
            xs.append(images[k][:, y0 : y0 + PATCH, x0 : x0 + PATCH])
            ts.append(targets[k][:, y0 : y0 + PATCH, x0 : x0 + PATCH])
        x = torch.stack(xs).contiguous(memory_format=torch.channels_last)
        t = torch.stack(ts)
        out = network(x)
        fg = t[:, 0]
        bce = F.binary_cross_entropy_with_logits(out[:, 0], fg)
        mse = ((out[:, 1] - t[:, 1]) ** 2 * fg).sum() / fg.sum().clamp_min(1.0)
        loss = bce + mse
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    seconds = time.perf_counter() - started
    torch.save(network.state_dict(), args.out)
    assert "napari_live_unet" not in sys.modules
    print(
        f"plain train: {args.train_steps} steps in {seconds:.2f} s after data preparation "
        f"({args.train_steps / max(seconds, 1e-9):.2f} steps/s), last loss {float(loss):.4f}"
    )
    return 0


# ---------------------------------------------------------------------------------------
# The benchmark: starts both sides, times them, scores them.
# ---------------------------------------------------------------------------------------


def linked_folder(folder: Path, paths: list[Path]) -> Path:
    """A folder holding symbolic links to ``paths`` (both sides read the same selection)."""
    folder.mkdir(parents=True)
    for path in paths:
        (folder / path.name).symlink_to(path.resolve())
    return folder


def run_timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds of a whole process, and its standard output; stops on failure."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}")
    return seconds, done.stdout


def interleaved(
    commands: dict[str, list[str]], repeats: int, env: dict[str, str]
) -> dict[str, list[tuple[float, str]]]:
    """Run each command ``repeats`` times, alternating which goes first."""
    runs: dict[str, list[tuple[float, str]]] = {name: [] for name in commands}
    names = list(commands)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            runs[name].append(run_timed(commands[name], env))
            print(f"  {name} run {r + 1}: {runs[name][-1][0]:.2f} s", flush=True)
    return runs


def median_seconds(runs: list[tuple[float, str]]) -> float:
    return statistics.median(s for s, _ in runs)


def bench_predict(args, env, tmp: Path, threads: int) -> dict:
    import torch

    from napari_live_unet.engine import dataset_counts
    from napari_live_unet.engine.builtin_models import resolve_model
    from napari_live_unet.engine.device import autocast_dtype
    from napari_live_unet.engine.io import list_tiffs, read_tiff
    from napari_live_unet.engine.model_file import load_model

    model_path = resolve_model(args.model)
    model = load_model(model_path)
    images = tiff_files(args.images)[: args.limit]
    truth_files = list_tiffs(args.labels)
    missing = [p.stem for p in images if p.stem not in truth_files]
    if missing:
        raise SystemExit(f"--labels {args.labels}: no labels for {', '.join(missing[:3])}")
    folder = linked_folder(tmp / "predict_images", images)
    fit = []
    diameter = model.input.diameter
    if diameter is not None:
        if model.zoom_for(diameter) != 1.0:
            raise SystemExit(f"the model's diameter {diameter} would still zoom images")
        fit += ["--diameter", repr(float(diameter))]
    if model.config.voxel_size is not None:
        fit += ["--voxel-size", ",".join(str(v) for v in model.config.voxel_size)]
    out = {"project": tmp / "project_labels", "plain": tmp / "plain_labels"}
    commands = {
        "plain": [
            sys.executable,
            str(Path(__file__).resolve()),
            "--role",
            "plain-predict",
            "--model",
            str(model_path),
            "--images",
            str(folder),
            "--out",
            str(out["plain"]),
            "--threads",
            str(threads),
        ],
        "project": [
            sys.executable,
            "-m",
            "napari_live_unet.cli",
            "predict",
            "--model",
            args.model,
            "--images",
            str(folder),
            "--out",
            str(out["project"]),
            "--overwrite",
            "--device",
            "cpu",
            *fit,
        ],
    }
    amp = autocast_dtype(torch.device("cpu"))
    print(
        f"\nprediction: model {args.model} ({model.config.base_channels} base channels, depth "
        f"{model.config.depth}), {len(images)} images from {args.images}"
    )
    shown = " ".join(commands["project"][3:]).replace(str(tmp), "TMP")
    print(f"  project: live-unet {shown}")
    print(
        "  --diameter is the model's trained object diameter: no image is zoomed, as on the "
        "plain side"
        if diameter is not None
        else "  the model records no object diameter: no image is zoomed, as on the plain side"
    )
    print(
        "  project precision: "
        + (f"{amp} autocast (this CPU has native bf16); plain: fp32" if amp else "fp32, as plain")
    )
    runs = interleaved(commands, args.repeats, env)
    truths = [read_tiff(truth_files[p.stem]) for p in images]
    megapixels = sum(t.size for t in truths) / 1e6
    result: dict = {"images": len(images), "megapixels": megapixels, "model": args.model}
    result["project_command"] = f"live-unet {shown}"
    labels = {}
    for side in ("plain", "project"):
        labels[side] = [read_tiff(out[side] / f"{p.stem}.tif") for p in images]
        seconds = median_seconds(runs[side])
        result[side] = {
            "seconds": [s for s, _ in runs[side]],
            "median_s": seconds,
            "mp_per_s": megapixels / seconds,
            "ap50": dataset_counts(truths, labels[side], (0.5,))[0].ap,
        }
    reported = re.search(r"\(([\d.]+) MP/s end to end", runs["project"][-1][1])
    if reported:
        result["project"]["reported_mp_per_s"] = float(reported.group(1))
    result["agreement_ap50"] = dataset_counts(labels["project"], labels["plain"], (0.5,))[0].ap
    result["ratio"] = result["project"]["mp_per_s"] / result["plain"]["mp_per_s"]
    result["ap50_difference"] = result["project"]["ap50"] - result["plain"]["ap50"]
    print(f"  {megapixels:.2f} MP | s (median of {args.repeats}) | MP/s | AP@0.5")
    for side in ("plain", "project"):
        r = result[side]
        print(f"  {side:7s} | {r['median_s']:.2f} | {r['mp_per_s']:.3f} | {r['ap50']:.3f}")
    print(
        f"  ratio project/plain {result['ratio']:.2f} (>1: project faster); AP@0.5 project - "
        f"plain {result['ap50_difference']:+.3f}; plain scored against project AP@0.5 "
        f"{result['agreement_ap50']:.3f}"
    )
    if reported:
        print(f"  the project reports {reported.group(1)} MP/s after its own start-up")
    return result


def bench_train(args, env, tmp: Path, threads: int) -> dict:
    import torch

    from napari_live_unet.engine.device import autocast_dtype
    from napari_live_unet.engine.io import list_tiffs

    count = args.train_count if args.limit is None else min(args.train_count, args.limit)
    labels = list_tiffs(args.train_labels)
    pool = [p for p in tiff_files(args.train_images) if p.stem in labels]
    if len(pool) < count + args.val_count:
        raise SystemExit(f"{args.train_images}: {len(pool)} pairs, need {count + args.val_count}")
    train, val = pool[:count], pool[count : count + args.val_count]
    folders = {
        name: (
            linked_folder(tmp / name / "images", paths),
            linked_folder(tmp / name / "labels", [labels[p.stem] for p in paths]),
        )
        for name, paths in (("train", train), ("val", val))
    }
    steps = args.train_steps
    per_epoch = max(d for d in range(1, min(steps, MAX_STEPS_PER_EPOCH) + 1) if steps % d == 0)
    epochs = steps // per_epoch
    models = {"project": tmp / "project.pt", "plain": tmp / "plain.pt"}
    (train_images, train_labels), (val_images, val_labels) = folders["train"], folders["val"]
    commands = {
        "plain": [
            sys.executable,
            str(Path(__file__).resolve()),
            "--role",
            "plain-train",
            "--images",
            str(train_images),
            "--labels",
            str(train_labels),
            "--out",
            str(models["plain"]),
            "--train-steps",
            str(steps),
            "--threads",
            str(threads),
        ],
        "project": [
            sys.executable,
            "-m",
            "napari_live_unet.cli",
            "train",
            "--images",
            str(train_images),
            "--labels",
            str(train_labels),
            "--out",
            str(models["project"]),
            "--epochs",
            str(epochs),
            "--steps-per-epoch",
            str(per_epoch),
            "--init-model",
            "scratch",
            "--base-channels",
            str(BASE_CHANNELS),
            "--depth",
            str(DEPTH),
            "--batch-size",
            str(BATCH),
            "--patch-size",
            str(PATCH),
            "--val-images",
            str(val_images),
            "--val-labels",
            str(val_labels),
            "--patience",
            "0",
            "--val-ap-every",
            "0",
            "--seed",
            "0",
            "--device",
            "cpu",
        ],
    }
    amp = autocast_dtype(torch.device("cpu"))
    shown = " ".join(commands["project"][3:]).replace(str(tmp), "TMP")
    print(
        f"\ntraining: {steps} steps ({epochs} epoch(s) of {per_epoch}) from scratch, base "
        f"{BASE_CHANNELS}, depth {DEPTH}, batch {BATCH}, {PATCH}x{PATCH} patches, on "
        f"{len(train)} pairs of {args.train_images} (project validates on the next "
        f"{len(val)}: loss every epoch, thresholds tuned at the end; no AP during training)"
    )
    print(
        "  project precision: "
        + (f"{amp} autocast (this CPU has native bf16); plain: fp32" if amp else "fp32, as plain")
    )
    print(f"  project: live-unet {shown}")
    runs = interleaved(commands, args.repeats, env)
    result: dict = {"steps": steps, "epochs": epochs, "steps_per_epoch": per_epoch}
    result["train_images"], result["val_images"] = len(train), len(val)
    result["project_command"] = f"live-unet {shown}"
    for side in ("plain", "project"):
        seconds = median_seconds(runs[side])
        result[side] = {
            "seconds": [s for s, _ in runs[side]],
            "median_s": seconds,
            "steps_per_s": steps / seconds,
        }
    reported = re.search(r"\((\d+) steps\) in (\d+) s", runs["project"][-1][1])
    if reported:
        result["project"]["reported_steps"] = int(reported.group(1))
        result["project"]["reported_seconds"] = int(reported.group(2))
    result["ratio"] = result["project"]["steps_per_s"] / result["plain"]["steps_per_s"]
    print(f"  side    | s (median of {args.repeats}) | steps/s (whole process)")
    for side in ("plain", "project"):
        r = result[side]
        print(f"  {side:7s} | {r['median_s']:.2f} | {r['steps_per_s']:.3f}")
    print(f"  ratio project/plain {result['ratio']:.2f} (>1: project faster)")
    if reported:
        print(
            f"  the project reports {reported.group(1)} steps in {reported.group(2)} s after "
            "reading and fitting its data (validation and threshold tuning included)"
        )
    plain_line = runs["plain"][-1][1].strip().splitlines()
    if plain_line:
        print(f"  {plain_line[-1]}")
    return result


def bench(args: argparse.Namespace) -> int:
    import torch

    affinity = getattr(os, "sched_getaffinity", None)
    threads = args.threads or (len(affinity(0)) if affinity else os.cpu_count() or 1)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    header = {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": threads,
        "cores": os.cpu_count(),
    }
    print(
        f"{header['cpu']} ({header['cpu_capability']}, {header['cores']} logical cores), "
        f"torch {header['torch']}, Python {header['python']}; threads per side: {threads} "
        "(OMP_NUM_THREADS)"
    )
    warm = "import torch, tifffile, scipy.ndimage, skimage.segmentation, napari_live_unet.cli"
    subprocess.run([sys.executable, "-c", warm], env=env, check=True)
    record: dict = {"benchmark": "vs_plain_loop", **header, "time": time.time()}
    record["args"] = {k: str(v) for k, v in vars(args).items()}
    with tempfile.TemporaryDirectory(prefix="vs_plain_loop_") as name:
        tmp = Path(name)
        if not args.skip_predict:
            record["predict"] = bench_predict(args, env, tmp, threads)
        if not args.skip_train:
            record["train"] = bench_train(args, env, tmp, threads)
    if args.json is not None:
        with args.json.open("a") as out:
            out.write(json.dumps(record) + "\n")
        print(f"\nappended to {args.json}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--role",
        choices=["bench", "plain-predict", "plain-train"],
        default="bench",
        help="bench (default) runs both sides; the others are the plain processes",
    )
    p.add_argument("--images", type=Path, default=DEFAULT_DATA / "test" / "images")
    p.add_argument("--labels", type=Path, default=DEFAULT_DATA / "test" / "labels")
    p.add_argument("--train-images", type=Path, default=DEFAULT_DATA / "train" / "images")
    p.add_argument("--train-labels", type=Path, default=DEFAULT_DATA / "train" / "labels")
    p.add_argument("--model", default="nuclei", help="a model file or a built-in name")
    p.add_argument("--repeats", type=int, default=3, help="runs per side (median)")
    p.add_argument("--train-steps", type=int, default=200)
    p.add_argument("--train-count", type=int, default=8, help="training pairs (first N)")
    p.add_argument("--val-count", type=int, default=2, help="validation pairs (the next N)")
    p.add_argument("--threads", type=int, help="threads for each side (default: all cores)")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-predict", action="store_true")
    p.add_argument("--limit", type=int, help="only the first N images (quick checks)")
    p.add_argument("--json", type=Path, help="append the figures as one JSON line")
    p.add_argument("--out", type=Path, help="plain roles: labels folder or model file")
    p.add_argument("--seed", type=int, default=0, help="plain-train: random seed")
    args = p.parse_args()
    if args.role == "plain-predict":
        return plain_predict(args)
    if args.role == "plain-train":
        return plain_train(args)
    if args.skip_train and args.skip_predict:
        p.error("nothing to do: --skip-train and --skip-predict both given")
    for name in ("repeats", "train_steps", "train_count", "val_count", "limit", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
