"""Which training recipe suits the data: the few-shot recipe for a handful of annotations.

A user's first corrections on a kind of image the starter never saw are a few images with a
few dozen objects. Trained like a large data set, such a run validates on one held-out
image of a few objects, so its checkpoint and thresholds follow noise (docs/benchmarks.md,
"Few-shot recipe"). The few-shot recipe validates on a band of every image instead (the
checkpoint and thresholds see every kind of image the user annotated), and a one-channel
model fine-tuned on colour images reads every channel. Stronger colour and blur augmentation
(``AugmentConfig.colour``, ``blur``) was measured and is not part of it (docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from .config import TrainConfig
from .data import TrainingPair
from .image_adapter import AdaptOptions

FEW_SHOT_MAX_IMAGES = 4
"""Up to this many annotated images (or regions) the data counts as few-shot..."""
FEW_SHOT_MAX_OBJECTS = 150
"""...and also with more images, while they hold fewer objects than this."""


# What the few-shot recipe changes (measured on the histology development split).
_FEW_SHOT_VAL_FRACTION = 0.25
# Validation AP on a few dozen objects jumps between epochs (0.69-0.76) while the loss on
# the same bands falls smoothly: choosing by AP kept an epoch-1 model (test AP@0.5 0.542).
_FEW_SHOT_SELECT_BY = "loss"


@dataclass(frozen=True)
class RecipeChoice:
    """The recipe a run uses and why, in words for a status line.

    Attributes
    ----------
    name : {"few-shot", "standard"}
    reason : str
        e.g. "few-shot recipe (4 images, 108 objects: at most 4 images): validation on a
        band of every image, every colour channel read".
    """

    name: str
    reason: str


def choose_recipe(
    config: TrainConfig,
    pairs: Sequence[TrainingPair],
    *,
    validation_given: bool,
    adapt: AdaptOptions | None = None,
    model_channels: int | None = None,
) -> tuple[TrainConfig, AdaptOptions, RecipeChoice]:
    """The training settings for ``pairs`` under ``config.recipe``, and the choice made.

    Parameters
    ----------
    config : TrainConfig
        ``recipe`` ``auto`` picks the few-shot recipe for at most
        :data:`FEW_SHOT_MAX_IMAGES` images or fewer than :data:`FEW_SHOT_MAX_OBJECTS`
        annotated objects; ``few-shot`` and ``standard`` force one.
    pairs : sequence of TrainingPair
        The training data, before any validation split.
    validation_given : bool
        Whether the user gave validation data (then no band is held out of the images).
    adapt : AdaptOptions, optional
        The user's fitting choices.
    model_channels : int, optional
        Input channels of the model being fine-tuned; None for a new model.

    Returns
    -------
    config : TrainConfig
        ``config`` with the recipe's settings.
    adapt : AdaptOptions
        ``adapt``, reading every channel of colour images when a one-channel model is
        fine-tuned and the user chose no channel (the colour tells nuclei from tissue).
    choice : RecipeChoice
    """
    adapt = adapt or AdaptOptions()
    n_images = len(pairs)
    n_objects = sum(p.n_objects for p in pairs)
    counted = f"{n_images} image{'s' if n_images != 1 else ''}, {n_objects} objects"
    if config.recipe == "standard":
        return config, adapt, RecipeChoice("standard", f"standard recipe ({counted}; chosen)")
    small = n_images <= FEW_SHOT_MAX_IMAGES or n_objects < FEW_SHOT_MAX_OBJECTS
    if config.recipe == "auto" and not small:
        return config, adapt, RecipeChoice("standard", f"standard recipe ({counted})")
    if config.recipe == "few-shot":
        why = "chosen"
    elif n_images <= FEW_SHOT_MAX_IMAGES:
        why = f"at most {FEW_SHOT_MAX_IMAGES} images"
    else:
        why = f"fewer than {FEW_SHOT_MAX_OBJECTS} objects"
    changes = [] if _FEW_SHOT_SELECT_BY == "loss" else ["checkpoint by validation AP"]
    holds_out = not validation_given and config.val_fraction > 0  # 0: no validation asked
    if holds_out:
        changes.insert(0, "validation on a band of every image")
    colour = {p.image.shape[0] for p in pairs} <= {3, 4}
    if model_channels == 1 and colour and adapt.channel is None and not adapt.all_channels:
        adapt = dataclasses.replace(adapt, all_channels=True)
        changes.append("every colour channel read")
    few_shot = dataclasses.replace(
        config,
        validation="regions",
        val_fraction=max(config.val_fraction, _FEW_SHOT_VAL_FRACTION) if holds_out else 0.0,
        select_by=_FEW_SHOT_SELECT_BY,
    )
    reason = f"few-shot recipe ({counted}: {why})" + (": " + ", ".join(changes) if changes else "")
    return few_shot, adapt, RecipeChoice("few-shot", reason)
