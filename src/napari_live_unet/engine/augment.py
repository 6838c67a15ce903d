"""Batched augmentation in torch, applied identically to images, targets and masks.

Everything runs on the tensors' own device, so on a GPU the data pipeline never leaves it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import AugmentConfig


def augment_batch(
    image: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    config: AugmentConfig,
    *,
    categorical: tuple[bool, ...],
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Augment a batch of patches.

    Parameters
    ----------
    image : Tensor, shape (B, C, *spatial)
        Normalised image patches.
    targets : Tensor, shape (B, T, *spatial)
        Target channels; those flagged in ``categorical`` are resampled with nearest
        neighbour, the others linearly.
    mask : Tensor, shape (B, 1, *spatial)
        1 where the loss counts. Pixels that a rotation pulls in from outside the patch
        become 0, so they are ignored rather than invented.
    config : AugmentConfig
        Which augmentations to apply.
    categorical : tuple of bool
        One flag per target channel.
    generator : torch.Generator, optional
        Source of randomness (on the CPU) for repeatable runs.

    Returns
    -------
    image, targets, mask : Tensor
        Augmented tensors with the input shapes.
    """
    if config.flips or config.rot90:
        image, targets, mask = _flip_rotate(image, targets, mask, config, generator)
    if config.rotate_scale:
        image, targets, mask = _rotate_scale(image, targets, mask, config, categorical, generator)
    if config.intensity:
        image = _intensity(image, config, generator)
    return image, targets, mask


def _rand(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator).to(device)


def _flip_rotate(image, targets, mask, config, generator):
    ndim = image.ndim - 2
    b = image.shape[0]
    stacked = torch.cat([image, targets, mask], dim=1)
    flips = torch.rand(b, ndim, generator=generator) < 0.5
    rots = torch.randint(0, 4, (b,), generator=generator)
    square = stacked.shape[-1] == stacked.shape[-2]
    out = []
    for i in range(b):
        x = stacked[i : i + 1]
        if config.flips:
            dims = [2 + d for d in range(ndim) if flips[i, d]]
            if dims:
                x = torch.flip(x, dims)
        if config.rot90 and square and rots[i]:
            x = torch.rot90(x, int(rots[i]), dims=(-2, -1))
        out.append(x)
    stacked = torch.cat(out)
    c, t = image.shape[1], targets.shape[1]
    return stacked[:, :c], stacked[:, c : c + t], stacked[:, c + t :]


def _rotate_scale(image, targets, mask, config, categorical, generator):
    ndim = image.ndim - 2
    b, device = image.shape[0], image.device
    angle = (_rand(b, generator, device) * 2 - 1) * math.radians(config.max_rotation_deg)
    lo, hi = config.scale_range
    # Log-uniform zoom so shrinking and enlarging are equally likely.
    zoom = torch.exp(math.log(lo) + _rand(b, generator, device) * (math.log(hi) - math.log(lo)))
    keep = _rand(b, generator, device) < 0.3  # some patches stay un-resampled
    angle = torch.where(keep, torch.zeros_like(angle), angle)
    zoom = torch.where(keep, torch.ones_like(zoom), zoom)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.zeros(b, ndim, ndim + 1, device=device)
    # grid coordinates are (x, y[, z]); rotate and zoom in the x-y plane only.
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    if ndim == 3:
        theta[:, 2, 2] = 1.0
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    image = F.grid_sample(
        image, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    channels = []
    for k, is_cat in enumerate(categorical):
        channels.append(
            F.grid_sample(
                targets[:, k : k + 1],
                grid,
                mode="nearest" if is_cat else "bilinear",
                padding_mode="zeros",
                align_corners=False,
            )
        )
    targets = torch.cat(channels, dim=1)
    mask = F.grid_sample(mask, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return image, targets, mask


def _intensity(image, config, generator):
    b, c = image.shape[:2]
    device = image.device
    shape = (b, c) + (1,) * (image.ndim - 2)
    gain = torch.exp((_rand(b * c, generator, device) - 0.5) * 0.7).reshape(shape)
    offset = ((_rand(b * c, generator, device) - 0.5) * 0.3).reshape(shape)
    gamma = torch.exp((_rand(b * c, generator, device) - 0.5) * 0.8).reshape(shape)
    positive = image.clamp_min(0)
    image = torch.where(image > 0, positive.pow(gamma), image)
    image = image * gain + offset
    if config.noise_std > 0:
        std = _rand(b, generator, device).reshape((b,) + (1,) * (image.ndim - 1))
        if device.type == "cpu":
            noise = torch.randn(image.shape, generator=generator)
        else:  # drawing on the device avoids a host-to-device copy per batch
            noise = torch.randn(image.shape, device=device)
        image = image + noise * std * config.noise_std
    return image
