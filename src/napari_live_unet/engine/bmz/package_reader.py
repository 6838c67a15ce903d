"""Opening a BioImage Model Zoo package (.zip) as a model this plugin predicts with.

A package this plugin exported comes back as the very model it was (the state dict and
the whole model record are inside). Another tool's package runs when one output channel
holds a foreground and another a boundary or distance map: the user says which (or the
channel names do), and the plugin's own tiling and post-processing take over.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig, NormalizationConfig
from ..errors import InputError
from ..model import SegmentationModel
from ..model_file import FORMAT_NAME, PACKAGE_SUFFIX, model_from_dict
from .foreign_network import ForeignNetwork
from .output_roles import ROLES_HINT, OutputRoles, roles_from_names

_DESCRIPTION_FILES = ("rdf.yaml", "bioimageio.yaml")
_SPATIAL = ("z", "y", "x")
_PASSIVE_STEPS = ("ensure_dtype",)  # steps that change nothing the plugin cares about


class OutputRolesNeeded(InputError):
    """A foreign package was opened without saying which output channel is which.

    ``channels`` lists the output channels, numbered as ``--bmz-outputs`` counts them.
    """

    def __init__(self, message: str, channels: list[str]) -> None:
        super().__init__(message)
        self.channels = channels


def is_bmz_package(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zip file holding a BMZ resource description."""
    path = Path(path)
    if path.suffix.lower() != PACKAGE_SUFFIX or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name in _DESCRIPTION_FILES for name in archive.namelist())


def load_bmz_package(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    outputs: OutputRoles | None = None,
) -> SegmentationModel:
    """Load a BMZ model package as a :class:`SegmentationModel`.

    Parameters
    ----------
    path : path
        The package (.zip).
    device : str or torch.device
        Where the network runs.
    outputs : OutputRoles, optional
        For another tool's package: which output channel is the foreground and which the
        boundary or distance map. Not needed for this plugin's own exports, nor when the
        channel names say it (``foreground`` and ``boundary`` or ``distance``).

    Raises
    ------
    OutputRolesNeeded
        A foreign package whose roles are neither given nor named.
    InputError
        Not a BMZ model package, a description that does not validate, weights that cannot
        be read, or outputs/inputs this plugin cannot run; the message says what the
        package holds.
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise InputError(f"{path}: model package not found")
    if not is_bmz_package(path):
        raise InputError(
            f"{name}: not a BioImage Model Zoo package (a .zip holding rdf.yaml or "
            "bioimageio.yaml); export one with `live-unet export-bmz` or download a model's "
            "zip from bioimage.io"
        )
    with zipfile.ZipFile(path) as archive:
        descr = _description(archive, name)
        own = _own_record(descr)
        if own is not None:
            model = _own_model(archive, own, name)
        else:
            model = _foreign_model(archive, descr, name, outputs)
    model.network.eval()
    return model.to(device)


def _description(archive: zipfile.ZipFile, name: str) -> Any:
    """The package's model description, updated to the latest format; no network.

    The zip is opened here, not by bioimageio.spec, which would leave it open."""
    try:
        from bioimageio.spec import InvalidDescr, load_model_description
    except ImportError:
        raise InputError(
            f"{name}: opening BioImage Model Zoo packages needs bioimageio.core: "
            "pip install 'napari-live-unet[bmz]'"
        ) from None
    try:
        descr = load_model_description(archive, perform_io_checks=False, format_version="latest")
    except Exception as exc:  # bioimageio raises many kinds on a damaged package
        raise InputError(
            f"{name}: the package's description cannot be read ({type(exc).__name__}: "
            f"{_first_line(exc)})"
        ) from None
    if isinstance(descr, InvalidDescr) or getattr(descr, "type", None) != "model":
        summary = getattr(descr, "validation_summary", None)
        errors = getattr(summary, "errors", None) or []
        detail = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors[:3])
        raise InputError(
            f"{name}: not a valid BioImage Model Zoo model description"
            + (f" ({detail})" if detail else "")
        )
    return descr


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "no detail"


def _own_record(descr: Any) -> dict[str, Any] | None:
    """The plugin's record in ``config.napari_live_unet``, when this plugin exported it."""
    config = getattr(descr, "config", None)
    record = getattr(config, "napari_live_unet", None)
    if record is None:
        extra = getattr(config, "model_extra", None) or {}
        record = extra.get("napari_live_unet")
    if isinstance(record, dict) and record.get("format") == FORMAT_NAME:
        return record
    return None


def _read(archive: zipfile.ZipFile, member: str, name: str) -> bytes:
    try:
        return archive.read(member)
    except KeyError:
        raise InputError(f"{name}: the package lists {member} but does not contain it") from None
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InputError(f"{name}: {member} cannot be read from the package ({exc})") from None


def _own_model(archive: zipfile.ZipFile, record: dict[str, Any], name: str) -> SegmentationModel:
    """This plugin's export: the model record plus its state dict, as saved."""
    member = str(record.get("weights_file", ""))
    data = dict(record.get("model") or {})
    try:
        state = torch.load(io.BytesIO(_read(archive, member, name)), weights_only=True)
    except InputError:
        raise
    except Exception as exc:  # torch raises several kinds on damaged files
        raise InputError(
            f"{name}: the weights ({member}) are damaged or not a state dict "
            f"({type(exc).__name__}); export the model again"
        ) from None
    data["state_dict"] = state
    return model_from_dict(data, name)


def _foreign_model(
    archive: zipfile.ZipFile, descr: Any, name: str, roles: OutputRoles | None
) -> SegmentationModel:
    if len(descr.inputs) != 1:
        raise InputError(
            f"{name}: the model takes {len(descr.inputs)} input tensors; Live U-net runs "
            "models with one input image"
        )
    spec = descr.inputs[0]
    input_axes = [_axis_name(a) for a in spec.axes]
    spatial = [a for a in input_axes if a not in ("batch", "channel")]
    if not 2 <= len(spatial) <= 3 or any(a not in _SPATIAL for a in spatial):
        raise InputError(
            f"{name}: input axes {input_axes}; Live U-net runs models on y,x or z,y,x images "
            "(with optional batch and channel axes)"
        )
    in_channels = _channel_count(spec, name, "input")
    multiples = [_size_step(a, name) for a in spec.axes if _axis_name(a) in _SPATIAL]
    channels, output_axes, sigmoid = _outputs(descr, spatial, name)
    if roles is None:
        roles = roles_from_names(channels)
    if roles is None:
        listing = ", ".join(f"{i}: {c}" for i, c in enumerate(channels))
        raise OutputRolesNeeded(
            f"{name} is another tool's model with {len(channels)} output channel(s) "
            f"({listing}); {ROLES_HINT}",
            channels,
        )
    for index in (roles.foreground, roles.auxiliary):
        if index >= len(channels):
            raise InputError(
                f"{name}: output channel {index} does not exist; the model outputs "
                f"{len(channels)} channel(s): " + ", ".join(channels)
            )
    network = _network(archive, descr, name)
    ordered = dict(zip(spatial, multiples, strict=True))
    ours = [ordered[a] for a in _SPATIAL if a in ordered]
    halo = _halo(descr.outputs, spatial)
    margins = tuple(
        max(_round_up(h, m), 4 * m, 16 if m < 16 else m) for h, m in zip(halo, ours, strict=True)
    )
    wrapper = ForeignNetwork(network, input_axes, output_axes, roles, sigmoid, margins)
    config = ModelConfig(
        ndim=len(ours),
        in_channels=in_channels,
        mode=roles.kind,  # pyright: ignore[reportArgumentType]  # checked by OutputRoles
        depth=max(1, max(int(math.log2(m)) for m in ours)),
        pooling=_pooling(ours),
    )
    model = SegmentationModel(
        wrapper,  # pyright: ignore[reportArgumentType]  # predicts like a UNet
        config,
        _normalization(spec, name),
        info={
            "name": str(descr.name),
            "description": f"{descr.name} (BioImage Model Zoo package, outputs "
            f"{roles.describe()}): {descr.description}".strip(": "),
            "bmz_package": name,
        },
    )
    return model


def _axis_name(axis: Any) -> str:
    kind = str(getattr(axis, "type", ""))
    if kind in ("batch", "channel"):
        return kind
    return str(getattr(axis, "id", kind))


def _channel_count(spec: Any, name: str, what: str) -> int:
    for axis in spec.axes:
        if _axis_name(axis) == "channel":
            names = getattr(axis, "channel_names", None) or []
            return max(1, len(names))
    return 1


def _size_step(axis: Any, name: str) -> int:
    """The size multiple of a spatial input axis (its parameterized step)."""
    size = axis.size
    step = getattr(size, "step", None)
    if step is None:
        raise InputError(
            f"{name}: its input axis {axis.id} has a fixed size ({size}); Live U-net tiles "
            "images in sizes of its own choice, so it runs models whose input size is "
            "parameterized (min + n x step)"
        )
    step = max(1, int(step))
    if step & (step - 1):
        raise InputError(
            f"{name}: its input axis {axis.id} takes sizes in steps of {step}; Live U-net "
            "tiles in powers of two (1, 2, 4, 8, ...)"
        )
    return step


def _pooling(multiples: list[int]) -> tuple[tuple[int, ...], ...]:
    """Per-level pooling whose products give ``multiples`` (the tiles' size multiples)."""
    depth = max(1, max(int(math.log2(m)) for m in multiples))
    return tuple(
        tuple(2 if level < int(math.log2(m)) else 1 for m in multiples) for level in range(depth)
    )


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _outputs(descr: Any, spatial: list[str], name: str):
    """Channel names (counted over the outputs), each output's axes, and whether a
    sigmoid follows the network."""
    channels: list[str] = []
    all_axes: list[list[str]] = []
    sigmoid: list[bool] = []
    for tensor in descr.outputs:
        axes = [_axis_name(a) for a in tensor.axes]
        others = [a for a in axes if a not in ("batch", "channel")]
        if sorted(others) != sorted(spatial):
            raise InputError(
                f"{name}: output {tensor.id} has axes {axes}, not the input's {spatial}; Live "
                "U-net reads outputs of the input's size (a foreground and a boundary or "
                "distance map)"
            )
        for axis in tensor.axes:
            size = getattr(axis, "size", None)
            if _axis_name(axis) in _SPATIAL and getattr(size, "offset", 0):
                raise InputError(
                    f"{name}: output {tensor.id} is smaller or larger than the input along "
                    f"{axis.id}; Live U-net reads outputs of the input's size"
                )
        steps = [str(s.id) for s in tensor.postprocessing if str(s.id) not in _PASSIVE_STEPS]
        if steps not in ([], ["sigmoid"]):
            raise InputError(
                f"{name}: output {tensor.id} is post-processed by {steps}; Live U-net runs "
                "outputs that are probabilities or maps in 0..1, optionally after a sigmoid"
            )
        sigmoid.append(steps == ["sigmoid"])
        all_axes.append(axes)
        count = _channel_count(tensor, name, "output")
        names = next(
            ([str(n) for n in a.channel_names] for a in tensor.axes if _axis_name(a) == "channel"),
            [str(tensor.id)],
        )
        channels.extend(f"{tensor.id}/{n}" if len(descr.outputs) > 1 else n for n in names)
        assert len(names) == count
    return channels, all_axes, sigmoid


def _halo(outputs: Any, spatial: list[str]) -> list[int]:
    """Per spatial axis (z, y, x order), the largest halo any output declares, twice over
    (the halo is per side; tiles overlap by both)."""
    halo = dict.fromkeys(spatial, 0)
    for tensor in outputs:
        for axis in tensor.axes:
            axis_name = _axis_name(axis)
            if axis_name in halo:
                halo[axis_name] = max(halo[axis_name], 2 * int(getattr(axis, "halo", 0) or 0))
    return [halo[a] for a in _SPATIAL if a in halo]


def _normalization(spec: Any, name: str) -> NormalizationConfig:
    """The percentiles the package scales its input by; other normalisations are refused
    (the plugin normalises every tile by the whole image's percentiles)."""
    steps = [s for s in spec.preprocessing if str(s.id) not in _PASSIVE_STEPS]
    if not steps:
        # No normalisation declared: a full-range scaling keeps 0..1 data as it is closest.
        return NormalizationConfig(0.0, 100.0)
    if len(steps) == 1 and str(steps[0].id) == "scale_range":
        kwargs = steps[0].kwargs
        try:
            return NormalizationConfig(float(kwargs.min_percentile), float(kwargs.max_percentile))
        except ValueError as exc:
            raise InputError(f"{name}: the model's scale_range is not usable ({exc})") from None
    raise InputError(
        f"{name}: the model normalises its input with {[str(s.id) for s in steps]}; Live U-net "
        "runs models whose input is scaled by percentiles (scale_range)"
    )


def _network(archive: zipfile.ZipFile, descr: Any, name: str) -> torch.nn.Module:
    """The package's network: TorchScript when present (no code runs from the package),
    else the PyTorch state dict with its architecture, loaded by bioimageio.core."""
    weights = descr.weights
    if weights.torchscript is not None:
        member = str(weights.torchscript.source)
        try:
            return torch.jit.load(io.BytesIO(_read(archive, member, name)), map_location="cpu")
        except InputError:
            raise
        except Exception as exc:  # TorchScript raises RuntimeError and others
            raise InputError(
                f"{name}: the TorchScript weights ({member}) are damaged or unreadable "
                f"({type(exc).__name__}: {_first_line(exc)})"
            ) from None
    if weights.pytorch_state_dict is not None:
        try:
            from bioimageio.core.backends.pytorch_backend import load_torch_model

            return load_torch_model(weights.pytorch_state_dict, devices=["cpu"])
        except Exception as exc:  # the architecture's own code may raise anything
            raise InputError(
                f"{name}: the PyTorch weights could not be loaded ({type(exc).__name__}: "
                f"{_first_line(exc)})"
            ) from None
    formats = [k for k, v in weights if v is not None] if hasattr(weights, "__iter__") else []
    raise InputError(
        f"{name}: the package has no PyTorch weights (it has {formats or 'none'}); Live U-net "
        "runs TorchScript or PyTorch state-dict weights"
    )
