import numpy as np
import pytest
import tifffile

from napari_live_unet.engine import InputError, load_folder_pairs, make_pair, split_validation
from napari_live_unet.engine.data import regions_to_mask

from .conftest import synthetic_nuclei


def test_make_pair_moves_channel_axis_first():
    img, lab = synthetic_nuclei()
    rgb = np.stack([img, img // 2, img // 3], axis=-1)
    pair = make_pair(rgb, lab)
    assert pair.image.shape == (3, *lab.shape)
    np.testing.assert_array_equal(pair.image[1], img // 2)
    assert make_pair(img, lab).image.shape == (1, *lab.shape)


def test_make_pair_3d_with_explicit_channel_axis():
    lab = np.zeros((8, 16, 16), np.uint8)
    lab[2:5, 4:9, 4:9] = 1
    img = np.random.default_rng(0).random((8, 2, 16, 16)).astype(np.float32)
    pair = make_pair(img, lab, channel_axis=1)
    assert pair.image.shape == (2, 8, 16, 16)
    assert pair.n_objects == 1


def test_shape_mismatch_names_both_shapes():
    img, lab = synthetic_nuclei((64, 64))
    with pytest.raises(InputError, match=r"\(64, 60\).*\(64, 64\)"):
        make_pair(img[:, :60], lab)


@pytest.mark.parametrize("labels_dtype", [np.float32, bool])
def test_non_integer_labels_rejected(labels_dtype):
    img, lab = synthetic_nuclei()
    with pytest.raises(InputError, match="integer"):
        make_pair(img, lab.astype(labels_dtype))


def test_negative_labels_rejected():
    img, lab = synthetic_nuclei()
    lab = lab.astype(np.int32)
    lab[0, 0] = -1
    with pytest.raises(InputError, match="negative"):
        make_pair(img, lab)


def test_nan_pixels_rejected():
    img, lab = synthetic_nuclei()
    img = img.astype(np.float32)
    img[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        make_pair(img, lab)


def test_labels_without_objects_rejected():
    img, lab = synthetic_nuclei()
    with pytest.raises(InputError, match="no objects"):
        make_pair(img, np.zeros_like(lab))


def test_sparse_regions_become_mask_and_count_objects_inside():
    img, lab = synthetic_nuclei((96, 96), n=8)
    pair = make_pair(img, lab, annotated=[((0, 48), (0, 96))])
    assert pair.annotated[:48].all() and not pair.annotated[48:].any()
    assert pair.n_objects == len(np.unique(lab[:48])) - 1
    with pytest.raises(InputError, match="empty"):
        make_pair(img, lab, annotated=np.zeros(lab.shape, bool))


def test_regions_to_mask_clips_to_image():
    mask = regions_to_mask([((-5, 3), (2, 100))], (4, 6))
    assert mask.sum() == 3 * 4


def test_folder_pairs_load_and_validate(dataset):
    pairs = load_folder_pairs(*dataset)
    assert len(pairs) == 4
    assert all(p.image.shape[1:] == p.labels.shape for p in pairs)


def test_folder_unmatched_names_are_listed(dataset):
    images, labels = dataset
    (labels / "img0.tif").rename(labels / "other.tif")
    with pytest.raises(
        InputError, match="images without labels: img0.*labels without images: other"
    ):
        load_folder_pairs(images, labels)


def test_empty_folder_and_unreadable_tiff(dataset, tmp_path):
    images, labels = dataset
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no .tif"):
        load_folder_pairs(empty, labels)
    (images / "img1.tif").write_bytes(b"this is not a tiff")
    with pytest.raises(InputError, match=r"img1\.tif: not a readable TIFF"):
        load_folder_pairs(images, labels)


def test_folder_shape_mismatch_names_file(dataset):
    images, labels = dataset
    tifffile.imwrite(images / "img2.tif", np.zeros((50, 50), np.uint8))
    with pytest.raises(InputError, match=r"img2\.tif.*\(50, 50\).*\(96, 96\)"):
        load_folder_pairs(images, labels)


def test_split_validation_holds_out_a_fraction():
    pairs = [make_pair(*synthetic_nuclei(seed=i), name=str(i)) for i in range(10)]
    train, val = split_validation(pairs, 0.2, seed=1)
    assert len(val) == 2 and len(train) == 8
    assert not {p.name for p in train} & {p.name for p in val}


def test_split_single_image_cuts_it():
    pair = make_pair(*synthetic_nuclei((128, 96), n=12, seed=3))
    train, val = split_validation([pair], 0.15)
    assert len(train) == 1 and len(val) == 1
    assert train[0].labels.shape[0] + val[0].labels.shape[0] == 128


def test_a_small_single_volume_still_gets_a_validation_part():
    # 12% of 128 rows is 15: too thin before, so a user's one small volume trained without
    # validation (no checkpoint choice, no threshold tuning). At least 16 are held out.
    labels = np.zeros((8, 128, 80), np.int32)
    for i, y in enumerate(range(4, 124, 12), start=1):
        labels[2:6, y : y + 6, 30:36] = i
    pair = make_pair((labels > 0).astype(np.uint8) * 200, labels, voxel_size=(3, 1, 1))
    train, val = split_validation([pair], 0.12)
    assert len(val) == 1 and val[0].labels.shape == (8, 16, 80)
    assert train[0].labels.shape == (8, 112, 80)
    assert val[0].voxel_size == (3.0, 1.0, 1.0)


def test_huge_label_ids_are_relabelled_not_a_memory_error():
    from napari_live_unet.engine.targets import make_targets

    labels = np.zeros((64, 64), np.int64)
    labels[10:20, 10:20] = 2**31
    labels[30:40, 30:40] = 5
    pair = make_pair((labels > 0).astype(np.uint8) * 100, labels)
    assert pair.n_objects == 2 and pair.labels.max() == 2
    for mode in ("distance", "boundary"):
        assert make_targets(pair.labels, mode).shape[1:] == (64, 64)


def test_rgba_pairs_have_four_channels_in_2d_and_in_short_stacks():
    # Issue 11, item 8: the channel count of RGBA training images is 4 (not a spatial axis).
    img, lab = synthetic_nuclei((40, 256))
    rgba = np.stack([img, img, img, np.full_like(img, 255)], axis=-1)
    assert make_pair(rgba, lab).image.shape == (4, 40, 256)
    stack_labels = np.stack([lab] * 5)
    assert make_pair(np.stack([rgba] * 5), stack_labels).image.shape == (4, 5, 40, 256)
