"""Frame plans and the prediction event stream behind the predict widget (no viewer)."""

import threading

import numpy as np
import pytest

from napari_live_unet.app.jobs import JobFailed, failures_as_events
from napari_live_unet.app.prediction_job import (
    FramePredicted,
    InputFitted,
    LabelStack,
    PredictionProgress,
    PredictionResult,
    new_result,
    plan_frames,
    prediction_job,
    relabel_job,
)
from napari_live_unet.engine import InputError, ModelConfig, PostprocessConfig, SegmentationModel
from napari_live_unet.engine.image_adapter import AdaptOptions, InputSpec
from napari_live_unet.engine.memory_budget import MemoryBudget
from napari_live_unet.engine.output_cache import FrameOutputCache
from napari_live_unet.engine.targets import normalized_distance
from napari_live_unet.engine.temp_store import wait_for_removals


def cache_of(frames, max_bytes=2**30):
    cache = FrameOutputCache(max_bytes)
    for i, frame in enumerate(frames):
        cache.put(i, frame)
    return cache


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
    result = PredictionResult("img", plan, "distance", PostprocessConfig(), cache_of([outputs] * 2))
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
    result = PredictionResult("img", plan, "distance", params, cache_of([outputs]))
    result.zoom, result.caches = model.zoom_for(20.0), [{}]
    assert result.zoom == 0.5
    (scaled,) = [e.labels for e in relabel_job(result, params, threading.Event())]
    expected = model.instances(result.outputs.get(0), params, diameter=20.0)
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


def ideal_stream(labels_of):
    """Stands in for SegmentationModel.predict_stream: ideal distance-mode outputs."""

    def stream(images, **_):
        for image in images:
            labels = labels_of(np.asarray(image))
            fg = (labels > 0).astype(np.float32)
            yield np.stack([fg, normalized_distance(labels)]).astype(np.float16)

    return stream


def series_labels(n_frames, shape=(64, 64)):
    """Frame t's labels: one of a few synthetic nuclei images (the image holds t)."""
    from .conftest import synthetic_nuclei

    truths = [synthetic_nuclei(shape, n=6, seed=s)[1] for s in range(4)]
    return lambda image: truths[int(image.flat[0]) % len(truths)]


def test_a_100_frame_series_keeps_outputs_under_the_cap_and_relabels_the_same():
    """Issue 13, item 3: outputs beyond the cap spill to disk; re-thresholding reads them
    back one at a time and gives the labels prediction gave."""
    model = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    model.predict_stream = ideal_stream(series_labels(100))
    series = np.repeat(np.arange(100, dtype=np.float32), 64 * 64).reshape(100, 64, 64)
    plan = plan_frames(series.shape, False, model.config)
    frame_bytes = 2 * 64 * 64 * 2
    # Room for 3 frames of outputs and 3 frames of post-processing caches.
    cap = 2 * 3 * frame_bytes + 1
    result = new_result("movie", plan, model, PostprocessConfig(), 1.0, None, cap=cap)
    outputs = result.outputs
    assert outputs.max_bytes <= 3 * frame_bytes + 1
    seen, peak = {}, 0
    put = outputs.put

    def counting_put(position, frame):
        nonlocal peak
        seen[position] = frame.copy()
        put(position, frame)
        peak = max(peak, outputs.memory_bytes)

    outputs.put = counting_put
    job = prediction_job(
        model, series, plan, result.params, threading.Event(), None, None, outputs,
        result.cache_bytes,
    )  # fmt: skip
    for event in job:
        if isinstance(event, FramePredicted):
            assert event.outputs is None  # the events carry no outputs
            result.labels.put(event.position, event.labels)
            result.caches.append(event.cache)
    assert len(outputs) == 100 and peak <= outputs.max_bytes
    assert len(outputs.spilled) >= 96  # most frames live on disk
    for i in (0, 1, 50, 99):
        np.testing.assert_array_equal(outputs.get(i), seen[i])
    kept_caches = [c for c in result.caches if c is not None]
    assert 0 < len(kept_caches) <= 3  # 10 bytes per pixel: three frames fit
    assert result.labels.complete and result.labels.array.dtype == np.uint16
    before = result.labels_array().copy()
    assert before.max() > 0

    relabelled = LabelStack(plan)
    for event in relabel_job(result, PostprocessConfig(), threading.Event()):
        relabelled.put(event.position, event.labels)
    np.testing.assert_array_equal(relabelled.array, before)
    assert outputs.memory_bytes <= outputs.max_bytes
    outputs.close()


def test_large_frames_are_post_processed_as_the_model_does_block_by_block(monkeypatch):
    """Frames above POSTPROCESS_BLOCKS_ABOVE go through model.instances (block by block), with the
    zoom and voxel size prediction used; their caches are never kept."""
    from napari_live_unet.engine import blockwise
    from napari_live_unet.engine import model as model_module

    monkeypatch.setattr(blockwise, "POSTPROCESS_BLOCKS_ABOVE", 32 * 32)
    model = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    labels = np.zeros((80, 80), np.int32)
    labels[5:25, 5:25], labels[40:70, 30:60] = 1, 2
    model.predict_stream = ideal_stream(lambda image: labels)
    calls = []
    blockwise = model_module.instances_blockwise
    monkeypatch.setattr(
        model_module,
        "instances_blockwise",
        lambda *a, **k: calls.append(k) or blockwise(*a, **k),
    )
    image = np.zeros((80, 80), np.float32)
    plan = plan_frames(image.shape, False, model.config)
    params = PostprocessConfig(min_size=4)
    adapt = AdaptOptions(diameter=20.0, voxel_size=(1.0, 1.0))
    events = list(prediction_job(model, image, plan, params, threading.Event(), None, adapt))
    (frame,) = [e for e in events if isinstance(e, FramePredicted)]
    assert calls and frame.cache is None
    expected = model.instances(frame.outputs, params, diameter=20.0, voxel_size=(1.0, 1.0))
    np.testing.assert_array_equal(frame.labels, expected)
    assert frame.labels.max() == 2


def test_a_dask_series_is_read_one_frame_at_a_time():
    da = pytest.importorskip("dask.array")

    class Counting:
        def __init__(self, array):
            self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, 3
            self.reads = []

        def __getitem__(self, key):
            part = self.array[key]
            self.reads.append(part.shape)
            return part

    source = Counting(np.random.default_rng(0).random((6, 40, 32), np.float32))
    series = da.from_array(source, chunks=(1, 40, 32), asarray=False)
    model = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    plan = plan_frames(series.shape, False, model.config)
    with FrameOutputCache(0) as outputs:
        job = prediction_job(
            model, series, plan, PostprocessConfig(), threading.Event(), outputs=outputs
        )
        n = sum(isinstance(e, FramePredicted) for e in job)
    assert n == 6
    assert source.reads and all(np.prod(shape) <= 40 * 32 for shape in source.reads)


# -- frames larger than the memory cap: block by block (issue 13, item 3) -------------


def pixel_model(ndim=2):
    """A model whose network has no context (see ``test_large_image``): blocks see what
    the whole frame sees, so block labels match whole-frame labels."""
    from .test_large_image import _PixelNetwork

    config = ModelConfig(ndim=ndim, mode="distance", depth=2, base_channels=4)
    model = SegmentationModel.create(config)
    model.network = _PixelNetwork(config)  # type: ignore[assignment]
    return model


def nuclei_frame(shape):
    from .test_large_image import _distance_volume

    tile = _distance_volume((128, 128), spacing=16)
    return np.tile(tile, (shape[0] // 128, shape[1] // 128))


@pytest.mark.parametrize(
    ("shape", "rgb", "config", "channel", "axes"),
    [
        ((64, 48), False, ModelConfig(), None, "yx"),
        ((5, 64, 48), False, ModelConfig(), None, "tyx"),
        ((2, 5, 64, 48), False, ModelConfig(), None, "qtyx"),
        ((16, 64, 48), False, ModelConfig(ndim=3), None, "zyx"),
        ((4, 64, 48, 3), True, ModelConfig(in_channels=3), None, "tyxc"),
        ((4, 2, 64, 48), False, ModelConfig(), 1, "tcyx"),
    ],
)
def test_a_layer_plan_gives_the_block_layout(shape, rgb, config, channel, axes):
    plan = plan_frames(shape, rgb, config, "image", channel)
    layout = plan.layout
    assert layout.axes == axes
    assert layout.spatial_shape(shape) == plan.spatial
    assert [f for f in layout.frames(shape)] == list(plan.frames())


def test_only_frames_beyond_the_memory_cap_go_block_by_block():
    from napari_live_unet.app.large_prediction_job import plan_blocks

    model = pixel_model()
    image = np.zeros((1024, 1024), np.uint8)
    plan = plan_frames(image.shape, False, model.config)
    # 64 bytes per pixel whole: 64 MiB for 1024², beyond what a 100 MiB cap leaves blocks.
    assert (
        plan_blocks(model, image, plan, AdaptOptions(), MemoryBudget.for_viewer(8 * 2**30)) is None
    )
    planned = plan_blocks(model, image, plan, AdaptOptions(), MemoryBudget.for_viewer(100 * 2**20))
    assert planned is not None
    image_plan, chunks = planned
    assert image_plan.blocks_per_frame > 1
    core = image_plan.job.core
    assert all(c % k == 0 or c == 1024 for c, k in zip(core, chunks, strict=True))
    # A chunking too large to read block by block is refused with advice, in GUI terms.
    da = pytest.importorskip("dask.array")
    whole_chunk = da.zeros((4096, 4096), np.uint16, chunks=(4096, 4096))  # 32 MiB chunk
    plan = plan_frames(whole_chunk.shape, False, model.config)
    with pytest.raises(InputError, match="Rechunk") as error:
        plan_blocks(
            model, whole_chunk, plan, AdaptOptions(), MemoryBudget.for_viewer(100 * 2**20), "huge"
        )
    assert "--memory-limit" not in str(error.value) and "'huge'" in str(error.value)


def run_block_job(model, data, cap, stop=None, on_event=None):
    from napari_live_unet.app.large_prediction_job import (
        block_prediction_job,
        new_block_result,
        plan_blocks,
    )

    plan = plan_frames(data.shape, False, model.config)
    planned = plan_blocks(model, data, plan, AdaptOptions(), MemoryBudget.for_viewer(cap))
    assert planned is not None
    result = new_block_result(
        "image", plan, planned[0], planned[1], model, model.postprocess, 1.0, None
    )
    assert result.store is not None
    events = []
    for event in block_prediction_job(
        model, data, plan, planned[0], result.store, stop or threading.Event()
    ):
        events.append(event)
        if on_event is not None:
            on_event(event)
    return result, events


def test_a_block_job_writes_each_frame_with_progress_per_block():
    from napari_live_unet.app.large_prediction_job import FrameWritten
    from napari_live_unet.engine.metrics import match_counts

    model = pixel_model()
    series = np.stack([nuclei_frame((512, 512)), nuclei_frame((512, 512))[::-1].copy()])
    result, events = run_block_job(model, series, 0)  # the smallest cap: 4 MiB blocks
    try:
        progress = [e for e in events if isinstance(e, PredictionProgress)]
        written = [e for e in events if isinstance(e, FrameWritten)]
        assert result.blocks >= 4 and len(progress) == result.blocks
        assert [p.done for p in progress] == list(range(1, result.blocks + 1))
        assert {p.total for p in progress} == {result.blocks}
        assert [w.position for w in written] == [0, 1]
        assert any(isinstance(e, InputFitted) for e in events)
        labels = result.labels_array()
        assert labels.shape == (2, 512, 512) and labels.dtype == np.uint32
        for t in range(2):
            whole = model.segment(series[t])
            frame = np.asarray(labels[t]).astype(np.int32)
            assert match_counts(whole, frame, [0.5])[0].ap >= 0.99
            assert written[t].count == frame.max() > 0
        assert result.store is not None
        path = result.store.path
        assert path is not None and path.is_dir()
        with pytest.raises(ValueError, match="block by block"):
            result.output_arrays()
    finally:
        result.close()
    assert wait_for_removals(timeout=10)
    assert not path.exists()


def test_a_block_job_stops_between_blocks():
    from napari_live_unet.app.large_prediction_job import FrameWritten

    stop = threading.Event()

    def stop_after_two(event):
        if isinstance(event, PredictionProgress) and event.done == 2:
            stop.set()

    result, events = run_block_job(pixel_model(), nuclei_frame((512, 512)), 0, stop, stop_after_two)
    result.close()
    done = [e.done for e in events if isinstance(e, PredictionProgress)]
    assert done[:2] == [1, 2] and len(done) <= 3 < result.blocks
    assert not any(isinstance(e, FrameWritten) for e in events)
