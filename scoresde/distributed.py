"""The process group of a run: PyTorch's own data parallelism, launched by ``torchrun``.

``torchrun --nproc-per-node=N -m scoresde.run ...`` starts ``N`` processes (ranks ``0 .. N - 1``)
and tells each its place through the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). :func:`process_group` joins them into one
``torch.distributed`` process group (NCCL and gloo where CUDA is there, gloo alone elsewhere);
without those variables it does nothing, and every helper here answers for a world of one
process (rank 0, no communication), so a plain ``python -m scoresde.run`` runs exactly as it
always has.

What a run does with the group (docs/scale.md):

* training splits the global batch ``B`` into ``B / N`` rows per rank, each rank drawing its own
  data and noise (:func:`rank_seed`); ``DistributedDataParallel`` (:func:`wrap`) averages the
  gradients, so every rank applies the same update and keeps the same weights and EMA;
* sampling and likelihood evaluation split their points into contiguous shards (:func:`shard`),
  each rank works on its own, and :func:`gather` puts the results back in order;
* only rank 0 (:func:`is_main`) writes files and logs; :func:`run_on_main` runs a step there and
  shares its failure with every rank.

A rank that dies makes the others' next collective operation fail, and ``torchrun`` then stops the
whole group; files are written atomically, so the last good checkpoint stays.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "OtherRankFailed",
    "launched",
    "process_group",
    "active",
    "rank",
    "world_size",
    "is_main",
    "device",
    "barrier",
    "mean",
    "maximum",
    "any_true",
    "shard",
    "gather",
    "gather_objects",
    "rank_seed",
    "wrap",
    "run_on_main",
]

T = TypeVar("T")

#: The variables ``torchrun`` sets in each process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class OtherRankFailed(RuntimeError):
    """Raised on every other rank when a step run by :func:`run_on_main` failed on rank 0 (which
    reports the failure itself)."""


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (its environment names a rank)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


@contextlib.contextmanager
def process_group() -> Iterator[None]:
    """Within the block, this process is a rank of its ``torchrun`` job's process group.

    Where CUDA is available each rank takes the GPU ``LOCAL_RANK`` of its node and the group has
    two backends, NCCL for CUDA tensors and gloo for CPU ones (``"cpu:gloo,cuda:nccl"``), so a run
    whose ``config.device`` is the CPU works on a GPU machine too; elsewhere it is gloo. Outside
    ``torchrun``, or when a group already exists (it is then the caller's to close), the block
    runs unchanged.
    """
    if not launched() or dist.is_initialized():
        yield
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def active() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank, ``0 .. world_size() - 1`` (``0`` without a group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """The number of processes of the run (``1`` without a group)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this is rank 0, the process that writes files and logs."""
    return rank() == 0


def device() -> torch.device:
    """Where this rank's collective operations run: its GPU where CUDA is available (NCCL), else
    the CPU (gloo)."""
    if active() and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait until every rank is here (nothing in a world of one)."""
    if active():
        dist.barrier()


def _all_reduce(values: list[float], op: dist.ReduceOp) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device())
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()


def mean(value: Tensor | float) -> float:
    """The mean of a number over the ranks (``float(value)`` itself in a world of one)."""
    if not active():
        return float(value)
    (total,) = _all_reduce([float(value)], dist.ReduceOp.SUM)
    return total / world_size()


def maximum(value: float) -> float:
    """The largest of a number over the ranks."""
    return _all_reduce([value], dist.ReduceOp.MAX)[0] if active() else value


def any_true(flag: bool) -> bool:
    """Whether ``flag`` is set on any rank (so that every rank takes the same branch)."""
    return bool(maximum(float(flag))) if active() else flag


def shard(n: int) -> slice:
    """This rank's contiguous part of ``n`` items: rank ``r`` of ``W`` gets items
    ``[r n // W, (r + 1) n // W)`` (shares differ by at most one; in rank order they make
    ``0 .. n - 1``, so :func:`gather` of the per-item results restores the original order)."""
    r, w = rank(), world_size()
    return slice(r * n // w, (r + 1) * n // w)


def gather(tensor: Tensor) -> Tensor:
    """Every rank's ``tensor`` ``(n_r, ...)`` concatenated along dim 0 in rank order, on every rank
    (``tensor`` itself in a world of one). The ``n_r`` may differ; the other dims must agree."""
    if not active():
        return tensor
    sizes = [int(s) for s in gather_objects(tensor.shape[0])]
    padded = torch.zeros((max(sizes), *tensor.shape[1:]), dtype=tensor.dtype, device=device())
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)]).to(tensor.device)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` in a world of one)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def rank_seed(seed: int, rank_: int | None = None) -> int:
    """The seed of rank ``rank_``'s own random stream (default: this rank's) in a run seeded by
    ``seed``: ``seed`` itself for rank 0 (so a one-process run is unchanged), and for rank
    ``r > 0`` a 64-bit seed drawn by :class:`numpy.random.SeedSequence` from ``(seed, r)``."""
    r = rank() if rank_ is None else rank_
    if r == 0:
        return seed
    words = np.random.SeedSequence([seed, r]).generate_state(2, np.uint32)
    return int(words[0]) << 32 | int(words[1])


def wrap(model: nn.Module) -> DistributedDataParallel | None:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` in a multi-process run
    (which averages gradients over the ranks in the backward pass, and copies rank 0's parameters
    and buffers to every rank now), ``None`` in a world of one."""
    if not active():
        return None
    param = next(model.parameters())
    ids = [param.device.index] if param.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def run_on_main(step: Callable[[], T]) -> T | None:
    """``step()`` on rank 0 only; its result there, ``None`` elsewhere.

    Every rank waits for it, and a failure there raises :class:`OtherRankFailed` on every other
    rank (rank 0 raises the error itself), so no rank goes on alone.
    """
    if not active():
        return step()
    failure: list[Any] = [None]
    result = None
    if is_main():
        try:
            result = step()
        except BaseException as err:
            failure[0] = f"{type(err).__name__}: {err}"
            dist.broadcast_object_list(failure, src=0)
            raise
    dist.broadcast_object_list(failure, src=0)
    if failure[0] is not None:
        raise OtherRankFailed(f"rank 0 failed ({failure[0]})")
    return result
