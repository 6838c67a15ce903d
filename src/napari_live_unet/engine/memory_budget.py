"""The memory a prediction may take, and how it is shared out: one :class:`MemoryBudget`.

Each front end builds one budget per run and passes it down: the CLI from
``--memory-limit`` and ``--workers`` (:meth:`MemoryBudget.split`, with
:func:`default_memory_limit` when no limit is given), the viewer from a share of the free
memory (:meth:`MemoryBudget.for_viewer` of :func:`viewer_memory_cap`). The engine reads
the budget, never a limit of its own, and refuses a budget too small with a
:class:`~napari_live_unet.engine.errors.MemoryLimitError` whose remedy each front end words.

The module constants are the tuning defaults of every memory budget in prediction, each
with why it has its value. Costs measured per pixel (what a block or a forward pass takes)
stay beside the code they describe: :mod:`.block_plan` and :mod:`.tile_plan`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from .block_plan import block_bytes
from .errors import MemoryLimitError
from .memory_estimate import format_bytes

DEFAULT_LIMIT_SHARE = 0.5
"""The CLI's limit when none is given: this share of the memory available when it starts
(the rest is left to the system and other programs)."""

UNKNOWN_MEMORY_LIMIT = 4 * 2**30
"""The CLI's limit when none is given and the available memory cannot be told: what a
small machine has to spare."""

VIEWER_SHARE = 0.25
"""Share of the free memory (when prediction starts) a prediction in the viewer may take:
napari, its layers and the user's other work hold the rest."""

UNKNOWN_VIEWER_CAP = 2 * 2**30
"""The viewer's cap when the free memory cannot be told."""

BLOCKS_IN_FLIGHT = 2
"""Blocks alive at once in one process: one in the network, one in post-processing."""

MIN_NETWORK_BYTES = 64 * 2**20
"""The least working memory a forward pass gets (tiles shrink to fit it)."""

MAX_NETWORK_BYTES = 512 * 2**20
"""The most a forward pass gets on a CPU: larger tiles are no faster there."""

SMALLEST_BLOCK = (256, 256)
"""The smallest block (with its margins) a budget must leave room for, twice over."""

PYRAMID_BYTES = 256 * 2**20
"""What finishing an output may hold at once: building the viewing pyramid of an OME-Zarr
output, or narrowing a TIFF to its final integer type band by band."""

CPU_TILE_BYTES = 2**30
"""Tiles (and batches of tiles) of an image predicted whole stay under this on a CPU, and
under a quarter of the free memory: larger tiles gain nothing once the overlap is a small
fraction of them."""

CUDA_TILE_BYTES = 4 * 2**30
"""The same cap on a CUDA GPU (and under half its free memory)."""


def smallest_limit(baseline: int = 0) -> int:
    """The least limit a prediction process can work in: ``baseline`` (what it holds
    before the first block), one forward pass and :data:`BLOCKS_IN_FLIGHT` of the
    :data:`SMALLEST_BLOCK`."""
    return baseline + MIN_NETWORK_BYTES + BLOCKS_IN_FLIGHT * block_bytes(SMALLEST_BLOCK)


def default_memory_limit(available: int | None) -> int:
    """The CLI's limit when none is given: :data:`DEFAULT_LIMIT_SHARE` of the
    ``available`` memory (:data:`UNKNOWN_MEMORY_LIMIT` when it is unknown)."""
    return int(DEFAULT_LIMIT_SHARE * available) if available else UNKNOWN_MEMORY_LIMIT


def viewer_memory_cap(free: int | None, share: float = VIEWER_SHARE) -> int:
    """Bytes a new prediction in the viewer may take: ``share`` of the ``free`` memory
    (:data:`UNKNOWN_VIEWER_CAP` when it is unknown)."""
    return UNKNOWN_VIEWER_CAP if free is None else int(free * share)


def resident_bytes() -> int:
    """This process's resident memory (0 where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass(frozen=True)
class MemoryBudget:
    """How one memory limit is shared out in a prediction process.

    Attributes
    ----------
    limit : int
        What one prediction process may take (bytes): the whole limit, or each worker's
        share of it.
    baseline : int
        What the process holds before the first block (Python, torch, the model).
    network : int
        Working memory of one forward pass (tiles are sized to it).
    per_block : int
        What each block in flight may take (:data:`BLOCKS_IN_FLIGHT` of them).
    workers : int, optional
        LocalCluster worker processes that each get ``limit`` (None: this process alone).
    keep : int, optional
        In the viewer: what a prediction result may keep in memory for re-thresholding
        (network outputs and post-processing caches; the cap before the floor of
        :func:`smallest_limit`). None on the CLI.
    """

    limit: int
    baseline: int
    network: int
    per_block: int
    workers: int | None = None
    keep: int | None = None

    @classmethod
    def split(
        cls, limit: int, baseline: int | None = None, workers: int | None = None
    ) -> MemoryBudget:
        """Share ``limit`` out; ``baseline`` defaults to this process's resident memory.

        With ``workers``, the limit is shared among that many LocalCluster workers, each
        of which holds its own Python, torch and model (about ``baseline``) beside what
        this process holds.

        Raises
        ------
        MemoryLimitError
            If the limit leaves too little for two small blocks beside the baseline (in
            each worker).
        """
        baseline = resident_bytes() if baseline is None else int(baseline)
        if not workers:
            return cls._share(int(limit), baseline)
        share = (limit - baseline) // workers
        try:
            return cls._share(share, baseline, workers)
        except MemoryLimitError:
            raise MemoryLimitError(
                baseline + workers * smallest_limit(baseline),
                limit,
                f"The memory limit {format_bytes(limit)} is too small for {workers} workers: "
                f"this process holds {format_bytes(baseline)}, and each worker holds as much "
                "again (Python, torch, the model) besides its blocks, which leaves each "
                f"worker {format_bytes(max(0, share - baseline))}.",
                workers=workers,
            ) from None

    @classmethod
    def for_viewer(cls, cap: int) -> MemoryBudget:
        """The viewer's budget: ``cap`` (see :func:`viewer_memory_cap`) shared out as the
        CLI shares its limit, with nothing set aside for the process itself (the cap is
        already a share of the free memory), and never below :func:`smallest_limit`."""
        budget = cls._share(max(int(cap), smallest_limit()), 0)
        return cls(budget.limit, 0, budget.network, budget.per_block, keep=max(0, int(cap)))

    @classmethod
    def _share(cls, limit: int, baseline: int, workers: int | None = None) -> MemoryBudget:
        free = limit - baseline
        network = int(min(MAX_NETWORK_BYTES, max(MIN_NETWORK_BYTES, free // 4)))
        per_block = (free - network) // BLOCKS_IN_FLIGHT
        if per_block < block_bytes(SMALLEST_BLOCK):
            need = smallest_limit(baseline)
            raise MemoryLimitError(
                need,
                limit,
                f"The memory limit {format_bytes(limit)} is too small: this process already "
                f"holds {format_bytes(baseline)}, and prediction needs at least "
                f"{format_bytes(need)} in all.",
            )
        return cls(int(limit), int(baseline), network, int(per_block), workers)

    @property
    def result_bytes(self) -> int:
        """What a prediction result may keep in memory: :attr:`keep`, else the limit."""
        return self.limit if self.keep is None else self.keep

    @property
    def cluster_limit(self) -> int:
        """What a LocalCluster of :attr:`workers` is given in all (each gets :attr:`limit`)."""
        return self.limit * (self.workers or 1)

    @property
    def finish_bytes(self) -> int:
        """What finishing an output may hold at once (at most :data:`PYRAMID_BYTES`)."""
        return min(self.per_block, PYRAMID_BYTES)

    def fits_whole(self, spatial: Sequence[int], channels: int = 1) -> bool:
        """Whether a frame of ``spatial`` shape fits whole: its working memory predicted
        whole is no more than the :data:`BLOCKS_IN_FLIGHT` blocks the budget leaves."""
        return block_bytes(spatial, channels) <= BLOCKS_IN_FLIGHT * self.per_block
