"""Partly annotated images: regions -> training pairs, annotation set files, CLI --regions."""

import json

import numpy as np
import pytest
import tifffile
from skimage.draw import polygon2mask

from napari_live_unet.cli import main
from napari_live_unet.engine import (
    AnnotatedImage,
    InputError,
    Region,
    load_annotation_set,
    pairs_from_annotation_set,
    pairs_from_regions,
    save_annotation_set,
)
from napari_live_unet.engine.regions import objects_in_region

from .conftest import synthetic_nuclei
from .test_cli import _train_argv


def rect(y0, x0, y1, x1, role="train", frame=()):
    """A rectangle covering pixel centres y0..y1, x0..x1 (inclusive), as napari draws it."""
    corners = [
        [y0 - 0.5, x0 - 0.5],
        [y0 - 0.5, x1 + 0.5],
        [y1 + 0.5, x1 + 0.5],
        [y1 + 0.5, x0 - 0.5],
    ]
    return Region(role, frame, np.array(corners))


@pytest.fixture
def nuclei():
    return synthetic_nuclei((96, 96), n=10, seed=3)


# ----------------------------------------------------------------------- regions -> pairs


def test_rectangles_give_crops_and_validation_regions(nuclei):
    img, lab = nuclei
    regions = [rect(10, 20, 49, 69), rect(60, 0, 95, 40, role="val")]
    train, val = pairs_from_regions("nuclei", img, lab, regions, spatial_ndim=2)
    assert len(train) == 1 and len(val) == 1
    (t,), (v,) = train, val
    assert t.labels.shape == (40, 50) and t.image.shape == (1, 40, 50)
    np.testing.assert_array_equal(t.labels, lab[10:50, 20:70])
    np.testing.assert_array_equal(t.image[0], img[10:50, 20:70])
    assert t.annotated is None  # a full rectangle: every pixel of the crop is annotated
    np.testing.assert_array_equal(v.labels, lab[60:96, 0:41])
    assert t.name == "nuclei region 1" and v.name == "nuclei region 2"
    # pairs hold copies: editing the labels afterwards (painting) does not change them
    before = t.labels.copy()
    lab[10:50, 20:70] = 0
    np.testing.assert_array_equal(t.labels, before)


def test_rectangle_partly_outside_is_clipped(nuclei):
    img, lab = nuclei
    (t,), _ = pairs_from_regions("n", img, lab, [rect(-20, 50, 30, 130)], 2)
    np.testing.assert_array_equal(t.labels, lab[0:31, 50:96])


def test_rotated_polygon_masks_pixels_outside_it(nuclei):
    img, lab = nuclei
    diamond = np.array([[10.0, 50.0], [50.0, 90.0], [90.0, 50.0], [50.0, 10.0]])
    (t,), val = pairs_from_regions("n", img, lab, [Region("train", (), diamond)], 2)
    assert val == []
    assert t.labels.shape == (81, 81)
    np.testing.assert_array_equal(t.annotated, polygon2mask((81, 81), diamond - 10))
    assert not t.annotated[0, 0] and t.annotated[40, 40]
    inside = np.unique(lab[10:91, 10:91][t.annotated])
    assert t.n_objects == np.count_nonzero(inside)
    assert objects_in_region(lab, Region("train", (), diamond), 2) == t.n_objects


def test_time_series_uses_frames_with_objects_or_the_regions_frames():
    frames = [synthetic_nuclei((64, 64), seed=s) for s in range(3)]
    img = np.stack([f[0] for f in frames])
    lab = np.stack([f[1] for f in frames])
    lab[1] = 0  # frame 1 not annotated yet
    train, val = pairs_from_regions("movie", img, lab, [], spatial_ndim=2)
    assert [p.name for p in train] == ["movie[t=0]", "movie[t=2]"] and val == []
    np.testing.assert_array_equal(train[1].labels, lab[2])

    da = pytest.importorskip("dask.array")
    lazy = da.from_array(img, chunks=(1, 64, 64))
    train, _ = pairs_from_regions("movie", lazy, lab, [rect(5, 5, 40, 30, frame=(2,))], 2)
    assert train[0].name == "movie[t=2] region 1"
    np.testing.assert_array_equal(train[0].image[0], img[2, 5:41, 5:31])
    with pytest.raises(InputError, match="frame"):
        pairs_from_regions("movie", img, lab, [rect(5, 5, 40, 30)], 2)  # no frame index
    with pytest.raises(InputError, match="outside the image's frames"):
        pairs_from_regions("movie", img, lab, [rect(5, 5, 40, 30, frame=(3,))], 2)


def test_rgb_image_and_3d_boxes(nuclei):
    img, lab = nuclei
    rgb = np.stack([img, img // 2, img // 3], axis=-1)
    (t,), _ = pairs_from_regions("rgb", rgb, lab, [rect(0, 0, 31, 31)], 2, channel_axis=-1)
    assert t.image.shape == (3, 32, 32)
    np.testing.assert_array_equal(t.image[1], img[:32, :32] // 2)

    vol_lab = np.zeros((10, 40, 40), np.uint16)
    vol_lab[3:7, 10:20, 10:20] = 1
    vol = (vol_lab * 100).astype(np.uint8)
    corners = np.array([[2.0, 5.0, 5.0], [8.0, 25.0, 30.0]])  # box from the corners' extent
    (t,), _ = pairs_from_regions("vol", vol, vol_lab, [Region("train", (), corners)], 3)
    assert t.labels.shape == (7, 21, 26) and t.annotated is None and t.n_objects == 1


def test_validation_only_regions_train_on_the_rest(nuclei):
    img, lab = nuclei
    train, val = pairs_from_regions("n", img, lab, [rect(0, 0, 47, 95, role="val")], 2)
    (t,), (v,) = train, val
    assert t.labels.shape == (96, 96)
    assert not t.annotated[:48].any() and t.annotated[48:].all()
    assert v.labels.shape == (48, 96)


def test_background_only_training_region_is_kept(nuclei):
    img, lab = nuclei
    lab = lab.copy()
    lab[:, :48] = 0
    train, _ = pairs_from_regions("n", img, lab, [rect(0, 0, 95, 40), rect(0, 50, 95, 95)], 2)
    assert [p.n_objects == 0 for p in train] == [True, False]


def test_regions_are_normalised_like_their_whole_image(nuclei):
    """A background-only crop must not have its noise stretched to the full range."""
    from napari_live_unet.engine.normalize import channel_percentiles
    from napari_live_unet.engine.sampler import PatchSampler

    img, lab = nuclei
    lab = lab.copy()
    lab[:, :48] = 0
    img = img.copy()
    img[:, :48] = np.clip(img[:, :48], 15, 30)  # dim, flat background on the left
    train, _ = pairs_from_regions("n", img, lab, [rect(0, 0, 95, 40), rect(0, 50, 95, 95)], 2)
    whole = channel_percentiles(img[None])
    for pair in train:
        np.testing.assert_allclose(pair.intensity_range, whole)
    sampler = PatchSampler(train, "distance", (32, 32), "cpu")
    background = sampler.items[0].image
    assert float(background.max()) < 0.2  # stays dark, as in the whole image


def test_no_objects_is_a_clear_error(nuclei):
    img, lab = nuclei
    empty = np.zeros_like(lab)
    with pytest.raises(InputError, match="Paint some objects in the labels layer first"):
        pairs_from_regions("n", img, empty, [], 2)
    with pytest.raises(InputError, match=r"training regions contain no annotated objects"):
        pairs_from_regions("n", img, empty, [rect(0, 0, 30, 30)], 2)
    with pytest.raises(InputError, match="validation regions contain no objects"):
        pairs_from_regions("n", img, lab, [rect(0, 0, 95, 95), rect(0, 0, 3, 3, "val")], 2)


def test_bad_inputs_named(nuclei):
    img, lab = nuclei
    with pytest.raises(InputError, match=r"\(96, 90\).*\(96, 96\)"):
        pairs_from_regions("n", img[:, :90], lab, [], 2)
    with pytest.raises(InputError, match="n region 2: lies outside the image"):
        pairs_from_regions("n", img, lab, [rect(0, 0, 40, 40), rect(200, 200, 220, 220)], 2)
    with pytest.raises(InputError, match="integer"):
        pairs_from_regions("n", img, lab.astype(np.float32), [], 2)
    with pytest.raises(InputError, match="role"):
        Region("test", (), np.zeros((4, 2)))


# ------------------------------------------------------------------------------- files


def _items():
    img, lab = synthetic_nuclei((48, 48), seed=1)
    movie = np.stack([img, img[::-1]])
    movie_lab = np.stack([lab, lab[::-1]]).astype(np.int32)
    rgb = np.stack([img, img, img // 2], axis=-1)
    diamond = np.array([[0.0, 20.0], [20.0, 40.0], [40.0, 20.0], [20.0, 0.0]])
    return [
        AnnotatedImage(
            "movie",
            movie,
            movie_lab,
            [Region("train", (1,), diamond), rect(0, 0, 20, 20, "val", (0,))],
            spatial_ndim=2,
        ),
        AnnotatedImage("colour", rgb, lab, [], spatial_ndim=2, channel_axis=-1),
    ]


def _assert_same(loaded, items):
    assert [i.name for i in loaded] == [i.name for i in items]
    for got, want in zip(loaded, items, strict=True):
        np.testing.assert_array_equal(got.image, want.image)
        np.testing.assert_array_equal(got.labels, want.labels)
        assert got.regions == want.regions
        assert (got.spatial_ndim, got.channel_axis) == (want.spatial_ndim, want.channel_axis)


def test_save_load_round_trip(tmp_path):
    items = _items()
    folder = tmp_path / "set"
    save_annotation_set(folder, items)
    assert sorted(p.name for p in (folder / "images").iterdir()) == ["colour.tif", "movie.tif"]
    assert tifffile.imread(folder / "labels" / "movie.tif").dtype == np.uint8  # few objects
    meta = json.loads((folder / "regions.json").read_text())
    assert meta["version"] == 1 and meta["images"]["movie"]["regions"][1]["role"] == "val"
    _assert_same(load_annotation_set(folder), items)

    train, val = pairs_from_annotation_set(folder)
    assert [p.name for p in train] == ["movie[t=1] region 1", "colour"]
    assert [p.name for p in val] == ["movie[t=0] region 2"]
    assert train[1].image.shape == (3, 48, 48)


def test_saving_again_updates_the_set(tmp_path):
    movie, colour = _items()
    folder = tmp_path / "set"
    save_annotation_set(folder, [movie])
    save_annotation_set(folder, [colour])  # a second image joins the set
    movie.regions = movie.regions[:1]
    movie.labels[0, :5, :5] = 7
    save_annotation_set(folder, [movie])  # the first one is updated
    _assert_same(load_annotation_set(folder), [movie, colour])


def test_refuses_a_folder_with_other_data(tmp_path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    with pytest.raises(InputError, match="not an annotation set"):
        save_annotation_set(folder, _items())
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    (folder / "regions.json").write_text('{"something": "else"}')
    with pytest.raises(InputError, match="not a regions file"):
        save_annotation_set(folder, _items())
    assert not (folder / "images").exists()


@pytest.mark.parametrize("problem", ["shape", "name", "region", "negative"])
def test_nothing_written_when_any_item_is_bad(tmp_path, problem):
    good, bad = _items()
    if problem == "shape":
        bad.labels = bad.labels[:, :40]
    elif problem == "name":
        bad.name = "a/b"
    elif problem == "region":
        bad.regions = [rect(100, 100, 120, 120)]
    else:
        bad.labels = bad.labels.astype(np.int32) - 1
    folder = tmp_path / "set"
    with pytest.raises(InputError):
        save_annotation_set(folder, [good, bad])
    assert not folder.exists()


def test_loading_damaged_sets_is_a_clear_error(tmp_path):
    folder = tmp_path / "set"
    with pytest.raises(InputError, match="not a folder"):
        load_annotation_set(folder)
    save_annotation_set(folder, _items())
    (folder / "images" / "colour.tif").unlink()
    with pytest.raises(InputError, match=r"colour\.tif: file not found"):
        load_annotation_set(folder)
    (folder / "regions.json").write_text("{not json")
    with pytest.raises(InputError, match="not a readable JSON"):
        load_annotation_set(folder)


# ------------------------------------------------------------------------ CLI --regions


def _regions_argv(folder, out, regions):
    argv = _train_argv(folder / "images", folder / "labels", out)
    return [*argv, "--regions", str(regions), "--val-ap-every", "0"]


def test_cli_trains_on_regions(tmp_path, capsys):
    img, lab = synthetic_nuclei((64, 64), seed=5)
    folder = tmp_path / "set"
    regions = [rect(0, 0, 40, 63), rect(41, 0, 63, 63, "val")]
    save_annotation_set(folder, [AnnotatedImage("cells", img, lab, regions)])
    out = tmp_path / "model.pt"
    assert main(_regions_argv(folder, out, folder / "regions.json")) == 0
    assert out.is_file()
    assert "validation:" in capsys.readouterr().out
    val_folder = tmp_path / "val"
    save_annotation_set(val_folder, [AnnotatedImage("v", img, lab, [])])
    argv = [*_regions_argv(folder, out, folder / "regions.json")]
    argv += ["--val-images", str(val_folder / "images"), "--val-labels", str(val_folder / "labels")]
    assert main(argv) == 0
    assert "ignoring 1 validation regions" in capsys.readouterr().err  # explicit --val wins


def test_cli_regions_errors(tmp_path, capsys):
    img, lab = synthetic_nuclei((64, 64), seed=5)
    folder = tmp_path / "set"
    save_annotation_set(folder, [AnnotatedImage("cells", img, lab, [rect(0, 0, 40, 63)])])
    out = tmp_path / "model.pt"
    empty_region = tmp_path / "empty.json"  # the training region holds no object: refused
    meta = json.loads((folder / "regions.json").read_text())
    meta["images"]["cells"]["regions"][0]["vertices"] = rect(0, 0, 3, 3).vertices.tolist()
    empty_region.write_text(json.dumps(meta))
    lab[:4, :4] = 0
    tifffile.imwrite(folder / "labels" / "cells.tif", lab)
    assert main(_regions_argv(folder, out, empty_region)) == 2
    assert "training regions contain no annotated objects" in capsys.readouterr().err
    (folder / "images" / "cells.tif").rename(folder / "images" / "other.tif")
    assert main(_regions_argv(folder, out, folder / "regions.json")) == 2
    err = capsys.readouterr().err
    assert "names images that are not in" in err and "cells" in err
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    assert main(_regions_argv(folder, out, bad)) == 2
    assert "not a readable JSON" in capsys.readouterr().err
    assert not out.exists()
