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
    voxel_size : tuple of float, optional
        Physical size of a pixel (voxel) per spatial axis, ``(z, y, x)`` in 3D, of the
        images the network learned from. Images of another voxel size are resampled to it
        before the network. None: unknown (images are taken as they are).
    pooling : tuple of tuple of int, optional
        Down-sampling factor per level (``depth`` entries) and axis, 1 or 2. None: 2 on
        every axis. Anisotropic volumes pool only in y/x until the voxels are about
        isotropic (see :func:`anisotropic_layout`).
    kernels : tuple of tuple of int, optional
        Convolution kernel per level (``depth + 1`` entries, the last one the bottom) and
        axis, 1 or 3. None: 3 on every axis. A 1 along z makes a "flat" level that
        convolves only in y/x.
    """

    ndim: int = 2
    in_channels: int = 1
    mode: Mode = "distance"
    base_channels: int = 16
    depth: int = 3
    norm: Norm = "batch"
    voxel_size: tuple[float, ...] | None = None
    pooling: tuple[tuple[int, ...], ...] | None = None
    kernels: tuple[tuple[int, ...], ...] | None = None

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
        if self.voxel_size is not None:
            self.voxel_size = check_voxel_size(self.voxel_size, self.ndim)
        self.pooling = _per_level("pooling", self.pooling, self.depth, self.ndim, (1, 2))
        self.kernels = _per_level("kernels", self.kernels, self.depth + 1, self.ndim, (1, 3))

    @property
    def out_channels(self) -> int:
        """Raw output channels of the network."""
        return 3 if self.mode == "boundary" else 2

    @property
    def level_pooling(self) -> tuple[tuple[int, ...], ...]:
        """Down-sampling factor per level and axis (2 everywhere unless ``pooling`` says)."""
        return self.pooling or ((2,) * self.ndim,) * self.depth

    @property
    def level_kernels(self) -> tuple[tuple[int, ...], ...]:
        """Convolution kernel per level (bottom included) and axis."""
        return self.kernels or ((3,) * self.ndim,) * (self.depth + 1)

    @property
    def size_multiples(self) -> tuple[int, ...]:
        """Per spatial axis, sizes fed to the network must be multiples of this."""
        return tuple(
            math.prod(level[axis] for level in self.level_pooling) for axis in range(self.ndim)
        )

    @property
    def size_multiple(self) -> int:
        """The largest of :attr:`size_multiples` (``2 ** depth`` for isotropic networks)."""
        return max(self.size_multiples)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("voxel_size", "pooling", "kernels"):
            value = getattr(self, key)
            d[key] = None if value is None else _as_lists(value)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return _from_dict(cls, data)


def _as_lists(value: Any) -> Any:
    return [_as_lists(v) for v in value] if isinstance(value, tuple | list) else value


def check_voxel_size(voxel_size: Any, ndim: int) -> tuple[float, ...]:
    """``voxel_size`` as a tuple of ``ndim`` positive finite floats.

    Raises
    ------
    ValueError
        Naming the value and what is expected (one positive size per spatial axis).
    """
    axes = "Z,Y,X" if ndim == 3 else "Y,X"
    try:
        sizes = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError):
        raise ValueError(
            f"voxel size must be {ndim} numbers ({axes}), got {voxel_size!r}"
        ) from None
    if len(sizes) != ndim:
        raise ValueError(
            f"voxel size must give {ndim} numbers ({axes}) for {ndim}D images, "
            f"got {len(sizes)}: {voxel_size!r}"
        )
    if not all(0 < v < math.inf for v in sizes):
        raise ValueError(f"voxel size must be positive finite numbers ({axes}), got {voxel_size!r}")
    return sizes


def _per_level(
    name: str, value: Any, levels: int, ndim: int, allowed: tuple[int, ...]
) -> tuple[tuple[int, ...], ...] | None:
    """Validate a per-level, per-axis table read from a file or given by a caller."""
    if value is None:
        return None
    try:
        table = tuple(tuple(v for v in level) for level in value)
    except TypeError:
        raise ValueError(f"{name} must be a list of per-axis lists, got {value!r}") from None
    if len(table) != levels or any(
        len(level) != ndim
        or any(isinstance(v, bool) or not isinstance(v, int) or v not in allowed for v in level)
        for level in table
    ):
        raise ValueError(
            f"{name} must hold {levels} levels of {ndim} values from {allowed}, got {value!r}"
        )
    return table


def anisotropic_layout(
    voxel_size: tuple[float, ...], depth: int
) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
    """Pooling and kernels that make a U-net see anisotropic voxels as about isotropic.

    The rule nnU-Net uses: at each level, an axis whose voxels are two or more times
    coarser than the finest axis is neither pooled nor convolved across (kernel 1); the
    other axes are pooled by 2, so their voxels grow until all axes are about equal, and
    from there on the levels are fully 3D.

    Parameters
    ----------
    voxel_size : tuple of float
        Physical voxel size per axis.
    depth : int
        Down-sampling steps.

    Returns
    -------
    pooling, kernels
        ``depth`` per-axis pooling factors and ``depth + 1`` per-axis kernel sizes.

    Examples
    --------
    >>> anisotropic_layout((5.0, 1.0, 1.0), 3)[0]
    ((1, 2, 2), (1, 2, 2), (2, 2, 2))
    """
    spacing = list(voxel_size)
    pooling, kernels = [], []
    for level in range(depth + 1):
        finest = min(spacing)
        coarse = [s / finest >= 2.0 for s in spacing]
        kernels.append(tuple(1 if c else 3 for c in coarse))
        if level < depth:
            pool = tuple(1 if c else 2 for c in coarse)
            pooling.append(pool)
            spacing = [s * p for s, p in zip(spacing, pool, strict=True)]
    return tuple(pooling), tuple(kernels)


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
    """Which augmentations are applied to training patches.

    ``colour`` mixes the channels of a multi-channel patch with a random matrix whose
    off-diagonal weights are up to ``colour`` (stain and filter changes between images);
    ``blur`` is the fraction of patches blurred or sharpened by a random Gaussian (focus
    and scanner differences). Both are off for a standard run and on in the few-shot recipe.
    """

    flips: bool = True
    rot90: bool = True
    rotate_scale: bool = True
    max_rotation_deg: float = 20.0
    scale_range: tuple[float, float] = (0.8, 1.25)
    intensity: bool = True
    noise_std: float = 0.03
    colour: float = 0.0
    blur: float = 0.0

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

    ``validation`` says how validation data is held out when none is given: whole
    ``images`` (``val_fraction`` of them) or ``regions`` (a band of ``val_fraction`` of
    every image). ``select_by`` is what the kept checkpoint is best at: validation ``loss``
    or ``ap``. ``freeze_norm`` keeps a starting model's batch-norm statistics. ``recipe``
    ``auto`` switches these to the few-shot recipe for small data, ``few-shot`` always,
    ``standard`` never (see :func:`~napari_live_unet.engine.recipe.choose_recipe`).
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
    validation: str = "images"
    select_by: str = "loss"
    freeze_norm: bool = False
    recipe: str = "auto"

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
        if self.validation not in ("images", "regions"):
            raise ValueError(f"validation must be 'images' or 'regions', got {self.validation!r}")
        if self.recipe not in ("auto", "few-shot", "standard"):
            raise ValueError(
                f"recipe must be 'auto', 'few-shot' or 'standard', got {self.recipe!r}"
            )
        if self.select_by not in ("loss", "ap"):
            raise ValueError(f"select_by must be 'loss' or 'ap', got {self.select_by!r}")

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


def recommended_settings(device_type: str, ndim: int = 2) -> dict[str, int]:
    """Model size, patch and batch that suit a device type (``cpu``, ``cuda`` or ``mps``).

    On a CPU every step counts (a 300 s budget sees only ~25k patches on two cores), so a
    narrow net that trains fast wins; a GPU affords a wider, deeper net and larger batches.
    In 3D a patch holds a stack of slices, so its y/x edge is halved and batches are
    smaller: 16x64x64 patches in batches of 4 keep a CPU at many steps per second. Patches
    are further capped by the images' own size (see
    :func:`~napari_live_unet.engine.sizes.training_patch_shape`).
    """
    kind = "cpu" if device_type == "cpu" else "gpu"
    return dict(_RECOMMENDED[(kind, 3 if ndim == 3 else 2)])


# (device kind, ndim) -> settings; see recommended_settings.
_RECOMMENDED: dict[tuple[str, int], dict[str, int]] = {
    ("cpu", 2): {"base_channels": 8, "depth": 3, "patch_size": 128, "batch_size": 8},
    ("cpu", 3): {
        "base_channels": 8,
        "depth": 3,
        "patch_size": 64,
        "patch_size_z": 16,
        "batch_size": 4,
    },
    ("gpu", 2): {"base_channels": 32, "depth": 4, "patch_size": 256, "batch_size": 32},
    ("gpu", 3): {
        "base_channels": 32,
        "depth": 4,
        "patch_size": 128,
        "patch_size_z": 32,
        "batch_size": 4,
    },
}
