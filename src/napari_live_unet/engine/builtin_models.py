"""Models that ship inside the package, addressed by name wherever a model file is accepted.

Built-in model files live in ``napari_live_unet/models/NAME.pt`` and are read like any
model file (``weights_only=True``); nothing is ever written into the package folder.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .errors import InputError
from .model import SegmentationModel
from .model_file import MODEL_SUFFIX, PACKAGE_SUFFIX, load_model

if TYPE_CHECKING:
    from .bmz.output_roles import OutputRoles

STARTER_MODEL = "nuclei"


def _models_folder() -> Path:
    return Path(str(resources.files("napari_live_unet") / "models"))


def builtin_model_names() -> list[str]:
    """Names of the models shipped with the package, sorted."""
    folder = _models_folder()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob(f"*{MODEL_SUFFIX}") if p.is_file())


def builtin_model_path(name: str) -> Path:
    """The file of the built-in model ``name``.

    Raises
    ------
    InputError
        If no built-in model has that name.
    """
    path = _models_folder() / f"{name}{MODEL_SUFFIX}"
    if not path.is_file():
        raise InputError(_unknown(name))
    return path


def resolve_model(source: str | os.PathLike) -> Path:
    """A model file for ``source``: an existing file, or the name of a built-in model.

    Raises
    ------
    InputError
        If ``source`` is neither, with the list of built-in names.
    """
    path = Path(source)
    if path.is_file():
        return path
    name = str(source)
    if name in builtin_model_names():
        return builtin_model_path(name)
    if path.suffix in (MODEL_SUFFIX, PACKAGE_SUFFIX) or os.sep in name or path.exists():
        raise InputError(f"{source}: model file not found. {_builtins_hint()}")
    raise InputError(_unknown(name))


def load_model_source(
    source: str | os.PathLike,
    device: str | torch.device = "cpu",
    outputs: OutputRoles | None = None,
) -> SegmentationModel:
    """Load a model from a model file, a BioImage Model Zoo package (.zip) or a built-in
    model's name.

    ``outputs`` says which output channel of another tool's BMZ package is the foreground
    and which the boundary or distance map (see :func:`~.bmz.package_reader.load_bmz_package`);
    it is refused for anything else.
    """
    path = resolve_model(source)
    if path.suffix.lower() == PACKAGE_SUFFIX:
        from .bmz.package_reader import load_bmz_package

        return load_bmz_package(path, device, outputs)
    if outputs is not None:
        raise InputError(
            f"{source}: output channels are chosen only for BioImage Model Zoo packages "
            "(.zip) from other tools; a Live U-net model file knows its outputs"
        )
    return load_model(path, device)


def builtin_model_info() -> list[dict[str, Any]]:
    """Name, description and figures of each built-in model (read from the files)."""
    infos = []
    for name in builtin_model_names():
        model = load_model(builtin_model_path(name))
        info = {"name": name, **model.info}
        info["diameter"] = model.input.diameter
        infos.append(info)
    return infos


def _builtins_hint() -> str:
    names = builtin_model_names()
    listed = ", ".join(names) if names else "none installed"
    return f"Built-in models: {listed} (`live-unet models` describes them)."


def _unknown(name: str) -> str:
    return f"unknown model {name!r}: not a model file and not a built-in model. " + (
        _builtins_hint()
    )
