"""Issue 11 (12): areas with unpainted objects are reported before fine-tuning."""

from __future__ import annotations

import numpy as np

from napari_live_unet.engine import make_pair
from napari_live_unet.engine.annotation_check import sparse_annotations
from napari_live_unet.engine.builtin_models import STARTER_MODEL, load_model_source

from .conftest import synthetic_nuclei


def test_an_area_with_most_objects_unpainted_is_reported():
    model = load_model_source(STARTER_MODEL)
    image, labels = synthetic_nuclei((128, 128), n=12, seed=3)
    complete = make_pair(image, labels, name="complete")
    one_object = np.where(labels == 1, labels, 0)
    sparse = make_pair(image, one_object, name="sparse", require_objects=False)
    found = sparse_annotations(model, [complete, sparse])
    assert [s.name for s in found] == ["sparse"]
    assert found[0].painted == int((labels == 1).sum())
    assert found[0].predicted > 5 * found[0].painted
    assert "taught as background" in found[0].describe()


def test_only_the_annotated_area_counts():
    """Objects outside the annotated area are ignored by the loss: no warning for them."""
    model = load_model_source(STARTER_MODEL)
    image, labels = synthetic_nuclei((128, 128), n=12, seed=3)
    ids = np.unique(labels[labels > 0])
    keep = ids[0]
    area = np.zeros(labels.shape, bool)
    ys, xs = np.nonzero(labels == keep)
    area[ys.min() - 2 : ys.max() + 3, xs.min() - 2 : xs.max() + 3] = True
    area &= (labels == 0) | (labels == keep)  # the box around one object, nothing else
    pair = make_pair(image, np.where(labels == keep, labels, 0), annotated=area, name="box")
    assert sparse_annotations(model, [pair]) == []
