"""DistributedDataParallel plumbing: process-group setup from ``torchrun``'s environment, model wrapping, collectives.

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything degrades to a single process and the helpers
are no-ops, so the trainer has one code path.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


class DeviceError(ValueError):
    """A device that does not exist on this machine."""


@dataclass(frozen=True)
class DistContext:
    """Where this process runs: its rank, the number of processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``'auto'`` → the local CUDA device if there is one, else CPU; ``'cuda'`` → ``cuda:<local_rank>``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise DeviceError(f"invalid device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:<index>'") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} requested but CUDA is not available; use --device cpu")
        if resolved.index is None:
            resolved = torch.device("cuda", local_rank)
        if resolved.index >= torch.cuda.device_count():
            raise DeviceError(f"device {resolved} does not exist ({torch.cuda.device_count()} CUDA device(s))")
    elif resolved.type != "cpu":
        raise DeviceError(f"unsupported device {device!r}; use 'auto', 'cpu' or 'cuda'")
    return resolved


def setup_distributed(device: str = "auto") -> DistContext:
    """Join the process group that ``torchrun`` describes (gloo on CPU, NCCL on CUDA), or run as a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size > 1:
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        if not dist.is_initialized():
            backend = "nccl" if resolved.type == "cuda" else "gloo"
            kwargs = {"device_id": resolved} if resolved.type == "cuda" else {}
            dist.init_process_group(backend=backend, **kwargs)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=resolved)


def cleanup_distributed(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(
    model: nn.Module, ctx: DistContext, *, sync_bn: bool = False, find_unused_parameters: bool = False
) -> nn.Module:
    """Wrap ``model`` (already on ``ctx.device``) in DDP when distributed; ``sync_bn`` converts BatchNorm first.

    ``find_unused_parameters``: some parameters may get no gradient in a step (a detector's backbone stages after
    its last used output)."""
    if not ctx.distributed:
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``tensor`` over processes in place (no-op for one process) and return it."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process (``[obj]`` for one process)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every process."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
