"""Regions of 3D volumes that span several slices: masks, pairs and regions.json."""

import json

import numpy as np
import pytest

from napari_live_unet.engine import InputError
from napari_live_unet.engine.annotation_set import (
    AnnotatedImage,
    load_annotation_set,
    pairs_from_annotation_set,
    read_regions_file,
    save_annotation_set,
)
from napari_live_unet.engine.regions import Region, pairs_from_regions, role_mask

SHAPE = (12, 40, 40)
# A triangle drawn on slice 5: its y/x polygon, not its box, is annotated.
TRIANGLE = np.array([[5.0, 4.0, 4.0], [5.0, 4.0, 30.0], [5.0, 30.0, 4.0]])


def _inside_triangle() -> np.ndarray:
    y, x = np.mgrid[: SHAPE[1], : SHAPE[2]]
    return (y >= 4) & (x >= 4) & (y + x <= 34)


def _volume():
    labels = np.zeros(SHAPE, np.uint16)
    labels[:, 8:14, 8:14] = 1  # a column through every slice, inside the triangle
    labels[:, 30:36, 30:36] = 2  # outside the triangle
    image = (labels * 50 + 10).astype(np.uint8)
    return image, labels


def test_a_region_over_slices_3_to_7_masks_exactly_them():
    region = Region("train", (), TRIANGLE, slices=(3, 7))
    assert region.z_range == (3, 7)
    mask = role_mask([region], SHAPE, 3, "train")
    inside = _inside_triangle()
    for z in range(SHAPE[0]):
        expected = inside if 3 <= z <= 7 else np.zeros_like(inside)
        np.testing.assert_array_equal(mask[z], expected, err_msg=f"slice {z}")
    assert not mask[2].any() and not mask[8].any()
    assert not role_mask([region], SHAPE, 3, "val").any()


def test_pairs_of_a_deep_region_cover_its_slices_inside_the_polygon():
    image, labels = _volume()
    regions = [Region("train", (), TRIANGLE, slices=(3, 7))]
    (pair,), val = pairs_from_regions("vol", image, labels, regions, 3)
    assert val == [] and pair.labels.shape == (5, 27, 27)
    np.testing.assert_array_equal(pair.image[0], image[3:8, 4:31, 4:31])
    expected = np.broadcast_to(_inside_triangle()[4:31, 4:31], (5, 27, 27))
    np.testing.assert_array_equal(pair.annotated, expected)
    assert pair.n_objects == 1  # object 2 lies outside the triangle

    # Without slices the region covers the slice it was drawn on only.
    (flat,), _ = pairs_from_regions("vol", image, labels, [Region("train", (), TRIANGLE)], 3)
    assert flat.labels.shape == (1, 27, 27)


def test_a_deep_region_across_frames_and_clipped_to_the_volume():
    labels = np.zeros((2, *SHAPE), np.uint16)
    labels[1, :, 8:14, 8:14] = 1
    region = Region("val", (1,), TRIANGLE, slices=(9, 20))  # past the last slice: clipped
    mask = role_mask([region], labels.shape, 3, "val")
    assert not mask[0].any()
    assert mask[1, 9:].any(axis=(1, 2)).all() and not mask[1, :9].any()


def test_bad_slice_ranges_are_refused_clearly():
    with pytest.raises(InputError, match="first slice must be at least 0 and not after"):
        Region("train", (), TRIANGLE, slices=(7, 3))
    with pytest.raises(InputError, match="first slice must be at least 0"):
        Region("train", (), TRIANGLE, slices=(-1, 3))
    with pytest.raises(InputError, match="only 3D regions span slices"):
        Region("train", (), TRIANGLE[:, 1:], slices=(3, 7))
    with pytest.raises(InputError, match="two slice numbers"):
        Region("train", (), TRIANGLE, slices=(3,))
    image, labels = _volume()
    outside = [Region("train", (), TRIANGLE, slices=(20, 25))]
    with pytest.raises(InputError, match="outside the image.*over slices"):
        pairs_from_regions("vol", image, labels, outside, 3)
    assert not role_mask(outside, SHAPE, 3, "train").any()


def test_regions_json_round_trips_the_slices(tmp_path):
    image, labels = _volume()
    deep = Region("train", (), TRIANGLE, slices=(3, 7))
    flat = Region("val", (), TRIANGLE + np.array([0.0, 0.0, 5.0]))
    save_annotation_set(tmp_path, [AnnotatedImage("vol", image, labels, [deep, flat], 3)])
    data = json.loads((tmp_path / "regions.json").read_text())
    specs = data["images"]["vol"]["regions"]
    assert data["version"] == 2 and specs[0]["slices"] == [3, 7] and "slices" not in specs[1]

    (item,) = load_annotation_set(tmp_path)
    assert item.regions == [deep, flat]
    assert item.regions[0].slices == (3, 7) and item.regions[1].slices is None
    train, val = pairs_from_annotation_set(tmp_path)
    assert train[0].labels.shape == (5, 27, 27) and val[0].labels.shape == (1, 27, 27)


def test_an_old_regions_file_keeps_one_slice_regions(tmp_path):
    image, labels = _volume()
    save_annotation_set(tmp_path, [AnnotatedImage("vol", image, labels, [], 3)])
    old = {  # as version 1 wrote it: no "slices"
        "format": "napari-live-unet annotation set",
        "version": 1,
        "images": {
            "vol": {
                "spatial_ndim": 3,
                "channel_axis": None,
                "regions": [{"role": "train", "frame": [], "vertices": TRIANGLE.tolist()}],
            }
        },
    }
    (tmp_path / "regions.json").write_text(json.dumps(old))
    (region,) = read_regions_file(tmp_path / "regions.json")["vol"].regions
    assert region.slices is None and region.z_range == (5, 5)
    mask = role_mask([region], SHAPE, 3, "train")
    assert mask[5].any() and not np.delete(mask, 5, axis=0).any()
    (pair,), _ = pairs_from_annotation_set(tmp_path)
    assert pair.labels.shape == (1, 27, 27)


def test_a_region_file_with_bad_slices_names_the_image(tmp_path):
    image, labels = _volume()
    save_annotation_set(tmp_path, [AnnotatedImage("vol", image, labels, [], 3)])
    data = json.loads((tmp_path / "regions.json").read_text())
    bad = {"role": "train", "frame": [], "vertices": TRIANGLE.tolist(), "slices": [7, 3]}
    data["images"]["vol"]["regions"] = [bad]
    (tmp_path / "regions.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="image 'vol'.*not after the last"):
        read_regions_file(tmp_path / "regions.json")
