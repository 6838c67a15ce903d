"""Labels predicted block by block, stored in a temporary zarr directory."""

import gc

import numpy as np

from napari_live_unet.app.stored_labels import StoredLabels
from napari_live_unet.engine.temp_store import wait_for_removals


def test_closing_removes_the_labels_off_the_calling_thread(tmp_path, blocked_removal):
    # close() runs on the GUI thread (a replaced or dropped result): deleting a
    # multi-gigabyte store must not.
    store = StoredLabels((2, 64, 64), (1, 32, 32), directory=tmp_path)
    assert not store.opened and not store.closed
    store.open()[1, :8, :8] = 7
    path = store.path
    assert path is not None and path.parent == tmp_path and path.is_dir()
    assert np.asarray(store.array[1, :8, :8]).tolist() == [[7] * 8] * 8
    store.close()  # returns while the removal waits for `release`
    store.close()
    assert store.closed
    assert path.exists() and not blocked_removal.on_caller()
    blocked_removal.release.set()
    assert wait_for_removals(timeout=10)
    assert not path.exists()
    assert len(blocked_removal.threads) == 1 and not blocked_removal.on_caller()


def test_the_labels_stay_while_their_array_is_held(tmp_path):
    store = StoredLabels((64, 64), (32, 32), directory=tmp_path)
    array = store.open()  # as a layer holds it
    path = store.path
    assert path is not None
    del store
    gc.collect()
    assert wait_for_removals(timeout=10)
    assert path.is_dir()
    del array
    gc.collect()
    assert wait_for_removals(timeout=10)
    assert not path.exists()
