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
    if config.colour > 0 and image.shape[1] > 1:
        image = _mix_channels(image, config.colour, generator)
    if config.blur > 0:
        image = _blur(image, config.blur, generator)
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
    theta = torch.zeros(b, 2, 3, device=device)
    # Grid coordinates are (x, y), each scaled to [-1, 1]: rotate and zoom in the x-y plane
    # only (z never mixes with y/x), with the patch's aspect ratio so that a non-square patch
    # is rotated, not sheared.
    aspect = image.shape[-2] / image.shape[-1]
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * aspect
    theta[:, 1, 0], theta[:, 1, 1] = sin / aspect, cos
    if ndim == 2:
        return _resample_plane(image, targets, mask, theta, categorical)
    # Volumes: each slice is turned in its plane (a 2D resampling of every slice costs a
    # fraction of a 3D one), then z is scaled on its own, less far (object depth varies
    # independently of width).
    depth = image.shape[2]
    out = _resample_plane(
        _slices(image),
        _slices(targets),
        _slices(mask),
        theta.repeat_interleave(depth, dim=0),
        categorical,
    )
    image, targets, mask = (_unslice(t, b) for t in out)
    z_lo, z_hi = math.sqrt(lo), math.sqrt(hi)
    zoom_z = torch.exp(
        math.log(z_lo) + _rand(b, generator, device) * (math.log(z_hi) - math.log(z_lo))
    )
    zoom_z = torch.where(keep, torch.ones_like(zoom_z), zoom_z)
    return _scale_z(image, targets, mask, zoom_z.cpu().tolist(), categorical)


def _slices(x: torch.Tensor) -> torch.Tensor:
    """(B, C, Z, Y, X) -> (B*Z, C, Y, X)."""
    b, c, z, y, w = x.shape
    return x.transpose(1, 2).reshape(b * z, c, y, w)


def _unslice(x: torch.Tensor, b: int) -> torch.Tensor:
    """(B*Z, C, Y, X) -> (B, C, Z, Y, X)."""
    n, c, y, w = x.shape
    return x.reshape(b, n // b, c, y, w).transpose(1, 2).contiguous()


def _resample_plane(image, targets, mask, theta, categorical):
    """Resample 2D patches by the affine ``theta`` (one per patch)."""
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
                # The mask marks what lies outside; "border" keeps edge pixels from being
                # blended with zeros.
                padding_mode="border",
                align_corners=False,
            )
        )
    targets = torch.cat(channels, dim=1)
    mask = F.grid_sample(mask, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return image, targets, mask


def _scale_z(image, targets, mask, zooms: list[float], categorical):
    """Zoom each volume along z about its centre by ``zooms[i]`` (linear; nearest for class
    targets and the mask). Slices pulled in from beyond the patch are mirrored for the image
    and masked out of the loss."""
    depth, device = image.shape[2], image.device
    out_z = torch.arange(depth, dtype=torch.float32, device=device)
    images, target_list, masks = [], [], []
    for i, zoom in enumerate(zooms):
        if zoom == 1.0:
            images.append(image[i])
            target_list.append(targets[i])
            masks.append(mask[i])
            continue
        src = (out_z - (depth - 1) / 2) / zoom + (depth - 1) / 2
        inside = (src > -0.5) & (src < depth - 0.5)
        mirrored = src.abs()
        mirrored = torch.where(mirrored > depth - 1, 2 * (depth - 1) - mirrored, mirrored)
        mirrored = mirrored.clamp(0, depth - 1)
        low = mirrored.floor().long()
        high = (low + 1).clamp_max(depth - 1)
        w = (mirrored - low).view(1, -1, 1, 1)
        nearest = mirrored.round().long()
        images.append(image[i][:, low] * (1 - w) + image[i][:, high] * w)
        channels = [
            targets[i][k : k + 1, nearest]
            if is_cat
            else targets[i][k : k + 1, low] * (1 - w) + targets[i][k : k + 1, high] * w
            for k, is_cat in enumerate(categorical)
        ]
        target_list.append(torch.cat(channels))
        masks.append(mask[i][:, nearest] * inside.view(1, -1, 1, 1).to(mask.dtype))
    return torch.stack(images), torch.stack(target_list), torch.stack(masks)


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


def _mix_channels(image: torch.Tensor, strength: float, generator) -> torch.Tensor:
    """Each channel becomes itself plus up to ``strength`` of every other channel (signed),
    then is rescaled to keep its weight: colour and stain shifts between images."""
    b, c = image.shape[:2]
    device = image.device
    weights = (_rand(b * c * c, generator, device).reshape(b, c, c) * 2 - 1) * strength
    eye = torch.eye(c, device=device).expand(b, c, c)
    mix = eye + weights * (1 - eye)
    mix = mix / mix.abs().sum(dim=2, keepdim=True).clamp_min(1e-6)
    flat = image.reshape(b, c, -1)
    return torch.bmm(mix.to(image.dtype), flat).reshape(image.shape)


def _blur(image: torch.Tensor, fraction: float, generator) -> torch.Tensor:
    """Blur (sigma up to 1.5 px) or sharpen (unsharp mask) a ``fraction`` of the patches in
    their y/x plane; the others pass unchanged."""
    b = image.shape[0]
    device = image.device
    chosen = (_rand(b, generator, device) < fraction).cpu().tolist()
    sigmas = (0.5 + _rand(b, generator, device) * 1.0).cpu().tolist()
    sharpen = (_rand(b, generator, device) < 0.3).cpu().tolist()
    out = []
    for i in range(b):
        x = image[i : i + 1]
        if chosen[i]:
            smooth = _gaussian_yx(x, sigmas[i])
            x = 2 * x - smooth if sharpen[i] else smooth
        out.append(x)
    return torch.cat(out)


def _gaussian_yx(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(2.5 * sigma))
    grid = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (grid / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c, spatial = x.shape[1], x.shape[2:]
    planes = x.reshape(-1, 1, *spatial[-2:])  # every channel (and slice) on its own
    planes = F.pad(planes, (radius, radius, radius, radius), mode="reflect")
    planes = F.conv2d(planes, kernel.view(1, 1, 1, -1))
    planes = F.conv2d(planes, kernel.view(1, 1, -1, 1))
    return planes.reshape(1, c, *spatial)
