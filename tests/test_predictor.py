"""The one prediction path: a Predictor decides whole or blocks by its memory budget,
yields typed events in order, stops on one event, and every path averages flips when the
model does."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest

from napari_live_unet.engine.block_plan import FrameLayout
from napari_live_unet.engine.flip_average import FlipAveraged
from napari_live_unet.engine.memory_budget import MemoryBudget
from napari_live_unet.engine.metrics import match_counts
from napari_live_unet.engine.predictor import (
    BlockDone,
    FrameDone,
    FrameFitted,
    Images,
    LabelsSink,
    Predictor,
    StoredFrames,
    TilesDone,
)

from .test_prediction_plan import nuclei_frame, pixel_model

TINY = MemoryBudget.for_viewer(0)  # the smallest budget: 4 MiB blocks
LARGE = MemoryBudget.for_viewer(2**34)


def _run(predictor, source, sink=None, stop=None):
    return list(predictor.run(source, sink, stop))


def test_the_budget_picks_whole_or_blocks_and_both_give_the_same_labels():
    model = pixel_model()
    image = nuclei_frame((512, 512))
    source = StoredFrames(image, FrameLayout.of("yx", 2))
    small, large = Predictor(model, memory=TINY), Predictor(model, memory=LARGE)
    assert not small.whole(source.spatial) and large.whole(source.spatial)
    assert small.plan(source) is not None and large.plan(source) is None
    assert large.plan(source, blocks=True) is not None  # a caller's format reason
    by_blocks, whole = np.zeros((512, 512), np.uint32), np.zeros((512, 512), np.uint32)
    block_events = _run(small, source, LabelsSink(by_blocks))
    whole_events = _run(large, source, whole)
    assert any(isinstance(e, BlockDone) for e in block_events)
    assert not any(isinstance(e, TilesDone) for e in block_events)
    assert any(isinstance(e, TilesDone) for e in whole_events)
    assert not any(isinstance(e, BlockDone) for e in whole_events)
    assert whole.max() > 20
    assert match_counts(whole.astype(np.int32), by_blocks.astype(np.int32), [0.5])[0].ap >= 0.99
    [done_blocks] = [e for e in block_events if isinstance(e, FrameDone)]
    [done_whole] = [e for e in whole_events if isinstance(e, FrameDone)]
    assert done_blocks.count == by_blocks.max() and done_whole.count == whole.max()


def test_a_dask_client_sends_every_frame_to_blocks():
    predictor = Predictor(pixel_model(), memory=LARGE, client=object())
    assert not predictor.whole((64, 64))


def test_block_events_come_in_order_with_progress_over_all_frames():
    model = pixel_model()
    series = np.stack([nuclei_frame((512, 512)), nuclei_frame((512, 512))[::-1].copy()])
    out = np.zeros(series.shape, np.uint32)
    events = _run(
        Predictor(model, memory=TINY), StoredFrames(series, FrameLayout.of("tyx", 2)), out
    )
    kinds = [type(e).__name__ for e in events]
    blocks = [e for e in events if isinstance(e, BlockDone)]
    assert [b.done for b in blocks] == list(range(1, len(blocks) + 1))
    assert {b.total for b in blocks} == {len(blocks)} and len(blocks) >= 8
    per_frame = len(blocks) // 2
    assert kinds == (["FrameFitted"] + ["BlockDone"] * per_frame + ["FrameDone"]) * 2
    done = [e for e in events if isinstance(e, FrameDone)]
    assert [(d.position, d.index) for d in done] == [(0, (0,)), (1, (1,))]
    assert [d.count for d in done] == [int(out[0].max()), int(out[1].max())]


def test_whole_events_announce_each_fit_before_its_frame_with_tile_progress():
    model = pixel_model()
    images = [nuclei_frame((128, 128)) for _ in range(3)]
    events = _run(Predictor(model, tile_shape=(64, 64), batch_size=2), Images(images))
    tiles = [e for e in events if isinstance(e, TilesDone)]
    assert [t.done for t in tiles] == sorted(t.done for t in tiles)
    assert tiles[-1].done == tiles[-1].total == 3 * (tiles[-1].total // 3) > 3
    fitted = [i for i, e in enumerate(events) if isinstance(e, FrameFitted)]
    done = [i for i, e in enumerate(events) if isinstance(e, FrameDone)]
    assert [events[i].position for i in fitted] == [events[i].position for i in done] == [0, 1, 2]
    assert all(f < d for f, d in zip(fitted, done, strict=True))
    for i in done:
        event = events[i]
        assert event.outputs.shape == (2, 128, 128) and event.labels.shape == (128, 128)
        assert event.count == event.labels.max() > 0
    outputs_only = _run(Predictor(model, postprocess=False), Images(images[:1]))
    [frame] = [e for e in outputs_only if isinstance(e, FrameDone)]
    assert frame.labels is None and frame.outputs.shape == (2, 128, 128)


def test_a_set_stop_ends_blocks_early_and_nothing_is_written_after():
    model = pixel_model()
    image = nuclei_frame((512, 512))
    out = np.zeros(image.shape, np.uint32)
    stop = threading.Event()
    events = []
    source = StoredFrames(image, FrameLayout.of("yx", 2))
    for event in Predictor(model, memory=TINY).run(source, out, stop):
        events.append(event)
        if isinstance(event, BlockDone):
            stop.set()
    assert sum(isinstance(e, BlockDone) for e in events) == 1
    assert not any(isinstance(e, FrameDone) for e in events)
    written = out.copy()
    time.sleep(0.2)
    np.testing.assert_array_equal(out, written)  # the block in flight ended with the run


def test_a_set_stop_ends_whole_frames_early_without_labels():
    model = pixel_model()
    images = [nuclei_frame((128, 128)) for _ in range(3)]
    out = np.zeros((3, 128, 128), np.uint32)
    stop = threading.Event()
    events = []
    predictor = Predictor(model, tile_shape=(64, 64), batch_size=1)
    for event in predictor.run(Images(images), out, stop):
        events.append(event)
        if isinstance(event, TilesDone) and event.done == 2:
            stop.set()
    assert not any(isinstance(e, FrameDone) for e in events)
    assert not out.any()


@pytest.mark.parametrize("blocks", [False, True])
def test_flip_averaging_applies_whole_and_block_by_block(monkeypatch, blocks):
    model = dataclasses.replace(pixel_model(), flip_average=True)
    calls = []
    forward = FlipAveraged.forward
    monkeypatch.setattr(
        FlipAveraged, "forward", lambda self, x: calls.append(1) or forward(self, x)
    )
    image = nuclei_frame((512, 512))
    out = np.zeros(image.shape, np.uint32)
    predictor = Predictor(model, memory=TINY if blocks else LARGE)
    events = _run(predictor, StoredFrames(image, FrameLayout.of("yx", 2)), out)
    assert any(isinstance(e, BlockDone) for e in events) == blocks
    assert calls and out.max() > 0
    calls.clear()
    _run(dataclasses.replace(predictor, model=model.without_flip_average()), Images([image]))
    assert not calls
