"""Frame plans and the prediction event stream behind the predict widget (no viewer)."""

import threading

import numpy as np
import pytest

from napari_live_unet.engine import InputError, ModelConfig, PostprocessConfig, SegmentationModel
from napari_live_unet.engine.image_adapter import AdaptOptions, InputSpec
from napari_live_unet.engine.targets import normalized_distance
from napari_live_unet.layers.jobs import JobFailed, failures_as_events
from napari_live_unet.layers.prediction_job import (
    FramePredicted,
    InputFitted,
    PredictionProgress,
    PredictionResult,
    plan_frames,
    prediction_job,
    relabel_job,
)


@pytest.mark.parametrize(
    ("shape", "rgb", "config", "leading", "spatial", "channel_axis", "kept", "channel"),
    [
        ((64, 48), False, ModelConfig(), (), (64, 48), None, (0, 1), None),
        ((5, 64, 48), False, ModelConfig(), (5,), (64, 48), None, (0, 1, 2), None),
        ((2, 5, 64, 48), False, ModelConfig(), (2, 5), (64, 48), None, (0, 1, 2, 3), None),
        ((16, 64, 48), False, ModelConfig(ndim=3), (), (16, 64, 48), None, (0, 1, 2), None),
        ((64, 48, 3), True, ModelConfig(in_channels=3), (), (64, 48), -1, (0, 1), None),
        ((4, 64, 48, 3), True, ModelConfig(in_channels=3), (4,), (64, 48), -1, (0, 1, 2), None),
        ((4, 2, 64, 48), False, ModelConfig(in_channels=2), (4,), (64, 48), 0, (0, 2, 3), None),
        # A one-channel model reads colour images as luminance, or one chosen channel.
        ((64, 48, 3), True, ModelConfig(), (), (64, 48), -1, (0, 1), None),
        ((64, 48, 3), True, ModelConfig(), (), (64, 48), -1, (0, 1), 2),
        ((4, 2, 64, 48), False, ModelConfig(), (4,), (64, 48), 0, (0, 2, 3), 1),
    ],
)
def test_plan_frames_layouts(shape, rgb, config, leading, spatial, channel_axis, kept, channel):
    plan = plan_frames(shape, rgb, config, "image", channel)
    assert plan.leading == leading and plan.spatial == spatial
    assert plan.channel_axis == channel_axis and plan.kept_axes == kept
    assert plan.labels_shape == leading + spatial
    assert len(list(plan.frames())) == plan.n_frames


@pytest.mark.parametrize(
    ("shape", "rgb", "config", "match", "channel"),
    [
        ((64, 48), False, ModelConfig(ndim=3), "3D", None),
        ((64, 48, 3), True, ModelConfig(in_channels=2), "RGB", None),
        ((64, 48), False, ModelConfig(in_channels=2), "2 channels", None),
        ((64, 48, 3), True, ModelConfig(), "no channel 3", 3),
        ((64, 48), False, ModelConfig(), "no channel 0", 0),
        ((2, 64, 48), False, ModelConfig(in_channels=2), "single channel", 0),
    ],
)
def test_plan_frames_explains_what_does_not_fit(shape, rgb, config, match, channel):
    with pytest.raises(InputError, match=match):
        plan_frames(shape, rgb, config, "cells", channel)


def test_prediction_job_reads_a_dask_series_frame_by_frame_and_stops():
    da = pytest.importorskip("dask.array")
    model = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    series = da.from_array(np.random.default_rng(0).random((3, 40, 32), np.float32), chunks=1)
    plan = plan_frames(series.shape, False, model.config)
    events = list(prediction_job(model, series, plan, PostprocessConfig(), threading.Event()))
    frames = [e for e in events if isinstance(e, FramePredicted)]
    assert [e.index for e in frames] == [(0,), (1,), (2,)]
    assert all(e.outputs.shape == (2, 40, 32) and e.labels.shape == (40, 32) for e in frames)
    progress = [e for e in events if isinstance(e, PredictionProgress)]
    assert progress and progress[-1].done == progress[-1].total  # ends at 100 %
    # Progress is reported within the run, not only at its end (no helper thread needed).
    assert events.index(progress[0]) < events.index(frames[0])

    stop = threading.Event()
    stop.set()
    stopped = list(prediction_job(model, series, plan, PostprocessConfig(), stop))
    assert not [e for e in stopped if isinstance(e, FramePredicted)]


def test_errors_become_a_final_event():
    model = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    plan = plan_frames((3, 40, 32), False, model.config)
    image = np.full((3, 40, 32), np.nan, np.float32)  # not finite: refused by the engine
    job = prediction_job(model, image, plan, PostprocessConfig(), threading.Event())
    events = list(failures_as_events(job))
    assert isinstance(events[-1], JobFailed) and events[-1].bad_input
    assert "finite" in events[-1].message or "NaN" in events[-1].message

    def buggy():
        yield 1
        raise ZeroDivisionError("oops")

    events = list(failures_as_events(buggy()))
    assert events[0] == 1 and isinstance(events[1], JobFailed) and not events[1].bad_input
    assert events[1].message == "ZeroDivisionError: oops" and "Traceback" in events[1].details


def test_repostprocess_uses_caches_and_stops_when_superseded():
    outputs = np.zeros((2, 30, 30), np.float16)
    outputs[0, 5:15, 5:15] = 0.9
    plan = plan_frames((2, 30, 30), False, ModelConfig())
    result = PredictionResult("img", plan, "distance", PostprocessConfig(), [outputs] * 2)
    result.caches = [{}, {}]
    params = PostprocessConfig(min_size=5)
    labels = [e.labels for e in relabel_job(result, params, threading.Event())]
    assert [x.max() for x in labels] == [1, 1]
    assert all(cache for cache in result.caches)  # intermediate maps kept for next time
    stop = threading.Event()
    stop.set()
    assert list(relabel_job(result, PostprocessConfig(), stop)) == []


def test_sizes_in_thresholds_scale_with_the_zoom_as_the_engine_scales_them():
    model = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    model.input = InputSpec(diameter=10.0)  # objects of 20 px are zoomed ×0.5
    labels = np.zeros((60, 60), np.int32)
    labels[5:11, 5:11] = 1  # 36 px: kept with min_size 30, dropped once it becomes 120
    labels[20:45, 20:45] = 2
    outputs = np.stack([(labels > 0).astype(np.float32), normalized_distance(labels)])
    params = PostprocessConfig(min_size=30)
    plan = plan_frames(labels.shape, False, model.config)
    result = PredictionResult("img", plan, "distance", params, [outputs.astype(np.float16)])
    result.zoom, result.caches = model.zoom_for(20.0), [{}]
    assert result.zoom == 0.5
    (scaled,) = [e.labels for e in relabel_job(result, params, threading.Event())]
    expected = model.instances(result.outputs[0], params, diameter=20.0)
    np.testing.assert_array_equal(scaled, expected)
    assert expected.max() == 1  # the small object went

    # Prediction fits the image (zoom) and gives labels the way model.instances does.
    image = np.random.default_rng(0).random((40, 36), np.float32)
    events = list(
        prediction_job(
            model,
            image,
            plan_frames(image.shape, False, model.config),
            params,
            threading.Event(),
            None,
            AdaptOptions(diameter=20.0),
        )
    )
    assert any(isinstance(e, InputFitted) and "zoomed ×0.50" in e.text for e in events)
    (frame,) = [e for e in events if isinstance(e, FramePredicted)]
    assert frame.outputs.shape == (2, 40, 36)
    expected = model.instances(frame.outputs, params, diameter=20.0)
    np.testing.assert_array_equal(frame.labels, expected)
