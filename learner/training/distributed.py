"""Multi-process training with torchrun: process group, device per rank, gradient-keeping gather.

``torchrun --nproc_per_node=N -m learner.train_app ...`` sets RANK/WORLD_SIZE/LOCAL_RANK;
this module turns them into a process group (nccl on GPUs, gloo on CPUs), picks each
rank's device, and provides the all-gather that NT-Xent needs so that every rank's
anchors are contrasted with the negatives of all ranks. Without torchrun everything here
degrades to a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_name: str) -> DistributedContext:
    """Join the torchrun process group if there is one (idempotent)."""
    if not launched_by_torchrun():
        return DistributedContext()
    if not dist.is_initialized():
        wants_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
        dist.init_process_group(backend="nccl" if wants_cuda else "gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's (N, D) tensor along dim 0, keeping gradients to all ranks."""
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(tensor))


def all_gather_objects(obj: Any, context: DistributedContext) -> list[Any]:
    """Every rank's ``obj`` (plain picklable data), in rank order, on every rank."""
    if not context.is_distributed:
        return [obj]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(context: DistributedContext) -> None:
    if context.is_distributed:
        dist.barrier()


def shutdown(context: DistributedContext) -> None:
    if context.is_distributed and dist.is_initialized():
        dist.destroy_process_group()
