"""Headless segmentation engine: no napari, no Qt.

Runs on a laptop CPU, a GPU box or a cluster node with only torch, numpy, scipy,
scikit-image and tifffile installed.
"""

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
from .errors import InputError
from .events import (
    EpochEnd,
    Notice,
    StepEnd,
    ThresholdsChosen,
    TrainingEvent,
    TrainingFinished,
    TrainingStarted,
    ValidationMetrics,
)
from .metrics import MatchCounts, dataset_counts, match_counts
from .model import SegmentationModel
from .model_file import load_model, save_model
from .postprocess import instances_from_outputs
from .train import run_training, train

__all__ = [
    "AugmentConfig",
    "EpochEnd",
    "InputError",
    "MatchCounts",
    "ModelConfig",
    "NormalizationConfig",
    "Notice",
    "PostprocessConfig",
    "SegmentationModel",
    "StepEnd",
    "ThresholdsChosen",
    "TrainConfig",
    "TrainingEvent",
    "TrainingFinished",
    "TrainingPair",
    "TrainingStarted",
    "ValidationMetrics",
    "available_devices",
    "dataset_counts",
    "instances_from_outputs",
    "load_folder_pairs",
    "load_model",
    "make_pair",
    "match_counts",
    "recommended_settings",
    "resolve_device",
    "run_training",
    "save_model",
    "split_validation",
    "train",
]
