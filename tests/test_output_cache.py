"""The bounded store of per-frame network outputs (engine, no viewer)."""

import gc

import numpy as np
import pytest

from napari_live_unet.engine.output_cache import FrameOutputCache, chunk_shape
from napari_live_unet.engine.temp_store import wait_for_removals

FRAME = (2, 64, 64)
FRAME_BYTES = 2 * 64 * 64 * 2  # float16


def frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random(FRAME).astype(np.float16) for _ in range(n)]


def test_100_frames_stay_within_the_budget_and_spilled_frames_come_back_equal(tmp_path):
    series = frames(100)
    with FrameOutputCache(3 * FRAME_BYTES, directory=tmp_path) as cache:
        for i, frame in enumerate(series):
            cache.put(i, frame)
            assert cache.memory_bytes <= 3 * FRAME_BYTES
        assert len(cache) == 100 and 5 in cache and 100 not in cache
        assert cache.in_memory == (97, 98, 99)
        assert cache.spilled == tuple(range(97))
        assert cache.directory is not None and cache.directory.parent == tmp_path
        for i in (0, 50, 96, 99, 3):
            got = cache.get(i)
            assert got.dtype == np.float16 and not got.flags.writeable
            np.testing.assert_array_equal(got, series[i])
            assert cache.memory_bytes <= 3 * FRAME_BYTES
        assert cache.in_memory[-1] == 3  # read back: now the most recently used
        # A whole pass reads every frame once and still holds at most the budget.
        for i in range(100):
            np.testing.assert_array_equal(cache.get(i), series[i])
        assert cache.memory_bytes <= 3 * FRAME_BYTES
        directory = cache.directory
    assert cache.closed and wait_for_removals(timeout=10)
    assert not directory.exists()
    with pytest.raises(ValueError, match="closed"):
        cache.get(0)


def test_replacing_a_spilled_frame_and_frames_bigger_than_the_budget():
    a, b, c = frames(3, seed=1)
    with FrameOutputCache(FRAME_BYTES) as cache:
        cache.put(0, a)
        cache.put(1, b)  # 0 goes to disk
        assert cache.spilled == (0,)
        cache.put(0, c)  # the new frame wins over the disk copy
        np.testing.assert_array_equal(cache.get(0), c)
        cache.put(1, a.astype(np.float32))  # stored as float16
        assert cache.get(1).dtype == np.float16
        np.testing.assert_array_equal(cache.get(0), c)
        with pytest.raises(ValueError, match="shape"):
            cache.put(2, np.zeros((2, 8, 8), np.float16))
        with pytest.raises(KeyError):
            cache.get(7)

    with FrameOutputCache(0) as nothing_in_memory:
        nothing_in_memory.put(3, a)  # straight to disk
        assert nothing_in_memory.memory_bytes == 0 and nothing_in_memory.spilled == (3,)
        np.testing.assert_array_equal(nothing_in_memory.get(3), a)
        assert nothing_in_memory.memory_bytes == 0


def test_small_series_never_touch_the_disk():
    with FrameOutputCache(10 * FRAME_BYTES) as cache:
        for i, frame in enumerate(frames(4)):
            cache.put(i, frame)
        assert cache.directory is None and cache.spilled == ()


def test_a_forgotten_cache_removes_its_directory():
    cache = FrameOutputCache(0)
    cache.put(0, frames(1)[0])
    directory = cache.directory
    assert directory is not None and directory.exists()
    del cache
    gc.collect()
    assert wait_for_removals(timeout=10)
    assert not directory.exists()


def test_closing_removes_the_directory_off_the_calling_thread(tmp_path, blocked_removal):
    # close() runs on the GUI thread: deleting gigabytes of spilled frames must not.
    cache = FrameOutputCache(0, directory=tmp_path)
    cache.put(0, frames(1)[0])
    directory = cache.directory
    assert directory is not None and directory.exists()
    cache.close()  # returns while the removal waits for `release`
    cache.close()
    assert directory.exists() and not blocked_removal.on_caller()
    blocked_removal.release.set()
    assert wait_for_removals(timeout=10)
    assert not directory.exists()
    assert len(blocked_removal.threads) == 1 and not blocked_removal.on_caller()


def test_chunks_split_only_frames_too_big_for_one():
    assert chunk_shape((2, 64, 64), 2) == (2, 64, 64)
    block = chunk_shape((2, 64, 4096, 4096), 2, limit=64 * 2**20)
    assert np.prod(block) * 2 <= 64 * 2**20 and block[0] == 2
