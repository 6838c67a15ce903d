"""The synthetic anisotropic 3D nuclei generator in ``benchmarks/synthetic_volumes.py``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "synthetic_volumes.py"


def _load():
    spec = importlib.util.spec_from_file_location("synthetic_volumes", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sv = _load()


def _touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of different labels that are 6-connected neighbours somewhere."""
    pairs: set[tuple[int, int]] = set()
    for axis in range(labels.ndim):
        moved = np.moveaxis(labels, axis, 0)
        a, b = moved[:-1].ravel(), moved[1:].ravel()
        hit = (a > 0) & (b > 0) & (a != b)
        low, high = np.minimum(a[hit], b[hit]), np.maximum(a[hit], b[hit])
        pairs |= set(zip(low.tolist(), high.tolist(), strict=True))
    return pairs


def _median_extents(labels: np.ndarray) -> np.ndarray:
    """Median bounding-box size (voxels) along z, y, x of the objects clear of the border."""
    sizes = []
    for box in ndi.find_objects(labels):
        if box is None:
            continue
        if any(s.start == 0 or s.stop == n for s, n in zip(box, labels.shape, strict=True)):
            continue
        sizes.append([s.stop - s.start for s in box])
    assert len(sizes) >= 10
    return np.median(np.asarray(sizes, float), axis=0)


@pytest.fixture(scope="module")
def volume():
    return sv.make_volume((32, 128, 128), (3.0, 1.0, 1.0), n=40, seed=0, touching=True)


def test_shapes_dtypes_and_instance_labels(volume):
    image, labels = volume
    assert image.shape == labels.shape == (32, 128, 128)
    assert image.dtype == labels.dtype == np.uint16
    ids = np.unique(labels)
    assert ids[0] == 0
    assert np.array_equal(ids[1:], np.arange(1, labels.max() + 1))  # consecutive 1..k
    assert 36 <= labels.max() <= 40  # the requested count, give or take a few not placed
    # Each nucleus is one 6-connected piece.
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        assert ndi.label(labels[box] == index)[1] == 1
    # Nuclei are brighter than the background around them, and the image is noisy.
    assert image[labels > 0].mean() > image[labels == 0].mean() + 30
    assert np.unique(image[labels == 0]).size > 20


def test_nuclei_are_flatter_in_voxels_by_the_z_step(volume):
    _, labels = volume
    z, y, x = _median_extents(labels)
    assert 0.2 <= z / ((y + x) / 2) <= 0.6
    _, isotropic = sv.make_volume((64, 64, 64), (1.0, 1.0, 1.0), n=30, seed=0)
    z, y, x = _median_extents(isotropic)
    assert 0.75 <= z / ((y + x) / 2) <= 1.3


def test_touching_or_apart(volume):
    _, labels = volume
    assert len(_touching_pairs(labels)) >= 5
    _, apart = sv.make_volume((32, 128, 128), (3.0, 1.0, 1.0), n=40, seed=0, touching=False)
    assert apart.max() >= 36
    assert _touching_pairs(apart) == set()


def test_same_seed_same_volume(volume):
    image, labels = volume
    again_image, again_labels = sv.make_volume(
        (32, 128, 128), (3.0, 1.0, 1.0), n=40, seed=0, touching=True
    )
    assert np.array_equal(image, again_image)
    assert np.array_equal(labels, again_labels)
    other_image, _ = sv.make_volume((32, 128, 128), (3.0, 1.0, 1.0), n=40, seed=1)
    assert not np.array_equal(image, other_image)


def test_cli_writes_pairs_with_the_voxel_size(tmp_path, capsys):
    argv = [str(tmp_path), "--n-volumes", "3", "--shape", "12", "48", "40"]
    argv += ["--voxel-size", "2.5", "0.5", "0.5", "--n", "6", "--seed", "3"]
    assert sv.main(argv) == 0
    written = {
        split: sorted(p.name for p in (tmp_path / split / "images").iterdir())
        for split in ("train", "test")
    }
    assert written == {"train": ["vol000.tif", "vol001.tif"], "test": ["vol002.tif"]}
    for split, names in written.items():
        for name in names:
            with tifffile.TiffFile(tmp_path / split / "images" / name) as tif:
                image = tif.asarray()
                axes = tif.series[0].axes
                meta = tif.imagej_metadata
                page = tif.pages[0]
                x_res = page.tags["XResolution"].value
                y_res = page.tags["YResolution"].value
            labels = tifffile.imread(tmp_path / split / "labels" / name)
            assert image.shape == labels.shape == (12, 48, 40)
            assert image.dtype == labels.dtype == np.uint16
            assert labels.max() >= 1
            assert axes == "ZYX"
            assert meta is not None
            assert meta["spacing"] == pytest.approx(2.5)
            assert meta.get("unit") in ("um", "micron", "µm")
            assert x_res[1] / x_res[0] == pytest.approx(0.5)  # µm per pixel
            assert y_res[1] / y_res[0] == pytest.approx(0.5)
    out = capsys.readouterr().out
    assert "train/images/vol000.tif" in out and "test/images/vol002.tif" in out
