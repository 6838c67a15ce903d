"""Writing a model as a BioImage Model Zoo package (.zip) that other tools of the field run.

The package holds the network twice: a PyTorch state dict with ``unet.py`` (which imports
only torch) as its architecture, for bioimageio.core and ilastik, and a TorchScript file
for deepImageJ and QuPath. Both output the foreground and the boundary or distance map
already in [0, 1]. The plugin's own record (post-processing thresholds, input fitting,
history, run record) travels under ``config.napari_live_unet``, so the package opens here
as the very model it was. The package is written to a temporary folder, checked with
bioimageio.core's ``test_model`` (offline), and only then moved into place.
"""

from __future__ import annotations

import contextlib
import gc
import getpass
import json
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import unet as unet_module
from ..atomic_write import atomic_path
from ..errors import InputError
from ..model import SegmentationModel
from ..model_file import FORMAT_NAME, PACKAGE_SUFFIX, model_to_dict
from ..tile_plan import context_margin
from ..unet import ExportedUNet
from .example_tensors import example_image, example_shape, expected_output
from .readme import readme_text

PACKAGE_FORMAT_VERSION = 1
STATE_DICT_FILE = "weights.pt"
TORCHSCRIPT_FILE = "weights_torchscript.pt"
UNET_DOI = "10.1007/978-3-319-24574-4_28"  # Ronneberger et al. 2015, cited by DOI only
DEFAULT_LICENSE = "CC-BY-4.0"


def output_names(mode: str) -> list[str]:
    """The output channels' names: ``foreground`` and ``boundary`` or ``distance``."""
    return ["foreground", "boundary" if mode == "boundary" else "distance"]


def exported_network(model: SegmentationModel) -> ExportedUNet:
    """The model's network as packages ship it (CPU, float32, eval mode, same weights)."""
    config = model.config
    network = ExportedUNet(
        **architecture_kwargs(model)  # pyright: ignore[reportArgumentType]
    )
    state = {k: v.detach().cpu().float() for k, v in model.network.state_dict().items()}
    network.load_state_dict(state, strict=True)
    assert network.mode == config.mode
    return network.eval()


def architecture_kwargs(model: SegmentationModel) -> dict[str, Any]:
    """JSON values that rebuild the network with :class:`ExportedUNet`."""
    config = model.config
    return {
        "ndim": config.ndim,
        "in_channels": config.in_channels,
        "mode": config.mode,
        "base_channels": config.base_channels,
        "depth": config.depth,
        "norm": config.norm,
        "pooling": [list(level) for level in config.level_pooling],
        "kernels": [list(level) for level in config.level_kernels],
    }


def export_bmz_package(
    model: SegmentationModel,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    authors: list[str] | None = None,
    license: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as a BMZ package at ``out`` (a .zip), tested offline first.

    Parameters
    ----------
    model : SegmentationModel
        A model trained with this plugin (another tool's package cannot be re-exported).
    out : path
        The package to write; must end in ``.zip``.
    name : str, optional
        The package's name (default: the model's, else the file's stem).
    authors : list of str, optional
        Authors' names (default: this computer's user name).
    license : str, optional
        SPDX licence of the weights (default: the model's, else CC-BY-4.0).
    overwrite : bool
        Replace an existing ``out``; without it an existing file is refused.

    Returns
    -------
    Path
        ``out``, written completely or not at all.

    Raises
    ------
    InputError
        A foreign model, a bad output path, bioimageio.core missing, or a package that does
        not pass ``test_model`` (the message gives its first failures; nothing is written).
    """
    out = Path(out)
    model.check_trainable("exported to the BioImage Model Zoo (it came from there)")
    if out.suffix.lower() != PACKAGE_SUFFIX:
        raise InputError(
            f"{out}: a BioImage Model Zoo package is a .zip file; name it {out.stem}.zip"
        )
    if out.is_dir():
        raise InputError(f"{out}: is a folder; give a file name such as model.zip")
    if out.exists() and not overwrite:
        raise InputError(f"{out}: exists; choose another name, or pass --overwrite to replace it")
    if name is not None and not 5 <= len(name.strip()) <= 128:
        raise InputError(f"package name {name!r}: give 5 to 128 characters (the zoo's rule)")
    try:
        from bioimageio.spec import save_bioimageio_package
    except ImportError:
        raise InputError(
            "exporting to the BioImage Model Zoo needs bioimageio.core: "
            "pip install 'napari-live-unet[bmz]'"
        ) from None
    with tempfile.TemporaryDirectory(prefix="live-unet-bmz-") as tmp, _quiet_bioimageio():
        folder = Path(tmp)
        descr = _description(model, folder, name or _default_name(model, out), authors, license)
        package = folder / "package.zip"
        save_bioimageio_package(descr, output_path=package)
        check_package(package)
        with atomic_path(out) as target:
            shutil.copyfile(package, target)
    return out


def check_package(package: Path) -> None:
    """Run bioimageio.core's ``test_model`` on ``package``; raise InputError unless it
    passes."""
    from bioimageio.core import test_model

    summary = test_model(package)
    if summary.status != "passed":
        failures = [
            f"{d.name}: {'; '.join(e.msg for e in d.errors[:2])}"
            for d in summary.details
            if d.status == "failed"
        ]
        raise InputError(
            "the exported package failed bioimageio.core's test_model ("
            + " | ".join(failures[:3])
            + "); nothing was written. Please report this with the model file."
        )


@contextlib.contextmanager
def _quiet_bioimageio():
    """bioimageio.spec leaves files it hashed open: collect them here, ResourceWarnings
    off, rather than let them surface later as unrelated errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            yield
        finally:
            gc.collect()


def _default_name(model: SegmentationModel, out: Path) -> str:
    name = str(model.info.get("name") or out.stem)
    return name if len(name) >= 5 else f"Live U-net {name}"  # the zoo wants 5 characters


def _description(
    model: SegmentationModel,
    folder: Path,
    name: str,
    authors: list[str] | None,
    license: str | None,
):
    from bioimageio.spec.model import v0_5

    config = model.config
    network = exported_network(model)
    spatial = ["z", "y", "x"][-config.ndim :]
    steps = config.size_multiples
    margins = context_margin(network, steps)
    halos = [math.ceil(m / 2) for m in margins]  # per side; tiles overlap by both
    smallest = tuple(_round_up(2 * h + s, s) for h, s in zip(halos, steps, strict=True))
    shape = example_shape(config, smallest)

    files = _write_files(model, network, folder, shape)
    scales = list(config.voxel_size) if config.voxel_size else [1.0] * config.ndim
    input_id = v0_5.TensorId("raw")
    space_in = [
        v0_5.SpaceInputAxis(
            id=v0_5.AxisId(a),
            size=v0_5.ParameterizedSize(min=int(low), step=int(step)),
            scale=float(scale),
        )
        for a, low, step, scale in zip(spatial, smallest, steps, scales, strict=True)
    ]
    channel_names = [f"channel{i}" for i in range(config.in_channels)]
    norm = model.normalization
    raw = v0_5.InputTensorDescr(
        id=input_id,
        description="the image, channel first; scaled by percentiles per channel",
        axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=channel_names), *space_in],
        test_tensor=v0_5.FileDescr(source=files["test_input"]),
        preprocessing=[
            v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32")),
            v0_5.ScaleRangeDescr(
                kwargs=v0_5.ScaleRangeKwargs(
                    axes=[v0_5.AxisId(a) for a in spatial],
                    min_percentile=float(norm.low_percentile),
                    max_percentile=float(norm.high_percentile),
                )
            ),
        ],
    )
    space_out = [
        v0_5.SpaceOutputAxisWithHalo(
            id=v0_5.AxisId(a),
            size=v0_5.SizeReference(tensor_id=input_id, axis_id=v0_5.AxisId(a)),
            halo=int(halo),
            scale=float(scale),
        )
        for a, halo, scale in zip(spatial, halos, scales, strict=True)
    ]
    names = output_names(config.mode)
    prediction = v0_5.OutputTensorDescr(
        id=v0_5.TensorId("prediction"),
        description=f"{names[0]} probability and {names[1]} map, both in [0, 1]",
        axes=[
            v0_5.BatchAxis(),
            v0_5.ChannelAxis(channel_names=list(names)),
            *space_out,
        ],
        test_tensor=v0_5.FileDescr(source=files["test_output"]),
    )
    version = v0_5.Version(torch.__version__.split("+")[0])
    weights = v0_5.WeightsDescr(
        pytorch_state_dict=v0_5.PytorchStateDictWeightsDescr(
            source=files["state_dict"],
            architecture=v0_5.ArchitectureFromFileDescr(
                source=files["architecture"],
                callable=v0_5.Identifier("ExportedUNet"),
                kwargs=architecture_kwargs(model),
            ),
            pytorch_version=version,
        ),
        torchscript=v0_5.TorchscriptWeightsDescr(
            source=files["torchscript"], pytorch_version=version, parent="pytorch_state_dict"
        ),
    )
    description = str(model.info.get("description") or "").strip() or (
        f"A {config.ndim}D U-net for instance segmentation ({names[0]} and {names[1]} "
        "outputs), trained with napari-live-unet."
    )
    return v0_5.ModelDescr(
        name=name,
        description=description,
        authors=[v0_5.Author(name=a) for a in (authors or [_user_name()])],
        cite=[v0_5.CiteEntry(text="Ronneberger et al. U-Net (2015)", doi=v0_5.Doi(UNET_DOI))],
        license=v0_5.LicenseId(license or str(model.info.get("license") or DEFAULT_LICENSE)),
        # A README as an attachment, not as `documentation`: the field as spec 0.5.12
        # writes it is rejected by spec 0.5.7.4, which ilastik pins.
        attachments=[v0_5.FileDescr(source=files["readme"])],
        covers=[v0_5.FileDescr(source=files["cover"])],
        tags=["napari-live-unet", "instance-segmentation", "unet", f"{config.ndim}d", config.mode],
        inputs=[raw],
        outputs=[prediction],
        weights=weights,
        config=v0_5.Config(**{"napari_live_unet": _own_record(model)}),  # pyright: ignore[reportArgumentType]
    )


def _write_files(
    model: SegmentationModel, network: ExportedUNet, folder: Path, shape: tuple[int, ...]
) -> dict[str, Path]:
    """The package's files in ``folder``: weights twice, architecture, tensors, README."""
    files = {
        "state_dict": folder / STATE_DICT_FILE,
        "torchscript": folder / TORCHSCRIPT_FILE,
        "architecture": folder / "unet.py",
        "test_input": folder / "test_input.npy",
        "test_output": folder / "test_output.npy",
        "readme": folder / "README.md",
        "cover": folder / "cover.png",
    }
    torch.save(network.state_dict(), files["state_dict"])
    torch.jit.script(network).save(str(files["torchscript"]))
    shutil.copyfile(unet_module.__file__, files["architecture"])
    image = example_image(model.config, shape)
    output = expected_output(network, image, model.normalization)
    np.save(files["test_input"], image[None])
    np.save(files["test_output"], output)
    files["readme"].write_text(readme_text(model, output_names(model.config.mode)))
    _write_cover(files["cover"], image, output)
    return files


def _write_cover(path: Path, image: np.ndarray, output: np.ndarray) -> None:
    """Input beside its foreground map (a middle slice for volumes), as the zoo shows."""
    from skimage.io import imsave

    picture = image[0]
    fg = output[0, 0]
    if picture.ndim == 3:
        picture, fg = picture[picture.shape[0] // 2], fg[fg.shape[0] // 2]
    low, high = np.percentile(picture, [1, 99.8])
    picture = np.clip((picture - low) / max(high - low, 1e-6), 0, 1)
    gap = np.ones((picture.shape[0], 4), np.float32)
    row = np.concatenate([picture, gap, np.clip(fg, 0, 1)], axis=1)
    imsave(path, (row * 255).astype(np.uint8), check_contrast=False)


def _own_record(model: SegmentationModel) -> dict[str, Any]:
    """What :mod:`.package_reader` reads back: the model file's content bar the weights."""
    data = model_to_dict(model)
    data.pop("state_dict")
    return {
        "format": FORMAT_NAME,
        "format_version": PACKAGE_FORMAT_VERSION,
        "model": json.loads(json.dumps(data, default=_json_value)),
        "weights_file": STATE_DICT_FILE,
        "outputs": output_names(model.config.mode),
    }


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name on some containers
        return "napari-live-unet user"


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m
