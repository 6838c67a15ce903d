"""Run block tasks on a ``dask.distributed`` cluster: a LocalCluster of N processes on this
machine, or any existing cluster by its scheduler address.

The tasks are the ones :class:`~napari_live_unet.engine.block_predict.LocalBlocks` runs in
process (:func:`~.block_predict.predict_block` then :func:`~.block_predict.label_block`),
so the labels are the same. Each worker opens the image and the output by path (both must
be reachable from the workers: a shared file system on a cluster), and receives the model
once: it is scattered to every worker as plain data and rebuilt there on first use.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .block_predict import BlockJob, FrameFit, label_block, predict_block, relabel_block
from .blockwise import BlockLabels
from .errors import InputError
from .model import SegmentationModel
from .model_file import model_from_dict, model_to_dict

CONNECT_TIMEOUT_S = 10
"""How long to wait for an existing scheduler before giving up with a clear error."""

# Per worker process, for the current job only: the model rebuilt once and the arrays
# opened once (a long-lived cluster serves many jobs; the previous job's are dropped).
_JOB: dict[Any, Any] = {"key": None}


def start_client(workers: int | None, scheduler: str | None, memory_limit: int | None = None):
    """A ``distributed.Client``: on ``scheduler`` when given, else on a new LocalCluster of
    ``workers`` processes (two task threads each) sharing ``memory_limit`` bytes (a
    :class:`~napari_live_unet.engine.memory_budget.MemoryBudget`'s ``cluster_limit``).

    Raises
    ------
    InputError
        If the scheduler cannot be reached, or ``workers`` is below 1.
    """
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            return Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError) as exc:
            raise InputError(
                f"{scheduler}: no dask scheduler answered within "
                f"{CONNECT_TIMEOUT_S} s ({type(exc).__name__}). Start one (`dask scheduler`) "
                "and its workers, or check the address (e.g. tcp://host:8786)."
            ) from None
    if workers is None or workers < 1:
        raise InputError(f"a local cluster needs at least 1 worker, got {workers}")
    import dask.config

    # Blocks are planned to fit each worker's share: dask's own spilling and pausing at
    # fractions of it (which count the worker's Python, torch and model) would only stall.
    no_pausing = {
        f"distributed.worker.memory.{key}": False
        for key in ("target", "spill", "pause", "terminate")
    }
    with dask.config.set(no_pausing):
        cluster = LocalCluster(
            n_workers=workers,
            # Two tasks per worker: one in the network while the other post-processes
            # (the two blocks in flight its memory share was planned for).
            threads_per_worker=2,
            processes=True,
            dashboard_address=":0",  # any free port: never clash with a running dashboard
            memory_limit=(memory_limit // workers) if memory_limit else "auto",
        )
    client = Client(cluster)
    # Each task's torch gets its share of the cores, not all of them.
    threads = max(1, (os.cpu_count() or 1) // (2 * workers))
    client.run(torch.set_num_threads, threads)
    return client


def stop_client(client) -> None:
    """Close the client and, for a LocalCluster it started, the cluster."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


class DaskBlocks:
    """Block tasks on a cluster, for one image and its output.

    Parameters
    ----------
    client : distributed.Client
        The cluster.
    model : SegmentationModel
        Sent to every worker once.
    source : str
        Path of the image (opened on the workers with ``open_image``).
    out : str
        Path of the output's level-0 zarr array (opened on the workers in ``r+`` mode).
    device : str
        Where the workers run the network.
    """

    def __init__(self, client, model: SegmentationModel, source: str, out: str, device="cpu"):
        self.client, self.source, self.out, self.device = client, source, out, device
        self.key = uuid.uuid4().hex
        # One value under a key of its own: dask scatters a dict as one value per entry
        # under the dict's own keys ('state_dict', ...), which every image's runner (and
        # every job on a shared cluster) would then share, overwrite and release.
        [self.model] = client.scatter([model_to_dict(model)], broadcast=True, hash=False)

    def label_frame(
        self,
        job: BlockJob,
        frame: tuple[int, ...],
        fit: FrameFit,
    ) -> Iterator[BlockLabels]:
        """Summaries of every block of ``frame``, as the workers finish them; closing the
        iterator early cancels the blocks not started yet."""
        from distributed import as_completed

        futures = [
            self.client.submit(
                _label_task,
                self.key,
                self.model,
                self.device,
                self.source,
                self.out,
                job,
                frame,
                fit,
                core,
                pure=False,
            )
            for core in job.cores()
        ]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def relabel_frame(self, frame, cores, luts) -> None:
        """Final ids of every block of ``frame``, written by the workers."""
        futures = [
            self.client.submit(_relabel_task, self.key, self.out, frame, core, lut, pure=False)
            for core, lut in zip(cores, luts, strict=True)
        ]
        self.client.gather(futures)


def _label_task(key, model_data, device, source, out, job, frame, fit, core) -> BlockLabels:
    state = _job_state(key)
    if "model" not in state:
        state["model"] = model_from_dict(model_data, "scattered model", device)
    outputs = predict_block(state["model"], _array(key, source, "r"), job, frame, fit, core)
    return label_block(outputs, job, frame, core, _array(key, out, "r+"))


def _relabel_task(key: str, out: str, frame, core, lut: np.ndarray) -> None:
    relabel_block(_array(key, out, "r+"), frame, core, lut)


def _job_state(key: str) -> dict[Any, Any]:
    if _JOB["key"] != key:
        _JOB.clear()
        _JOB["key"] = key
    return _JOB


def _array(key: str, path: str, mode: str):
    """The image (``r``) or the output (``r+``) at ``path``, opened once per worker."""
    state = _job_state(key)
    if (path, mode) not in state:
        if mode == "r":
            from .image_source import open_image

            state[(path, mode)] = open_image(path).array
        else:
            import zarr

            state[(path, mode)] = zarr.open_array(path, mode="r+")
    return state[(path, mode)]
