"""Will a training run fit in memory? An estimate made before anything big is allocated.

A batch, patch or network too large for the machine does not fail politely on a CPU: the
process grows until the operating system kills it, with no message. :func:`check_training_memory`
estimates the run's peak memory from the settings alone and refuses, naming the estimate and
the limit, when it exceeds the memory available on the device.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from .config import ModelConfig, TrainConfig
from .device import resolve_device
from .errors import InputError
from .sizes import training_patch_shape

# Calibration (see training_memory_bytes): per-sample float elements of one training step,
# per element of the U-net's feature maps and per patch voxel; the same for a validation
# forward pass without gradients; copies of the parameters held; fixed working memory.
TRAIN_PER_FEATURE = 12.0
TRAIN_PER_VOXEL = 80.0
EVAL_PER_FEATURE = 2.0
EVAL_PER_VOXEL = 32.0
PARAMETER_COPIES = 5
OVERHEAD_BYTES = 100 * 2**20
VALIDATION_CHUNK = 16
"""Validation patches per forward pass (``training_run.patch_loss``)."""

_NO_CGROUP_LIMIT = 2**60


def patch_shape(config: TrainConfig, model_config: ModelConfig) -> tuple[int, ...]:
    """The training patch for these settings: ``patch_size`` (and ``patch_size_z`` in 3D)
    rounded down to the network's size multiple, at least one multiple."""
    return training_patch_shape(
        config.patch_size, config.patch_size_z, model_config.ndim, model_config.size_multiples
    )


def parameter_count(model_config: ModelConfig) -> int:
    """Parameters of the U-net for ``model_config``, counted without allocating them."""
    from .unet import UNet

    with torch.device("meta"):
        network = UNet(model_config)
    return sum(p.numel() for p in network.parameters())


def training_memory_bytes(
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    batch_size: int | None = None,
    patch: tuple[int, ...] | None = None,
    activation_bytes: int = 4,
) -> int:
    """Estimated peak memory of a training run, in bytes, beyond what is already in use.

    Parameters
    ----------
    model_config : ModelConfig
        The network (its depth, width and dimensionality set the feature maps).
    train_config : TrainConfig
        Batch and patch sizes.
    batch_size : int, optional
        Patches per step, instead of ``train_config.batch_size``.
    patch : tuple of int, optional
        The patch shape the run uses; by default :func:`patch_shape` of the settings.
    activation_bytes : int
        Bytes per element of the network's feature maps: 4 for float32, 2 under bfloat16
        autocast.

    Returns
    -------
    int
        ``OVERHEAD + 5 x parameter bytes + max(B x train, 16 x eval) x bytes``, where
        ``F = sum over levels of channels x voxels`` of one patch (level ``l`` holds
        ``base_channels * 2**l`` channels on the voxels left after ``l`` poolings), ``V`` the
        patch voxels, ``train = 12 F + 80 V`` (feature maps kept for the backward pass,
        the gradients, and per-voxel inputs, targets, augmentation and loss) and
        ``eval = 2 F + 32 V`` (the validation loss, 16 patches per pass without
        gradients). The parameters count five times: weights, gradients, AdamW's two
        moments and the best-so-far copy. Overhead: 100 MiB.

    Notes
    -----
    Calibrated on a 2-core x86 CPU (float32, channels-last, torch 2.13) from the peak
    resident memory (``ru_maxrss``) of three training steps (augmentation, forward, loss,
    backward, AdamW step) minus the resident memory before them, each configuration in a
    fresh process. Estimate / measured:

    ======================================  ==========  ========  =====
    2D/3D, base, depth, batch, patch        measured    estimate  ratio
    ======================================  ==========  ========  =====
    2D, 8, 3, 8, 128 (the CPU default)      224 MiB     228 MiB   1.02
    2D, 8, 3, 16, 128                       369 MiB     358 MiB   0.97
    2D, 8, 3, 8, 256                        614 MiB     618 MiB   1.01
    2D, 16, 4, 8, 256                       1034 MiB    1036 MiB  1.00
    2D, 32, 4, 8, 256                       1808 MiB    1891 MiB  1.05
    2D, 32, 4, 16, 256 (boundary mode)      3222 MiB    3539 MiB  1.10
    2D, 3 channels, 16, 2, 4, 512           1509 MiB    1762 MiB  1.17
    2D, 64, 5, 4, 256 (124 M parameters)    3677 MiB    4060 MiB  1.10
    3D, 8, 3, 2, 32x64x64                   283 MiB     310 MiB   1.09
    3D, 16, 3, 2, 32x96x96                  791 MiB     876 MiB   1.11
    validation pass, 2D, 32, 4, 16, 256     751 MiB     749 MiB   1.00
    validation pass, 3D, 16, 3, 16, 32x96²  1474 MiB    1442 MiB  0.98
    ======================================  ==========  ========  =====

    GPU memory was not measured; under bfloat16 autocast the feature maps take half as
    much (``activation_bytes=2``). Image data held by the run is not included: the
    check runs before the data is fitted and moved to the device.
    """
    batch = train_config.batch_size if batch_size is None else batch_size
    patch = patch if patch is not None else patch_shape(train_config, model_config)
    voxels = math.prod(patch)
    # Level l holds base * 2**l channels on the voxels left after the poolings above it
    # (2**ndim per level for isotropic networks, less for anisotropic ones).
    shrink = [1]
    for pool in model_config.level_pooling:
        shrink.append(shrink[-1] * math.prod(pool))
    features = sum(
        model_config.base_channels * 2**level * voxels / shrink[level]
        for level in range(model_config.depth + 1)
    )
    train_sample = TRAIN_PER_FEATURE * features * activation_bytes + TRAIN_PER_VOXEL * voxels * 4
    eval_sample = EVAL_PER_FEATURE * features * activation_bytes + EVAL_PER_VOXEL * voxels * 4
    working = max(batch * train_sample, VALIDATION_CHUNK * eval_sample)
    parameters = PARAMETER_COPIES * parameter_count(model_config) * 4
    return int(OVERHEAD_BYTES + parameters + working)


def available_memory_bytes(device: torch.device) -> int | None:
    """Memory a run may still use on ``device``, in bytes; None when it cannot be told.

    CUDA: the free memory of the GPU (``torch.cuda.mem_get_info``). Otherwise (CPU, and
    MPS, which shares the system's memory): ``MemAvailable`` of ``/proc/meminfo`` (free
    memory plus what the kernel can reclaim), else the free physical pages
    (``os.sysconf``), and no more than the container's cgroup limit leaves.
    """
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    found = [m for m in (_meminfo_available(), _cgroup_available()) if m is not None]
    return min(found) if found else None


def check_training_memory(
    model_config: ModelConfig,
    train_config: TrainConfig,
    device: str | torch.device,
    *,
    patch: tuple[int, ...] | None = None,
) -> int:
    """Refuse settings whose training would not fit in memory; returns the estimate.

    On CUDA the training loop halves the batch when the GPU runs out of memory, so only
    settings that cannot fit with one patch per batch are refused there.

    Parameters
    ----------
    model_config, train_config : ModelConfig, TrainConfig
        The network and the batch and patch sizes.
    device : str or torch.device
        Where training runs.
    patch : tuple of int, optional
        The patch shape the run uses (default: :func:`patch_shape`).

    Returns
    -------
    int
        The estimated peak in bytes (see :func:`training_memory_bytes`).

    Raises
    ------
    InputError
        If the estimate exceeds :func:`available_memory_bytes`; the message gives both and
        what to change.
    """
    device = resolve_device(device)
    cuda = device.type == "cuda"
    amp = cuda and train_config.mixed_precision and _cuda_bf16(device)
    batch = 1 if cuda else train_config.batch_size
    patch = patch if patch is not None else patch_shape(train_config, model_config)
    estimate = training_memory_bytes(
        model_config, train_config, batch_size=batch, patch=patch, activation_bytes=2 if amp else 4
    )
    limit = available_memory_bytes(device)
    if limit is None or estimate <= limit:
        return estimate
    what = (
        f"{'x'.join(map(str, patch))}-pixel patches, a U-net of depth {model_config.depth} "
        f"with {model_config.base_channels} base channels"
    )
    if cuda:
        raise InputError(
            f"training needs about {format_bytes(estimate)} of GPU memory even with one patch "
            f"per batch ({what}), but only {format_bytes(limit)} is free on {device}. Use a "
            "smaller patch size or depth, or fewer base channels (or train on the CPU)."
        )
    raise InputError(
        f"training needs about {format_bytes(estimate)} of memory (batches of {batch} "
        f"{what}), but only {format_bytes(limit)} is available on {device}. Use a smaller "
        "batch size, patch size or depth, or fewer base channels."
    )


def format_bytes(n: int) -> str:
    """``n`` bytes for people: ``512 B``, ``3.0 MiB``, ``1.5 TiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _cuda_bf16(device: torch.device) -> bool:
    from .device import autocast_dtype

    try:
        return autocast_dtype(device) is not None
    except (RuntimeError, AssertionError):
        return False


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_available() -> int | None:
    """What the cgroup's memory limit leaves (v2, else v1), crediting reclaimable page
    cache; None without a limit."""
    for folder, limit_file, usage_file, inactive in (
        ("/sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),
        (
            "/sys/fs/cgroup/memory",
            "memory.limit_in_bytes",
            "memory.usage_in_bytes",
            "total_inactive_file",
        ),
    ):
        root = Path(folder)
        try:
            text = (root / limit_file).read_text().strip()
            if text == "max" or int(text) >= _NO_CGROUP_LIMIT:
                return None
            used = int((root / usage_file).read_text())
            stat = (root / "memory.stat").read_text().split()
            reclaimable = int(stat[stat.index(inactive) + 1]) if inactive in stat else 0
            return max(0, int(text) - used + reclaimable)
        except (OSError, ValueError):
            continue
    return None
