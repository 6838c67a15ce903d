"""Saving and loading models as one self-describing file."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from .atomic_write import write_bytes_atomic
from .config import ModelConfig, NormalizationConfig, PostprocessConfig
from .errors import InputError
from .image_adapter import InputSpec
from .model import SegmentationModel
from .unet import UNet

FORMAT_NAME = "napari-live-unet"
FORMAT_VERSION = 1
MODEL_SUFFIX = ".pt"
"""The suffix of the model files this package writes."""
MODEL_SUFFIXES = (".pt", ".pth")
"""Suffixes of model files it opens (``.pth`` is PyTorch's other common one)."""
PACKAGE_SUFFIX = ".zip"
"""The suffix of BioImage Model Zoo packages, opened wherever a model file is."""


def model_to_dict(model: SegmentationModel) -> dict[str, Any]:
    """The model as plain data: tensors on the CPU plus JSON-like configuration."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_config": model.config.to_dict(),
        "normalization": model.normalization.to_dict(),
        "postprocess": model.postprocess.to_dict(),
        "history": model.history,
        "train_config": model.train_config,
        "input": model.input.to_dict(),
        "info": model.info,
        "record": model.record,
        "flip_average": model.flip_average,
        "state_dict": {k: v.detach().cpu() for k, v in model.network.state_dict().items()},
    }


def save_model(
    model: SegmentationModel, path: str | os.PathLike, *, half_precision: bool = False
) -> Path:
    """Write the model to ``path`` atomically (complete file or none).

    ``half_precision`` stores floating-point weights as float16 (half the file size; they
    are loaded back into float32 parameters), as the built-in models ship.
    """
    model.check_trainable("saved as a Live U-net model file")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = model_to_dict(model)
    if half_precision:
        data["state_dict"] = {
            k: v.half() if v.is_floating_point() else v for k, v in data["state_dict"].items()
        }
    buffer = io.BytesIO()
    torch.save(data, buffer)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> SegmentationModel:
    """Load a model saved by :func:`save_model`.

    Raises
    ------
    InputError
        If the file is missing, damaged, or not a napari-live-unet model.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: model file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise InputError(
            f"{path}: not a readable model file ({type(exc).__name__}). It may be truncated "
            "or damaged; train again or use another copy."
        ) from None
    except Exception as exc:  # unpickling refused: some other program's file
        raise InputError(
            f"{path}: not a napari-live-unet model file ({type(exc).__name__})."
        ) from None
    return model_from_dict(data, str(path), device)


def model_from_dict(
    data: Any, source: str, device: str | torch.device = "cpu"
) -> SegmentationModel:
    """Rebuild a model from :func:`model_to_dict` output; ``source`` names it in errors."""
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise InputError(
            f"{source}: not a napari-live-unet model file (it holds no '{FORMAT_NAME}' "
            "header). Models from other tools cannot be loaded."
        )
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(
            f"{source}: saved by a newer napari-live-unet (format "
            f"{data['format_version']}); upgrade the plugin to load it."
        )
    try:
        config = ModelConfig.from_dict(data["model_config"])
        network = UNet(config)
        network.load_state_dict(data["state_dict"])
        model = SegmentationModel(
            network,
            config,
            NormalizationConfig.from_dict(data["normalization"]),
            PostprocessConfig.from_dict(data["postprocess"]),
            list(data.get("history", [])),
            dict(data.get("train_config", {})),
            InputSpec.from_dict(data.get("input", {})),
            dict(data.get("info", {})),
            dict(data.get("record", {})),  # absent from files saved before run records
            bool(data.get("flip_average", False)),  # absent from older files
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{source}: model file is inconsistent ({exc})") from None
    network.eval()
    return model.to(device)
