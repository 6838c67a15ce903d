"""Writing instance labels as OME-Zarr, block by block (engine.ome_zarr_labels)."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Multiscales, Reader

from napari_live_unet.engine import ome_zarr_labels
from napari_live_unet.engine.errors import InputError
from napari_live_unet.engine.image_source import open_image
from napari_live_unet.engine.ome_zarr_labels import TMP_SUFFIX, OmeZarrLabelsWriter


def _labels(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 50, shape).astype(np.uint32)


def _write(container, name, data, axes, chunks, voxel_size=None, **kwargs):
    with OmeZarrLabelsWriter(
        container, name, data.shape, axes, chunks, voxel_size=voxel_size, **kwargs
    ) as writer:
        writer.array[...] = data
        return writer.finish()


def _label_list(container):
    attrs = zarr.open_group(str(container / "labels"), mode="r").attrs.asdict()
    return attrs.get("ome", attrs)["labels"]


def _levels(path):
    group = zarr.open_group(str(path), mode="r")
    attrs = group.attrs.asdict()
    datasets = attrs.get("ome", attrs)["multiscales"][0]["datasets"]
    return [group[d["path"]] for d in datasets]


def test_2d_round_trip_and_pyramid(tmp_path):
    data = _labels((700, 1100))
    out = tmp_path / "out.zarr"
    final = _write(out, "cells", data, "yx", (128, 256), voxel_size=(0.3, 0.25))
    assert final == out / "labels" / "cells"
    src = open_image(final)
    assert (src.kind, src.name, src.axes) == ("ome-zarr", "cells", "yx")
    assert src.voxel_size == pytest.approx((0.3, 0.25))
    assert src.chunks == (128, 256)
    np.testing.assert_array_equal(src.array[:], data)
    levels = _levels(final)
    assert [lv.shape for lv in levels] == [(700, 1100), (350, 550), (175, 275)]
    np.testing.assert_array_equal(levels[1][:], data[::2, ::2])
    np.testing.assert_array_equal(levels[2][:], data[::4, ::4])
    assert levels[2].chunks == (128, 256)
    assert _label_list(out) == ["cells"]
    assert not list((out / "labels").glob(f".*{TMP_SUFFIX}"))


def test_3d_round_trip_keeps_z(tmp_path):
    data = _labels((3, 1030, 200))
    final = _write(tmp_path / "o.zarr", "vol", data, "zyx", (1, 256, 256), (2.0, 0.5, 0.5))
    src = open_image(final)
    assert (src.axes, src.array.shape, src.array.dtype) == ("zyx", data.shape, np.uint32)
    assert src.voxel_size == pytest.approx((2.0, 0.5, 0.5))
    np.testing.assert_array_equal(src.array[:], data)
    levels = _levels(final)
    assert [lv.shape for lv in levels] == [(3, 1030, 200), (3, 515, 100), (3, 258, 50)]
    np.testing.assert_array_equal(levels[1][:], data[:, ::2, ::2])
    np.testing.assert_array_equal(levels[2][:], data[:, ::4, ::4])
    attrs = zarr.open_group(str(final), mode="r").attrs.asdict()
    datasets = attrs["ome"]["multiscales"][0]["datasets"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in datasets]
    assert scales == [[2.0, 0.5, 0.5], [2.0, 1.0, 1.0], [2.0, 2.0, 2.0]]


def test_without_voxel_size_and_small_image(tmp_path):
    data = _labels((2, 40, 30))
    final = _write(tmp_path / "o.zarr", "t", data, "tyx", (1, 40, 30))
    src = open_image(final)
    assert (src.axes, src.voxel_size, src.array.shape) == ("tyx", None, (2, 40, 30))
    assert len(_levels(final)) == 1


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_ome_zarr_py_reads_the_labels(tmp_path, zarr_format):
    out = tmp_path / "out.zarr"
    zarr.open_group(str(out), mode="w", zarr_format=zarr_format)
    data = _labels((600, 64))
    final = _write(out, "nuclei", data, "yx", (64, 64), voxel_size=(0.5, 0.5))
    assert open_image(final).voxel_size == (0.5, 0.5)
    nodes = list(Reader(parse_url(str(final)))())
    specs = [type(s) for s in nodes[0].specs]
    assert Label in specs and Multiscales in specs
    assert [d.shape for d in nodes[0].data] == [(600, 64), (300, 32)]
    np.testing.assert_array_equal(np.asarray(nodes[0].data[1]), data[::2, ::2])
    labels_node = list(Reader(parse_url(str(out / "labels")))())
    assert any(n.zarr.path.rstrip("/").endswith("nuclei") for n in labels_node)


def test_two_labels_in_one_container_and_existing_names(tmp_path):
    out = tmp_path / "out.zarr"
    a, b = _labels((30, 30), 1), _labels((20, 25), 2)
    _write(out, "a", a, "yx", (16, 16))
    _write(out, "b", b, "yx", (16, 16))
    assert _label_list(out) == ["a", "b"]
    with pytest.raises(InputError, match="already exist"):
        OmeZarrLabelsWriter(out, "a", (30, 30), "yx", (16, 16))
    c = _labels((30, 30), 3)
    _write(out, "a", c, "yx", (16, 16), overwrite=True)
    np.testing.assert_array_equal(open_image(out / "labels" / "a").array[:], c)
    np.testing.assert_array_equal(open_image(out / "labels" / "b").array[:], b)
    assert _label_list(out) == ["a", "b"]
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["a", "b", "zarr.json"]


def test_exception_aborts_and_leaves_nothing(tmp_path):
    out = tmp_path / "out.zarr"
    with (
        pytest.raises(RuntimeError, match="boom"),
        OmeZarrLabelsWriter(out, "x", (40, 40), "yx", (16, 16)) as writer,
    ):
        writer.array[:16, :16] = 3
        assert writer.level0_path.is_dir()
        raise RuntimeError("boom")
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["zarr.json"]


def test_failing_finish_leaves_nothing_under_the_final_name(tmp_path, monkeypatch):
    out = tmp_path / "out.zarr"
    _write(out, "keep", _labels((20, 20)), "yx", (16, 16))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ome_zarr_labels, "write_multiscales_metadata", broken)
    writer = OmeZarrLabelsWriter(out, "x", (40, 40), "yx", (16, 16))
    writer.array[:] = 1
    with pytest.raises(OSError, match="disk full"):
        writer.finish()
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["keep", "zarr.json"]
    assert _label_list(out) == ["keep"]


def test_stale_temporary_is_removed(tmp_path):
    out = tmp_path / "out.zarr"
    _write(out, "a", _labels((20, 20)), "yx", (16, 16))
    stale = OmeZarrLabelsWriter(out, "lost", (20, 20), "yx", (16, 16))
    stale.array[:] = 5  # the run dies here: no finish, no abort
    assert stale.tmp_path.is_dir() and stale.tmp_path.name.startswith(".")
    _write(out, "b", _labels((20, 20)), "yx", (16, 16))
    assert not stale.tmp_path.exists()
    assert _label_list(out) == ["a", "b"]


def test_container_must_be_a_zarr_group(tmp_path):
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        OmeZarrLabelsWriter(tmp_path / "file.zarr", "a", (4, 4), "yx", (4, 4))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not a zarr container"):
        OmeZarrLabelsWriter(tmp_path / "other", "a", (4, 4), "yx", (4, 4))
    zarr.create_array(str(tmp_path / "arr.zarr"), shape=(4,), dtype=np.uint8)
    with pytest.raises(InputError, match="zarr array"):
        OmeZarrLabelsWriter(tmp_path / "arr.zarr", "a", (4, 4), "yx", (4, 4))
    with pytest.raises(ValueError, match="axes"):
        OmeZarrLabelsWriter(tmp_path / "o.zarr", "a", (4, 4, 4), "qyx", (4, 4, 4))


def test_another_process_writes_level0(tmp_path):
    out = tmp_path / "out.zarr"
    with OmeZarrLabelsWriter(out, "img", (64, 96), "yx", (32, 32)) as writer:
        code = (
            "import sys, zarr\na = zarr.open_array(sys.argv[1], mode='r+')\na[32:64, 32:64] = 9\n"
        )
        subprocess.run([sys.executable, "-c", code, str(writer.level0_path)], check=True)
        assert (writer.array[32:64, 32:64] == 9).all()
        assert (writer.array[:32] == 0).all()
        final = writer.finish()
    level0 = open_image(final).array[:]
    assert (level0[32:64, 32:64] == 9).all() and level0.sum() == 9 * 32 * 32


def test_pyramid_memory_stays_bounded(tmp_path):
    side, chunk = 4096, 512
    with OmeZarrLabelsWriter(tmp_path / "o.zarr", "big", (side, side), "yx", (chunk, chunk)) as w:
        yy, xx = np.mgrid[0:chunk, 0:chunk]
        for y in range(0, side, chunk):
            for x in range(0, side, chunk):
                w.array[y : y + chunk, x : x + chunk] = ((yy + y) // 8) * 1000 + (xx + x) // 8
        del yy, xx
        level0_bytes = side * side * 4
        tracemalloc.start()
        try:
            final = w.finish(max_bytes=8 * 2**20)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < level0_bytes / 4, f"peak {peak / 2**20:.1f} MiB"
    levels = _levels(final)
    assert [lv.shape for lv in levels] == [(4096, 4096), (2048, 2048), (1024, 1024), (512, 512)]
    np.testing.assert_array_equal(levels[3][100:110, 200:260], levels[0][800:880:8, 1600:2080:8])
