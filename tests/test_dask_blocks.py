"""Block tasks on a ``dask.distributed`` LocalCluster: several images, one after another or
side by side, on one cluster (issue 23: the model of one image was lost to the next)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as WaitTimeout
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from napari_live_unet.engine.block_plan import FrameLayout
from napari_live_unet.engine.builtin_models import load_model_source
from napari_live_unet.engine.dask_blocks import DaskBlocks, start_client, stop_client
from napari_live_unet.engine.large_image import plan_image, segment_stored
from napari_live_unet.engine.memory_budget import MemoryBudget
from napari_live_unet.engine.model import SegmentationModel

from .conftest import synthetic_nuclei

# A LocalCluster of worker processes takes 5 to 15 s to start.
pytestmark = pytest.mark.slow

SHAPE = (128, 128)
"""One chunk, one block: what is tested is the model each image's tasks receive."""

DEADLINE_S = 120
"""Far more than the work takes: the lost model left some runs waiting for ever."""


@pytest.fixture(scope="module")
def starter() -> SegmentationModel:
    return load_model_source("nuclei", "cpu")


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    """A LocalCluster of two worker processes, as ``--workers 2`` starts."""
    client = start_client(2, None)
    yield client
    stop_client(client)


def _stored_image(folder: Path, seed: int) -> tuple[str, np.ndarray]:
    image, _ = synthetic_nuclei(SHAPE, n=15, radius=(5, 9), seed=seed)
    path = str(folder / f"image{seed}.zarr")
    zarr.create_array(path, shape=SHAPE, chunks=SHAPE, dtype=np.uint8)[:] = image
    return path, image


def _plan(model: SegmentationModel):
    memory = MemoryBudget(limit=2**31, baseline=0, network=64 * 2**20, per_block=2**28)
    return plan_image(model, SHAPE, FrameLayout.of("yx", 2), memory, SHAPE)


def _in_process(model: SegmentationModel, image: np.ndarray) -> np.ndarray:
    out = np.zeros(SHAPE, np.uint32)
    list(segment_stored(model, image, _plan(model), out))
    return out


def _on_cluster(model: SegmentationModel, image: np.ndarray, runner: DaskBlocks) -> np.ndarray:
    out = zarr.create_array(runner.out, shape=SHAPE, chunks=SHAPE, dtype=np.uint32)
    list(segment_stored(model, image, _plan(model), out, runner=runner))
    return np.asarray(out[:])


def _within(seconds: float, work: Callable[[], list[np.ndarray]]) -> list[np.ndarray]:
    """``work()``, or a test failure (not a hung test run) after ``seconds``."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(work).result(timeout=seconds)
    except WaitTimeout:
        pytest.fail(f"the cluster had not finished after {seconds} s")
    finally:
        pool.shutdown(wait=False)


def test_images_in_turn_on_one_cluster_match_one_process(tmp_path, starter, client):
    """``--workers 2`` on a folder: each image gets its own runner in turn, dropped when
    the image is done, and every image gets the labels of a run without dask."""
    images = [_stored_image(tmp_path, seed) for seed in range(6)]
    got = _within(
        DEADLINE_S,
        lambda: [
            _on_cluster(starter, image, DaskBlocks(client, starter, path, path + ".labels"))
            for path, image in images
        ],
    )
    for seed, ((_, image), labels) in enumerate(zip(images, got, strict=True)):
        expected = _in_process(starter, image)
        assert expected.max() > 5, seed  # the test needs objects
        np.testing.assert_array_equal(labels, expected, err_msg=f"image {seed}")


def test_each_job_on_one_cluster_predicts_with_its_own_model(tmp_path, starter, client):
    """Two jobs side by side on one cluster (e.g. two ``--scheduler`` runs) with different
    models: neither job's model replaces the other's on the workers."""
    inverted = copy.deepcopy(starter)
    with torch.no_grad():
        inverted.network.head.weight.neg_()
    path, image = _stored_image(tmp_path, 0)
    first = DaskBlocks(client, starter, path, path + ".first")
    second = DaskBlocks(client, inverted, path, path + ".second")
    expected = [_in_process(starter, image), _in_process(inverted, image)]
    assert not np.array_equal(expected[0], expected[1])  # the test needs models that differ
    np.testing.assert_array_equal(_on_cluster(starter, image, first), expected[0])
    np.testing.assert_array_equal(_on_cluster(inverted, image, second), expected[1])
