"""The README.md an exported package carries: what the model outputs and how to turn the
outputs into instance labels with the model's own thresholds."""

from __future__ import annotations

from ..model import SegmentationModel


def readme_text(model: SegmentationModel, output_names: list[str]) -> str:
    """Markdown describing ``model``'s package (outputs, labels, thresholds, validation)."""
    config, post, norm = model.config, model.postprocess, model.normalization
    name = str(model.info.get("name") or "Live U-net model")
    description = str(model.info.get("description") or "").strip()
    axes = "z, y, x" if config.ndim == 3 else "y, x"
    lines = [
        f"# {name}",
        "",
        *([description, ""] if description else []),
        f"A {config.ndim}D U-net for instance segmentation, trained with napari-live-unet. "
        f"It reads {config.in_channels} channel(s) (axes batch, channel, {axes}); each "
        f"channel is scaled so that its {norm.low_percentile:g}th percentile becomes 0 and "
        f"its {norm.high_percentile:g}th percentile 1. Spatial sizes are multiples of "
        f"{' x '.join(map(str, config.size_multiples))} ({axes}).",
        "",
        "## Outputs",
        "",
        "One tensor `prediction` with two channels, both in [0, 1]:",
        "",
        f"- `{output_names[0]}`: the probability that a pixel belongs to an object;",
    ]
    if config.mode == "boundary":
        lines += [
            f"- `{output_names[1]}`: the probability that a pixel lies on an object's boundary.",
            "",
            "## From outputs to labels",
            "",
            f"1. Foreground: `{output_names[0]} > {post.fg_threshold:g}`.",
            f"2. Seeds: connected regions where `{output_names[0]} - {output_names[1]} > "
            f"{post.seed_threshold:g}` (object interiors), each one object.",
            f"3. Watershed of `{output_names[1]}` from the seeds, within the foreground.",
        ]
    else:
        lines += [
            f"- `{output_names[1]}`: the distance to the object's edge, normalised to 1 at "
            "its centre.",
            "",
            "## From outputs to labels",
            "",
            f"1. Foreground: `{output_names[0]} > {post.fg_threshold:g}`.",
            f"2. Smooth `{output_names[1]}` with a Gaussian of sigma {post.smoothing:g} pixels.",
            f"3. Seeds: maxima of the smoothed distance above {post.seed_threshold:g}"
            + (
                f" that rise at least {post.seed_prominence:g} above their surroundings (h-maxima)."
                if post.seed_prominence > 0
                else " (connected regions above it)."
            ),
            "4. Watershed of the negated distance from the seeds, within the foreground.",
        ]
    lines += [
        f"{5 if config.mode == 'distance' else 4}. Remove objects smaller than "
        f"{post.min_size} pixels.",
        "",
        "napari-live-unet does all of this (tiling large images, fitting channels, "
        "polarity and object size): open this package in its Predict dock, or run "
        "`live-unet predict --model THIS.zip`.",
        "",
        "## Validation",
        "",
        _validation(model),
        "",
    ]
    return "\n".join(lines)


def _validation(model: SegmentationModel) -> str:
    """What is known about the model's accuracy: test AP from its info, else the last
    epoch's validation loss."""
    test_ap = model.info.get("test_ap")
    if isinstance(test_ap, dict) and test_ap:
        listed = ", ".join(f"AP@{k}: {v}" for k, v in test_ap.items())
        count = model.info.get("test_images")
        return f"On {count} held-out test images: {listed}." if count else f"Test: {listed}."
    last = model.history[-1] if model.history else {}
    val_loss = last.get("val_loss")
    if isinstance(val_loss, int | float):
        return (
            f"Validation loss {val_loss:.4g} after {last.get('epoch', '?')} epochs. Check the "
            "model on annotated images of your own (`live-unet evaluate`)."
        )
    return "Not validated on held-out data; check it on annotated images of your own."
