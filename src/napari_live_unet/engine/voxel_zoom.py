"""Per-axis zoom between voxel sizes: how an image is resampled to a model's voxels."""

from __future__ import annotations

from .errors import InputError

# Voxel sizes come from metadata, not estimates: resample unless they agree within 5%.
_VOXEL_TOLERANCE = 0.05


def voxel_zoom(
    image_voxel: tuple[float, ...] | None, model_voxel: tuple[float, ...] | None
) -> tuple[float, ...] | None:
    """Per-axis zoom that resamples an image of ``image_voxel`` to ``model_voxel``.

    None when either is unknown or they agree within 5% on every axis.

    Raises
    ------
    InputError
        If the two give different numbers of axes.
    """
    if image_voxel is None or model_voxel is None:
        return None
    if len(image_voxel) != len(model_voxel):
        raise InputError(
            f"voxel size {tuple(image_voxel)} has {len(image_voxel)} axes, but the model's "
            f"{tuple(model_voxel)} has {len(model_voxel)}"
        )
    zoom = tuple(float(i) / float(m) for i, m in zip(image_voxel, model_voxel, strict=True))
    if all(abs(z - 1.0) < _VOXEL_TOLERANCE for z in zoom):
        return None
    return zoom


def combined_zoom(
    zoom: float, axis_zoom: tuple[float, ...] | None, ndim: int
) -> float | tuple[float, ...]:
    """An object-size zoom and a per-axis voxel zoom as one (scalar when isotropic)."""
    if axis_zoom is None:
        return zoom
    return tuple(zoom * z for z in axis_zoom[-ndim:])
