"""The training loop, written as a generator of typed events."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import torch

from .augment import augment_batch
from .config import ModelConfig, NormalizationConfig, PostprocessConfig, TrainConfig
from .data import TrainingPair, split_validation
from .device import autocast, autocast_dtype, resolve_device
from .errors import InputError
from .evaluation import CachedValidation, limit_pixels, tune_postprocess, tuning_score
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
from .image_adapter import AdaptOptions, channel_weights
from .losses import boundary_class_weights, segmentation_loss
from .model import SegmentationModel
from .sampler import PatchSampler
from .training_input import fit_training_data
from .unet import count_parameters, memory_format, widen_input

_STEP_EVENT_SECONDS = 0.25  # yield a StepEnd at most this often
_MAX_VAL_PATCHES = 64


def learning_rate_at(progress: float, base: float, warmup: float) -> float:
    """Linear warm-up over ``warmup`` of training, then cosine decay to 2% of ``base``."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return base * (0.05 + 0.95 * progress / warmup)
    t = (progress - warmup) / max(1e-9, 1.0 - warmup)
    return base * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * t)))


def train(
    pairs: Sequence[TrainingPair],
    config: TrainConfig | None = None,
    *,
    model_config: ModelConfig | None = None,
    val_pairs: Sequence[TrainingPair] | None = None,
    initial_model: SegmentationModel | None = None,
    device: str | torch.device = "auto",
    should_stop: Callable[[], bool] | None = None,
    preview: Callable[[], tuple[Any, ...] | None] | None = None,
    preview_every: int = 1,
    adapt: AdaptOptions | None = None,
) -> Generator[TrainingEvent, None, SegmentationModel]:
    """Train a model, yielding progress events; the generator returns the best model.

    Parameters
    ----------
    pairs : sequence of TrainingPair
        Training data (see :func:`~napari_live_unet.engine.data.make_pair`).
    config : TrainConfig, optional
        Schedule, batch, patch and augmentation settings.
    model_config : ModelConfig, optional
        Architecture for a new model; ignored when ``initial_model`` is given.
    val_pairs : sequence of TrainingPair, optional
        Validation data; if omitted, ``config.val_fraction`` of ``pairs`` is held out.
    initial_model : SegmentationModel, optional
        Fine-tune (continue training) this model instead of starting from scratch. It is
        scored on the validation data first (reported as epoch 0) and stays the result
        unless training beats it on validation.
    device : str or torch.device
        ``auto``, ``cpu``, ``cuda`` or ``mps``.
    should_stop : callable() -> bool, optional
        Polled before every step. When it returns True, training ends at that step, the
        best weights so far are kept and the generator still returns a usable model.
    preview : callable() -> (image, key[, intensity_range]) or None, optional
        Called every ``preview_every`` epochs; the image (spatial shape, or channel-first)
        is segmented with the current weights and a ``PreviewReady`` event carries the
        outputs, the labels and ``key`` back. An optional (low, high) intensity range
        normalises a crop like its whole image. Returning None skips that preview.
    preview_every : int
        Epochs between previews.
    adapt : AdaptOptions, optional
        Channel, polarity and object diameter of the training images (default: decided
        from the data and the annotations). The decisions are announced in a ``Notice``
        and stored in the model, so prediction fits new images the same way.

    Yields
    ------
    TrainingEvent
        ``TrainingStarted``, then ``StepEnd``/``EpochEnd``/``ValidationMetrics``/``Notice``
        as training goes, ``ThresholdsChosen`` and finally ``TrainingFinished``.
    """
    config = config or TrainConfig()
    run, fitted = _set_up(pairs, config, model_config, val_pairs, initial_model, device, adapt)
    yield TrainingStarted(
        len(run.sampler.items),
        len(run.val_pairs),
        str(run.device),
        count_parameters(run.network),
        run.config.epochs,
        run.config.time_budget,
    )
    yield Notice(f"Training images: {fitted.describe()}")
    start_model = copy.deepcopy(run.model) if initial_model is not None else None
    if start_model is not None:
        if run.val_patches:
            yield from _score_start(run)
        else:
            yield Notice(
                "No validation data: the starting model cannot be scored, so the result is "
                "the fine-tuned model as it ends."
            )
    reason = yield from _run_epochs(run, should_stop, preview, preview_every)
    kept_start = yield from _finish(run, start_model)
    yield TrainingFinished(
        run.model,
        reason,
        run.epoch,
        run.step,
        time.perf_counter() - run.start_time,
        None if math.isinf(run.best_loss) else run.best_loss,
        kept_start=kept_start,
    )
    return run.model


class StopReason(str, Enum):
    """Why the training loop ended (``TrainingFinished.reason``)."""

    FINISHED = "finished"
    TIME_BUDGET = "time budget reached"
    STOPPED = "stopped"
    EARLY_STOPPING = "early stopping"

    def __str__(self) -> str:
        return self.value


@dataclass
class _Run:
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
    start_time: float = field(default_factory=time.perf_counter)
    step: int = 0
    epoch: int = 0
    learning_rate: float = 0.0
    best_loss: float = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    last_step_event: float = 0.0

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
        fractions = []
        if self.total_steps:
            fractions.append(self.step / self.total_steps)
        if self.config.time_budget:
            fractions.append((time.perf_counter() - self.start_time) / self.config.time_budget)
        return min(1.0, max(fractions))

    def validation_loss(self) -> float | None:
        return _validation_loss(
            self.network,
            self.val_patches,
            self.mode,
            self.class_weights,
            self.amp_dtype,
            self.device,
        )


def _set_up(pairs, config, model_config, val_pairs, initial_model, device, adapt):
    """Check and fit the data, build the model, sampler and optimiser: the run's start."""
    device = resolve_device(device)
    if not pairs:
        raise InputError("no training data: give at least one image with labels")
    if config.seed is not None:
        torch.manual_seed(config.seed)
    if val_pairs is None:
        pairs, val_pairs = split_validation(pairs, config.val_fraction, config.seed)
    val_pairs = list(val_pairs)
    adapt = adapt or AdaptOptions()
    fine_tuning = initial_model is not None
    model = _initial_model(pairs, model_config, initial_model, device, adapt)
    mode, ndim = model.config.mode, model.config.ndim
    for p in [*pairs, *val_pairs]:
        if p.labels.ndim != ndim:
            raise InputError(
                f"{p.name}: {p.labels.ndim}D labels, but the model segments {ndim}D images"
            )
    pairs, val_pairs, model.input, fitted = fit_training_data(
        pairs, val_pairs, model.input, model.config.in_channels, adapt, fine_tuning=fine_tuning
    )
    if pairs and pairs[0].image.shape[0] != model.config.in_channels:  # all_channels
        n = pairs[0].image.shape[0]
        weights = torch.from_numpy(channel_weights(n, is_rgb=n in (3, 4)))
        model.network = widen_input(model.network, weights)
        model.config = model.network.config
    config = config.resolved(fine_tuning=fine_tuning)
    patch = _patch_shape(config, ndim, model.config.size_multiple)
    sampler = PatchSampler(
        pairs, mode, patch, device, model.normalization, config.foreground_sampling, config.seed
    )
    val_patches = (
        PatchSampler(val_pairs, mode, patch, device, model.normalization).grid_patches(
            _MAX_VAL_PATCHES
        )
        if val_pairs
        else []
    )
    network = model.network.to(memory_format=memory_format(ndim))
    run = _Run(
        model=model,
        network=network,
        forward=torch.compile(network) if config.compile and device.type == "cuda" else network,
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
        generator=torch.Generator().manual_seed(config.seed if config.seed is not None else 0),
        batch_size=config.batch_size,
    )
    return run, fitted


def _run_epochs(run: _Run, should_stop, preview, preview_every) -> Generator:
    """Epochs until the schedule, a stop request or early stopping ends them."""
    config = run.config
    while True:
        run.epoch += 1
        losses, samples, stopped, seconds = yield from _epoch(run, should_stop)
        if not losses:
            run.epoch -= 1
            return StopReason.STOPPED if stopped else _schedule_reason(run)
        yield from _end_of_epoch(run, losses, samples, seconds)
        if preview is not None and run.epoch % max(1, preview_every) == 0:
            event = _preview(run.model, preview, run.epoch)
            if event is not None:
                yield event
        if stopped:
            return StopReason.STOPPED
        if run.progress() >= 1.0:
            return _schedule_reason(run)
        if config.early_stopping_patience and run.bad_epochs >= config.early_stopping_patience:
            yield Notice(f"Validation loss has not improved for {run.bad_epochs} epochs; stopping.")
            return StopReason.EARLY_STOPPING


def _schedule_reason(run: _Run) -> StopReason:
    if run.config.time_budget and (not run.total_steps or run.step < run.total_steps):
        return StopReason.TIME_BUDGET
    return StopReason.FINISHED


def _epoch(run: _Run, should_stop) -> Generator:
    """Up to ``steps_per_epoch`` optimiser steps; returns (losses, samples, stopped, seconds)."""
    run.network.train()
    losses: list[torch.Tensor] = []
    samples, started = 0, time.perf_counter()
    for _ in range(run.config.steps_per_epoch):
        if should_stop is not None and should_stop():
            return losses, samples, True, time.perf_counter() - started
        if run.progress() >= 1.0:
            break
        run.learning_rate = learning_rate_at(
            run.progress(), run.config.learning_rate, run.config.warmup_fraction
        )
        for group in run.optimizer.param_groups:
            group["lr"] = run.learning_rate
        try:
            loss = _step(run)
        except torch.cuda.OutOfMemoryError:
            if run.batch_size == 1:
                raise
            torch.cuda.empty_cache()
            run.optimizer.zero_grad(set_to_none=True)
            run.batch_size = max(1, run.batch_size // 2)
            yield Notice(f"CUDA out of memory; continuing with batch size {run.batch_size}")
            continue
        run.step += 1
        losses.append(loss)
        samples += run.batch_size
        now = time.perf_counter()
        if now - run.last_step_event >= _STEP_EVENT_SECONDS:
            run.last_step_event = now
            yield StepEnd(
                run.epoch,
                run.step,
                float(loss),
                run.learning_rate,
                now - run.start_time,
                run.progress(),
            )
    return losses, samples, False, time.perf_counter() - started


def _end_of_epoch(run: _Run, losses, samples: int, seconds: float) -> Generator:
    """Validation loss, checkpoint of the best weights, the epoch's record and events."""
    val_loss = run.validation_loss()
    train_loss = float(torch.stack(losses).mean())
    monitored = val_loss if val_loss is not None else train_loss
    is_best = monitored < run.best_loss
    if is_best:
        run.best_loss, run.bad_epochs = monitored, 0
        run.best_state = _state_copy(run.network)
    else:
        run.bad_epochs += 1
    record = {
        "epoch": run.epoch,
        "step": run.step,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "learning_rate": run.learning_rate,
        "elapsed": time.perf_counter() - run.start_time,
        "samples_per_second": samples / max(1e-9, seconds),
    }
    run.model.history.append(record)
    yield EpochEnd(
        run.epoch,
        run.step,
        train_loss,
        val_loss,
        run.learning_rate,
        record["elapsed"],
        record["samples_per_second"],
        run.progress(),
        is_best,
    )
    if run.val_pairs and run.config.val_ap_every and run.epoch % run.config.val_ap_every == 0:
        ap = _validation_ap(run.model, run.val_pairs, run.config)
        record["val_ap"] = {str(k): v for k, v in ap.items()}
        yield ValidationMetrics(run.epoch, ap, time.perf_counter() - run.start_time)


def _finish(run: _Run, start_model: SegmentationModel | None) -> Generator:
    """Restore the best weights, tune thresholds, and keep the starting model if it was
    at least as good; returns whether it was kept."""
    best_state = run.best_state
    kept_start = (
        start_model is not None
        and best_state is not None
        and (run.epoch == 0 or _same_weights(best_state, start_model))
    )
    if best_state is not None:
        run.network.load_state_dict(best_state)
    run.network.eval()
    run.model.train_config = run.config.to_dict()
    if run.val_pairs and run.config.tune_thresholds and best_state is not None:
        tune_pairs = limit_pixels(run.val_pairs, run.config.tune_max_pixels)
        yield Notice(
            f"Choosing post-processing thresholds on {len(tune_pairs)} validation image(s)..."
        )
        params, counts, score = _tuned(run.model, tune_pairs)
        if start_model is not None and not kept_start:
            start_params, start_counts, start_score = _tuned(start_model, tune_pairs)
            if start_score >= score:
                run.network.load_state_dict(_state_copy(start_model.network))
                params, counts, kept_start = start_params, start_counts, True
        run.model.postprocess = params
        yield ThresholdsChosen(params.to_dict(), {c.threshold: c.ap for c in counts})
    if kept_start:
        yield Notice(
            "Kept the starting model: fine-tuning did not improve validation AP "
            "(its thresholds and input settings now fit your images)."
        )
    return kept_start


def _state_copy(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return copy.deepcopy({k: v.detach().cpu() for k, v in network.state_dict().items()})


def _same_weights(state: dict[str, torch.Tensor], model: SegmentationModel) -> bool:
    start = model.network.state_dict()
    return all(torch.equal(v, start[k].detach().cpu()) for k, v in state.items())


def _tuned(model: SegmentationModel, pairs) -> tuple[PostprocessConfig, list, float]:
    """Thresholds tuned on ``pairs``, the AP counts they give, and the tuning score.

    The model's own thresholds are kept unless the tuned ones score better by at least one
    object's worth of AP (1 / number of validation objects): on a validation set of a few
    dozen objects, smaller gains are noise (on DSB2018, re-tuning the starter's thresholds
    on one validation image for such a gain cost 0.016 test AP@0.5).
    """
    cache = CachedValidation(model, pairs)
    own = tuning_score(cache.counts(model.postprocess, (0.5, 0.7)))
    params, counts = tune_postprocess(cache, model.postprocess)
    score = tuning_score(cache.counts(params, (0.5, 0.7)))
    n_objects = sum(int(np.count_nonzero(np.unique(gt))) for gt in cache.gts)
    if score - own < 1.0 / max(n_objects, 1):
        params, score = model.postprocess, own
        counts = cache.counts(params)
    return params, counts, score


def _score_start(run: _Run) -> Generator:
    """Epoch 0: the starting model's training and validation loss (and AP); its weights
    are the checkpoint to beat."""
    started = time.perf_counter()
    val_loss = run.validation_loss()
    train_patches = run.sampler.grid_patches(_MAX_VAL_PATCHES)
    train_loss = _validation_loss(
        run.network, train_patches, run.mode, run.class_weights, run.amp_dtype, run.device
    )
    record = {
        "epoch": 0,
        "step": 0,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "learning_rate": 0.0,
        "elapsed": 0.0,
        "samples_per_second": 0.0,
        "start": True,
    }
    run.model.history.append(record)
    run.best_loss, run.best_state = val_loss, _state_copy(run.network)
    yield EpochEnd(0, 0, train_loss, val_loss, 0.0, 0.0, 0.0, 0.0, True)
    if run.config.val_ap_every:
        ap = _validation_ap(run.model, run.val_pairs, run.config)
        record["val_ap"] = {str(k): v for k, v in ap.items()}
        yield ValidationMetrics(0, ap, time.perf_counter() - started)


def _initial_model(pairs, model_config, initial_model, device, adapt) -> SegmentationModel:
    if initial_model is not None:
        model = copy.deepcopy(initial_model)
        model.history = list(initial_model.history)
        model.info = {}  # a fine-tuned model is no longer the one described
        return model.to(device)
    channels = 1 if adapt.channel is not None else pairs[0].image.shape[0]
    model_config = model_config or ModelConfig(ndim=pairs[0].labels.ndim, in_channels=channels)
    if adapt.channel is not None and model_config.in_channels != 1:
        model_config = dataclasses.replace(model_config, in_channels=1)
    return SegmentationModel.create(
        model_config, normalization=NormalizationConfig(), postprocess=PostprocessConfig()
    ).to(device)


def _patch_shape(config: TrainConfig, ndim: int, multiple: int) -> tuple[int, ...]:
    size = max(multiple, config.patch_size // multiple * multiple)
    if ndim == 2:
        return (size, size)
    z = max(multiple, config.patch_size_z // multiple * multiple)
    return (z, size, size)


def _class_weights(sampler: PatchSampler, device: torch.device) -> torch.Tensor:
    counts = torch.zeros(3)
    for item in sampler.items:
        classes = item.targets[0].long().flatten().cpu()
        counts += torch.bincount(classes[item.mask.flatten().cpu() > 0], minlength=3)[:3]
    return boundary_class_weights(counts).to(device)


def _step(run: _Run) -> torch.Tensor:
    """One optimiser step on a fresh augmented batch; returns the loss (on the device)."""
    image, targets, mask = run.sampler.sample(run.batch_size)
    image, targets, mask = augment_batch(
        image,
        targets,
        mask,
        run.config.augment,
        categorical=run.categorical,
        generator=run.generator,
    )
    image = image.contiguous(memory_format=memory_format(image.ndim - 2))
    with autocast(run.device, run.amp_dtype):
        raw = run.forward(image)
    loss = segmentation_loss(raw, targets, mask, run.mode, run.class_weights)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    # Returned as a tensor: converting to float here would wait for the GPU every step.
    return loss.detach()


def _validation_loss(network, patches, mode, class_weights, amp_dtype, device) -> float | None:
    if not patches:
        return None
    network.eval()
    total, weight = 0.0, 0.0
    with torch.inference_mode():
        for i in range(0, len(patches), 16):
            chunk = patches[i : i + 16]
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


def _validation_ap(model: SegmentationModel, val_pairs, config) -> dict[float, float]:
    cache = CachedValidation(model, limit_pixels(val_pairs, config.val_ap_max_pixels))
    counts = cache.counts(model.postprocess, (0.5, 0.7))
    model.network.train()
    return {c.threshold: c.ap for c in counts}


def _preview(model: SegmentationModel, preview, epoch: int) -> PreviewReady | None:
    request = preview()
    if request is None:
        return None
    image, key, *intensity_range = request
    channel_axis = 0 if np.ndim(image) > model.config.ndim else None
    outputs = next(
        model.predict_outputs_many(
            [image], channel_axis=channel_axis, intensity_ranges=intensity_range or None
        )
    )
    return PreviewReady(epoch, outputs, model.instances(outputs), key)


def run_training(*args, **kwargs) -> SegmentationModel:
    """Run :func:`train` to the end without consuming events; returns the model."""
    gen = train(*args, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
