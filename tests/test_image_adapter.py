"""Fitting images to a model: channels, polarity, object size."""

import numpy as np
import pytest

from napari_live_unet.engine import AdaptOptions, InputError, ModelConfig, SegmentationModel
from napari_live_unet.engine.image_adapter import (
    InputSpec,
    estimate_diameter,
    polarity_from_annotations,
    polarity_from_image,
    resize,
)
from napari_live_unet.engine.predictor import FrameFitted, Images, Predictor

from .conftest import synthetic_nuclei


def _model(channels=1, **spec):
    model = SegmentationModel.create(ModelConfig(base_channels=4, depth=2, in_channels=channels))
    model.input = InputSpec(**spec)
    return model


def test_polarity_from_image_and_annotations():
    image, labels = synthetic_nuclei((96, 96), n=6)
    assert polarity_from_image(image[None]) == "bright"
    assert polarity_from_image((255 - image)[None]) == "dark"
    assert polarity_from_annotations([image[None]], [labels], [None]) == "bright"
    assert polarity_from_annotations([(255 - image)[None]], [labels], [None]) == "dark"


def test_estimate_diameter_of_discs():
    labels = np.zeros((100, 100), np.int32)
    yy, xx = np.indices(labels.shape)
    for i, (cy, cx) in enumerate([(25, 25), (25, 75), (75, 50)], start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= 10**2] = i
    assert estimate_diameter(labels) == pytest.approx(20, abs=1)
    mask = np.zeros_like(labels, bool)
    mask[:50] = True  # only the two upper discs were annotated
    assert estimate_diameter([labels], [mask]) == pytest.approx(20, abs=1)
    assert estimate_diameter(np.zeros((5, 5), np.int32)) is None


def test_rgb_becomes_luminance_and_dark_images_are_inverted():
    image, _ = synthetic_nuclei((64, 64), n=4)
    model = _model(image_polarity="auto")
    rgb = np.repeat((255 - image)[..., None], 3, axis=-1)  # dark nuclei, colour layout
    data, _, done = model.adapt_image(rgb)
    assert data.shape == (1, 64, 64)
    assert done.inverted and done.polarity == "dark" and "luminance" in done.channel_note
    # inverted luminance orders pixels like the original fluorescence image
    assert np.corrcoef(data.ravel(), image.ravel())[0, 1] > 0.99
    # an explicit choice wins over the image statistics
    _, _, done = model.adapt_image(rgb, AdaptOptions(polarity="bright"))
    assert not done.inverted


def test_channel_choice_and_errors_name_the_image():
    model = _model()
    stack = np.zeros((3, 40, 50), np.float32)  # channel-first fluorescence, not RGB
    stack[1, 10:20, 10:20] = 1
    data, _, done = model.adapt_image(stack, AdaptOptions(channel=1))
    assert data.shape == (1, 40, 50) and data[0, 15, 15] == 1 and "channel 1" in done.channel_note
    with pytest.raises(InputError, match="Choose one with --channel"):
        model.adapt_image(stack, name="cells.tif")
    with pytest.raises(InputError, match=r"cells.tif of shape \(3, 40, 50\).*channel 5"):
        model.adapt_image(stack, AdaptOptions(channel=5), name="cells.tif")
    two_channel = _model(channels=2)
    with pytest.raises(InputError, match="reads 2 channel"):
        two_channel.adapt_image(np.zeros((40, 50, 3), np.uint8))
    for bad in (-1, 1.5, "x"):
        with pytest.raises(InputError, match="channel"):
            AdaptOptions(channel=bad)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "big"])
def test_bad_diameters_are_refused(bad):
    with pytest.raises(InputError, match="diameter"):
        AdaptOptions(diameter=bad)


def test_zoomed_prediction_comes_back_at_the_input_shape():
    model = _model(diameter=10.0, diameter_range=(8.0, 12.0))
    image = np.random.default_rng(0).integers(0, 255, (70, 90)).astype(np.uint8)
    # objects inside the known range stay at their size; others are zoomed to its nearest end
    assert model.zoom_for(None) == 1.0 and model.zoom_for(11.0) == 1.0
    assert model.zoom_for(20.0) == pytest.approx(0.6) and model.zoom_for(4.0) == 2.0
    seen = []
    out = model.predict_outputs(image, adapt=AdaptOptions(diameter=20.0))
    assert out.shape == (2, 70, 90)
    predictor = Predictor(model, adapt=AdaptOptions(diameter=4.0), postprocess=False)
    for event in predictor.run(Images([image])):
        if isinstance(event, FrameFitted):
            seen.append(event.adaptation)
    assert seen[0].zoom == 2.0 and seen[0].input_shape == (70, 90)
    labels = model.segment(image, adapt=AdaptOptions(diameter=20.0))
    assert labels.shape == (70, 90)


def test_resize_keeps_label_ids():
    labels = np.zeros((1, 20, 20), np.int32)
    labels[0, 5:15, 5:15] = 7
    up = resize(labels, (40, 40), nearest=True)
    assert up.shape == (1, 40, 40) and set(np.unique(up)) == {0, 7}
    assert resize(labels.astype(np.float32), (10, 10)).shape == (1, 10, 10)


def test_widened_first_layer_starts_as_luminance():
    import torch

    from napari_live_unet.engine.image_adapter import channel_weights
    from napari_live_unet.engine.unet import widen_input

    model = _model()
    model.network.eval()
    x = torch.rand(1, 1, 32, 32)
    before = model.network(x)
    widened = widen_input(model.network, torch.from_numpy(channel_weights(3, is_rgb=True)))
    assert widened.config.in_channels == 3
    torch.testing.assert_close(widened(x.repeat(1, 3, 1, 1)), before, atol=1e-5, rtol=1e-4)


def test_fine_tuning_on_all_channels_widens_the_model():
    from napari_live_unet.engine import TrainConfig, make_pair, run_training

    image, labels = synthetic_nuclei((64, 64), n=5)
    rgb = np.stack([image, image // 2, 255 - image], axis=-1)
    start = _model(diameter=16.0, diameter_range=(10.0, 20.0))
    config = TrainConfig(
        epochs=1,
        steps_per_epoch=2,
        batch_size=2,
        patch_size=32,
        val_fraction=0.0,
        tune_thresholds=False,
    )
    tuned = run_training(
        [make_pair(rgb, labels)],
        config,
        initial_model=start,
        adapt=AdaptOptions(all_channels=True),
        device="cpu",
    )
    assert tuned.config.in_channels == 3 and start.config.in_channels == 1
    assert tuned.segment(rgb).shape == (64, 64)
    with pytest.raises(InputError, match="not both"):
        AdaptOptions(channel=0, all_channels=True)


def _rgba(image: np.ndarray) -> np.ndarray:
    """A grey image as RGBA, channels last, opaque."""
    return np.stack([image, image, image, np.full_like(image, 255)], axis=-1)


def _model_3d(channels=1):
    return SegmentationModel.create(
        ModelConfig(ndim=3, base_channels=4, depth=2, in_channels=channels)
    )


def test_rgba_stack_with_few_slices_has_four_channels_not_one_per_slice():
    # Issue 11, item 8: a (Z, Y, X, 4) RGBA stack with 8 slices or fewer was read
    # channel-first, so the message counted its slices as channels ("5 channel(s)").
    stack = _rgba(np.zeros((5, 40, 48), np.uint8))
    with pytest.raises(InputError, match=r"image with 4 channel\(s\), but the model reads 2"):
        _model_3d(channels=2).check_fits(stack, name="cells.tif")
    # A model trained on such stacks (training reads their channels last) takes them back.
    _model_3d(channels=4).check_fits(stack)
    data, _, done = _model_3d().adapt_image(stack)
    assert data.shape == (1, 5, 40, 48) and done.channel_note == "RGBA -> luminance"
    with pytest.raises(InputError, match=r"the image has 4 channel\(s\) \(0 to 3\)"):
        _model_3d().check_fits(stack, AdaptOptions(channel=4), name="cells.tif")


def test_2d_rgba_image_for_a_3d_model_is_refused_naming_its_four_channels():
    # Was read as a one-channel volume 4 pixels deep: "the image has 1 channel(s)", or no
    # error at all and a (Y, X, 4) "segmentation".
    rgba = _rgba(np.zeros((64, 80), np.uint8))
    for model in (_model_3d(), _model_3d(channels=2)):
        with pytest.raises(InputError, match=r"2D image with 4 channels \(RGBA\).*3D"):
            model.check_fits(rgba, name="cells.tif")
    with pytest.raises(InputError, match=r"2D image with 3 channels \(RGB\)"):
        _model_3d().adapt_image(rgba[..., :3], name="cells.tif")
    # a volume is still a volume, and an explicit channel axis is still obeyed
    _model_3d().check_fits(np.zeros((64, 80, 40), np.uint8))
    _model_3d(channels=4).check_fits(rgba[None], channel_axis=-1)


@pytest.mark.parametrize(("n", "kind"), [(3, "RGB"), (4, "RGBA")])
def test_colour_images_report_their_own_channel_count(n, kind):
    image = np.zeros((256, 256, n), np.uint8)  # as wide as it is tall: 256 is not channels
    with pytest.raises(InputError, match=rf"image with {n} channel\(s\), but the model reads 2"):
        _model(channels=2).check_fits(image, name="cells.tif")
    with pytest.raises(InputError, match=rf"has {n} channel\(s\) \(0 to {n - 1}\)"):
        _model().check_fits(image, AdaptOptions(channel=n), name="cells.tif")
    assert _model().adapt_image(image)[2].channel_note == f"{kind} -> luminance"


@pytest.mark.parametrize("n", [3, 4])
def test_cli_messages_count_the_channels_of_colour_tiffs(n, tmp_path, capsys):
    import tifffile

    from napari_live_unet.cli import main
    from napari_live_unet.engine import save_model

    from .conftest import predict_argv
    from .test_cli import _train_argv

    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    image, lab = synthetic_nuclei((256, 256), n=6)
    colour = np.stack([image] * 3 + [np.full_like(image, 255)], axis=-1)[..., :n]
    tifffile.imwrite(images / "cells.tif", colour, photometric="rgb")
    tifffile.imwrite(labels / "cells.tif", lab)
    assert tifffile.imread(images / "cells.tif").shape == (256, 256, n)
    save_model(_model(channels=2), tmp_path / "two.pt")
    train_argv = [*_train_argv(images, labels, tmp_path / "m.pt"), "--channel", "5"]
    runs = [
        (train_argv, f"has {n} channel(s)"),
        (predict_argv(tmp_path / "two.pt", images, tmp_path / "out"), f"with {n} channel(s)"),
    ]
    for argv, expected in runs:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert expected in err and "256 channel" not in err, err
