"""Configuration dataclasses shared by training, prediction and model files."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

Mode = Literal["boundary", "distance"]
Norm = Literal["batch", "group", "instance", "none"]
MODES: tuple[str, ...] = ("boundary", "distance")


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**data)


@dataclass
class ModelConfig:
    """Architecture of the U-net and the meaning of its outputs.

    Parameters
    ----------
    ndim : int
        Number of spatial dimensions, 2 or 3.
    in_channels : int
        Image channels the network reads.
    mode : {"boundary", "distance"}
        ``boundary``: 3 logits (background, interior, boundary).
        ``distance``: a foreground logit and a normalised distance-to-boundary map.
    base_channels : int
        Feature channels at the first level; doubled at each level down.
    depth : int
        Number of down-sampling steps.
    norm : {"batch", "group", "instance", "none"}
        Normalisation layer after each convolution.
    """

    ndim: int = 2
    in_channels: int = 1
    mode: Mode = "distance"
    base_channels: int = 16
    depth: int = 3
    norm: Norm = "batch"

    def __post_init__(self) -> None:
        if self.ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {self.ndim}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.norm not in ("batch", "group", "instance", "none"):
            raise ValueError(f"unknown norm {self.norm!r}")
        for name, value, top in (
            ("depth", self.depth, 8),
            ("base_channels", self.base_channels, 512),
            ("in_channels", self.in_channels, 64),
        ):
            # Bounded so a crafted or damaged file cannot make a network that fills memory.
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise ValueError(f"{name} must be an integer from 1 to {top}, got {value!r}")

    @property
    def out_channels(self) -> int:
        """Raw output channels of the network."""
        return 3 if self.mode == "boundary" else 2

    @property
    def size_multiple(self) -> int:
        """Spatial sizes fed to the network must be multiples of this."""
        return 2**self.depth

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return _from_dict(cls, data)


@dataclass
class PostprocessConfig:
    """Thresholds that turn network outputs into instance labels.

    Parameters
    ----------
    fg_threshold : float
        Foreground probability above which a pixel belongs to an object.
    seed_threshold : float
        Distance mode: seeds are distance maxima higher than this.
        Boundary mode: interior probability above which a pixel is part of a seed.
    min_size : int
        Objects smaller than this many pixels are removed.
    seed_prominence : float
        Distance mode: a maximum must rise this much above the saddle to its neighbour's to
        seed an object of its own (h-maxima), which splits touching objects whose valley
        stays above ``seed_threshold``. 0 uses connected regions above ``seed_threshold``.
    smoothing : float
        Distance mode: Gaussian sigma (pixels) applied to the distance map first, so noise
        does not create spurious maxima.
    """

    fg_threshold: float = 0.5
    seed_threshold: float = 0.4
    min_size: int = 15
    seed_prominence: float = 0.05
    smoothing: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PostprocessConfig:
        return _from_dict(cls, data)


@dataclass
class NormalizationConfig:
    """Percentile normalisation applied per image and channel."""

    low_percentile: float = 1.0
    high_percentile: float = 99.8

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NormalizationConfig:
        return _from_dict(cls, data)


@dataclass
class AugmentConfig:
    """Which augmentations are applied to training patches."""

    flips: bool = True
    rot90: bool = True
    rotate_scale: bool = True
    max_rotation_deg: float = 20.0
    scale_range: tuple[float, float] = (0.8, 1.25)
    intensity: bool = True
    noise_std: float = 0.03

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scale_range"] = list(self.scale_range)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        data = dict(data)
        if "scale_range" in data:
            data["scale_range"] = tuple(data["scale_range"])
        return _from_dict(cls, data)


@dataclass
class TrainConfig:
    """Everything the training loop needs besides data and model architecture.

    ``epochs`` and ``time_budget`` may both be set: training ends at whichever comes first.
    An epoch is ``steps_per_epoch`` optimiser steps (patches are sampled at random).

    ``learning_rate`` and ``warmup_fraction`` left at None take values that suit the run:
    3e-3 with 5% warm-up from scratch, 1e-3 with 2% warm-up when fine-tuning a trained
    model (see :meth:`resolved`), so a few images nudge the model rather than overwrite it.

    The validation AP reported every ``val_ap_every`` epochs uses at most
    ``val_ap_max_pixels`` of validation images (it runs inside the time budget); the
    threshold search after training uses up to ``tune_max_pixels``, because thresholds
    chosen on a small subset varied from run to run (on DSB2018, 2 MP of the 6.4 MP
    validation split chose thresholds worth 0.02 less test AP@0.5 in one of three runs).
    """

    epochs: int | None = 100
    time_budget: float | None = None
    steps_per_epoch: int = 50
    batch_size: int = 8
    patch_size: int = 128
    patch_size_z: int = 32
    learning_rate: float | None = None
    weight_decay: float = 1e-4
    warmup_fraction: float | None = None
    val_fraction: float = 0.12
    val_ap_every: int = 5
    early_stopping_patience: int | None = 30
    seed: int | None = 0
    mixed_precision: bool = True
    compile: bool = False
    foreground_sampling: float = 0.5
    tune_thresholds: bool = True
    val_ap_max_pixels: int = 2_000_000
    tune_max_pixels: int = 8_000_000
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.epochs is None and self.time_budget is None:
            raise ValueError("set epochs, time_budget, or both")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.time_budget is not None and not 0 < self.time_budget < math.inf:
            raise ValueError(
                f"time_budget must be a positive number of seconds, got {self.time_budget}"
            )
        if self.batch_size < 1 or self.patch_size < 8 or self.steps_per_epoch < 1:
            raise ValueError("batch_size, steps_per_epoch must be >= 1 and patch_size >= 8")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.learning_rate is not None and not 0 < self.learning_rate < float("inf"):
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.warmup_fraction is not None and not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.seed is not None and self.seed < 0:
            raise ValueError(f"seed must be 0 or more, got {self.seed}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 0:
            raise ValueError(f"patience must be 0 or more, got {self.early_stopping_patience}")
        if not 0 <= self.weight_decay < math.inf:
            raise ValueError(f"weight_decay must be 0 or more, got {self.weight_decay}")

    def resolved(self, *, fine_tuning: bool) -> TrainConfig:
        """A copy with automatic settings (None) filled in for scratch or fine-tuning runs."""
        lr, warmup = (1e-3, 0.02) if fine_tuning else (3e-3, 0.05)
        return replace(
            self,
            learning_rate=lr if self.learning_rate is None else self.learning_rate,
            warmup_fraction=warmup if self.warmup_fraction is None else self.warmup_fraction,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        if "augment" in data:
            data["augment"] = AugmentConfig.from_dict(data["augment"])
        return _from_dict(cls, data)


def recommended_settings(device_type: str) -> dict[str, int]:
    """Model size, patch and batch that suit a device type (``cpu``, ``cuda`` or ``mps``).

    On a CPU every step counts (a 300 s budget sees only ~25k patches on two cores), so a
    narrow net that trains fast wins; a GPU affords a wider, deeper net and larger batches.
    """
    if device_type == "cpu":
        return {"base_channels": 8, "depth": 3, "patch_size": 128, "batch_size": 8}
    return {"base_channels": 32, "depth": 4, "patch_size": 256, "batch_size": 32}
