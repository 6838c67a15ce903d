"""Device presets: the model size, patch and batch that suit a CPU or a GPU, 2D or 3D.

The CLI fills the options a user leaves out from them, and the Train dock shows them when
a device is chosen.
"""

from __future__ import annotations

MODEL_SIZES: dict[str, tuple[int, int]] = {
    "small": (8, 3),
    "medium": (16, 3),
    "large": (32, 4),
}
"""Named U-net sizes: ``(base_channels, depth)``, the same network at three widths."""


def _size(name: str) -> dict[str, int]:
    base_channels, depth = MODEL_SIZES[name]
    return {"base_channels": base_channels, "depth": depth}


# (device kind, ndim) -> settings; see recommended_settings.
_RECOMMENDED: dict[tuple[str, int], dict[str, int]] = {
    ("cpu", 2): {**_size("small"), "patch_size": 128, "batch_size": 8},
    ("cpu", 3): {**_size("small"), "patch_size": 64, "patch_size_z": 16, "batch_size": 4},
    ("gpu", 2): {**_size("large"), "patch_size": 256, "batch_size": 32},
    ("gpu", 3): {**_size("large"), "patch_size": 128, "patch_size_z": 32, "batch_size": 4},
}


def recommended_settings(device_type: str, ndim: int = 2) -> dict[str, int]:
    """Model size, patch and batch that suit a device type (``cpu``, ``cuda`` or ``mps``).

    On a CPU every step counts (a 300 s budget sees only ~25k patches on two cores), so a
    narrow net that trains fast wins; a GPU affords a wider, deeper net and larger batches.
    In 3D a patch holds a stack of slices, so its y/x edge is halved and batches are
    smaller: 16x64x64 patches in batches of 4 keep a CPU at many steps per second. Patches
    are further capped by the images' own size (see
    :func:`~napari_live_unet.engine.sizes.training_patch_shape`).

    Parameters
    ----------
    device_type : str
        ``cpu``; anything else (``cuda``, ``mps``) counts as a GPU.
    ndim : int
        2, or 3 for volumes.

    Returns
    -------
    dict
        ``base_channels``, ``depth``, ``patch_size``, ``batch_size`` and, in 3D,
        ``patch_size_z`` (a new dict: the caller may change it).
    """
    kind = "cpu" if device_type == "cpu" else "gpu"
    return dict(_RECOMMENDED[(kind, 3 if ndim == 3 else 2)])


def volume_sizes(device_type: str, batch_size: int, patch_size: int) -> tuple[int, int]:
    """Batch size and patch edge for volumes, given the ones chosen for 2D images.

    While they are still the device's 2D preset, the 3D preset's (a 2D-sized patch stacked
    16 deep trains 4x slower); sizes the user chose are kept.
    """
    flat = recommended_settings(device_type, 2)
    if (batch_size, patch_size) == (flat["batch_size"], flat["patch_size"]):
        deep = recommended_settings(device_type, 3)
        return deep["batch_size"], deep["patch_size"]
    return batch_size, patch_size
