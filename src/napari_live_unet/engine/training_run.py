"""One training run's set-up and state: data fitted to the model, sampler, optimiser.

:func:`set_up` turns the arguments of :func:`~napari_live_unet.engine.train.train` into a
:class:`TrainingRun`; the loop in ``train.py`` then only steps, validates and checkpoints.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import torch

from .config import (
    ModelConfig,
    NormalizationConfig,
    PostprocessConfig,
    TrainConfig,
    anisotropic_layout,
    check_voxel_size,
)
from .data import TrainingPair, split_regions, split_validation
from .device import autocast, autocast_dtype, resolve_device
from .distributed import DistributedContext, common_seed, rank_seed, wrap
from .errors import InputError
from .image_adapter import Adaptation, AdaptOptions, channel_weights
from .losses import boundary_class_weights, segmentation_loss
from .memory_estimate import VALIDATION_CHUNK, check_training_memory
from .model import SegmentationModel
from .recipe import RecipeChoice, choose_recipe
from .sampler import PatchSampler
from .sizes import training_patch_shape
from .training_input import fit_training_data
from .unet import memory_format, widen_input

MAX_VAL_PATCHES = 64


class StopReason(str, Enum):
    """Why the training loop ended (``TrainingFinished.reason``)."""

    FINISHED = "finished"
    TIME_BUDGET = "time budget reached"
    STOPPED = "stopped"
    EARLY_STOPPING = "early stopping"

    def __str__(self) -> str:
        return self.value


@dataclass
class TrainingRun:
    """One training run: what is fixed at set-up, and what changes step by step."""

    model: SegmentationModel
    network: torch.nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]  # the network, compiled or not
    optimizer: torch.optim.Optimizer
    sampler: PatchSampler
    val_pairs: list[TrainingPair]
    val_patches: list
    config: TrainConfig
    device: torch.device
    amp_dtype: torch.dtype | None
    class_weights: torch.Tensor | None
    generator: torch.Generator
    batch_size: int
    patch_shape: tuple[int, ...] = ()
    recipe: RecipeChoice | None = None
    start_time: float = field(default_factory=time.perf_counter)
    step: int = 0
    epoch: int = 0
    learning_rate: float = 0.0
    best_loss: float = math.inf
    best_monitored: float = math.inf  # what the checkpoint minimises (see train._monitored)
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    last_step_event: float = 0.0
    skipped_steps: int = 0
    distributed: DistributedContext | None = None
    # Multi-process runs: rank 0's elapsed seconds, agreed before each step, so that every
    # rank follows the same time budget and learning-rate schedule.
    shared_elapsed: float | None = None
    # A re-run of a recorded run that a time budget or a stop ended: exactly these steps,
    # at these learning rates (see run_replay); None: the schedule of ``config``.
    fixed_rates: tuple[float, ...] | None = None
    rates: list[float] = field(default_factory=list)  # of each step taken, for the record

    @property
    def is_main(self) -> bool:
        """Whether this process validates and reports (always, unless multi-process)."""
        return self.distributed is None or self.distributed.is_main

    @property
    def world_size(self) -> int:
        return 1 if self.distributed is None else self.distributed.world_size

    @property
    def mode(self) -> str:
        return self.model.config.mode

    @property
    def categorical(self) -> tuple[bool, ...]:
        """Which target channels are class indices (resampled with nearest neighbour)."""
        return (True,) if self.mode == "boundary" else (True, False)

    @property
    def total_steps(self) -> int | None:
        return self.config.epochs * self.config.steps_per_epoch if self.config.epochs else None

    def progress(self) -> float:
        """Fraction of the schedule done: by steps, by time, or whichever is further."""
        if self.fixed_rates is not None:
            return min(1.0, self.step / len(self.fixed_rates))
        fractions = []
        if self.total_steps:
            fractions.append(self.step / self.total_steps)
        if self.config.time_budget:
            elapsed = self.shared_elapsed
            if elapsed is None:
                elapsed = time.perf_counter() - self.start_time
            fractions.append(elapsed / self.config.time_budget)
        return min(1.0, max(fractions))

    def validation_loss(self) -> float | None:
        return patch_loss(
            self.network,
            self.val_patches,
            self.mode,
            self.class_weights,
            self.amp_dtype,
            self.device,
        )


def set_up(
    pairs,
    config,
    model_config,
    val_pairs,
    initial_model,
    device,
    adapt,
    distributed: DistributedContext | None = None,
    learning_rates: tuple[float, ...] | None = None,
) -> tuple[TrainingRun, Adaptation]:
    """Check and fit the data, build the model, sampler and optimiser: the run's start.

    With ``distributed``, each rank draws its own patches and trains the network in DDP.
    With ``learning_rates``, the run takes exactly those steps at those rates.
    """
    if learning_rates is not None and not learning_rates:
        raise InputError("a replayed run needs at least one recorded step")
    device = resolve_device(device)
    rank = 0
    if distributed is not None:
        device, rank = distributed.device, distributed.rank
        config = dataclasses.replace(config, seed=common_seed(config.seed, distributed))
    if not pairs:
        raise InputError("no training data: give at least one image with labels")
    config, adapt, recipe = choose_recipe(
        config,
        pairs,
        validation_given=val_pairs is not None,
        adapt=adapt,
        model_channels=None if initial_model is None else initial_model.config.in_channels,
    )
    # Before the network, its optimiser or a patch is allocated: refuse settings that cannot
    # fit, instead of being killed by the operating system (issue 11, item 6).
    planned = (
        initial_model.config
        if initial_model is not None
        else _new_config(pairs, model_config, adapt)
    )
    # Sizes from the data: a patch no larger than the largest image (issue 12, item 1).
    given = [p.spatial_shape for p in [*pairs, *(val_pairs or [])]]
    patch = training_patch_shape(
        config.patch_size, config.patch_size_z, planned.ndim, planned.size_multiples, given
    )
    check_training_memory(planned, config, device, patch=patch)
    if config.seed is not None:
        torch.manual_seed(config.seed)
    if val_pairs is None and config.validation == "regions":
        pairs, val_pairs = split_regions(pairs, config.val_fraction)
    elif val_pairs is None:
        pairs, val_pairs = split_validation(pairs, config.val_fraction, config.seed)
    val_pairs = list(val_pairs)
    fine_tuning = initial_model is not None
    model = _initial_model(pairs, model_config, initial_model, device, adapt)
    mode, ndim = model.config.mode, model.config.ndim
    for p in [*pairs, *val_pairs]:
        if p.labels.ndim != ndim:
            raise InputError(
                f"{p.name}: {p.labels.ndim}D labels, but the model segments {ndim}D images"
            )
    pairs, val_pairs, model.input, fitted = fit_training_data(
        pairs,
        val_pairs,
        model.input,
        model.config.in_channels,
        adapt,
        fine_tuning=fine_tuning,
        voxel_size=model.config.voxel_size,
    )
    # Fitting may zoom or resample the images: the patch follows their new sizes, capped
    # at the one whose memory was checked.
    fitted_patch = training_patch_shape(
        config.patch_size,
        config.patch_size_z,
        ndim,
        model.config.size_multiples,
        [p.spatial_shape for p in [*pairs, *val_pairs]],
    )
    patch = tuple(min(a, b) for a, b in zip(patch, fitted_patch, strict=True))
    if pairs and pairs[0].image.shape[0] != model.config.in_channels:  # all_channels
        n = pairs[0].image.shape[0]
        weights = torch.from_numpy(channel_weights(n, is_rgb=n in (3, 4)))
        model.network = widen_input(model.network, weights)
        model.config = model.network.config
    config = config.resolved(fine_tuning=fine_tuning)
    assert config.learning_rate is not None  # resolved() fills it in
    seed = rank_seed(config.seed, rank)
    sampler = PatchSampler(
        pairs, mode, patch, device, model.normalization, config.foreground_sampling, seed
    )
    val_patches = (
        PatchSampler(val_pairs, mode, patch, device, model.normalization).grid_patches(
            MAX_VAL_PATCHES
        )
        if val_pairs
        else []
    )
    # Module.to's overloads omit the memory_format keyword that it accepts and documents.
    network = model.network.to(memory_format=memory_format(ndim))  # pyright: ignore[reportCallIssue]
    trained = network if distributed is None else wrap(network, distributed)
    run = TrainingRun(
        model=model,
        network=network,
        forward=torch.compile(trained) if config.compile and device.type == "cuda" else trained,
        optimizer=torch.optim.AdamW(
            network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        ),
        sampler=sampler,
        val_pairs=val_pairs,
        val_patches=val_patches,
        config=config,
        device=device,
        amp_dtype=autocast_dtype(device) if config.mixed_precision else None,
        class_weights=_class_weights(sampler, device) if mode == "boundary" else None,
        generator=torch.Generator().manual_seed(seed if seed is not None else 0),
        batch_size=config.batch_size,
        patch_shape=patch,
        recipe=recipe,
        distributed=distributed,
        fixed_rates=None if learning_rates is None else tuple(learning_rates),
    )
    return run, fitted


def state_copy(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return copy.deepcopy({k: v.detach().cpu() for k, v in network.state_dict().items()})


def _initial_model(pairs, model_config, initial_model, device, adapt) -> SegmentationModel:
    if initial_model is not None:
        model = copy.deepcopy(initial_model)
        model.history = list(initial_model.history)
        model.info = {}  # a fine-tuned model is no longer the one described
        return model.to(device)
    return SegmentationModel.create(
        _new_config(pairs, model_config, adapt),
        normalization=NormalizationConfig(),
        postprocess=PostprocessConfig(),
    ).to(device)


def _new_config(pairs, model_config: ModelConfig | None, adapt: AdaptOptions) -> ModelConfig:
    """The architecture of a model trained from scratch on ``pairs``.

    It records the data's voxel size (the user's, else the first image's); for anisotropic
    volumes its first levels are flat (see :func:`anisotropic_layout`) unless
    ``model_config`` sets its own pooling.
    """
    channels = 1 if adapt.channel is not None else pairs[0].image.shape[0]
    model_config = model_config or ModelConfig(ndim=pairs[0].labels.ndim, in_channels=channels)
    if adapt.channel is not None and model_config.in_channels != 1:
        model_config = dataclasses.replace(model_config, in_channels=1)
    voxel_size = adapt.voxel_size or pairs[0].voxel_size
    if voxel_size is None or model_config.voxel_size is not None:
        return model_config
    try:
        voxel_size = check_voxel_size(voxel_size, model_config.ndim)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    layout: dict = {}
    if model_config.pooling is None and model_config.kernels is None:
        pooling, kernels = anisotropic_layout(voxel_size, model_config.depth)
        if any(1 in level for level in pooling):
            layout = {"pooling": pooling, "kernels": kernels}
    return dataclasses.replace(model_config, voxel_size=voxel_size, **layout)


def _class_weights(sampler: PatchSampler, device: torch.device) -> torch.Tensor:
    counts = torch.zeros(3)
    for item in sampler.items:
        classes = item.targets[0].long().flatten().cpu()
        counts += torch.bincount(classes[item.mask.flatten().cpu() > 0], minlength=3)[:3]
    return boundary_class_weights(counts).to(device)


def patch_loss(network, patches, mode, class_weights, amp_dtype, device) -> float | None:
    """Masked loss over fixed (image, targets, mask) patches, weighted by annotated pixels;
    None without patches."""
    if not patches:
        return None
    network.eval()
    total, weight = 0.0, 0.0
    with torch.inference_mode():
        for i in range(0, len(patches), VALIDATION_CHUNK):
            chunk = patches[i : i + VALIDATION_CHUNK]
            image = torch.stack([c[0] for c in chunk])
            image = image.contiguous(memory_format=memory_format(image.ndim - 2))
            targets = torch.stack([c[1] for c in chunk])
            mask = torch.stack([c[2] for c in chunk])
            with autocast(device, amp_dtype):
                raw = network(image)
            n = float(mask.sum())
            total += float(segmentation_loss(raw, targets, mask, mode, class_weights)) * n
            weight += n
    network.train()
    return total / max(weight, 1e-9)
