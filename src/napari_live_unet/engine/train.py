"""The training loop, written as a generator of typed events."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import distributed as ddp
from .augment import augment_batch
from .config import ModelConfig, TrainConfig
from .data import TrainingPair
from .device import autocast
from .evaluation import validation_ap
from .events import (
    EpochEnd,
    Notice,
    PreviewReady,
    StepEnd,
    TrainingEvent,
    TrainingFinished,
    TrainingStarted,
    ValidationMetrics,
)
from .image_adapter import AdaptOptions
from .losses import segmentation_loss
from .model import SegmentationModel
from .training_end import finish_run
from .training_run import (
    MAX_VAL_PATCHES,
    StopReason,
    TrainingRun,
    patch_loss,
    set_up,
    state_copy,
)
from .unet import count_parameters, memory_format

__all__ = ["StopReason", "learning_rate_at", "run_training", "train"]

_STEP_EVENT_SECONDS = 0.25  # yield a StepEnd at most this often
MAX_GRAD_NORM = 12.0  # gradient norm clipping (nnU-Net's value)


def learning_rate_at(progress: float, base: float, warmup: float) -> float:
    """Linear warm-up over ``warmup`` of training, then cosine decay to 2% of ``base``."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return base * (0.05 + 0.95 * progress / warmup)
    t = (progress - warmup) / max(1e-9, 1.0 - warmup)
    return base * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * t)))


@dataclass(frozen=True)
class PreviewRequest:
    """What the live-preview hook asks the training loop to segment.

    Attributes
    ----------
    image : ndarray
        The crop, spatial shape or channel-first.
    key : Any
        Handed back in :class:`PreviewReady` (e.g. where the crop lies).
    intensity_range : (low, high) or None
        Normalisation percentiles per channel, so a crop is scaled like its whole image;
        None: computed from the crop.
    """

    image: np.ndarray
    key: Any
    intensity_range: tuple[np.ndarray, np.ndarray] | None = None


PreviewHook = Callable[[], PreviewRequest | None]
"""Called between epochs by :func:`train`: what to preview now, or None to skip."""


def train(
    pairs: Sequence[TrainingPair],
    config: TrainConfig | None = None,
    *,
    model_config: ModelConfig | None = None,
    val_pairs: Sequence[TrainingPair] | None = None,
    initial_model: SegmentationModel | None = None,
    device: str | torch.device = "auto",
    should_stop: Callable[[], bool] | None = None,
    preview: PreviewHook | None = None,
    preview_every: int = 1,
    adapt: AdaptOptions | None = None,
    distributed: ddp.DistributedContext | None = None,
    learning_rates: Sequence[float] | None = None,
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
    preview : callable() -> PreviewRequest or None, optional
        Called every ``preview_every`` epochs; the request's image (spatial shape, or
        channel-first) is segmented with the current weights and a ``PreviewReady`` event
        carries the outputs, the labels and the request's ``key`` back. Returning None skips
        that preview.
    preview_every : int
        Epochs between previews.
    adapt : AdaptOptions, optional
        Channel, polarity and object diameter of the training images (default: decided
        from the data and the annotations). The decisions are announced in a ``Notice``
        and stored in the model, so prediction fits new images the same way.
    distributed : DistributedContext, optional
        This process's place in a ``torchrun`` run (see :mod:`.distributed`, which also
        sets the device): each rank draws its own patches, gradients are averaged, rank 0
        alone validates, and all ranks take the same steps to the same weights.
    learning_rates : sequence of float, optional
        Replay a recorded run (see :mod:`.run_replay`): take exactly one step per rate, at
        that rate, whatever the schedule of ``config`` says. Time budgets are not
        reproducible; the steps and rates they gave are.

    Yields
    ------
    TrainingEvent
        ``TrainingStarted``, then ``StepEnd``/``EpochEnd``/``ValidationMetrics``/``Notice``
        as training goes, ``ThresholdsChosen`` and finally ``TrainingFinished``.
    """
    config = config or TrainConfig()
    if initial_model is not None:
        initial_model.check_trainable("fine-tuned")
    run, fitted = set_up(
        pairs,
        config,
        model_config,
        val_pairs,
        initial_model,
        device,
        adapt,
        distributed,
        None if learning_rates is None else tuple(float(r) for r in learning_rates),
    )
    yield TrainingStarted(
        len(run.sampler.items),
        len(run.val_pairs),
        str(run.device),
        count_parameters(run.network),
        run.config.epochs,
        run.config.time_budget,
        patch_shape=run.patch_shape,
        batch_size=run.batch_size,
        pooling=run.model.config.level_pooling,
        recipe=run.recipe.reason if run.recipe is not None else "",
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
    kept_start = yield from finish_run(
        run,
        start_model,
        None if initial_model is None else initial_model.input,
        fitted,
        adapt or AdaptOptions(),
    )
    yield TrainingFinished(
        run.model,
        reason,
        run.epoch,
        run.step,
        time.perf_counter() - run.start_time,
        None if math.isinf(run.best_loss) else run.best_loss,
        kept_start=kept_start,
        learning_rates=tuple(run.rates),
    )
    return run.model


def _run_epochs(
    run: TrainingRun, should_stop, preview, preview_every
) -> Generator[TrainingEvent, None, StopReason]:
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


def _schedule_reason(run: TrainingRun) -> StopReason:
    if run.config.time_budget and (not run.total_steps or run.step < run.total_steps):
        return StopReason.TIME_BUDGET
    return StopReason.FINISHED


def _epoch(
    run: TrainingRun, should_stop
) -> Generator[TrainingEvent, None, tuple[list[torch.Tensor], int, bool, float]]:
    """Up to ``steps_per_epoch`` optimiser steps; returns (losses, samples, stopped, seconds)."""
    run.network.train()
    if run.config.freeze_norm:  # keep the starting model's normalisation statistics
        for module in run.network.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
    losses: list[torch.Tensor] = []
    samples, started = 0, time.perf_counter()
    for _ in range(run.config.steps_per_epoch):
        stop = should_stop is not None and should_stop()
        if run.distributed is not None:
            elapsed = time.perf_counter() - run.start_time
            run.shared_elapsed, stop = ddp.agree_on_step(run.distributed, elapsed, stop)
        if stop:
            return losses, samples, True, time.perf_counter() - started
        if run.progress() >= 1.0:
            break
        base_rate, warmup = run.config.learning_rate, run.config.warmup_fraction
        assert base_rate is not None and warmup is not None  # set_up resolves the config
        if run.fixed_rates is not None:
            run.learning_rate = run.fixed_rates[run.step]
        else:
            run.learning_rate = learning_rate_at(run.progress(), base_rate, warmup)
        for group in run.optimizer.param_groups:
            group["lr"] = run.learning_rate
        try:
            loss = _step(run)
        except torch.cuda.OutOfMemoryError:
            if run.batch_size == 1 or run.distributed is not None:  # ranks must stay in step
                raise
            torch.cuda.empty_cache()
            run.optimizer.zero_grad(set_to_none=True)
            run.batch_size = max(1, run.batch_size // 2)
            yield Notice(f"CUDA out of memory; continuing with batch size {run.batch_size}")
            continue
        run.step += 1
        run.rates.append(run.learning_rate)
        if loss is None:
            run.skipped_steps += 1
            if run.skipped_steps == 1:
                yield Notice(
                    "Skipped a training step whose loss was not finite (NaN or Inf); "
                    "training goes on from the weights before it"
                )
            continue
        losses.append(loss)
        samples += run.batch_size * run.world_size
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


def _end_of_epoch(
    run: TrainingRun, losses, samples: int, seconds: float
) -> Generator[TrainingEvent, None, None]:
    """Validation loss (and AP), checkpoint of the best weights, the epoch's record and
    events."""
    val_loss = run.validation_loss() if run.is_main else None
    train_loss = float(torch.stack(losses).mean())
    if run.distributed is not None:
        train_loss = ddp.mean_over_ranks(train_loss, run.distributed)
    val_ap_due = run.config.val_ap_every and run.epoch % run.config.val_ap_every == 0
    ap = None
    if run.is_main and run.val_pairs and (val_ap_due or run.config.select_by == "ap"):
        ap = validation_ap(run.model, run.val_pairs, run.config.val_ap_max_pixels)
    monitored = _monitored(run, val_loss, train_loss, ap)
    is_best = monitored < run.best_monitored
    if run.distributed is not None:  # rank 0 decides: checkpoint and early stopping agree
        is_best = ddp.from_main(is_best, run.distributed)
    if is_best:
        run.best_monitored, run.bad_epochs = monitored, 0
        run.best_loss = val_loss if val_loss is not None else train_loss
        run.best_state = state_copy(run.network)
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
    if ap is not None:
        record["val_ap"] = {str(k): v for k, v in ap.items()}
        yield ValidationMetrics(run.epoch, ap, time.perf_counter() - run.start_time)


def _monitored(
    run: TrainingRun, val_loss: float | None, train_loss: float, ap: dict[float, float] | None
) -> float:
    """What the checkpoint minimises: the validation loss (else the training loss), or,
    selecting by AP, minus the mean of AP@0.5 and AP@0.7, the loss breaking ties."""
    loss = val_loss if val_loss is not None else train_loss
    if run.config.select_by != "ap" or ap is None:
        return loss
    return -float(np.mean(list(ap.values()))) + 1e-3 * min(loss, 1.0)


def _score_start(run: TrainingRun) -> Generator[TrainingEvent, None, None]:
    """Epoch 0: the starting model's training and validation loss (and AP); its weights
    are the checkpoint to beat."""
    if not run.is_main:  # other ranks only keep the checkpoint: rank 0 decides on it
        run.best_state = state_copy(run.network)
        return
    started = time.perf_counter()
    val_loss = run.validation_loss()
    assert val_loss is not None  # only called with validation patches
    train_patches = run.sampler.grid_patches(MAX_VAL_PATCHES)
    train_loss = patch_loss(
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
    run.best_loss, run.best_state = val_loss, state_copy(run.network)
    # No training patch with annotated pixels gives no loss: NaN, which plots and prints as
    # a gap rather than a number.
    train_value = float("nan") if train_loss is None else train_loss
    yield EpochEnd(0, 0, train_value, val_loss, 0.0, 0.0, 0.0, 0.0, True)
    ap = None
    if run.config.val_ap_every or run.config.select_by == "ap":
        ap = validation_ap(run.model, run.val_pairs, run.config.val_ap_max_pixels)
    run.best_monitored = _monitored(run, val_loss, val_loss, ap)
    if ap is not None:
        record["val_ap"] = {str(k): v for k, v in ap.items()}
        yield ValidationMetrics(0, ap, time.perf_counter() - started)


def _step(run: TrainingRun) -> torch.Tensor | None:
    """One optimiser step on a fresh augmented batch; returns the loss (on the device), or
    None when the step was skipped because its gradient was not finite."""
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
    # Batch-norm statistics move in the forward pass: kept to undo a non-finite step.
    buffers = [b.detach().clone() for b in run.network.buffers()]
    with autocast(run.device, run.amp_dtype):
        raw = run.forward(image)
    loss = segmentation_loss(raw, targets, mask, run.mode, run.class_weights)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # A step with a non-finite gradient would turn every weight into NaN for good (seen on
    # sparse 3D data under bf16 after ~500 steps); it is skipped, and large but finite
    # gradients are clipped, as nnU-Net does.
    norm = torch.nn.utils.clip_grad_norm_(run.network.parameters(), MAX_GRAD_NORM)
    finite = bool(torch.isfinite(norm))
    if run.distributed is not None:  # skipped on every rank or none
        finite = ddp.all_ranks(finite, run.distributed)
    if not finite:
        run.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buffer, kept in zip(run.network.buffers(), buffers, strict=True):
                buffer.copy_(kept)
        return None
    run.optimizer.step()
    # Returned as a tensor: converting to float here would wait for the GPU every step.
    return loss.detach()


def _preview(model: SegmentationModel, preview: PreviewHook, epoch: int) -> PreviewReady | None:
    request = preview()
    if request is None:
        return None
    image = request.image
    channel_axis = 0 if np.ndim(image) > model.config.ndim else None
    ranges = None if request.intensity_range is None else [request.intensity_range]
    outputs = next(
        model.predict_outputs_many([image], channel_axis=channel_axis, intensity_ranges=ranges)
    )
    return PreviewReady(epoch, outputs, model.instances(outputs), request.key)


def run_training(*args, **kwargs) -> SegmentationModel:
    """Run :func:`train` to the end without consuming events; returns the model."""
    gen = train(*args, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
