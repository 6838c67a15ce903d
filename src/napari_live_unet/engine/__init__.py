"""Headless segmentation engine: no napari, no Qt.

Runs on a laptop CPU, a GPU box or a cluster node with only torch, numpy, scipy,
scikit-image and tifffile installed.

The names below are imported on first use (PEP 562), so that importing one submodule, or
``live-unet --help``, does not import torch, scipy and scikit-image through this package.
``from napari_live_unet.engine import X`` works for every ``X`` in ``__all__``.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .annotation_set import (
        AnnotatedImage,
        load_annotation_set,
        load_region_pairs,
        pairs_from_annotation_set,
        save_annotation_set,
    )
    from .builtin_models import (
        STARTER_MODEL,
        builtin_model_info,
        builtin_model_names,
        load_model_source,
        resolve_model,
    )
    from .config import (
        AugmentConfig,
        ModelConfig,
        NormalizationConfig,
        PostprocessConfig,
        TrainConfig,
    )
    from .data import TrainingPair, load_folder_pairs, make_pair, split_validation
    from .device import available_devices, resolve_device
    from .doubt import DoubtReport, ObjectDoubt, assess_doubt, doubt_from_outputs, write_doubt
    from .errors import InputError
    from .events import (
        EpochEnd,
        Notice,
        PreviewReady,
        StepEnd,
        ThresholdsChosen,
        TrainingEvent,
        TrainingFinished,
        TrainingStarted,
        ValidationMetrics,
    )
    from .image_adapter import Adaptation, AdaptOptions, InputSpec, estimate_diameter
    from .metrics import MatchCounts, dataset_counts, match_counts
    from .model import SegmentationModel
    from .model_file import load_model, save_model
    from .postprocess import instances_from_outputs
    from .prediction_events import (
        BlockDone,
        FrameDone,
        FrameFitted,
        PredictionEvent,
        TilesDone,
    )
    from .predictor import Images, LabelsSink, Predictor, StoredFrames
    from .presets import recommended_settings
    from .regions import Region, pairs_from_regions
    from .train import run_training, train

# Submodule of each name in ``__all__``.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "annotation_set": (
        "AnnotatedImage",
        "load_annotation_set",
        "load_region_pairs",
        "pairs_from_annotation_set",
        "save_annotation_set",
    ),
    "builtin_models": (
        "STARTER_MODEL",
        "builtin_model_info",
        "builtin_model_names",
        "load_model_source",
        "resolve_model",
    ),
    "config": (
        "AugmentConfig",
        "ModelConfig",
        "NormalizationConfig",
        "PostprocessConfig",
        "TrainConfig",
    ),
    "data": ("TrainingPair", "load_folder_pairs", "make_pair", "split_validation"),
    "device": ("available_devices", "resolve_device"),
    "doubt": ("DoubtReport", "ObjectDoubt", "assess_doubt", "doubt_from_outputs", "write_doubt"),
    "errors": ("InputError",),
    "events": (
        "EpochEnd",
        "Notice",
        "PreviewReady",
        "StepEnd",
        "ThresholdsChosen",
        "TrainingEvent",
        "TrainingFinished",
        "TrainingStarted",
        "ValidationMetrics",
    ),
    "image_adapter": ("Adaptation", "AdaptOptions", "InputSpec", "estimate_diameter"),
    "metrics": ("MatchCounts", "dataset_counts", "match_counts"),
    "model": ("SegmentationModel",),
    "model_file": ("load_model", "save_model"),
    "postprocess": ("instances_from_outputs",),
    "prediction_events": ("BlockDone", "FrameDone", "FrameFitted", "PredictionEvent", "TilesDone"),
    "predictor": ("Images", "LabelsSink", "Predictor", "StoredFrames"),
    "presets": ("recommended_settings",),
    "regions": ("Region", "pairs_from_regions"),
    "train": ("run_training", "train"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "STARTER_MODEL",
    "AdaptOptions",
    "Adaptation",
    "AnnotatedImage",
    "AugmentConfig",
    "BlockDone",
    "DoubtReport",
    "EpochEnd",
    "FrameDone",
    "FrameFitted",
    "Images",
    "InputError",
    "InputSpec",
    "LabelsSink",
    "MatchCounts",
    "ModelConfig",
    "NormalizationConfig",
    "Notice",
    "ObjectDoubt",
    "PostprocessConfig",
    "PredictionEvent",
    "Predictor",
    "PreviewReady",
    "Region",
    "SegmentationModel",
    "StepEnd",
    "StoredFrames",
    "ThresholdsChosen",
    "TilesDone",
    "TrainConfig",
    "TrainingEvent",
    "TrainingFinished",
    "TrainingPair",
    "TrainingStarted",
    "ValidationMetrics",
    "assess_doubt",
    "available_devices",
    "builtin_model_info",
    "builtin_model_names",
    "dataset_counts",
    "doubt_from_outputs",
    "estimate_diameter",
    "instances_from_outputs",
    "load_annotation_set",
    "load_folder_pairs",
    "load_model",
    "load_model_source",
    "load_region_pairs",
    "make_pair",
    "match_counts",
    "pairs_from_annotation_set",
    "pairs_from_regions",
    "recommended_settings",
    "resolve_device",
    "resolve_model",
    "run_training",
    "save_annotation_set",
    "save_model",
    "split_validation",
    "train",
    "write_doubt",
]


def __getattr__(name: str) -> Any:
    """Import an exported name, or a submodule, on first access (PEP 562)."""
    module = _MODULE_OF.get(name)
    if module is None:
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise  # a submodule that exists failed to import one of its own imports
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """This package's module type: a submodule never replaces an exported name."""

    def __setattr__(self, name: str, value: object) -> None:
        # Importing a submodule sets it as an attribute of its package. The submodule
        # ``train`` shares its name with the exported function ``train``; eager imports used
        # to rebind the function after the module, so keep the function here too.
        if name in _MODULE_OF and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
