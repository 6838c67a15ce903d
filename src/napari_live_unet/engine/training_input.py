"""Fit training data to the model it trains: channels, polarity and object size.

Fine-tuning a model (the built-in starter, say) on a new kind of image first turns the
images into what the network knows: colour into luminance, dark objects into bright ones,
objects outside the sizes the network saw zoomed into its range. The decisions are
recorded in the model's :class:`~napari_live_unet.engine.image_adapter.InputSpec`, so
prediction later fits new images the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from .data import TrainingPair
from .image_adapter import (
    Adaptation,
    AdaptOptions,
    InputSpec,
    diameter_range,
    invert,
    invert_range,
    object_diameters,
    polarity_from_annotations,
    polarity_from_image,
    resize,
    to_model_channels,
    zoom_for,
    zoomed_shape,
)
from .voxel_zoom import voxel_zoom


def fit_training_data(
    pairs: Sequence[TrainingPair],
    val_pairs: Sequence[TrainingPair],
    spec: InputSpec,
    model_channels: int,
    options: AdaptOptions,
    *,
    fine_tuning: bool,
    voxel_size: tuple[float, ...] | None = None,
) -> tuple[list[TrainingPair], list[TrainingPair], InputSpec, Adaptation]:
    """Fit training and validation pairs to a model; returns them, the new spec and a record.

    Parameters
    ----------
    pairs, val_pairs : sequence of TrainingPair
        Channel-first images with instance labels.
    spec : InputSpec
        The model's input record before training (a new model's default, or the starting
        model's).
    model_channels : int
        Channels the network reads.
    options : AdaptOptions
        The user's choices (channel, polarity, diameter); ``auto`` decides from the
        annotations.
    fine_tuning : bool
        True when training starts from a trained model: images are then inverted and zoomed
        to what that model knows. A new model learns the data as it is.
    voxel_size : tuple of float, optional
        The model's voxel size. Pairs of another voxel size (theirs, or
        ``options.voxel_size`` when given) are resampled to it first, labels with nearest
        neighbour.

    When ``options.all_channels`` asks a one-channel model to read every channel of
    multi-channel images, the pairs keep their channels; the caller widens the network
    (``adaptation.notes`` says so).
    """
    resampled: list[tuple[float, ...]] = []

    def to_voxel_size(pair: TrainingPair) -> TrainingPair:
        own = options.voxel_size or pair.voxel_size
        axis_zoom = voxel_zoom(own, voxel_size)
        if axis_zoom is None:
            return pair
        resampled.append(axis_zoom)
        shape = zoomed_shape(pair.spatial_shape, axis_zoom)
        return _resampled(pair, shape, voxel_size)

    pairs, val_pairs = [to_voxel_size(p) for p in pairs], [to_voxel_size(p) for p in val_pairs]
    n_channels = pairs[0].image.shape[0] if pairs else model_channels
    if options.all_channels and model_channels == 1 and n_channels > 1:
        model_channels = n_channels
    notes: set[str] = set()

    def convert(pair: TrainingPair) -> TrainingPair:
        image, note = _channels(pair, model_channels, options.channel)
        notes.add(note)
        return _with_image(pair, image)

    # Each image is converted once (luminance of a large RGB image is not free).
    pairs, val_pairs = [convert(p) for p in pairs], [convert(p) for p in val_pairs]
    notes.discard("")
    everything = pairs + val_pairs

    if options.polarity != "auto":
        polarity, source = options.polarity, "as chosen"
    else:
        polarity = polarity_from_annotations(
            [p.image for p in everything],
            [p.labels for p in everything],
            [p.annotated for p in everything],
        )
        source = "judged from the annotations"
    judged_per_image = all(polarity_from_image(p.image) == polarity for p in everything)
    network_polarity = spec.polarity if fine_tuning else polarity
    inverted = polarity != network_polarity

    sizes = np.concatenate(
        [object_diameters(p.labels, p.annotated) for p in pairs] or [np.zeros(0)]
    )
    measured = float(np.median(sizes)) if sizes.size else None
    image_diameter = options.diameter if options.diameter is not None else measured
    # A new model learns the data at its own size; a trained one sees objects zoomed into
    # the range of sizes it knows.
    zoom = zoom_for(spec, image_diameter) if fine_tuning and image_diameter else 1.0

    def fit(pair: TrainingPair) -> TrainingPair:
        image, intensity_range = pair.image, pair.intensity_range
        if inverted:
            image, intensity_range = invert(image), invert_range(intensity_range)
        pair = dataclasses.replace(pair, image=image, intensity_range=intensity_range)
        if zoom != 1.0:
            pair = _resampled(pair, zoomed_shape(pair.spatial_shape, zoom), pair.voxel_size)
        return pair

    pairs, val_pairs = [fit(p) for p in pairs], [fit(p) for p in val_pairs]
    if image_diameter is None:
        new_diameter, new_range = spec.diameter, spec.diameter_range
    elif fine_tuning and spec.diameter is not None:
        new_diameter, new_range = image_diameter * zoom, spec.diameter_range
    else:
        new_diameter, new_range = image_diameter, diameter_range(sizes)
    new_spec = InputSpec(
        polarity=network_polarity,
        image_polarity=polarity,
        channel=options.channel if options.channel is not None else spec.channel,
        diameter=new_diameter,
        diameter_range=new_range,
        image_diameter=image_diameter,
    )
    adaptation = Adaptation(
        zoom=zoom,
        inverted=inverted,
        channel_note=", ".join(sorted(notes)),
        polarity=polarity,
        polarity_source=source,
        judged_per_image=judged_per_image,
    )
    if model_channels != 1 and options.all_channels:
        adaptation.channel_note = f"all {model_channels} channels"
    if resampled:
        adaptation.voxel_zoom = resampled[0]
    if image_diameter is not None:
        adaptation.notes.append(f"objects about {image_diameter:.0f} px across")
    return pairs, val_pairs, new_spec, adaptation


def kept_start_fitting(
    start: InputSpec, fitted: InputSpec, adaptation: Adaptation, options: AdaptOptions
) -> InputSpec:
    """The input fitting for a starting model whose weights training kept unchanged.

    Fine-tuning fixes the fitting to the user's training images (their polarity, their
    object size). When training then keeps the starting weights, what was validated is the
    starting model on those images, and the start's own fitting, which decides per image,
    fits other images better than one fixed on a few (the built-in starter judges polarity
    and size image by image). So the start's fitting is kept wherever it gives the training
    images exactly the fitting they had, and the user's explicit choices always stay.

    Parameters
    ----------
    start : InputSpec
        The starting model's fitting, before training.
    fitted : InputSpec
        The fitting that training fixed from the user's images.
    adaptation : Adaptation
        What fitting did to the training images.
    options : AdaptOptions
        The user's choices.
    """
    spec = fitted
    polarity_same = start.image_polarity == fitted.image_polarity or (
        start.image_polarity == "auto" and adaptation.judged_per_image
    )
    if options.polarity == "auto" and polarity_same:
        spec = dataclasses.replace(spec, image_polarity=start.image_polarity)
    if options.diameter is None and abs(zoom_for(start, None) - adaptation.zoom) < 1e-9:
        spec = dataclasses.replace(
            spec,
            diameter=start.diameter,
            diameter_range=start.diameter_range,
            image_diameter=start.image_diameter,
        )
    return spec


def _resampled(
    pair: TrainingPair, shape: tuple[int, ...], voxel_size: tuple[float, ...] | None
) -> TrainingPair:
    """``pair`` resized to ``shape`` (labels and mask with nearest neighbour)."""
    annotated = pair.annotated
    if annotated is not None:
        annotated = resize(annotated[np.newaxis], shape, nearest=True)[0]
    return dataclasses.replace(
        pair,
        image=resize(pair.image, shape),
        labels=resize(pair.labels[np.newaxis], shape, nearest=True)[0],
        annotated=annotated,
        voxel_size=voxel_size,
    )


def _channels(pair: TrainingPair, model_channels: int, channel: int | None):
    # Training pairs are channel-first already; 3 or 4 channels are read as RGB(A).
    n = pair.image.shape[0]
    is_rgb = n in (3, 4)
    if channel is None and n == model_channels:
        return pair.image, ""
    return to_model_channels(
        pair.image, model_channels, is_rgb=is_rgb, channel=channel, name=pair.name
    )


def _with_image(pair: TrainingPair, image: np.ndarray) -> TrainingPair:
    if image is pair.image:
        return pair
    return dataclasses.replace(pair, image=image, intensity_range=None)
