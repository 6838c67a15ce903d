"""The Annotate widget in a real viewer: ground truth, regions, object counts, save/load."""

import numpy as np
import pytest

from napari_live_unet.engine import InputError, pairs_from_annotation_set

from .conftest import synthetic_nuclei

pytestmark = pytest.mark.gui

YELLOW, CYAN = [1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0]


@pytest.fixture
def viewer_and_widget(make_napari_viewer, qtbot):
    from napari_live_unet.widgets.annotate import AnnotateWidget

    viewer = make_napari_viewer()
    widget = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget)  # as napari does: reset_choices follows layers
    return viewer, widget


def annotated_pairs(widget):
    """The (train, val) pairs the Train widget would build from what the Annotate widget
    shows: its image, ground truth and regions layers."""
    from napari_live_unet.layers.training_job import build_pairs, snapshot_pair

    source = snapshot_pair(
        widget.image_layer, widget.labels_layer, widget.regions_layer, widget.spatial_ndim
    )
    return build_pairs([source], None)


def _rect(y0, x0, y1, x1, frame=()):
    return np.array([[*frame, y, x] for y, x in ((y0, x0), (y0, x1), (y1, x1), (y1, x0))], float)


def test_new_ground_truth_matches_the_image(viewer_and_widget):
    viewer, widget = viewer_and_widget
    viewer.add_image(np.zeros((3, 40, 50), np.uint8), name="movie", scale=(1, 0.5, 0.25))
    rgb = viewer.add_image(np.zeros((40, 35, 3), np.uint8), name="colour", translate=(5, 7))
    assert widget.image_layer is not None and widget.labels_layer is None

    widget._image_combo.value = viewer.layers["movie"]
    widget._gt_button.click()
    labels = viewer.layers["movie ground truth"]
    assert labels.data.shape == (3, 40, 50) and np.issubdtype(labels.data.dtype, np.integer)
    np.testing.assert_allclose(labels.scale, (1, 0.5, 0.25))
    assert labels.mode == "paint" and labels.selected_label == 1
    assert viewer.layers.selection.active is labels
    assert widget.labels_layer is labels
    assert "Brush ready" in widget.status_text

    widget._image_combo.value = rgb
    widget.new_ground_truth()
    labels = widget.labels_layer
    assert labels.name == "colour ground truth" and labels.data.shape == (40, 35)
    np.testing.assert_allclose(labels.translate, (5, 7))


def test_new_ground_truth_twice_never_replaces_annotations(viewer_and_widget):
    viewer, widget = viewer_and_widget
    viewer.add_image(np.zeros((32, 32)), name="img")
    first = widget.new_ground_truth()
    first.data[5:10, 5:10] = 3
    n_layers = len(viewer.layers)
    viewer.layers.selection.active = viewer.layers["img"]
    widget._gt_button.click()
    assert len(viewer.layers) == n_layers
    assert widget.labels_layer is first and viewer.layers.selection.active is first
    assert (first.data[5:10, 5:10] == 3).all()


def test_regions_layer_roles_and_colours(viewer_and_widget):
    viewer, widget = viewer_and_widget
    viewer.add_image(np.zeros((64, 64)), name="img", scale=(2, 2))
    widget._regions_button.click()
    shapes = viewer.layers["img regions"]
    assert widget.regions_layer is shapes and shapes.mode == "add_rectangle"
    np.testing.assert_allclose(shapes.scale, (2, 2))
    assert shapes.feature_defaults["role"][0] == "train"

    shapes.add_rectangles(_rect(0, 0, 10, 10))
    widget._role_combo.value = "val"
    assert shapes.feature_defaults["role"][0] == "val"
    shapes.add_rectangles(_rect(20, 20, 30, 30))
    assert shapes.features["role"].tolist() == ["train", "val"]
    np.testing.assert_allclose(shapes.edge_color, [YELLOW, CYAN])

    shapes.selected_data = {0}  # the combo shows the selected region's role
    assert widget._role_combo.value == "train"
    shapes.selected_data = {1}
    assert widget._role_combo.value == "val"
    widget._role_combo.value = "train"  # ... and changes it
    assert shapes.features["role"].tolist() == ["train", "train"]
    assert widget._role_combo.value == "train" and shapes.feature_defaults["role"][0] == "train"
    np.testing.assert_allclose(shapes.edge_color, [YELLOW, YELLOW])


def test_table_counts_objects_per_region(viewer_and_widget, qtbot):
    viewer, widget = viewer_and_widget
    img, lab = synthetic_nuclei((96, 96), n=10, seed=3)
    viewer.add_image(img, name="cells")
    labels = widget.new_ground_truth()
    labels.data = lab
    expected_total = len(np.unique(lab)) - 1
    qtbot.waitUntil(lambda: widget.summary_text == f"whole image: {expected_total} objects")

    shapes = widget.show_regions()
    shapes.add_rectangles(_rect(0, 0, 47, 95))
    widget._role_combo.value = "val"
    shapes.add_rectangles(_rect(48, 0, 95, 47))
    n_top = len(np.unique(lab[:48])) - 1
    n_corner = len(np.unique(lab[48:, :48])) - 1
    expected = [
        ("1", "training", "–", "48 × 96", str(n_top)),
        ("2", "validation", "–", "48 × 48", str(n_corner)),
    ]
    qtbot.waitUntil(lambda: widget.table_rows() == expected)  # refreshed after a pause
    assert widget.summary_text == ""

    train, val = annotated_pairs(widget)
    assert [p.name for p in val] == ["cells region 2"] and val[0].n_objects == n_corner
    assert train[0].n_objects == n_top

    # erasing updates the counts (after the debounce); nothing left to train on
    labels.data[:48] = 0
    labels.events.paint(value=[])
    qtbot.waitUntil(lambda: widget.table_rows()[0][4] == "0")
    with pytest.raises(InputError, match="training regions contain no annotated objects"):
        annotated_pairs(widget)


def test_time_series_regions_report_their_frame(viewer_and_widget, qtbot):
    viewer, widget = viewer_and_widget
    frames = [synthetic_nuclei((48, 48), seed=s) for s in range(2)]
    viewer.add_image(np.stack([f[0] for f in frames]), name="movie")
    labels = widget.new_ground_truth()
    labels.data = np.stack([f[1] for f in frames])
    shapes = widget.show_regions()
    shapes.add_rectangles(_rect(0, 0, 47, 47, frame=(1,)))
    qtbot.waitUntil(lambda: len(widget.table_rows()) == 1)
    assert widget.table_rows()[0][2] == "t=1"
    assert widget.spatial_ndim == 2


def test_save_then_load_back(viewer_and_widget, qtbot, tmp_path):
    viewer, widget = viewer_and_widget
    img, lab = synthetic_nuclei((64, 64), seed=2)
    viewer.add_image(img, name="cells")
    widget.new_ground_truth().data = lab
    shapes = widget.show_regions()
    shapes.add_rectangles(_rect(0, 0, 40, 63))
    widget._role_combo.value = "val"
    shapes.add_rectangles(_rect(41, 0, 63, 63))

    folder = tmp_path / "set"
    assert widget.save_to(folder)
    assert widget.is_busy
    qtbot.waitUntil(lambda: not widget.is_busy, timeout=10_000)
    assert "Saved" in widget.status_text
    train, val = pairs_from_annotation_set(folder)
    assert [p.name for p in train] == ["cells region 1"] and len(val) == 1

    viewer.layers.clear()
    widget.load_from(folder)
    qtbot.waitUntil(lambda: not widget.is_busy, timeout=10_000)
    assert [layer.name for layer in viewer.layers] == [
        "cells",
        "cells ground truth",
        "cells regions",
    ]
    assert widget.image_layer is viewer.layers["cells"]
    np.testing.assert_array_equal(widget.image_layer.data, img)
    np.testing.assert_array_equal(widget.labels_layer.data, lab)
    loaded = widget.regions_layer
    assert loaded.shape_type == ["rectangle", "rectangle"]
    assert loaded.features["role"].tolist() == ["train", "val"]
    np.testing.assert_allclose(loaded.data[1], _rect(41, 0, 63, 63))
    qtbot.waitUntil(lambda: len(widget.table_rows()) == 2)


def test_save_refuses_a_foreign_folder(viewer_and_widget, qtbot, tmp_path):
    viewer, widget = viewer_and_widget
    viewer.add_image(np.zeros((32, 32)), name="img")
    widget.new_ground_truth().data[3:9, 3:9] = 1
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    widget.save_to(folder)
    qtbot.waitUntil(lambda: not widget.is_busy, timeout=10_000)
    assert "not an annotation set" in widget.status_text
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_regions_from_shapes_maps_world_to_image_pixels():
    from napari.layers import Image, Shapes

    from napari_live_unet.layers.shape_regions import regions_from_shapes

    image = Image(np.zeros((2, 50, 50)), scale=(1, 2, 2), translate=(0, 10, 0))
    world_rect = _rect(10, 0, 30, 20, frame=(1,))  # drawn in a layer without scale
    shapes = Shapes([world_rect], shape_type="rectangle", features={"role": ["validation"]})
    (region,) = regions_from_shapes(shapes, 2, image)
    assert region.role == "val" and region.frame == (1,)
    np.testing.assert_allclose(region.vertices, _rect(0, 0, 10, 10))
    assert regions_from_shapes(shapes, 2)[0].vertices.max() == 30  # no image: data coords

    ellipse = Shapes([_rect(0, 0, 20, 10)], shape_type="ellipse")
    (region,) = regions_from_shapes(ellipse, 2)
    assert region.role == "train" and len(region.vertices) > 8
    np.testing.assert_allclose(region.vertices.min(0), [0, 0], atol=0.1)
    np.testing.assert_allclose(region.vertices.max(0), [20, 10], atol=0.1)
    line = Shapes([np.array([[0.0, 0.0], [5.0, 5.0]])], shape_type="line")
    with pytest.raises(InputError, match="line"):
        regions_from_shapes(line, 2)


def test_the_sample_labels_are_its_ground_truth_everywhere(viewer_and_widget):
    """Issue 11 (13): the sample's 'nuclei ground truth' pairs with its image; the model's
    own layers are never offered as ground truth; mismatched pairs are refused."""
    from napari_live_unet.widgets.training_data import TrainingDataPicker

    viewer, widget = viewer_and_widget
    viewer.open_sample("napari-live-unet", "nuclei")
    image = viewer.layers["nuclei (DSB2018 sample)"]
    sample_labels = viewer.layers["nuclei ground truth"]
    viewer.add_labels(
        np.zeros(image.data.shape, np.int32), name="nuclei (DSB2018 sample) predictions"
    )
    widget.reset_choices()
    widget._image_combo.value = image
    assert widget.labels_layer is sample_labels
    n_layers = len(viewer.layers)
    assert widget.new_ground_truth() is sample_labels  # selected, nothing new created
    assert len(viewer.layers) == n_layers

    picker = TrainingDataPicker(viewer)
    picker.reset_choices()
    picker.image.value = image
    offered = [layer.name for layer in picker.labels.choices]
    assert "nuclei ground truth" in offered
    assert not any(name.endswith((" predictions", " live preview")) for name in offered)
    assert picker.labels.value is sample_labels
    small = viewer.add_labels(np.zeros((10, 10), np.int32), name="other labels")
    picker.reset_choices()
    picker.labels.value = small
    with pytest.raises(InputError, match=r"'other labels' has shape \(10, 10\).*'nuclei \(DSB2018"):
        picker.add_current_pair()


def test_a_multiscale_image_trains_on_its_full_resolution_level(make_napari_viewer):
    """Issue 10 (4): training data from a multiscale layer is read from level 0."""
    from napari_live_unet.layers.training_job import build_pairs, snapshot_pair

    viewer = make_napari_viewer()
    image, labels = synthetic_nuclei((96, 96), n=6, seed=2)
    pyramid = [image, image[::2, ::2], image[::4, ::4]]
    layer = viewer.add_image(pyramid, multiscale=True, name="pyramid")
    truth = viewer.add_labels(labels, name="pyramid ground truth")
    train, _ = build_pairs([snapshot_pair(layer, truth, None, 2)], None)
    assert train[0].image.shape[-2:] == (96, 96)
    np.testing.assert_array_equal(train[0].image[0], image)


def _volume_with_a_column():
    labels = np.zeros((12, 40, 40), np.uint16)
    labels[:, 8:14, 8:14] = 1  # an object through every slice
    return (labels * 50 + 10).astype(np.uint8), labels


def test_a_3d_region_covers_the_slices_set_in_the_spin_boxes(viewer_and_widget, qtbot, tmp_path):
    from napari_live_unet.engine.regions import role_mask
    from napari_live_unet.layers.shape_regions import regions_from_shapes

    viewer, widget = viewer_and_widget
    img, lab = _volume_with_a_column()
    viewer.add_image(img, name="vol")
    widget._ndim_combo.value = 3
    widget.new_ground_truth().data = lab
    depth = widget._depth
    shapes = widget.show_regions()
    shapes.add_rectangles(_rect(4, 4, 30, 30, frame=(5,)))  # drawn on slice 5
    qtbot.waitUntil(lambda: widget.table_rows() == [("1", "training", "–", "1 × 27 × 27", "1")])
    assert not depth.isHidden() and depth.slices is None  # nothing selected yet

    widget._table.cellClicked.emit(0, 1)  # selecting the table row selects the region
    assert shapes.selected_data == {0} and depth.slices == (5, 5)
    assert (depth._first.minimum(), depth._first.maximum()) == (0, 5)
    assert (depth._last.minimum(), depth._last.maximum()) == (5, 11)
    depth.set_slices(3, 7)
    assert depth.slices == (3, 7)
    qtbot.waitUntil(lambda: widget.table_rows()[0][3] == "5 × 27 × 27")

    (region,) = regions_from_shapes(shapes, 3, widget.image_layer)
    assert region.slices == (3, 7)
    mask = role_mask([region], lab.shape, 3, "train")
    assert mask[3:8, 4:31, 4:31].all() and mask.sum() == 5 * 27 * 27
    assert not mask[2].any() and not mask[8].any()
    (pair,), val = annotated_pairs(widget)
    assert val == [] and pair.labels.shape == (5, 27, 27) and pair.n_objects == 1
    np.testing.assert_array_equal(pair.image[0], img[3:8, 4:31, 4:31])

    # The box is outlined for the 3D view: two rings of 4 edges and 4 edges joining them.
    outlines = viewer.layers["vol region outlines"]
    assert outlines.data.shape == (12, 2, 3)
    assert sorted(set(outlines.data[:, 0, 0])) == [3, 7]
    assert viewer.layers.selection.active is shapes  # drawing goes on in the regions
    viewer.dims.ndisplay = 3

    # Out-of-range values are held to the limits: the drawn slice stays covered.
    depth.set_slices(9, 1)
    assert depth.slices == (5, 5)
    depth.set_slices(0, 40)
    assert depth.slices == (0, 11)
    depth.set_slices(3, 7)

    widget._role_combo.value = "val"  # changing the role keeps the slices
    assert shapes.features["role"].tolist() == ["val"]
    shapes.add_rectangles(_rect(0, 0, 3, 3, frame=(2,)))  # new regions: one slice
    regions = regions_from_shapes(shapes, 3, widget.image_layer)
    assert [r.slices for r in regions] == [(3, 7), None]

    assert widget.save_to(tmp_path / "set")
    qtbot.waitUntil(lambda: not widget.is_busy, timeout=10_000)
    viewer.layers.clear()
    widget.load_from(tmp_path / "set")
    qtbot.waitUntil(lambda: not widget.is_busy, timeout=10_000)
    loaded = widget.regions_layer
    np.testing.assert_allclose(loaded.data[0], _rect(4, 4, 30, 30, frame=(5,)))
    assert [r.slices for r in regions_from_shapes(loaded, 3, widget.image_layer)] == [
        (3, 7),
        None,
    ]
    qtbot.waitUntil(lambda: "vol region outlines" in viewer.layers)


def test_3d_shapes_to_regions_and_outlines():
    from napari.layers import Shapes

    from napari_live_unet.engine.regions import Region
    from napari_live_unet.layers.region_depth import outline_segments
    from napari_live_unet.layers.shape_regions import regions_from_shapes

    ellipse = Shapes([_rect(0, 0, 20, 20, frame=(4,))], shape_type="ellipse")
    ellipse.features = {"role": ["val"], "slices_before": [1], "slices_after": [2]}
    (region,) = regions_from_shapes(ellipse, 3)
    assert region.role == "val" and region.slices == (3, 6) and len(region.vertices) == 64
    np.testing.assert_allclose(region.vertices[:, 0], 4)

    flat = Region("train", (), _rect(0, 0, 9, 9, frame=(2,)))
    vectors, roles = outline_segments([region, flat], 3, depth=5)  # clipped to slice 4
    assert vectors.shape == (3 * 64, 2, 3) and roles == ["val"] * 192
    np.testing.assert_allclose(vectors[-1, 1], [1, 0, 0])  # a vertical edge, slices 3 to 4
    assert outline_segments([region], 2, depth=5)[0].shape == (0, 2, 3)
