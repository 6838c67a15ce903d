"""Configuration dataclasses shared by training, prediction and model files.

Each is a frozen value that checks every field when it is made, by a caller or from a
model file or run record (a ValueError names the field, its value and what is allowed); a
changed copy is made with :func:`dataclasses.replace`. ``to_dict`` and ``from_dict`` are
derived from the fields (see :mod:`.config_fields`). Device presets for model size, patch
and batch are in :mod:`.presets`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .config_fields import (
    ConfigValue,
    check_fields,
    choice,
    flag,
    instance_of,
    integer,
    number_pair,
    real,
)

Mode = Literal["boundary", "distance"]
Norm = Literal["batch", "group", "instance", "none"]
MODES: tuple[str, ...] = ("boundary", "distance")
NORMS: tuple[str, ...] = ("batch", "group", "instance", "none")
_VALIDATIONS = ("images", "regions")
_SELECT_BY = ("loss", "ap")
RECIPES: tuple[str, ...] = ("auto", "few-shot", "standard")
"""The training recipes ``TrainConfig.recipe`` names (see :mod:`.recipe`)."""


@dataclass(frozen=True)
class ModelConfig(ConfigValue):
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
        # Sizes bounded so a crafted or damaged file cannot make a network that fills memory.
        # In this order: the last three read ndim and depth, checked before them.
        check_fields(
            self,
            {
                "ndim": _spatial_dims,
                "mode": choice(MODES),
                "norm": choice(NORMS),
                "depth": integer(1, 8),
                "base_channels": integer(1, 512),
                "in_channels": integer(1, 64),
                "voxel_size": lambda _, v: None if v is None else check_voxel_size(v, self.ndim),
                "pooling": lambda name, v: _per_level(name, v, self.depth, self.ndim, (1, 2)),
                "kernels": lambda name, v: _per_level(name, v, self.depth + 1, self.ndim, (1, 3)),
            },
        )

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


def _spatial_dims(name: str, value: Any) -> int:
    if isinstance(value, bool) or value not in (2, 3):
        raise ValueError(f"{name} must be 2 or 3, got {value!r}")
    return int(value)


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


@dataclass(frozen=True)
class PostprocessConfig(ConfigValue):
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

    def __post_init__(self) -> None:
        # Outputs are probabilities and a normalised distance: thresholds lie in [0, 1].
        check_fields(
            self,
            {
                "fg_threshold": real(0, 1),
                "seed_threshold": real(0, 1),
                "min_size": integer(0),
                "seed_prominence": real(0, 1),
                "smoothing": real(0),
            },
        )


@dataclass(frozen=True)
class NormalizationConfig(ConfigValue):
    """Percentile normalisation applied per image and channel: ``low_percentile`` maps to 0
    and ``high_percentile`` to 1 (percentiles from 0 to 100, the low one below the high)."""

    low_percentile: float = 1.0
    high_percentile: float = 99.8

    def __post_init__(self) -> None:
        check_fields(self, {"low_percentile": real(0, 100), "high_percentile": real(0, 100)})
        if self.low_percentile >= self.high_percentile:
            raise ValueError(
                f"low_percentile must be below high_percentile, got {self.low_percentile!r} "
                f"and {self.high_percentile!r}"
            )


@dataclass(frozen=True)
class AugmentConfig(ConfigValue):
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

    def __post_init__(self) -> None:
        check_fields(
            self,
            {
                "flips": flag,
                "rot90": flag,
                "rotate_scale": flag,
                "max_rotation_deg": real(0, 180),
                "scale_range": number_pair(0, low_open=True),
                "intensity": flag,
                "noise_std": real(0),
                "colour": real(0, 1),
                "blur": real(0, 1),
            },
        )


@dataclass(frozen=True)
class TrainConfig(ConfigValue):
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

    ``patch_size`` is the wanted patch edge in y/x, ``patch_size_z`` in z (volumes only);
    :meth:`wanted_patch_shape` gives them per axis. They stay two fields because run
    records and model files store them so, and the CLI and the dock set them so.
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
        check_fields(
            self,
            {
                "epochs": integer(1, optional=True),
                "time_budget": real(0, low_open=True, optional=True),
                "steps_per_epoch": integer(1),
                "batch_size": integer(1),
                "patch_size": integer(8),
                "patch_size_z": integer(1),
                "learning_rate": real(0, low_open=True, optional=True),
                "weight_decay": real(0),
                "warmup_fraction": real(0, 1, high_open=True, optional=True),
                "val_fraction": real(0, 1, high_open=True),
                "val_ap_every": integer(0),  # 0: never during training
                "early_stopping_patience": integer(0, optional=True),
                "seed": integer(0, optional=True),
                "mixed_precision": flag,
                "compile": flag,
                "foreground_sampling": real(0, 1),
                "tune_thresholds": flag,
                "val_ap_max_pixels": integer(1),
                "tune_max_pixels": integer(1),
                "augment": instance_of(AugmentConfig),
                "validation": choice(_VALIDATIONS),
                "select_by": choice(_SELECT_BY),
                "freeze_norm": flag,
                "recipe": choice(RECIPES),
            },
        )
        if self.epochs is None and self.time_budget is None:
            raise ValueError("set epochs, time_budget, or both")

    def wanted_patch_shape(self, ndim: int) -> tuple[int, ...]:
        """The wanted training patch per spatial axis, ``(y, x)`` or ``(z, y, x)``.

        Training caps it further by the images' size and rounds it to the network's size
        multiples (see :func:`~napari_live_unet.engine.sizes.training_patch_shape`).
        """
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
        edge = (self.patch_size, self.patch_size)
        return edge if ndim == 2 else (self.patch_size_z, *edge)

    def resolved(self, *, fine_tuning: bool) -> TrainConfig:
        """A copy with automatic settings (None) filled in for scratch or fine-tuning runs."""
        lr, warmup = (1e-3, 0.02) if fine_tuning else (3e-3, 0.05)
        return replace(
            self,
            learning_rate=lr if self.learning_rate is None else self.learning_rate,
            warmup_fraction=warmup if self.warmup_fraction is None else self.warmup_fraction,
        )
