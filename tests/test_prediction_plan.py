"""Frame plans and the prediction event stream behind the predict widget (no viewer)."""

import threading

import numpy as np
import pytest

from napari_live_unet.engine import InputError, ModelConfig, PostprocessConfig, SegmentationModel
from napari_live_unet.widgets._prediction import (
    PredictionResult,
    guarded,
    plan_frames,
    predict_events,
    repostprocess_events,
)


@pytest.mark.parametrize(
    ("shape", "rgb", "config", "leading", "spatial", "channel_axis", "kept"),
    [
        ((64, 48), False, ModelConfig(), (), (64, 48), None, (0, 1)),
        ((5, 64, 48), False, ModelConfig(), (5,), (64, 48), None, (0, 1, 2)),
        ((2, 5, 64, 48), False, ModelConfig(), (2, 5), (64, 48), None, (0, 1, 2, 3)),
        ((16, 64, 48), False, ModelConfig(ndim=3), (), (16, 64, 48), None, (0, 1, 2)),
        ((64, 48, 3), True, ModelConfig(in_channels=3), (), (64, 48), -1, (0, 1)),
        ((4, 64, 48, 3), True, ModelConfig(in_channels=3), (4,), (64, 48), -1, (0, 1, 2)),
        ((4, 2, 64, 48), False, ModelConfig(in_channels=2), (4,), (64, 48), 0, (0, 2, 3)),
    ],
)
def test_plan_frames_layouts(shape, rgb, config, leading, spatial, channel_axis, kept):
    plan = plan_frames(shape, rgb, config)
    assert plan.leading == leading and plan.spatial == spatial
    assert plan.channel_axis == channel_axis and plan.kept_axes == kept
    assert plan.labels_shape == leading + spatial
    assert len(list(plan.frames())) == plan.n_frames


@pytest.mark.parametrize(
    ("shape", "rgb", "config", "match"),
    [
        ((64, 48), False, ModelConfig(ndim=3), "3D"),
        ((64, 48, 3), True, ModelConfig(), "RGB"),
        ((64, 48), False, ModelConfig(in_channels=2), "2 channels"),
    ],
)
def test_plan_frames_explains_what_does_not_fit(shape, rgb, config, match):
    with pytest.raises(InputError, match=match):
        plan_frames(shape, rgb, config, "cells")


def test_predict_events_reads_a_dask_series_frame_by_frame_and_stops():
    da = pytest.importorskip("dask.array")
    model = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    series = da.from_array(np.random.default_rng(0).random((3, 40, 32), np.float32), chunks=1)
    plan = plan_frames(series.shape, False, model.config)
    events = list(predict_events(model, series, plan, PostprocessConfig(), threading.Event()))
    frames = [e for e in events if e[0] == "frame"]
    assert [e[1] for e in frames] == [(0,), (1,), (2,)]
    assert all(e[2].shape == (2, 40, 32) and e[3].shape == (40, 32) for e in frames)
    progress = [e for e in events if e[0] == "progress"]
    assert progress and progress[-1][1] == progress[-1][2]  # ends at 100 %

    stop = threading.Event()
    stop.set()
    stopped = list(predict_events(model, series, plan, PostprocessConfig(), stop))
    assert not [e for e in stopped if e[0] == "frame"]


def test_errors_become_a_final_event():
    model = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    plan = plan_frames((3, 40, 32), False, model.config)
    image = np.full((3, 40, 32), np.nan, np.float32)  # not finite: refused by the engine
    events = list(
        guarded(predict_events, model, image, plan, PostprocessConfig(), threading.Event())
    )
    assert events[-1][0] == "error" and isinstance(events[-1][1], InputError)


def test_repostprocess_uses_caches_and_stops_when_superseded():
    outputs = np.zeros((2, 30, 30), np.float16)
    outputs[0, 5:15, 5:15] = 0.9
    plan = plan_frames((2, 30, 30), False, ModelConfig())
    result = PredictionResult("img", plan, "distance", PostprocessConfig(), [outputs] * 2)
    result.caches = [{}, {}]
    labels = [e[2] for e in repostprocess_events(result, PostprocessConfig(min_size=5), bool)]
    assert [x.max() for x in labels] == [1, 1]
    assert all(cache for cache in result.caches)  # intermediate maps kept for next time
    assert list(repostprocess_events(result, PostprocessConfig(), lambda: True)) == []
