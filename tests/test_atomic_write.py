"""Written files are complete or absent, honour the umask and keep a replaced file's mode."""

import os
import stat

import numpy as np
import pytest

from napari_live_unet.engine.atomic_write import atomic_path, remove_stale_temporaries
from napari_live_unet.engine.io import list_tiffs, write_tiff_atomic


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_new_files_honour_the_umask_and_replaced_files_keep_their_mode(tmp_path, umask_022):
    path = tmp_path / "a.tif"
    write_tiff_atomic(path, np.zeros((4, 4), np.uint8))
    assert _mode(path) == 0o644  # not the 0600 of a temporary file
    os.chmod(path, 0o640)
    write_tiff_atomic(path, np.ones((4, 4), np.uint8))
    assert _mode(path) == 0o640


def test_an_interrupted_write_leaves_nothing_behind(tmp_path):
    path = tmp_path / "labels.tif"
    path.write_bytes(b"original")
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert path.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["labels.tif"]


def test_stale_temporaries_are_never_inputs_and_get_cleaned(tmp_path):
    write_tiff_atomic(tmp_path / "a.tif", np.zeros((4, 4), np.uint8))
    stale = tmp_path / ".b.tif.x1y2.live-unet-tmp"  # what a killed process leaves
    stale.write_bytes(b"partial")
    assert list(list_tiffs(tmp_path)) == ["a"]
    assert remove_stale_temporaries(tmp_path) == 1 and not stale.exists()
