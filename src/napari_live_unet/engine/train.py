"""The training loop, written as a generator of typed events."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Generator, Sequence
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
    class_weights = _class_weights(sampler, device) if mode == "boundary" else None
    categorical = (True,) if mode == "boundary" else (True, False)
    network = model.network.to(memory_format=memory_format(ndim))
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    amp_dtype = autocast_dtype(device) if config.mixed_precision else None
    forward = torch.compile(network) if config.compile and device.type == "cuda" else network
    generator = torch.Generator().manual_seed(config.seed if config.seed is not None else 0)
    total_steps = config.epochs * config.steps_per_epoch if config.epochs else None

    yield TrainingStarted(
        len(pairs),
        len(val_pairs),
        str(device),
        count_parameters(network),
        config.epochs,
        config.time_budget,
    )
    yield Notice(f"Training images: {fitted.describe()}")

    start_time = time.perf_counter()
    best_loss, best_state, bad_epochs = math.inf, None, 0
    step, epoch, reason = 0, 0, "finished"
    batch_size = config.batch_size
    last_step_event = 0.0
    start_model = copy.deepcopy(model) if fine_tuning else None
    if fine_tuning:
        if val_patches:
            yield from _score_start(model, sampler, val_patches, val_pairs, config, class_weights)
            best_loss = model.history[-1]["val_loss"]
            best_state = _state_copy(network)
        else:
            yield Notice(
                "No validation data: the starting model cannot be scored, so the result is "
                "the fine-tuned model as it ends."
            )

    def progress() -> float:
        fractions = []
        if total_steps:
            fractions.append(step / total_steps)
        if config.time_budget:
            fractions.append((time.perf_counter() - start_time) / config.time_budget)
        return min(1.0, max(fractions))

    while reason == "finished" or reason == "running":
        reason = "running"
        epoch += 1
        network.train()
        epoch_losses, epoch_samples, epoch_start = [], 0, time.perf_counter()
        for _ in range(config.steps_per_epoch):
            if should_stop is not None and should_stop():
                reason = "stopped"
                break
            if progress() >= 1.0:
                break
            lr = learning_rate_at(progress(), config.learning_rate, config.warmup_fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr
            try:
                loss = _step(
                    forward,
                    optimizer,
                    sampler,
                    batch_size,
                    config,
                    mode,
                    categorical,
                    class_weights,
                    generator,
                    device,
                    amp_dtype,
                )
            except torch.cuda.OutOfMemoryError:
                if batch_size == 1:
                    raise
                torch.cuda.empty_cache()
                optimizer.zero_grad(set_to_none=True)
                batch_size = max(1, batch_size // 2)
                yield Notice(f"CUDA out of memory; continuing with batch size {batch_size}")
                continue
            step += 1
            epoch_losses.append(loss)
            epoch_samples += batch_size
            now = time.perf_counter()
            if now - last_step_event >= _STEP_EVENT_SECONDS:
                last_step_event = now
                yield StepEnd(epoch, step, float(loss), lr, now - start_time, progress())
        if not epoch_losses:
            epoch -= 1
            break
        val_loss = _validation_loss(network, val_patches, mode, class_weights, amp_dtype, device)
        train_loss = float(torch.stack(epoch_losses).mean())
        monitored = val_loss if val_loss is not None else train_loss
        is_best = monitored < best_loss
        if is_best:
            best_loss, bad_epochs = monitored, 0
            best_state = _state_copy(network)
        else:
            bad_epochs += 1
        elapsed = time.perf_counter() - start_time
        record = {
            "epoch": epoch,
            "step": step,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "learning_rate": lr,
            "elapsed": elapsed,
            "samples_per_second": epoch_samples / max(1e-9, time.perf_counter() - epoch_start),
        }
        model.history.append(record)
        yield EpochEnd(
            epoch,
            step,
            record["train_loss"],
            val_loss,
            lr,
            elapsed,
            record["samples_per_second"],
            progress(),
            is_best,
        )
        if val_pairs and config.val_ap_every and epoch % config.val_ap_every == 0:
            ap = _validation_ap(model, val_pairs, config)
            record["val_ap"] = {str(k): v for k, v in ap.items()}
            yield ValidationMetrics(epoch, ap, time.perf_counter() - start_time)
        if preview is not None and epoch % max(1, preview_every) == 0:
            event = _preview(model, preview, epoch)
            if event is not None:
                yield event
        if reason == "stopped":
            break
        if progress() >= 1.0:
            reason = (
                "time budget reached"
                if config.time_budget and (not total_steps or step < total_steps)
                else "finished"
            )
            break
        if config.early_stopping_patience and bad_epochs >= config.early_stopping_patience:
            reason = "early stopping"
            yield Notice(f"Validation loss has not improved for {bad_epochs} epochs; stopping.")
            break

    kept_start = start_model is not None and best_state is not None and epoch == 0
    if start_model is not None and best_state is not None and not kept_start:
        kept_start = _same_weights(best_state, start_model)
    if best_state is not None:
        network.load_state_dict(best_state)
    network.eval()
    model.train_config = config.to_dict()
    if val_pairs and config.tune_thresholds and best_state is not None:
        tune_pairs = limit_pixels(val_pairs, config.tune_max_pixels)
        yield Notice(
            f"Choosing post-processing thresholds on {len(tune_pairs)} validation image(s)..."
        )
        params, counts, score = _tuned(model, tune_pairs)
        if start_model is not None and not kept_start:
            start_params, start_counts, start_score = _tuned(start_model, tune_pairs)
            if start_score >= score:
                network.load_state_dict(_state_copy(start_model.network))
                params, counts, kept_start = start_params, start_counts, True
        model.postprocess = params
        yield ThresholdsChosen(params.to_dict(), {c.threshold: c.ap for c in counts})
    if kept_start:
        yield Notice(
            "Kept the starting model: fine-tuning did not improve validation AP "
            "(its thresholds and input settings now fit your images)."
        )
    elapsed = time.perf_counter() - start_time
    yield TrainingFinished(
        model,
        reason,
        epoch,
        step,
        elapsed,
        None if math.isinf(best_loss) else best_loss,
        kept_start=kept_start,
    )
    return model


def _state_copy(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return copy.deepcopy({k: v.detach().cpu() for k, v in network.state_dict().items()})


def _same_weights(state: dict[str, torch.Tensor], model: SegmentationModel) -> bool:
    start = model.network.state_dict()
    return all(torch.equal(v, start[k].detach().cpu()) for k, v in state.items())


def _tuned(model: SegmentationModel, pairs) -> tuple[PostprocessConfig, list, float]:
    """Thresholds tuned on ``pairs``, the AP counts they give, and the tuning score."""
    cache = CachedValidation(model, pairs)
    params, counts = tune_postprocess(cache, model.postprocess)
    return params, counts, tuning_score(cache.counts(params, (0.5, 0.7)))


def _score_start(model, sampler, val_patches, val_pairs, config, class_weights):
    """Epoch 0: the starting model's training and validation loss (and AP)."""
    mode, device = model.config.mode, model.device
    amp = autocast_dtype(device) if config.mixed_precision else None
    start = time.perf_counter()
    val_loss = _validation_loss(model.network, val_patches, mode, class_weights, amp, device)
    train_patches = sampler.grid_patches(_MAX_VAL_PATCHES)
    train_loss = _validation_loss(model.network, train_patches, mode, class_weights, amp, device)
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
    model.history.append(record)
    yield EpochEnd(0, 0, train_loss, val_loss, 0.0, 0.0, 0.0, 0.0, True)
    if config.val_ap_every:
        ap = _validation_ap(model, val_pairs, config)
        record["val_ap"] = {str(k): v for k, v in ap.items()}
        yield ValidationMetrics(0, ap, time.perf_counter() - start)


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


def _step(
    network,
    optimizer,
    sampler,
    batch_size,
    config,
    mode,
    categorical,
    class_weights,
    generator,
    device,
    amp_dtype,
) -> torch.Tensor:
    image, targets, mask = sampler.sample(batch_size)
    image, targets, mask = augment_batch(
        image, targets, mask, config.augment, categorical=categorical, generator=generator
    )
    image = image.contiguous(memory_format=memory_format(image.ndim - 2))
    with autocast(device, amp_dtype):
        raw = network(image)
    loss = segmentation_loss(raw, targets, mask, mode, class_weights)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
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
