"""Headless segmentation engine: no napari, no Qt.

Runs on a laptop CPU, a GPU box or a cluster node with only torch, numpy, scipy,
scikit-image and tifffile installed.
"""

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
    recommended_settings,
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
from .regions import Region, pairs_from_regions
from .train import run_training, train

__all__ = [
    "STARTER_MODEL",
    "AdaptOptions",
    "Adaptation",
    "AnnotatedImage",
    "AugmentConfig",
    "DoubtReport",
    "EpochEnd",
    "InputError",
    "InputSpec",
    "MatchCounts",
    "ModelConfig",
    "NormalizationConfig",
    "Notice",
    "ObjectDoubt",
    "PostprocessConfig",
    "PreviewReady",
    "Region",
    "SegmentationModel",
    "StepEnd",
    "ThresholdsChosen",
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
