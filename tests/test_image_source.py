"""Opening TIFF, OME-Zarr and plain zarr images lazily (engine.image_source)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import tifffile.zarr
import zarr
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.writer import write_image

from napari_live_unet.engine.errors import InputError
from napari_live_unet.engine.image_source import (
    ImageSource,
    image_name,
    is_zarr_path,
    list_images,
    open_image,
)

_META_KEYS = ("zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata")


def _ramp(shape, dtype=np.uint16):
    return (np.arange(int(np.prod(shape))) % 65521).astype(dtype).reshape(shape)


def test_imagej_2d_tiff(tmp_path):
    data = _ramp((60, 80))
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(4.0, 4.0), metadata={"unit": "um"})
    with open_image(path) as src:
        assert isinstance(src, ImageSource)
        assert (src.kind, src.name, src.axes, src.spatial_axes) == ("tiff", "cells", "yx", "yx")
        assert src.voxel_size == pytest.approx((0.25, 0.25))
        assert src.array.shape == (60, 80) and src.array.dtype == np.uint16
        assert src.array.ndim == 2
        np.testing.assert_array_equal(src.array[10:20, 5:50], data[10:20, 5:50])
        assert src.chunk_bytes() == int(np.prod(src.chunks)) * 2


def test_imagej_zyx_tiff(tmp_path):
    data = _ramp((5, 40, 30))
    path = tmp_path / "vol.tiff"
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(2.0, 2.0),
        metadata={"spacing": 3.0, "unit": "um", "axes": "ZYX"},
    )
    with open_image(path) as src:
        assert src.axes == "zyx"
        assert src.voxel_size == pytest.approx((3.0, 0.5, 0.5))
        assert src.array.shape == (5, 40, 30)
        np.testing.assert_array_equal(
            src.array[1:3, 5:25, :7], tifffile.imread(path)[1:3, 5:25, :7]
        )
        assert src.array[2, 3, 4] == data[2, 3, 4]


def test_other_tiff_axes(tmp_path):
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((20, 30, 3), np.uint8), photometric="rgb")
    pages = tmp_path / "pages.tif"
    tifffile.imwrite(pages, _ramp((6, 20, 30)))
    with open_image(rgb) as src:
        assert src.axes == "yxc" and src.spatial_axes == "yx" and src.voxel_size is None
    with open_image(pages) as src:
        assert src.axes == "qyx" and src.spatial_axes == "yx"


def test_tiled_tiff_reads_only_the_chunks_a_block_needs(tmp_path, monkeypatch):
    data = _ramp((1024, 1024))
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, data, tile=(256, 256), compression="zlib")
    chunk_keys: list[str] = []
    original_get = tifffile.zarr.ZarrTiffStore.get

    async def counting_get(self, key, *args, **kwargs):
        if not key.endswith(_META_KEYS):
            chunk_keys.append(key)
        return await original_get(self, key, *args, **kwargs)

    monkeypatch.setattr(tifffile.zarr.ZarrTiffStore, "get", counting_get)
    with open_image(path) as src:
        assert chunk_keys == []  # opening decodes no pixels
        assert src.chunks == (256, 256)
        block = src.array[256:512, 200:400]
        assert len(chunk_keys) == 2  # tile row 1, tile columns 1 and 2
        np.testing.assert_array_equal(block, tifffile.imread(path)[256:512, 200:400])


@pytest.mark.parametrize("fmt", [FormatV05(), FormatV04()], ids=["ngff0.5", "ngff0.4"])
def test_ome_zarr_input(tmp_path, fmt):
    data = _ramp((3, 64, 48))
    path = tmp_path / "emb.ome.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    write_image(
        data,
        group,
        scale_factors=(2,),
        fmt=fmt,
        axes="zyx",
        scale={"z": 2.0, "y": 0.5, "x": 0.5},
        axes_units={"z": "micrometer", "y": "micrometer", "x": "nanometer"},
        storage_options={"chunks": (1, 32, 32)},
    )
    assert is_zarr_path(path)
    src = open_image(path)
    assert (src.kind, src.name, src.axes) == ("ome-zarr", "emb", "zyx")
    assert src.voxel_size == pytest.approx((2.0, 0.5, 0.5e-3))
    assert src.array.shape == (3, 64, 48) and src.chunks == (1, 32, 32)
    np.testing.assert_array_equal(src.array[1, 10:40, 5:9], data[1, 10:40, 5:9])


def test_ome_zarr_without_scale_has_no_voxel_size(tmp_path):
    path = tmp_path / "plain_scale.zarr"
    write_image(_ramp((32, 32)), str(path), scale_factors=(), axes="yx")
    src = open_image(path)
    assert (src.kind, src.axes, src.voxel_size) == ("ome-zarr", "yx", None)


def test_plain_zarr_array(tmp_path):
    path = tmp_path / "stack.zarr"
    arr = zarr.create_array(str(path), shape=(4, 30, 40), chunks=(1, 16, 16), dtype=np.uint8)
    arr[:] = 7
    src = open_image(path)
    assert (src.kind, src.name, src.axes, src.voxel_size) == ("zarr", "stack", "qyx", None)
    assert src.chunks == (1, 16, 16) and src.chunk_bytes() == 256
    assert (src.array[1:3, :5, :5] == 7).all()
    two_d = zarr.create_array(str(tmp_path / "v2.zarr"), shape=(9, 9), dtype="i2", zarr_format=2)
    assert two_d.shape == (9, 9)
    assert open_image(tmp_path / "v2.zarr").axes == "yx"


def test_zarr_group_with_one_array_uses_it(tmp_path):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("raw", shape=(10, 12), dtype=np.float32)
    src = open_image(tmp_path / "g.zarr")
    assert src.kind == "zarr" and src.array.shape == (10, 12)


def test_zarr_group_without_image_is_an_input_error(tmp_path):
    path = tmp_path / "g.zarr"
    group = zarr.open_group(str(path), mode="w")
    group.create_array("a", shape=(4, 4), dtype=np.uint8)
    group.create_array("b", shape=(4, 4), dtype=np.uint8)
    with pytest.raises(InputError, match="multiscales") as info:
        open_image(path)
    assert str(path) in str(info.value) and "zarr array" in str(info.value)
    empty = tmp_path / "empty.zarr"
    zarr.open_group(str(empty), mode="w")
    with pytest.raises(InputError, match="no array"):
        open_image(empty)


def test_bad_paths_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        open_image(tmp_path / "missing.tif")
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="a folder"):
        open_image(tmp_path / "folder")
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff at all")
    with pytest.raises(InputError, match="not a readable TIFF"):
        open_image(broken)
    (tmp_path / "junk.zarr").mkdir()
    with pytest.raises(InputError, match="junk.zarr"):
        open_image(tmp_path / "junk.zarr")
    line = zarr.create_array(str(tmp_path / "line.zarr"), shape=(5,), dtype=np.uint8)
    assert line.ndim == 1
    with pytest.raises(InputError, match="not an image"):
        open_image(tmp_path / "line.zarr")


def test_list_images_folder(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((4, 4), np.uint8))
    write_image(np.zeros((8, 8), np.uint8), str(tmp_path / "b.ome.zarr"), scale_factors=())
    zarr.create_array(str(tmp_path / "c.zarr"), shape=(4, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / ".a.tif.live-unet-tmp", np.zeros((4, 4), np.uint8))
    (tmp_path / ".hidden.zarr").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    found = list_images(tmp_path)
    assert found == {
        "a": tmp_path / "a.tif",
        "b": tmp_path / "b.ome.zarr",
        "c": tmp_path / "c.zarr",
    }
    assert list_images(tmp_path / "a.tif") == {"a": tmp_path / "a.tif"}
    assert list_images(tmp_path / "b.ome.zarr") == {"b": tmp_path / "b.ome.zarr"}


def test_list_images_errors(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((4, 4), np.uint8))
    zarr.create_array(str(tmp_path / "a.zarr"), shape=(4, 4), dtype=np.uint8)
    with pytest.raises(InputError, match=r"a\.tif and a\.zarr"):
        list_images(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        list_images(tmp_path / "empty")
    with pytest.raises(InputError, match="not found"):
        list_images(tmp_path / "nothing")


def test_image_name():
    assert image_name("x/a.ome.zarr") == "a"
    assert image_name("x/a.ZARR") == "a"
    assert image_name("x/a.tif") == "a"
    assert image_name("x/labels/nuclei") == "nuclei"
