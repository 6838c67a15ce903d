"""Multi-process training under ``torchrun`` (DDP): the process group and what ranks agree on.

Outside ``torchrun`` (``WORLD_SIZE`` unset or 1) :func:`process_group` yields None and
nothing here runs, so a single process trains exactly as before. Under ``torchrun`` every
rank runs the same training loop on its own share of the patches; the helpers below are
the few points where the ranks must agree (a rank that decides alone to stop or skip a
step would leave the others waiting in the gradient all-reduce for ever).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .errors import InputError

__all__ = [
    "DistributedContext",
    "agree_on_result",
    "agree_on_step",
    "all_ranks",
    "check_identical",
    "common_seed",
    "from_main",
    "mean_over_ranks",
    "process_group",
    "rank_seed",
    "share_main_buffers",
    "torchrun_ranks",
    "training_device",
    "wrap",
]

# Rank 0 alone validates, computes validation AP and tunes thresholds while the others wait
# in their next collective; all of those are capped in size, so half an hour is ample.
_TIMEOUT = datetime.timedelta(minutes=30)


class DistributedError(RuntimeError):
    """The ranks of a multi-process run disagree (e.g. their weights differ)."""


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a multi-process run.

    Attributes
    ----------
    rank : int
        Global rank, 0 to ``world_size - 1``; rank 0 validates, writes and reports.
    local_rank : int
        Rank on this machine: the index of its GPU.
    world_size : int
        Number of processes in all.
    device : torch.device
        This rank's training device (``cuda:LOCAL_RANK`` or ``cpu``); collectives use it.
    """

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def backend(self) -> str:
        return "nccl" if self.device.type == "cuda" else "gloo"


def torchrun_ranks(env: Mapping[str, str] | None = None) -> tuple[int, int, int, int] | None:
    """(rank, local rank, world size, local world size) set by ``torchrun``, or None when
    this process is not one of several.

    Raises
    ------
    InputError
        If ``WORLD_SIZE`` says several processes but the other variables are missing.
    """
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in env]
    if missing:
        raise InputError(
            f"WORLD_SIZE={world} but {', '.join(missing)} not set: start multi-process "
            "training with torchrun (see docs/distributed.md)"
        )
    local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    return int(env["RANK"]), int(env["LOCAL_RANK"]), world, local_world


def training_device(device: torch.device, local_rank: int, local_world_size: int) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` for a CUDA device, else the CPU.

    Raises
    ------
    InputError
        For a device DDP cannot use here: a named GPU (``cuda:1``) when several processes
        share the machine, fewer GPUs than processes on this machine, or MPS.
    """
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise InputError(
            f"multi-process training runs on CPUs (gloo) or CUDA GPUs (nccl), not on "
            f"{device.type}; use --device cpu or cuda"
        )
    if device.index is not None and local_world_size > 1:
        raise InputError(
            f"--device {device}: under torchrun each process uses the GPU of its local rank; "
            "give --device cuda (or auto), and CUDA_VISIBLE_DEVICES to choose the GPUs"
        )
    count = torch.cuda.device_count()
    if count < local_world_size:
        raise InputError(
            f"{local_world_size} processes on this machine but only {count} CUDA GPU(s): "
            f"start torchrun with --nproc_per_node {count}, or train with --device cpu"
        )
    return torch.device("cuda", local_rank if device.index is None else device.index)


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[DistributedContext | None]:
    """Join the ``torchrun`` process group for the block; yield None outside ``torchrun``.

    The backend is NCCL when ``device`` is a CUDA device (each rank then trains on
    ``cuda:LOCAL_RANK``), gloo otherwise. The group is destroyed when the block ends.

    Raises
    ------
    InputError
        For a device multi-process training cannot use (see :func:`training_device`).
    """
    ranks = torchrun_ranks()
    if ranks is None:
        yield None
        return
    rank, local_rank, world, local_world = ranks
    ctx = DistributedContext(
        rank, local_rank, world, training_device(device, local_rank, local_world)
    )
    if ctx.device.type == "cuda":
        torch.cuda.set_device(ctx.device)
        dist.init_process_group("nccl", timeout=_TIMEOUT, device_id=ctx.device)
    else:
        dist.init_process_group("gloo", timeout=_TIMEOUT)
    try:
        yield ctx
        # Leave together: a rank whose peer has already closed its connections can be
        # aborted by gloo while it tears its own down.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def rank_seed(seed: int | None, rank: int) -> int | None:
    """The seed of ``rank``'s patch draws and augmentations: ``seed`` itself on rank 0 (so
    rank 0 draws what a single process draws), a distinct one derived from it elsewhere."""
    if seed is None or rank == 0:
        return seed
    return int(np.random.SeedSequence([seed % 2**32, rank]).generate_state(1)[0])


def common_seed(seed: int | None, ctx: DistributedContext) -> int:
    """``seed``, or when None rank 0's random choice: every rank must hold out the same
    validation images."""
    if seed is not None:
        return seed
    value = torch.tensor([int(np.random.default_rng().integers(2**31))], device=ctx.device)
    dist.broadcast(value, src=0)
    return int(value.item())


def wrap(network: torch.nn.Module, ctx: DistributedContext) -> DistributedDataParallel:
    """``network`` in DDP: rank 0's weights are copied to all ranks now, and every backward
    pass averages the gradients over the ranks.

    Batch-norm keeps DDP's default ``broadcast_buffers``: each forward pass starts from rank
    0's running statistics and normalises by the rank's own batch, as a single process
    does. SyncBatchNorm would normalise by the global batch, but it costs one all-reduce per
    norm layer per forward and PyTorch refuses it for CPU tensors (gloo).
    """
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(network, device_ids=device_ids)


def agree_on_step(ctx: DistributedContext, elapsed: float, stop: bool) -> tuple[float, bool]:
    """Before a step: rank 0's elapsed seconds (for the time budget and the learning-rate
    schedule) and whether any rank was asked to stop; the same on every rank."""
    values = torch.tensor(
        [elapsed if ctx.is_main else 0.0, float(stop)], dtype=torch.float64, device=ctx.device
    )
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    shared_elapsed, any_stop = values.tolist()
    return shared_elapsed, any_stop > 0


def all_ranks(flag: bool, ctx: DistributedContext) -> bool:
    """True on every rank when ``flag`` is True on every rank (e.g. the step was finite)."""
    value = torch.tensor([int(flag)], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def from_main(flag: bool, ctx: DistributedContext) -> bool:
    """Rank 0's ``flag`` on every rank (e.g. whether this epoch is the best so far)."""
    value = torch.tensor([int(flag)], device=ctx.device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def mean_over_ranks(value: float, ctx: DistributedContext) -> float:
    """The mean of ``value`` over the ranks."""
    total = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(total)
    return float(total.item()) / ctx.world_size


def share_main_buffers(network: torch.nn.Module, ctx: DistributedContext) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every rank, as DDP does at
    the start of each forward pass."""
    for buffer in network.buffers():
        dist.broadcast(buffer.data, src=0)


def _checksum(network: torch.nn.Module) -> int:
    """A 63-bit hash of the bytes of all parameters and buffers, in state-dict order."""
    digest = hashlib.blake2b(digest_size=8)
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return int.from_bytes(digest.digest(), "little") >> 1


def check_identical(network: torch.nn.Module, ctx: DistributedContext) -> str:
    """Make sure every rank holds the same weights; returns the line rank 0 reports.

    Raises
    ------
    DistributedError
        On every rank, naming the ranks whose weights differ from rank 0's.
    """
    mine = torch.tensor([_checksum(network)], dtype=torch.int64, device=ctx.device)
    gathered = [torch.zeros_like(mine) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, mine)
    sums = [int(g.item()) for g in gathered]
    differ = [r for r, s in enumerate(sums) if s != sums[0]]
    if differ:
        raise DistributedError(
            f"the weights of rank(s) {', '.join(map(str, differ))} differ from rank 0's after "
            "training: the gradient all-reduce did not keep the ranks in step"
        )
    return f"model identical on {ctx.world_size} ranks"


def agree_on_result(
    network: torch.nn.Module,
    ctx: DistributedContext,
    kept_start: bool,
    start_network: torch.nn.Module | None,
) -> tuple[bool, str]:
    """At the end of training: every rank takes rank 0's choice between the trained and the
    starting weights, then the weights are checked to be the same on all ranks.

    Returns
    -------
    kept_start : bool
        Rank 0's choice: whether the starting weights were kept.
    message : str
        The line rank 0 reports, ``model identical on N ranks``.

    Raises
    ------
    DistributedError
        If the weights differ between ranks.
    """
    kept_start = from_main(kept_start, ctx)
    if kept_start and start_network is not None and not ctx.is_main:
        network.load_state_dict(start_network.state_dict())
    # Parameters are kept equal by the gradient all-reduce; batch-norm statistics are rank
    # 0's by design (see wrap), so they are copied before the check.
    share_main_buffers(network, ctx)
    return kept_start, check_identical(network, ctx)
