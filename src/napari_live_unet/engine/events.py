"""Typed progress events yielded by the training loop (plain data: no Qt, no napari)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import SegmentationModel


@dataclass(frozen=True)
class TrainingStarted:
    """Data is prepared and the first step is about to run."""

    n_train: int
    n_val: int
    device: str
    n_parameters: int
    epochs: int | None
    time_budget: float | None
    patch_shape: tuple[int, ...] = ()
    """The training patch chosen for the data (each axis capped at the images' size)."""
    batch_size: int = 0
    pooling: tuple[tuple[int, ...], ...] = ()
    """The network's pooling per level and axis (flat first levels for anisotropic data)."""
    recipe: str = ""
    """The recipe used and why, e.g. "few-shot recipe (4 images, 108 objects: ...): ..."."""

    def describe_sizes(self) -> str:
        """e.g. ``patches 16x64x64, batch 4, pooling (1,2,2) (2,2,2) (2,2,2)``."""
        text = "patches " + "x".join(str(s) for s in self.patch_shape)
        text += f", batch {self.batch_size}"
        if self.pooling and any(1 in level for level in self.pooling):
            text += ", pooling " + " ".join(
                "(" + ",".join(str(p) for p in level) + ")" for level in self.pooling
            )
        return text


@dataclass(frozen=True)
class StepEnd:
    """An optimiser step finished (yielded every few steps)."""

    epoch: int
    step: int
    loss: float
    learning_rate: float
    elapsed: float
    progress: float


@dataclass(frozen=True)
class EpochEnd:
    """An epoch finished; ``val_loss`` is None without validation data."""

    epoch: int
    step: int
    train_loss: float
    val_loss: float | None
    learning_rate: float
    elapsed: float
    samples_per_second: float
    progress: float
    is_best: bool


@dataclass(frozen=True)
class ValidationMetrics:
    """Average precision of post-processed instances on the validation split."""

    epoch: int
    ap: dict[float, float]
    elapsed: float


@dataclass(frozen=True)
class PreviewReady:
    """The current model's prediction of the preview image (see ``train(preview=...)``).

    ``key`` is whatever the preview callable returned with the image (e.g. where the crop
    lies), so the receiver can place the result.
    """

    epoch: int
    outputs: Any
    labels: Any
    key: Any


@dataclass(frozen=True)
class Notice:
    """Something the user should know (out-of-memory retry, early stop, ...)."""

    message: str


@dataclass(frozen=True)
class ThresholdsChosen:
    """Post-processing thresholds picked on the validation split."""

    params: dict[str, Any]
    ap: dict[float, float]


@dataclass(frozen=True)
class TrainingFinished:
    """The loop ended; ``model`` holds the best weights and chosen thresholds.

    ``kept_start`` is True when fine-tuning did not beat the starting model on validation,
    so ``model`` has the starting weights.
    """

    model: SegmentationModel
    reason: str
    epochs: int
    steps: int
    elapsed: float
    best_val_loss: float | None
    kept_start: bool = False
    learning_rates: tuple[float, ...] = ()  # of every step taken, for run records


TrainingEvent = (
    TrainingStarted
    | StepEnd
    | EpochEnd
    | ValidationMetrics
    | PreviewReady
    | Notice
    | ThresholdsChosen
    | TrainingFinished
)
