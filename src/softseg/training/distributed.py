"""Data-parallel training with PyTorch DDP, launched by torchrun (or any launcher that sets
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT).

Every process draws the same global batch from the shared, seeded sampling generator and
keeps its own slice (``rank::world``), so the data seen per step does not depend on the number
of processes. DDP averages the gradients; each process's loss is the mean over its slice, and
with equal slices the average of those is the global mean. On GPUs batch normalisation is
synchronised (SyncBatchNorm); on the CPU it cannot be (PyTorch's SyncBatchNorm is GPU-only),
so each process normalises with the statistics of its own slice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from softseg.errors import SoftsegError


@dataclass(frozen=True)
class Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment() -> Dist:
    """The process group this process belongs to; initialised here when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))  # the rank comes from the process group
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return Dist(dist.get_world_size(), dist.get_rank(), local_rank)


def device_for(dist_info: Dist, device: torch.device) -> torch.device:
    """One GPU per process (by LOCAL_RANK) when training on CUDA under DDP."""
    if dist_info.world > 1 and device.type == "cuda":
        return torch.device("cuda", dist_info.local_rank)
    return device


def check_batch(dist_info: Dist, batch_size: int) -> None:
    if batch_size % dist_info.world:
        raise SoftsegError(
            f"batch_size {batch_size} cannot be split evenly over {dist_info.world} processes; "
            f"use a batch size divisible by the number of processes"
        )


def wrap(model: torch.nn.Module, dist_info: Dist, device: torch.device) -> torch.nn.Module:
    """``model`` wrapped in DDP (SyncBatchNorm on GPUs); unchanged in a single process."""
    if dist_info.world <= 1:
        return model
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    return torch.nn.parallel.DistributedDataParallel(model)


def mean_over_processes(value: torch.Tensor, dist_info: Dist) -> torch.Tensor:
    if dist_info.world > 1:
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= dist_info.world
    return value


def sum_over_processes(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over all processes, differentiable (the backward pass sums the
    gradients too). For a loss that is not a mean over samples, such as the Dice semimetric
    loss's batch sums: every process then computes the global batch's loss, and DDP's
    averaging of the gradients gives exactly the single-process gradient."""
    import warnings

    from torch.distributed.nn.functional import all_reduce

    with warnings.catch_warnings():
        # deprecated in favour of a private module (_functional_collectives); still the public,
        # differentiable all-reduce of this torch
        warnings.simplefilter("ignore", FutureWarning)
        return all_reduce(value, op=dist.ReduceOp.SUM)


def barrier(dist_info: Dist) -> None:
    if dist_info.world > 1:
        dist.barrier()


def broadcast_object(obj, dist_info: Dist):
    """``obj`` of rank 0 on every process (e.g. a SoftsegError raised only on rank 0)."""
    if dist_info.world <= 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
