"""The napari sample contribution: the bundled nuclei image with its ground truth."""

from __future__ import annotations

from ..engine.sample_data import load_sample


def make_sample_data() -> list[tuple]:
    """napari sample: a nuclei image with its ground-truth labels (layer data tuples)."""
    _, image, labels = load_sample("test")[0]
    return [
        (image, {"name": "nuclei (DSB2018 sample)"}, "image"),
        (labels, {"name": "nuclei ground truth"}, "labels"),
    ]
