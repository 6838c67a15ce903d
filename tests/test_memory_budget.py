"""The memory policy of prediction: one budget per run, one structured memory error worded
by each front end, and one rule for the integer type of labels."""

import argparse
import pickle

import numpy as np
import pytest

from napari_live_unet.app import large_prediction_job, prediction_result
from napari_live_unet.cli import predict_command
from napari_live_unet.engine import memory_budget
from napari_live_unet.engine.block_plan import block_bytes
from napari_live_unet.engine.errors import InputError, MemoryLimitError
from napari_live_unet.engine.label_dtype import label_dtype
from napari_live_unet.engine.memory_budget import (
    BLOCKS_IN_FLIGHT,
    MAX_NETWORK_BYTES,
    MIN_NETWORK_BYTES,
    PYRAMID_BYTES,
    MemoryBudget,
    default_memory_limit,
    smallest_limit,
    viewer_memory_cap,
)

MB = 2**20
GB = 2**30


# 1. The budget ------------------------------------------------------------------------------


def test_the_cli_budget_comes_from_its_limit_and_workers(monkeypatch):
    monkeypatch.setattr(memory_budget, "resident_bytes", lambda: 400 * MB)
    limit = predict_command.parse_size("4G")
    alone = MemoryBudget.split(limit)
    assert (alone.limit, alone.baseline, alone.workers) == (4 * GB, 400 * MB, None)
    assert alone.network == MAX_NETWORK_BYTES  # a quarter of 3.6 GiB, capped
    assert alone.per_block == (4 * GB - 400 * MB - MAX_NETWORK_BYTES) // BLOCKS_IN_FLIGHT
    assert alone.cluster_limit == 4 * GB and alone.finish_bytes == PYRAMID_BYTES
    shared = MemoryBudget.split(limit, workers=2)
    assert shared.workers == 2 and shared.limit == (4 * GB - 400 * MB) // 2
    assert shared.baseline == 400 * MB  # each worker holds as much as this process
    assert shared.cluster_limit == 2 * shared.limit  # what the LocalCluster is given


def test_defaults_when_no_limit_is_given():
    assert default_memory_limit(16 * GB) == 8 * GB  # half the available memory
    assert default_memory_limit(None) == 4 * GB
    assert viewer_memory_cap(16 * GB) == 4 * GB  # a quarter of the free memory
    assert viewer_memory_cap(None) == 2 * GB


def test_the_viewer_budget_keeps_its_cap_and_never_drops_below_the_floor(monkeypatch):
    roomy = MemoryBudget.for_viewer(GB)
    assert (roomy.limit, roomy.baseline, roomy.keep, roomy.result_bytes) == (GB, 0, GB, GB)
    tiny = MemoryBudget.for_viewer(MB)
    assert tiny.limit == smallest_limit() and tiny.keep == MB
    assert tiny.network == MIN_NETWORK_BYTES and tiny.per_block == block_bytes((256, 256))
    # The viewer builds it from the memory free now, once per prediction.
    monkeypatch.setattr(prediction_result, "memory_cap", lambda: 300 * MB)
    assert large_prediction_job.viewer_budget() == MemoryBudget.for_viewer(300 * MB)


def test_one_floor_for_both_front_ends():
    floor = smallest_limit(280 * MB)
    assert MemoryBudget.split(floor, baseline=280 * MB).per_block == block_bytes((256, 256))
    with pytest.raises(MemoryLimitError) as error:
        MemoryBudget.split(floor - 2 * BLOCKS_IN_FLIGHT, baseline=280 * MB)
    assert error.value.need == floor
    assert MemoryBudget.for_viewer(0).limit == smallest_limit(0)


def test_a_whole_frame_fits_within_the_blocks_in_flight():
    budget = MemoryBudget(limit=GB, baseline=0, network=64 * MB, per_block=32 * MB)
    side = int((BLOCKS_IN_FLIGHT * 32 * MB / block_bytes((1, 1))) ** 0.5)
    assert budget.fits_whole((side, side)) and not budget.fits_whole((side + 1, side + 1))


# 2. The memory error and its words ----------------------------------------------------------


def test_the_memory_error_carries_numbers_not_cli_words():
    with pytest.raises(MemoryLimitError) as error:
        MemoryBudget.split(300 * MB, baseline=280 * MB)
    exc = error.value
    assert isinstance(exc, InputError)  # existing except clauses still catch it
    assert exc.limit == 300 * MB and exc.need == smallest_limit(280 * MB) > exc.limit
    assert "too small" in str(exc) and "--" not in str(exc)
    again = pickle.loads(pickle.dumps(exc))  # from a dask worker, say
    assert (again.need, again.limit, str(again)) == (exc.need, exc.limit, str(exc))


def test_workers_are_counted_in_the_error(monkeypatch):
    with pytest.raises(MemoryLimitError) as error:
        MemoryBudget.split(GB, baseline=400 * MB, workers=2)
    exc = error.value
    assert exc.workers == 2 and exc.limit == GB
    assert exc.need == 400 * MB + 2 * smallest_limit(400 * MB)
    assert "2 workers" in str(exc) and "--" not in str(exc)


def test_each_front_end_words_the_remedy():
    exc = MemoryLimitError(10 * MB, 4 * MB, "huge.zarr: its chunks do not fit.", rechunk=True)
    assert str(exc) == "huge.zarr: its chunks do not fit. Rechunk the image smaller " + (
        "(e.g. 1024 x 1024 in y/x)."
    )
    cli = predict_command.memory_message(exc)
    assert cli.endswith(
        "Rechunk the image smaller (e.g. 1024 x 1024 in y/x), or raise --memory-limit."
    )
    gui = large_prediction_job.memory_message(exc, "huge", 100 * MB)
    assert "--memory-limit" not in gui and "'huge'" in gui and gui.endswith("free some memory.")
    plain = MemoryLimitError(10 * MB, 4 * MB, "big.tif: its smallest blocks do not fit.")
    assert predict_command.memory_message(plain).endswith("do not fit. Raise --memory-limit.")
    gui = large_prediction_job.memory_message(plain, "big", 100 * MB)
    assert gui.endswith("do not fit. Free some memory.") and "--" not in gui
    workers = MemoryLimitError(10 * MB, 4 * MB, "Too small for 2 workers.", workers=2)
    assert "fewer workers (--workers 2)" in predict_command.memory_message(workers)


def test_the_cli_turns_a_memory_error_into_its_own_words(monkeypatch):
    def refuse(args):
        raise MemoryLimitError(2 * GB, GB, "The memory limit 1.0 GiB is too small.")

    monkeypatch.setattr(predict_command, "_run_predict", refuse)
    with pytest.raises(InputError, match="too small. Raise --memory-limit.$") as error:
        predict_command.run_predict(argparse.Namespace())
    assert not isinstance(error.value, MemoryLimitError)


def test_no_front_end_rewrites_engine_messages():
    """No ``str.replace`` on engine messages, and no CLI flag in the memory messages of the
    engine's prediction modules (docstrings may name them)."""
    import ast
    from pathlib import Path

    import napari_live_unet

    root = Path(napari_live_unet.__file__).parent
    for path in root.rglob("*.py"):
        assert '.replace("raise --' not in path.read_text().replace("Raise", "raise"), path
    for name in ("block_plan", "large_image", "memory_budget", "dask_blocks"):
        tree = ast.parse((root / "engine" / f"{name}.py").read_text())
        docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
        texts = [
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
        ]
        assert not [t for t in texts if "--memory-limit" in t or "--workers" in t], name


# 3. One label-dtype rule --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_label", "dtype"),
    [
        (0, np.uint8),
        (255, np.uint8),
        (256, np.uint16),
        (65535, np.uint16),
        (65536, np.uint32),
        (2**32 - 1, np.uint32),
        (2**32, np.uint64),
    ],
)
def test_the_smallest_safe_type_at_its_boundaries(max_label, dtype):
    assert label_dtype(max_label) == np.dtype(dtype)
    assert np.iinfo(label_dtype(max_label)).max >= max_label


def test_a_floor_for_labels_corrected_by_hand_and_uint32_before_the_count_is_known():
    assert label_dtype(1, at_least=np.uint16) == np.uint16
    assert label_dtype(65536, at_least=np.uint16) == np.uint32
    assert label_dtype() == np.uint32
    assert label_dtype(None, at_least=np.uint64) == np.uint64


def test_every_former_rule_uses_it(tmp_path):
    from napari_live_unet.app.prediction_job import plan_frames
    from napari_live_unet.app.stored_labels import StoredLabels
    from napari_live_unet.engine import io
    from napari_live_unet.engine.tiff_labels import TiffLabelsWriter

    assert not hasattr(io, "smallest_label_dtype")  # the one rule is label_dtype
    # The predictions layer (engine rule, at least uint16) ...
    from napari_live_unet.engine.config import ModelConfig

    plan = plan_frames((2, 8, 8), False, ModelConfig())
    stack = prediction_result.LabelStack(plan)
    stack.put(0, np.full((8, 8), 3, np.int32))
    assert stack.array is not None and stack.array.dtype == np.uint16
    stack.put(1, np.full((8, 8), 70000, np.int32))
    assert stack.array.dtype == np.uint32 and int(stack.array.max()) == 70000
    # ... labels stored block by block before their count is known ...
    store = StoredLabels((1, 8, 8), (1, 8, 8), directory=tmp_path)
    assert store.open().dtype == np.uint32
    store.close()
    # ... and a TIFF narrowed to its final count.
    writer = TiffLabelsWriter(tmp_path / "a.tif", (8, 8), (8, 8))
    assert writer.array.dtype == np.uint32
    writer.array[:] = 300
    import tifffile

    assert tifffile.imread(writer.finish(300)).dtype == np.uint16
