"""How a training run ends: the best weights restored, thresholds tuned on the validation
data, the starting model kept when training did not beat it (with what it was validated
with), and flip averaging chosen where it gains."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import replace

import torch

from . import distributed as ddp
from .config import PostprocessConfig
from .data import TrainingPair
from .evaluation import limit_pixels, tuned_thresholds
from .events import Notice, ThresholdsChosen, TrainingEvent
from .flip_average import choose_flip_average
from .image_adapter import Adaptation, AdaptOptions, InputSpec
from .model import SegmentationModel
from .training_input import kept_start_fitting
from .training_run import TrainingRun, state_copy


def finish_run(
    run: TrainingRun,
    start_model: SegmentationModel | None,
    start_input: InputSpec | None,
    fitted: Adaptation,
    adapt: AdaptOptions,
) -> Generator[TrainingEvent, None, bool]:
    """Restore the best weights, tune thresholds, and keep the starting model if it was
    at least as good; returns whether it was kept.

    A kept starting model keeps what it was validated with: its thresholds unless re-tuned
    ones gain clearly (:func:`~.evaluation.required_gain`), and its own input fitting
    where that fits the training images as the fixed one did (:func:`kept_start_fitting`).
    """
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
    start_postprocess = None if start_model is None else start_model.postprocess
    if run.is_main and run.val_pairs and run.config.tune_thresholds and best_state is not None:
        tune_pairs = limit_pixels(run.val_pairs, run.config.tune_max_pixels)
        yield Notice(
            f"Choosing post-processing thresholds on {len(tune_pairs)} validation image(s)..."
        )
        params, counts, score = tuned_thresholds(run.model, tune_pairs, validated=kept_start)
        if start_model is not None and not kept_start:
            start_params, start_counts, start_score = tuned_thresholds(
                start_model, tune_pairs, validated=True
            )
            if start_score >= score:
                run.network.load_state_dict(state_copy(start_model.network))
                params, counts, kept_start = start_params, start_counts, True
        run.model.postprocess = params
        if not kept_start:
            counts = yield from _choose_flip_average(run, tune_pairs, counts, score)
        yield ThresholdsChosen(run.model.postprocess.to_dict(), {c.threshold: c.ap for c in counts})
    if run.distributed is not None:  # every rank ends with rank 0's choice of weights
        start = None if start_model is None else start_model.network
        kept_start, message = ddp.agree_on_result(run.network, run.distributed, kept_start, start)
        if run.is_main:
            yield Notice(message)
    if kept_start and start_input is not None:
        run.model.input = kept_start_fitting(start_input, run.model.input, fitted, adapt)
        yield Notice(_kept_start_message(run.model, start_input, start_postprocess))
    return kept_start


def _choose_flip_average(
    run: TrainingRun, pairs: Sequence[TrainingPair], counts: list, score: float
) -> Generator[TrainingEvent, None, list]:
    """Make the model average flips when that, with thresholds tuned for it, beats its
    plain validation ``score`` clearly (:func:`~.flip_average.choose_flip_average`);
    returns the AP counts of the choice."""
    averaged = replace(run.model, flip_average=True)
    params, flipped_counts, flipped_score = tuned_thresholds(averaged, pairs)
    n_objects = counts[0].tp + counts[0].fn
    if not choose_flip_average(score, flipped_score, n_objects):
        return counts
    run.model.flip_average, run.model.postprocess = True, params
    yield Notice(
        "Predictions average each tile and its three flips: validation AP@0.5 "
        f"{counts[0].ap:.3f} -> {flipped_counts[0].ap:.3f} on {n_objects} objects. "
        "Prediction takes four times as long; 'live-unet predict --no-flip-average' or "
        "the Predict dock's 'Average flips' box turns it off."
    )
    return flipped_counts


def _kept_start_message(
    model: SegmentationModel, start_input: InputSpec, start_postprocess: PostprocessConfig | None
) -> str:
    """What a kept starting model kept of its own, in words."""
    thresholds = (
        "its own thresholds"
        if model.postprocess == start_postprocess
        else "thresholds re-chosen on your validation objects"
    )
    fitting = (
        "its own input fitting"
        if model.input == start_input
        else "input fitting fixed to your images (polarity and object size)"
    )
    return (
        "Kept the starting model: fine-tuning did not improve validation AP. "
        f"It keeps {thresholds} and {fitting}."
    )


def _same_weights(state: dict[str, torch.Tensor], model: SegmentationModel) -> bool:
    start = model.network.state_dict()
    return all(torch.equal(v, start[k].detach().cpu()) for k, v in state.items())
