"""The ``live-unet`` command line: train, predict, evaluate, demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..engine.errors import InputError


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (best available), cpu, cuda, cuda:N or mps (default: auto)",
    )


def _add_input_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "fitting images to the model",
        "How the images look; every option is decided automatically when left out.",
    )
    group.add_argument(
        "--channel",
        type=int,
        metavar="N",
        help="channel of multi-channel images to use (0 = first; default: luminance of colour "
        "images, the model's recorded channel otherwise)",
    )
    group.add_argument(
        "--polarity",
        choices=["auto", "bright", "dark"],
        default="auto",
        help="bright objects on a dark background (fluorescence) or dark on bright (H&E, "
        "brightfield); auto decides (default)",
    )
    group.add_argument(
        "--diameter",
        type=float,
        metavar="PIXELS",
        help="typical object diameter in pixels; images are zoomed so objects match the "
        "model's (default: automatic)",
    )
    group.add_argument(
        "--voxel-size",
        metavar="Z,Y,X",
        help="physical voxel size of the images, e.g. 2,0.5,0.5 for z steps 4x the pixel "
        "size (Y,X in 2D); default: read from the TIFF metadata (ImageJ or OME), else "
        "unknown. Anisotropic 3D data gets a network that works in y/x first; images of "
        "another voxel size than the model's are resampled to it",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for all subcommands."""
    parser = argparse.ArgumentParser(
        prog="live-unet",
        description="Train U-nets for instance segmentation of microscopy images, predict, "
        "and evaluate. Start with `live-unet demo`.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tr = sub.add_parser(
        "train",
        help="train a model on image/label folders",
        description="Train a model on images/NAME.tif + labels/NAME.tif pairs. Under "
        "`torchrun --nproc_per_node N -m napari_live_unet.cli train ...`, N processes train "
        "together (DDP; each step takes N x --batch-size patches; docs/distributed.md).",
    )
    tr.add_argument("--images", required=True, type=Path, help="folder of training images")
    tr.add_argument(
        "--labels",
        required=True,
        type=Path,
        help="folder of instance label images with the same file names",
    )
    tr.add_argument("--out", required=True, type=Path, help="model file to write (.pt)")
    tr.add_argument(
        "--config",
        type=Path,
        metavar="RUN.json",
        help="re-run a recorded run (`live-unet models --show MODEL --json`): data found by "
        "name in --images/--labels and checked against the recorded hashes, every setting, "
        "the seed and the starting model from the record (a model file by --init-model); "
        "other training options are refused (docs/run-records.md)",
    )
    tr.add_argument(
        "--val-images",
        type=Path,
        help="validation images (default: hold out about 12%% of the training pairs)",
    )
    tr.add_argument("--val-labels", type=Path, help="validation labels")
    tr.add_argument(
        "--regions",
        type=Path,
        metavar="FILE",
        help="regions.json from the Annotate widget: train only inside the marked regions of "
        "the images it names (other pixels are ignored) and validate on its validation regions",
    )
    tr.add_argument(
        "--mode",
        choices=["boundary", "distance"],
        default="distance",
        help="auxiliary output: 3-class boundary or distance transform (default: distance)",
    )
    budget = tr.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, help="number of epochs")
    budget.add_argument(
        "--time-budget",
        type=float,
        metavar="SECONDS",
        help="train for this many seconds (default: 300)",
    )
    tr.add_argument("--steps-per-epoch", type=int, default=50)
    tr.add_argument(
        "--batch-size", type=int, help="patches per step (default: 8 on CPU, 32 on GPU)"
    )
    tr.add_argument(
        "--patch-size",
        type=int,
        help="largest patch edge in y/x (default: 128 on CPU, 256 on GPU; 64 and 128 in 3D); "
        "smaller images give smaller patches",
    )
    tr.add_argument(
        "--patch-size-z",
        type=int,
        help="largest patch depth in z for 3D images (default: 16 on CPU, 32 on GPU)",
    )
    tr.add_argument(
        "--learning-rate",
        type=float,
        help="AdamW learning rate (default: 3e-3 from scratch, 1e-3 when fine-tuning)",
    )
    tr.add_argument(
        "--base-channels",
        type=int,
        help="width of the first U-net level, i.e. model size (default: 8 on CPU, 32 on GPU)",
    )
    tr.add_argument(
        "--depth", type=int, help="number of down-sampling steps (default: 3 on CPU, 4 on GPU)"
    )
    tr.add_argument("--norm", choices=["batch", "group", "instance", "none"], default="batch")
    tr.add_argument(
        "--val-ap-every",
        type=int,
        default=10,
        help="compute validation AP every N epochs (0: never)",
    )
    tr.add_argument(
        "--patience",
        type=int,
        default=30,
        help="early stopping after N epochs without improvement (0: never)",
    )
    tr.add_argument(
        "--init-model",
        default="auto",
        metavar="MODEL",
        help="model to fine-tune: a model file or a built-in name (`live-unet models`); "
        "'scratch' for a new network; 'auto' (default): the built-in 'nuclei' starter for 2D "
        "images in distance mode when no model size is given, otherwise scratch",
    )
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--compile", action="store_true", help="torch.compile the network (CUDA)")
    tr.add_argument(
        "--recipe",
        choices=["auto", "few-shot", "standard"],
        default="auto",
        help="few-shot: validation on a band of every image, every colour channel read; "
        "auto (default) uses it for up to 4 images or under 150 "
        "objects",
    )
    _add_input_options(tr)
    tr.add_argument(
        "--all-channels",
        action="store_true",
        help="when fine-tuning a one-channel model (e.g. the starter) on colour or "
        "multi-channel images, let it read every channel instead of their luminance",
    )
    _add_device(tr)

    pr = sub.add_parser(
        "predict",
        help="segment a folder of images, a TIFF, or a (OME-)Zarr image",
        description="Write instance labels: DIR/NAME.tif for each image, or, when --out "
        "ends in .zarr, an OME-Zarr labels group OUT.zarr/labels/NAME (with a pyramid for "
        "viewing). Images larger than the memory limit, time series and Zarr images are "
        "read and labelled block by block.",
    )
    pr.add_argument(
        "--model",
        required=True,
        help="model file from `train`, a BioImage Model Zoo package (.zip), or a built-in "
        "model's name (e.g. nuclei)",
    )
    pr.add_argument(
        "--bmz-outputs",
        metavar="ROLES",
        help="for another tool's BioImage Model Zoo package: which output channel is the "
        "foreground and which the boundary or distance map, e.g. foreground=1,boundary=2 "
        "or foreground=0,distance=1 (channels counted from 0; not needed when the channel "
        "names say so)",
    )
    pr.add_argument(
        "--images",
        required=True,
        type=Path,
        help="folder of .tif images and .zarr images, one TIFF, or one (OME-)Zarr image",
    )
    pr.add_argument(
        "--out",
        required=True,
        type=Path,
        help="folder for NAME.tif label images, or OUT.zarr for OME-Zarr labels",
    )
    pr.add_argument(
        "--overwrite",
        action="store_true",
        help="replace label files already in --out (default: refuse)",
    )
    pr.add_argument("--tile-size", type=int, default=None, help="tile edge in pixels")
    pr.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass")
    pr.add_argument(
        "--memory-limit",
        metavar="SIZE",
        help="memory the whole run may use, e.g. 1.5G or 800M: reading, network, "
        "post-processing and writing (default: half of the memory available at the start)",
    )
    cluster = pr.add_argument_group(
        "running on a dask cluster", "Blocks are tasks; the output is the same as in one process."
    )
    cluster.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run blocks on a dask.distributed LocalCluster of N processes on this machine",
    )
    cluster.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run blocks on an existing dask cluster, e.g. tcp://10.0.0.1:8786 (its workers "
        "must see the image and the output paths)",
    )
    pr.add_argument(
        "--save-maps",
        action="store_true",
        help="also write NAME_maps.tif with foreground and auxiliary maps",
    )
    pr.add_argument(
        "--no-flip-average",
        action="store_true",
        help="predict each tile once, for a model that averages its flips (4x faster; "
        "training turns averaging on where it gains on the validation data)",
    )
    pr.add_argument(
        "--doubt",
        action="store_true",
        help="also write where to correct next: NAME_doubt.tif (how unsure the model is, "
        "0-1) and NAME_doubt.csv (its objects, most worth correcting first; label 0: possibly "
        "missed); predicts each image four times (flipped)",
    )
    _add_input_options(pr)
    _add_device(pr)

    ev = sub.add_parser(
        "evaluate",
        help="average precision of predicted labels",
        description="AP = TP/(TP+FP+FN) at IoU 0.5-0.9, counts pooled over "
        "all images (as StarDist defines it).",
    )
    ev.add_argument("--labels", required=True, type=Path, help="ground-truth label folder")
    ev.add_argument("--pred", required=True, type=Path, help="predicted label folder")

    md = sub.add_parser(
        "models",
        help="list the built-in models, or show what produced a model",
        description="Built-in models ship with the package; use their names wherever a "
        "model file is accepted (predict --model, train --init-model).",
    )
    md.add_argument(
        "--show",
        metavar="MODEL",
        help="print the run record of a model file or built-in model: data with content "
        "hashes, settings, starting model, seed, versions, device, time and steps",
    )
    md.add_argument(
        "--json",
        action="store_true",
        help="with --show: print the record as JSON, which `train --config` re-runs",
    )

    ex = sub.add_parser(
        "export-bmz",
        help="write a model as a BioImage Model Zoo package (.zip) other tools run",
        description="Write MODEL as a BioImage Model Zoo package: PyTorch state-dict weights "
        "with a torch-only architecture file (bioimageio.core, ilastik) and TorchScript "
        "(deepImageJ, QuPath), outputs in [0, 1], percentile preprocessing, the thresholds, "
        "input fitting and run record under config.napari_live_unet. The package is checked "
        "with bioimageio.core's test_model (offline) before it is written. Needs the 'bmz' "
        "extra: pip install 'napari-live-unet[bmz]'.",
    )
    ex.add_argument("model", help="a model file (.pt) or a built-in model's name")
    ex.add_argument("out", type=Path, help="the package to write (.zip)")
    ex.add_argument("--name", help="the package's name (default: the model's, else OUT's stem)")
    ex.add_argument(
        "--author",
        action="append",
        metavar="NAME",
        help="an author's name (repeat for several; default: this computer's user name)",
    )
    ex.add_argument(
        "--license",
        metavar="SPDX",
        help="the weights' licence as an SPDX id (default: the model's, else CC-BY-4.0)",
    )
    ex.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")

    de = sub.add_parser(
        "demo",
        help="segment the bundled sample with the starter model, then fine-tune (a minute)",
        description="Segment a held-out sample image with the built-in starter model (no "
        "training), fine-tune it briefly on a small bundled nuclei sample and compare. "
        "Nothing is downloaded.",
    )
    de.add_argument(
        "--out",
        type=Path,
        default=Path("live-unet-demo"),
        help="output folder (default: ./live-unet-demo)",
    )
    de.add_argument(
        "--time-budget",
        type=float,
        default=45.0,
        metavar="SECONDS",
        help="fine-tuning time (default: 45)",
    )
    _add_device(de)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``live-unet`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    # Imported late so `--help` stays fast.
    if args.command == "predict":
        from .predict_command import run_predict as run
    elif args.command == "demo":
        from .demo_command import run_demo as run
    else:
        from . import commands

        run = getattr(commands, f"run_{args.command.replace('-', '_')}")
    try:
        return run(args)
    except InputError as exc:
        print(f"live-unet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
