"""Patch sampling from training pairs held as tensors on the training device."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .config import NormalizationConfig
from .data import TrainingPair
from .normalize import apply_normalization, normalize
from .targets import make_targets


class _Prepared:
    """One pair, normalised, with targets and sampling coordinates, padded to the patch."""

    def __init__(
        self,
        pair: TrainingPair,
        mode: str,
        patch_shape: tuple[int, ...],
        norm: NormalizationConfig,
        device: torch.device,
    ) -> None:
        image = (
            normalize(pair.image, norm)
            if pair.intensity_range is None
            else apply_normalization(pair.image, *pair.intensity_range)
        )
        targets = make_targets(pair.labels, mode, pair.voxel_size)
        mask = (
            np.ones(pair.spatial_shape, np.float32)
            if pair.annotated is None
            else pair.annotated.astype(np.float32)
        )
        # Images smaller than a patch are padded; padding is masked out of the loss.
        pad = [(0, max(0, p - s)) for p, s in zip(patch_shape, pair.spatial_shape, strict=True)]
        if any(after for _, after in pad):
            image = np.pad(
                image, [(0, 0), *pad], mode="reflect" if _can_reflect(image, pad) else "edge"
            )
            targets = np.pad(targets, [(0, 0), *pad])
            mask = np.pad(mask, pad)
        self.name = pair.name
        self.shape = mask.shape
        self.image = torch.from_numpy(np.ascontiguousarray(image)).to(device)
        self.targets = torch.from_numpy(np.ascontiguousarray(targets)).to(device)
        self.mask = torch.from_numpy(np.ascontiguousarray(mask))[None].to(device)
        labels = pair.labels if pair.annotated is None else pair.labels * pair.annotated
        self.fg_coords = np.argwhere(labels > 0).astype(np.int32)
        self.annotated_coords = (
            None if pair.annotated is None else np.argwhere(pair.annotated).astype(np.int32)
        )
        self.weight = float(mask.sum())


def _can_reflect(image: np.ndarray, pad: list[tuple[int, int]]) -> bool:
    return all(after < size for (_, after), size in zip(pad, image.shape[1:], strict=True))


class PatchSampler:
    """Draws random training patches.

    A fraction ``foreground_sampling`` of patches is centred on a random annotated object
    pixel, so images with few, small objects still feed the network objects; the rest are
    centred on a random annotated pixel. Images are drawn in proportion to their annotated
    area.

    Parameters
    ----------
    pairs : sequence of TrainingPair
        Training data.
    mode : str
        Target mode, ``boundary`` or ``distance``.
    patch_shape : tuple of int
        Spatial patch size.
    device : torch.device
        Where the data and the patches live.
    norm : NormalizationConfig
        Percentile normalisation.
    foreground_sampling : float
        Probability of centring a patch on an object pixel.
    seed : int, optional
        Seed for repeatable sampling.
    """

    def __init__(
        self,
        pairs: Sequence[TrainingPair],
        mode: str,
        patch_shape: tuple[int, ...],
        device: torch.device,
        norm: NormalizationConfig | None = None,
        foreground_sampling: float = 0.5,
        seed: int | None = None,
    ) -> None:
        norm = norm or NormalizationConfig()
        self.patch_shape = tuple(patch_shape)
        self.items = [_Prepared(p, mode, self.patch_shape, norm, device) for p in pairs]
        weights = np.array([it.weight for it in self.items], np.float64)
        self.probabilities = weights / weights.sum()
        self.foreground_sampling = foreground_sampling
        self.rng = np.random.default_rng(seed)

    def _start(self, item: _Prepared) -> tuple[int, ...]:
        rng = self.rng
        if len(item.fg_coords) and rng.random() < self.foreground_sampling:
            centre = item.fg_coords[rng.integers(len(item.fg_coords))]
        elif item.annotated_coords is not None:
            centre = item.annotated_coords[rng.integers(len(item.annotated_coords))]
        else:
            centre = [rng.integers(s) for s in item.shape]
        start = []
        for c, p, s in zip(centre, self.patch_shape, item.shape, strict=True):
            jitter = rng.integers(-(p // 4), p // 4 + 1)
            start.append(int(np.clip(c - p // 2 + jitter, 0, s - p)))
        return tuple(start)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (image, targets, mask) batches of shape (B, ·, *patch_shape)."""
        chosen = self.rng.choice(len(self.items), size=batch_size, p=self.probabilities)
        images, targets, masks = [], [], []
        for k in chosen:
            item = self.items[k]
            start = self._start(item)
            box = tuple(slice(s, s + p) for s, p in zip(start, self.patch_shape, strict=True))
            images.append(item.image[(slice(None), *box)])
            targets.append(item.targets[(slice(None), *box)])
            masks.append(item.mask[(slice(None), *box)])
        return torch.stack(images), torch.stack(targets), torch.stack(masks)

    def grid_patches(self, max_patches: int) -> list[tuple[torch.Tensor, ...]]:
        """Fixed, non-overlapping patches (for validation loss), at most ``max_patches``."""
        out = []
        for item in self.items:
            ranges = [
                range(0, s - p + 1, p) for s, p in zip(item.shape, self.patch_shape, strict=True)
            ]
            for start in np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(
                -1, len(self.patch_shape)
            ):
                box = tuple(
                    slice(int(s), int(s) + p) for s, p in zip(start, self.patch_shape, strict=True)
                )
                if item.mask[(slice(None), *box)].sum() == 0:
                    continue
                out.append(
                    (
                        item.image[(slice(None), *box)],
                        item.targets[(slice(None), *box)],
                        item.mask[(slice(None), *box)],
                    )
                )
        if len(out) > max_patches:
            keep = np.random.default_rng(0).choice(len(out), max_patches, replace=False)
            out = [out[i] for i in sorted(keep)]
        return out
