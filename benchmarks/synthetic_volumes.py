"""Synthetic anisotropic 3D nuclei volumes with instance labels, for a 3D benchmark that anyone
can regenerate and share.

Each volume holds touching ellipsoidal nuclei of varied size, shape, orientation and brightness,
placed in physical units (µm) and sampled on an anisotropic voxel grid, so with a z step of
3 µm the nuclei are about three times flatter in voxels than in µm. The image is formed like a
fluorescence stack: a little chromatin texture, an uneven, smooth background, dimming with
depth, optical blur that is wider along z than in y/x (in µm), Poisson (shot) noise and camera
read noise::

    python benchmarks/synthetic_volumes.py OUT_DIR --n-volumes 6 --shape 32 128 128 \\
        --voxel-size 3 1 1 --seed 0

writes ``OUT_DIR/{train,test}/{images,labels}/volNNN.tif`` (first half train, second half test)
as ImageJ hyperstacks with axes ``ZYX`` whose metadata keep the voxel size (``spacing`` is the
z step, the resolution the y/x pixel size, in µm).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

__all__ = ["main", "make_volume", "write_volume"]

# How far a touching neighbour's centre sits, as a fraction of the summed centre-to-surface
# distances along the line joining them: < 1, so the two overlap a little and the later one
# (which fills only background) ends exactly at the earlier one's surface.
_TOUCH_OVERLAP = (0.8, 0.95)
# A nucleus is dropped if the ones already placed would hide more than this share of it.
_MAX_HIDDEN = 0.35


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3×3 rotation matrix (columns are the rotated axes)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _surface_distance(rotation: np.ndarray, semi_axes: np.ndarray, direction: np.ndarray) -> float:
    """Distance from an ellipsoid's centre to its surface along a unit ``direction`` (µm)."""
    local = rotation.T @ direction
    return float(1.0 / np.sqrt(np.sum((local / semi_axes) ** 2)))


def _ellipsoid_box(
    center: np.ndarray,
    rotation: np.ndarray,
    semi_axes: np.ndarray,
    voxel: np.ndarray,
    shape: tuple[int, int, int],
    pad: int,
) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """The voxel box around an ellipsoid (grown by ``pad`` voxels) and its mask in that box.

    Returns ``None`` when the box lies outside the volume.
    """
    # Half extent of the ellipsoid along each array axis; voxel k spans [k, k + 1) * voxel.
    half = np.sqrt(((rotation * semi_axes[None, :]) ** 2).sum(axis=1))
    lo = np.maximum(np.floor((center - half) / voxel).astype(int) - pad, 0)
    hi = np.minimum(np.ceil((center + half) / voxel).astype(int) + 1 + pad, shape)
    if np.any(hi <= lo):
        return None
    dz, dy, dx = (
        ((np.arange(lo[i], hi[i]) + 0.5) * voxel[i] - center[i]).reshape(
            [-1 if j == i else 1 for j in range(3)]
        )
        for i in range(3)
    )
    quad = np.zeros((hi - lo).tolist(), np.float32)
    for j in range(3):
        along = rotation[0, j] * dz + rotation[1, j] * dy + rotation[2, j] * dx
        quad += (along / semi_axes[j]) ** 2
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    return box, quad <= 1.0


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, int, int], sigma: Sequence[float]
) -> np.ndarray:
    """Gaussian-filtered white noise scaled to zero mean and unit standard deviation."""
    field = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (field - field.mean()) / max(float(field.std()), 1e-6)


def _uneven_background(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """A smooth background around 1: a tilted plane plus one broad, offset glow (float32)."""
    z, y, x = (np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape)
    z, y, x = z[:, None, None], y[None, :, None], x[None, None, :]
    gy, gx, gz = rng.uniform(-0.4, 0.4, 3)
    cy, cx = rng.uniform(-0.8, 0.8, 2)
    width = rng.uniform(0.6, 1.2)
    glow = rng.uniform(0.3, 0.8) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * width**2))
    background = 1.0 + gy * y + gx * x + 0.5 * gz * z + glow
    return np.broadcast_to(background, shape).astype(np.float32)


def make_volume(
    shape: Sequence[int] = (32, 128, 128),
    voxel_size: Sequence[float] = (3.0, 1.0, 1.0),
    n: int = 40,
    radius_um: tuple[float, float] = (4.0, 7.0),
    seed: int | Sequence[int] = 0,
    touching: bool = True,
    *,
    axis_ratio: tuple[float, float] = (0.7, 1.0),
    brightness: tuple[float, float] = (0.35, 1.0),
    blur_um: Sequence[float] = (2.5, 1.0, 1.0),
    photons: float = 200.0,
    background: float = 0.08,
    read_noise: float = 2.0,
    offset: float = 100.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Make one synthetic fluorescence volume of nuclei and its instance labels.

    Nuclei are ellipsoids placed in physical units and sampled on the anisotropic voxel grid.
    With ``touching=True`` about half of them are placed against a nucleus already there so
    that they share a face; labels never overlap (a later nucleus fills only background).
    With ``touching=False`` every nucleus keeps at least one background voxel between itself
    and the others along z, y and x.

    Parameters
    ----------
    shape : sequence of int
        Volume shape in voxels, ``(Z, Y, X)``.
    voxel_size : sequence of float
        Voxel size in µm, ``(z, y, x)``.
    n : int
        Number of nuclei to place. Fewer are returned when some cannot be placed (a crowded
        volume): check ``labels.max()``.
    radius_um : (float, float)
        Range of the largest semi-axis of each nucleus, in µm (drawn uniformly).
    seed : int or sequence of int
        Seed of :func:`numpy.random.default_rng`; the same seed gives the same volume.
    touching : bool
        Whether nuclei may touch (and about half are placed to touch another).
    axis_ratio : (float, float)
        Range of the two smaller semi-axes as fractions of the largest.
    brightness : (float, float)
        Range of each nucleus's mean brightness, as a fraction of ``photons``.
    blur_um : sequence of float
        Standard deviation of the Gaussian optical blur in µm, ``(z, y, x)``; wider along z.
    photons : float
        Expected photon count of a nucleus of brightness 1 before blur.
    background : float
        Mean background level as a fraction of ``photons`` (smooth and uneven).
    read_noise : float
        Standard deviation of the Gaussian camera read noise, in counts.
    offset : float
        Camera offset added to every voxel, in counts.

    Returns
    -------
    image : numpy.ndarray
        ``uint16`` array of ``shape``: the noisy fluorescence volume.
    labels : numpy.ndarray
        ``uint16`` array of ``shape``: 0 is background, nuclei are ``1 .. labels.max()``, each
        one 6-connected component.

    Examples
    --------
    >>> image, labels = make_volume((16, 64, 64), n=10, seed=1)
    >>> image.dtype, labels.dtype, image.shape
    (dtype('uint16'), dtype('uint16'), (16, 64, 64))
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or len(voxel_size) != 3 or len(blur_um) != 3:
        raise ValueError("shape, voxel_size and blur_um need three values (z, y, x)")
    voxel = np.asarray(voxel_size, float)
    extent = np.asarray(shape) * voxel
    rng = np.random.default_rng(seed)

    labels = np.zeros(shape, np.uint16)
    shapes: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # centre, rotation, semi-axes
    means: list[float] = []
    tries = 0
    while len(shapes) < n and tries < 50 * n:
        tries += 1
        radius = rng.uniform(*radius_um)
        semi_axes = radius * np.concatenate([[1.0], rng.uniform(*axis_ratio, 2)])
        rotation = _random_rotation(rng)
        if touching and shapes and rng.random() < 0.5:
            other_center, other_rotation, other_axes = shapes[rng.integers(len(shapes))]
            direction = rng.standard_normal(3)
            direction /= np.linalg.norm(direction)
            reach = _surface_distance(other_rotation, other_axes, direction)
            reach += _surface_distance(rotation, semi_axes, direction)
            center = other_center + direction * reach * rng.uniform(*_TOUCH_OVERLAP)
            margin = 0.3 * radius
            if np.any(center < margin) or np.any(center > extent - margin):
                continue
        else:
            margin = np.minimum(0.5 * radius, extent / 2)
            center = rng.uniform(margin, extent - margin)

        pad = 0 if touching else 1
        placed = _ellipsoid_box(center, rotation, semi_axes, voxel, shape, pad)
        if placed is None:
            continue
        box, mask = placed
        region = labels[box]
        if not mask.any():
            continue
        if touching:
            free = mask & (region == 0)
            if free.sum() < (1 - _MAX_HIDDEN) * mask.sum():
                continue
        else:
            if np.any(region[ndi.binary_dilation(mask)] != 0):
                continue
            free = mask
        if ndi.label(free)[1] != 1:  # keep only nuclei in one 6-connected piece
            continue
        label = len(shapes) + 1
        region[free] = label
        shapes.append((center, rotation, semi_axes))
        means.append(rng.uniform(*brightness))

    # Fluorophore density: per-nucleus brightness with a little smooth chromatin texture.
    lut = np.concatenate([[0.0], means]).astype(np.float32)
    texture = _smooth_field(rng, shape, 0.8 / voxel)
    density = lut[labels] * np.clip(1.0 + 0.15 * texture, 0.5, 1.5)
    density = ndi.gaussian_filter(density, np.asarray(blur_um, float) / voxel, mode="nearest")

    depth = 1.0 - 0.25 * np.linspace(0.0, 1.0, shape[0], dtype=np.float32)[:, None, None]
    expected = photons * (density * depth + background * _uneven_background(rng, shape))
    counts = rng.poisson(np.maximum(expected, 0.0)).astype(np.float32)
    counts += offset + rng.normal(0.0, read_noise, shape).astype(np.float32)
    image = np.clip(np.rint(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    return image, labels


def write_volume(path: str | Path, data: np.ndarray, voxel_size: Sequence[float]) -> None:
    """Write a ``ZYX`` volume as an ImageJ hyperstack TIFF that keeps the voxel size.

    Parameters
    ----------
    path : str or Path
        File to write.
    data : numpy.ndarray
        3D array, ``(Z, Y, X)``.
    voxel_size : sequence of float
        Voxel size in µm, ``(z, y, x)``: stored as ImageJ ``spacing`` (z) and as the TIFF
        resolution in pixels per µm (y, x).
    """
    import tifffile

    vz, vy, vx = (float(v) for v in voxel_size)
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1.0 / vx, 1.0 / vy),
        metadata={"axes": "ZYX", "spacing": vz, "unit": "um"},
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Write train/test folders of synthetic volumes (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write train/ and test/ into")
    parser.add_argument("--n-volumes", type=int, default=6, help="volumes in all (half train)")
    parser.add_argument(
        "--shape", type=int, nargs=3, default=[32, 128, 128], metavar=("Z", "Y", "X")
    )
    parser.add_argument(
        "--voxel-size", type=float, nargs=3, default=[3.0, 1.0, 1.0], metavar=("Z", "Y", "X")
    )
    parser.add_argument("--n", type=int, default=40, help="nuclei per volume")
    parser.add_argument(
        "--radius-um", type=float, nargs=2, default=[4.0, 7.0], metavar=("MIN", "MAX")
    )
    parser.add_argument("--no-touching", action="store_true", help="keep nuclei apart")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n_volumes < 1:
        parser.error("--n-volumes must be at least 1")

    n_train = (args.n_volumes + 1) // 2
    for split in ("train", "test"):
        for kind in ("images", "labels"):
            (args.out_dir / split / kind).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for index in range(args.n_volumes):
        split = "train" if index < n_train else "test"
        tic = time.perf_counter()
        image, labels = make_volume(
            args.shape,
            args.voxel_size,
            n=args.n,
            radius_um=tuple(args.radius_um),
            seed=(args.seed, index),
            touching=not args.no_touching,
        )
        name = f"vol{index:03d}.tif"
        write_volume(args.out_dir / split / "images" / name, image, args.voxel_size)
        write_volume(args.out_dir / split / "labels" / name, labels, args.voxel_size)
        print(
            f"{split}/images/{name} + {split}/labels/{name}: {image.shape} uint16, "
            f"{int(labels.max())} nuclei, {time.perf_counter() - tic:.2f} s"
        )
    print(
        f"wrote {n_train} train and {args.n_volumes - n_train} test volumes to {args.out_dir} "
        f"(voxel size z, y, x = {', '.join(f'{v:g}' for v in args.voxel_size)} µm) "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
