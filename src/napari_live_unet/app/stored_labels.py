"""Labels predicted block by block: uint32 labels in a temporary zarr directory.

A layer too large to predict whole (:mod:`~napari_live_unet.app.large_prediction_job`)
gets its labels written into :class:`StoredLabels`, which the predictions layer shows
lazily; :class:`BlockPredictionResult` is that prediction's result. It keeps no network
outputs: changing thresholds means predicting again. The directory is removed in the
background (:mod:`~napari_live_unet.engine.temp_store`), never on the GUI thread.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine import temp_store
from ..engine.label_dtype import label_dtype
from .prediction_result import PredictionResult

OUTPUTS_NOT_KEPT = (
    "Network outputs are not kept for images predicted block by block; re-run Predict "
    "after changing thresholds."
)
"""Why "Show network outputs" and live threshold updates are off for a block result."""

COPY_NOT_AVAILABLE = (
    "Copy to ground truth is not available for images predicted block by block: their "
    "labels stay on disk. Correct the predictions layer directly (painting works), or "
    "predict a smaller crop to copy from."
)
"""Why "Copy predictions to ground truth" is off for a block result."""


class StoredLabels:
    """uint32 labels in a zarr array in a temporary directory, made by :meth:`open`.

    The directory is removed after :meth:`close`, or else once the array is garbage
    collected (no result or layer holds it) or the interpreter exits. Removal runs on a
    background thread (:func:`~napari_live_unet.engine.temp_store.wait_for_removals`
    waits for it).

    Parameters
    ----------
    shape, chunks : tuple of int
        The labels' shape (frames, then spatial) and zarr chunks.
    directory : str or Path, optional
        Where the temporary directory is made (default: the system's).
    """

    def __init__(
        self, shape: tuple[int, ...], chunks: tuple[int, ...], directory: str | Path | None = None
    ) -> None:
        self.shape, self.chunks = tuple(shape), tuple(chunks)
        self._parent = None if directory is None else str(directory)
        self._array: Any = None
        self._finalizer: weakref.finalize | None = None
        self.path: Path | None = None

    def open(self) -> Any:
        """Make the directory and the empty array (in the worker: this is I/O)."""
        import zarr

        if self._array is None:
            path = temp_store.make_directory("live-unet-labels-", self._parent)
            self._array = zarr.create_array(
                store=str(path),
                shape=self.shape,
                chunks=self.chunks,
                dtype=label_dtype(),
                fill_value=0,
            )
            self._finalizer = temp_store.remove_with(self._array, path)
            self.path = path
        return self._array

    @property
    def array(self) -> Any:
        """The zarr array (after :meth:`open`)."""
        if self._array is None:
            raise ValueError("the stored labels were not written")
        return self._array

    @property
    def opened(self) -> bool:
        """Whether :meth:`open` made the array (and its directory)."""
        return self._array is not None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` handed the directory over for removal."""
        return self._finalizer is not None and not self._finalizer.alive

    def close(self) -> None:
        """Have the directory removed in the background, returning at once (a layer still
        showing the array would read zeros)."""
        if self._finalizer is not None:
            self._finalizer()


@dataclass
class BlockPredictionResult(PredictionResult):
    """A prediction made block by block: labels on disk (:class:`StoredLabels`), counts
    per frame in ``labels``, and no network outputs."""

    store: StoredLabels | None = None
    blocks: int = 0  # blocks of all frames

    @property
    def blockwise(self) -> bool:
        return True

    @property
    def method_note(self) -> str:
        return " block by block"

    @property
    def outputs_note(self) -> str:
        return OUTPUTS_NOT_KEPT

    @property
    def copy_note(self) -> str:
        return COPY_NOT_AVAILABLE

    def release_unless_shown(self, shown: Callable[[Any], bool]) -> None:
        """Remove the stored labels unless ``shown(array)`` says a layer still shows them."""
        store = self.store
        if store is not None and (not store.opened or not shown(store.array)):
            self.close()

    def labels_array(self) -> Any:
        """The stored labels (a zarr array napari reads lazily)."""
        if self.store is None:
            raise ValueError("no frame has labels yet")
        return self.store.array

    def output_arrays(self) -> tuple[Any, Any]:
        raise ValueError(OUTPUTS_NOT_KEPT)

    def summary(self) -> str:
        return f"{super().summary()} Predicted in {self.blocks} blocks. {OUTPUTS_NOT_KEPT}"

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        super().close()
