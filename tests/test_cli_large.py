"""``live-unet predict`` on images predicted block by block under a memory limit: OME-Zarr
and TIFF inputs and outputs, time series, dask workers, bad inputs, existing and interrupted
outputs, and the memory cap of a whole run."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Multiscales, Reader
from ome_zarr.writer import write_image
from scipy import ndimage as ndi

from napari_live_unet.cli import main
from napari_live_unet.engine import block_predict, memory_budget
from napari_live_unet.engine import predictor as predictor_module
from napari_live_unet.engine.atomic_write import TMP_SUFFIX
from napari_live_unet.engine.block_plan import FrameLayout, block_bytes
from napari_live_unet.engine.block_predict import plan_job
from napari_live_unet.engine.builtin_models import load_model_source
from napari_live_unet.engine.image_adapter import AdaptOptions
from napari_live_unet.engine.image_source import open_image
from napari_live_unet.engine.metrics import match_counts
from napari_live_unet.engine.ome_zarr_labels import OmeZarrLabelsWriter

from .conftest import predict_argv, synthetic_nuclei

MB = 2**20
BASELINE = 400 * MB
"""What the tests pretend this process holds, so that a limit gives the same blocks on any
machine (the real resident memory is used where the test is about it)."""


def _limit(per_block: int) -> str:
    """``--memory-limit`` that leaves each block ``per_block`` bytes beside BASELINE."""
    need = BASELINE + memory_budget.MIN_NETWORK_BYTES + memory_budget.BLOCKS_IN_FLIGHT * per_block
    return f"{need // MB + 1}M"


def _fitting(model, core: tuple[int, ...], spatial: tuple[int, ...]) -> int:
    """Working memory a block of ``core`` (with its margins) takes in an image of
    ``spatial``, plus a little: a limit leaving this gives blocks of that core."""
    job = plan_job(model, FrameLayout.of("yx", 2), spatial, spatial, model.image_zoom(), None)
    reach = [h + m for h, m in zip(job.halo, job.margin, strict=True)]
    read = [min(s, c + 2 * r) for s, c, r in zip(spatial, core, reach, strict=True)]
    return int(1.05 * block_bytes(read)) + math.prod(spatial)  # + the chunks decoded


@pytest.fixture
def blocks(monkeypatch):
    """Pin the process's baseline memory and record every image's blocks per frame."""
    monkeypatch.setattr(memory_budget, "resident_bytes", lambda: BASELINE)
    seen: list[int] = []
    original = predictor_module.segment_stored

    def spy(model, array, plan, out, **kwargs):
        seen.append(plan.blocks_per_frame)
        return original(model, array, plan, out, **kwargs)

    monkeypatch.setattr(predictor_module, "segment_stored", spy)
    return seen


@pytest.fixture(scope="module")
def starter():
    return load_model_source("nuclei", "cpu")


@pytest.fixture(scope="module")
def nuclei():
    """A 768 x 768 uint8 image of about 650 nuclei."""
    image, _ = synthetic_nuclei((768, 768), n=655, radius=(5, 9), seed=1)
    return image


@pytest.fixture(scope="module")
def nine_blocks(starter, nuclei):
    """``--memory-limit`` (with the ``blocks`` fixture) that cuts ``nuclei`` stored in
    256 x 256 chunks into 3 x 3 blocks of one chunk each."""
    return _limit(_fitting(starter, (256, 256), nuclei.shape))


def _write_ome_zarr(path: Path, image: np.ndarray, axes: str, scale: dict, chunks) -> Path:
    group = zarr.open_group(str(path), mode="w")
    write_image(
        image,
        group,
        scale_factors=(2,),
        axes=axes,
        scale=scale or None,
        axes_units={a: "micrometer" for a in axes} if scale else None,
        storage_options={"chunks": chunks},
    )
    return path


def _same_objects(expected: np.ndarray, labels: np.ndarray) -> None:
    """The labels are the expected objects: AP@0.5 >= 0.99, counts within 0.5%."""
    labels = np.asarray(labels).astype(np.int32)
    ap = match_counts(expected.astype(np.int32), labels, [0.5])[0].ap
    assert ap >= 0.99, ap
    n, m = int(expected.max()), int(labels.max())
    assert n > 20  # the test needs objects
    assert abs(n - m) <= max(1, 0.005 * n), (n, m)


def _unique_ids(labels: np.ndarray) -> None:
    """Ids are 1..N without gaps, and each id is one connected piece."""
    labels = np.asarray(labels)
    assert set(np.unique(labels).tolist()) == set(range(int(labels.max()) + 1))
    for i, box in enumerate(ndi.find_objects(labels.astype(np.int32)), start=1):
        assert box is not None and ndi.label(labels[box] == i)[1] == 1, i


def _temporaries(folder: Path) -> list[Path]:
    """Hidden leftovers of writes (``.NAME.live-unet-tmp``, write checks) under ``folder``."""
    return list(folder.rglob(f"*{TMP_SUFFIX}*")) + list(folder.rglob(".live-unet*"))


def _error(capsys, argv, *words) -> str:
    """The command exits with 2 and a message holding every one of ``words``."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err, err
    for word in words:
        assert word in err, err
    return err


# 1. OME-Zarr in, OME-Zarr out ---------------------------------------------------------------


@pytest.mark.slow
def test_ome_zarr_in_ome_zarr_out_2d(tmp_path, capsys, starter, nuclei, nine_blocks, blocks):
    src = _write_ome_zarr(
        tmp_path / "cells.ome.zarr", nuclei, "yx", {"y": 0.5, "x": 0.5}, (256, 256)
    )
    out = tmp_path / "out.zarr"
    assert main(predict_argv("nuclei", src, out, "--memory-limit", nine_blocks)) == 0
    assert "wrote 1 label images" in capsys.readouterr().out
    assert blocks == [9]  # 3 x 3 blocks of one 256 x 256 chunk each: the test needs seams

    labels = open_image(out / "labels" / "cells")
    assert labels.axes == "yx"
    assert labels.voxel_size == pytest.approx((0.5, 0.5))
    assert labels.array.shape == nuclei.shape and labels.chunks == (256, 256)
    level0 = labels.array[:]
    whole = starter.segment(nuclei, adapt=AdaptOptions(voxel_size=(0.5, 0.5)))
    _same_objects(whole, level0)
    _unique_ids(level0)

    level1 = zarr.open_array(str(out / "labels" / "cells" / "1"), mode="r")
    np.testing.assert_array_equal(level1[:], level0[::2, ::2])
    nodes = list(Reader(parse_url(str(out / "labels" / "cells")))())
    specs = [type(s) for s in nodes[0].specs]
    assert Label in specs and Multiscales in specs
    listed = list(Reader(parse_url(str(out / "labels")))())
    assert any(n.zarr.path.rstrip("/").endswith("cells") for n in listed)
    assert not _temporaries(out)


def test_ome_zarr_zyx_keeps_z_and_its_voxel_size(tmp_path, capsys, starter, nuclei):
    """A 2D model labels every z slice; the labels keep axes zyx and the z step."""
    stack = np.stack([nuclei[:256, :256], nuclei[256:512, :256], nuclei[512:, 512:]])
    scale = {"z": 2.0, "y": 0.5, "x": 0.5}
    src = _write_ome_zarr(tmp_path / "stack.ome.zarr", stack, "zyx", scale, (1, 128, 128))
    out = tmp_path / "out.zarr"
    assert main(predict_argv("nuclei", src, out)) == 0, capsys.readouterr().err
    labels = open_image(out / "labels" / "stack")
    assert labels.axes == "zyx"
    assert labels.voxel_size == pytest.approx((2.0, 0.5, 0.5))
    assert labels.array.shape == stack.shape and labels.chunks == (1, 128, 128)
    for z in range(3):
        alone = starter.segment(stack[z], adapt=AdaptOptions(voxel_size=(0.5, 0.5)))
        _same_objects(alone, labels.array[z])


# 2. A TIFF larger than the limit into a folder ------------------------------------------------


@pytest.mark.slow
def test_tiff_larger_than_the_limit_into_a_folder(tmp_path, capsys, starter, nuclei, blocks):
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "big.tif", nuclei)
    out = tmp_path / "out"
    per_block = int(0.45 * block_bytes(nuclei.shape))  # too large to predict whole
    assert main(predict_argv("nuclei", images, out, "--memory-limit", _limit(per_block))) == 0, (
        capsys.readouterr().err
    )
    assert blocks and blocks[0] >= 4
    assert sorted(p.name for p in out.iterdir()) == ["big.tif"]  # no temporaries
    with tifffile.TiffFile(out / "big.tif") as tif:
        page = tif.pages[0]
        assert page.is_tiled
        labels = page.asarray()
    _same_objects(starter.segment(nuclei), labels)
    _unique_ids(labels)
    assert 255 < labels.max() < 65536
    assert labels.dtype == np.uint16  # the smallest type that holds the ids


# 3. A time series ---------------------------------------------------------------------------


def test_time_series_tiff_is_labelled_frame_by_frame(tmp_path, capsys, starter, nuclei):
    series = np.stack(
        [np.roll(nuclei, (37 * t, 91 * t), axis=(0, 1))[:256, :256] for t in range(5)]
    )
    tifffile.imwrite(tmp_path / "movie.tif", series, imagej=True, metadata={"axes": "TYX"})
    out = tmp_path / "out"
    assert main(predict_argv("nuclei", tmp_path / "movie.tif", out)) == 0, capsys.readouterr().err
    labels = tifffile.imread(out / "movie.tif")
    assert labels.shape == (5, 256, 256)
    for t in range(5):
        _same_objects(starter.segment(series[t]), labels[t])


# 4. dask workers ------------------------------------------------------------------------------


@pytest.mark.slow
def test_workers_give_the_same_labels_as_one_process(tmp_path, capsys, nuclei, nine_blocks, blocks):
    src = _write_ome_zarr(
        tmp_path / "cells.ome.zarr", nuclei, "yx", {"y": 0.5, "x": 0.5}, (256, 256)
    )
    assert (
        main(predict_argv("nuclei", src, tmp_path / "one.zarr", "--memory-limit", nine_blocks)) == 0
    )
    # Each worker gets what the one process had (its own baseline and the same blocks), and
    # this process keeps its baseline.
    limit = f"{BASELINE // MB + 2 * int(nine_blocks[:-1])}M"
    assert (
        main(
            predict_argv(
                "nuclei", src, tmp_path / "two.zarr", "--memory-limit", limit, "--workers", 2
            )
        )
        == 0
    )
    assert "2 dask worker(s)" in capsys.readouterr().out
    assert blocks == [9, 9]
    one = open_image(tmp_path / "one.zarr" / "labels" / "cells").array[:]
    two = open_image(tmp_path / "two.zarr" / "labels" / "cells").array[:]
    assert one.max() > 20
    np.testing.assert_array_equal(one, two)


def test_workers_share_the_memory_limit(tmp_path, capsys, nuclei, nine_blocks, blocks):
    """Each worker holds its own Python, torch and model: a limit that fits one process
    does not fit two workers, and is refused before any worker starts."""
    src = _write_ome_zarr(tmp_path / "cells.ome.zarr", nuclei, "yx", {}, (256, 256))
    out = tmp_path / "out.zarr"
    argv = predict_argv("nuclei", src, out, "--memory-limit", nine_blocks, "--workers", 2)
    _error(capsys, argv, "too small", "--workers 2", "fewer workers")
    assert not out.exists() and not blocks


# 5. Bad inputs --------------------------------------------------------------------------------


def test_a_zarr_group_without_an_image_is_refused(tmp_path, capsys):
    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    out = tmp_path / "out.zarr"
    _error(
        capsys,
        predict_argv("nuclei", tmp_path / "empty.zarr", out),
        "empty.zarr",
        "no array",
        "pass",
    )
    assert not out.exists()


def test_an_unreachable_scheduler_is_named(tmp_path, capsys, nuclei, monkeypatch):
    from napari_live_unet.engine import dask_blocks

    monkeypatch.setattr(dask_blocks, "CONNECT_TIMEOUT_S", 1)
    src = _write_ome_zarr(tmp_path / "c.ome.zarr", nuclei[:256, :256], "yx", {}, (256, 256))
    out = tmp_path / "out.zarr"
    argv = predict_argv("nuclei", src, out, "--scheduler", "tcp://127.0.0.1:9")
    _error(capsys, argv, "tcp://127.0.0.1:9", "dask scheduler", "check the address")
    assert not out.exists()


def test_a_chunk_larger_than_a_block_is_refused(tmp_path, capsys, nuclei, blocks):
    path = tmp_path / "one_chunk.zarr"
    array = zarr.create_array(str(path), shape=nuclei.shape, chunks=nuclei.shape, dtype=np.uint8)
    array[:] = nuclei
    out = tmp_path / "out.zarr"
    _error(
        capsys,
        predict_argv("nuclei", path, out, "--memory-limit", _limit(block_bytes(nuclei.shape) // 2)),
        "Rechunk",
        "(768, 768)",
    )
    assert not out.exists()


def test_a_tiff_too_large_for_the_smallest_block_asks_for_more_memory(
    tmp_path, capsys, nuclei, blocks
):
    """A TIFF's blocks are ours to choose: when even the smallest does not fit, the advice is
    to raise the limit, not to rechunk the image."""
    tifffile.imwrite(tmp_path / "big.tif", nuclei)
    out = tmp_path / "out"
    argv = predict_argv("nuclei", tmp_path / "big.tif", out, "--memory-limit", _limit(7 * MB))
    err = _error(capsys, argv, "big.tif", "Raise --memory-limit")
    assert "Rechunk" not in err and "storage chunks" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("limit", "words"),
    [
        ("abc", ["--memory-limit", "'abc'", "1.5G"]),
        ("0", ["--memory-limit", "'0'", "positive"]),
        ("100M", ["too small", "Raise --memory-limit"]),  # below what Python and torch hold
    ],
)
def test_bad_memory_limits(tmp_path, capsys, nuclei, limit, words):
    tifffile.imwrite(tmp_path / "a.tif", nuclei[:128, :128])
    out = tmp_path / "out"
    _error(capsys, predict_argv("nuclei", tmp_path / "a.tif", out, "--memory-limit", limit), *words)
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--workers", "0"], ["--workers", "at least 1"]),
        (["--workers", "2", "--scheduler", "x"], ["--workers", "--scheduler", "not both"]),
    ],
)
def test_bad_cluster_options(tmp_path, capsys, nuclei, extra, words):
    tifffile.imwrite(tmp_path / "a.tif", nuclei[:128, :128])
    out = tmp_path / "out.zarr"
    _error(capsys, predict_argv("nuclei", tmp_path / "a.tif", out, *extra), *words)
    assert not out.exists()


def test_save_maps_with_a_zarr_output_is_refused(tmp_path, capsys, nuclei):
    tifffile.imwrite(tmp_path / "a.tif", nuclei[:128, :128])
    out = tmp_path / "out.zarr"
    _error(
        capsys,
        predict_argv("nuclei", tmp_path / "a.tif", out, "--save-maps"),
        "--save-maps",
        "OME-Zarr",
    )
    assert not out.exists()


# 6. Existing output ---------------------------------------------------------------------------


def test_existing_zarr_labels_are_kept_unless_overwrite(tmp_path, capsys, starter, nuclei):
    image = nuclei[:256, :256]
    src = _write_ome_zarr(tmp_path / "cells.ome.zarr", image, "yx", {}, (128, 128))
    out = tmp_path / "out.zarr"
    assert main(predict_argv("nuclei", src, out)) == 0
    first = open_image(out / "labels" / "cells").array[:]
    # Change the input: a rerun would write other labels.
    _write_ome_zarr(src, image[::-1].copy(), "yx", {}, (128, 128))
    capsys.readouterr()
    _error(capsys, predict_argv("nuclei", src, out), "already holds", "cells", "--overwrite")
    np.testing.assert_array_equal(open_image(out / "labels" / "cells").array[:], first)
    assert main(predict_argv("nuclei", src, out, "--overwrite")) == 0
    second = open_image(out / "labels" / "cells").array[:]
    assert not np.array_equal(second, first)
    _same_objects(starter.segment(image[::-1].copy()), second)
    assert not _temporaries(out)


# 7. Interrupted writes ------------------------------------------------------------------------


class _Broken(RuntimeError):
    pass


@pytest.mark.parametrize("existing", [False, True], ids=["new", "replacing"])
@pytest.mark.parametrize("out_name", ["out.zarr", "out"])
def test_an_interrupted_write_leaves_nothing(
    tmp_path, nuclei, nine_blocks, blocks, monkeypatch, out_name, existing
):
    """A run that fails midway leaves neither labels nor temporaries, and labels it was
    to replace (--overwrite) as they were."""
    src = _write_ome_zarr(tmp_path / "cells.ome.zarr", nuclei, "yx", {}, (256, 256))
    out = tmp_path / out_name
    old = np.arange(64, dtype=np.uint16).reshape(8, 8)
    final = out / "labels" / "cells" if out_name.endswith(".zarr") else out / "cells.tif"
    if existing and out_name.endswith(".zarr"):
        with OmeZarrLabelsWriter(out, "cells", old.shape, "yx", old.shape, old.dtype) as writer:
            writer.array[:] = old
            writer.finish()
    elif existing:
        out.mkdir()
        tifffile.imwrite(final, old)
    original, calls = block_predict.label_block, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise _Broken("disk full")
        return original(*args, **kwargs)

    monkeypatch.setattr(block_predict, "label_block", failing)
    with pytest.raises(_Broken):
        main(predict_argv("nuclei", src, out, "--memory-limit", nine_blocks, "--overwrite"))
    assert blocks == [9]
    assert 3 <= len(calls) < 9  # it stopped at the failure, midway
    if existing:
        with open_image(final) as kept:
            np.testing.assert_array_equal(kept.array[:], old)
    else:
        assert not final.exists()
    if out.exists():
        assert not _temporaries(out)


# 8. The memory cap of a whole run -------------------------------------------------------------

_PEAK = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def _peak_bytes(argv: list[str]) -> int:
    """Peak resident memory of ``python -m napari_live_unet.cli argv`` (its own process)."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    command = [sys.executable, "-c", _PEAK, sys.executable, "-m", "napari_live_unet.cli", *argv]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.slow
def test_a_run_stays_under_its_memory_limit(tmp_path):
    baseline = _peak_bytes(["models"])  # Python, torch and the package, nothing predicted
    tile = synthetic_nuclei((512, 512), n=290, radius=(5, 9), seed=2)[0]
    image = np.tile(tile, (4, 6))  # 2048 x 3072: about 400 MB to post-process whole
    path = tmp_path / "big.zarr"
    array = zarr.create_array(str(path), shape=image.shape, chunks=(256, 256), dtype=np.uint8)
    array[:] = image
    limit = baseline + 320 * MB
    capped = _peak_bytes(
        predict_argv("nuclei", path, tmp_path / "capped.zarr", "--memory-limit", f"{limit // MB}M")
    )
    assert capped <= 1.1 * limit, (capped / MB, limit / MB)
    # The test can fail: predicted whole, the same image takes clearly more.
    whole = _peak_bytes(
        predict_argv("nuclei", path, tmp_path / "whole.zarr", "--memory-limit", "8G")
    )
    assert whole > 1.1 * limit, (whole / MB, limit / MB)
