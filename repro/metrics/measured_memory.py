"""Measured peak memory of a real forward pass (inference) or of one training step, beside the analytic numbers.

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus what was allocated before the
  call (the model and the input), i.e. the working memory of the call.
* CPU: the PyTorch profiler with ``profile_memory=True``; every allocation and free of the CPU allocator during the
  call is replayed in time order and the peak of the running total is reported (same meaning as on CUDA).

Measured numbers include what the analytic conventions leave out (temporaries inside layers, the expanded MBConv maps,
attention matrices, autograd's saved tensors, gradients and optimizer state in a training step) and exclude nothing
but the model and the input; they are an upper reference, not a reproduction of a paper convention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_flatten

__all__ = ["MODES", "MeasuredMemory", "measure_peak_memory"]

MODES = ("inference", "train")


@dataclass(frozen=True)
class MeasuredMemory:
    """Peak bytes allocated by one call above what was allocated before it."""

    mode: str
    device: str
    batch_size: int
    image_size: tuple[int, int]
    peak_bytes: int
    method: str

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20


def _sides(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def _step(model: nn.Module, x: torch.Tensor, mode: str, optimizer: torch.optim.Optimizer | None) -> None:
    if mode == "inference":
        with torch.no_grad():
            model(x)
        return
    out = model(x)
    tensors = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if len(tensors) == 1 and tensors[0].dim() == 2:  # logits: a real classification loss
        target = torch.zeros(tensors[0].shape[0], dtype=torch.long, device=x.device)
        loss = F.cross_entropy(tensors[0], target)
    else:  # detection heads etc.: any scalar that depends on every output
        loss = sum(t.float().mean() for t in tensors)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _cpu_peak(run) -> int:
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    allocations: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            allocations.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    if not allocations:
        raise RuntimeError("the PyTorch profiler recorded no CPU allocation; cannot measure CPU memory")
    current = peak = 0
    for _, size in sorted(allocations):
        current += size
        peak = max(peak, current)
    return peak


def measure_peak_memory(
    model: nn.Module,
    image_size: int | Sequence[int],
    *,
    mode: str = "inference",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    in_channels: int = 3,
) -> MeasuredMemory:
    """Run ``model`` once (``mode='inference'``: eval + no_grad; ``'train'``: train mode, forward, backward and one
    SGD-with-momentum step) on random input and return the peak working memory in bytes.

    ``batch_size`` defaults to 1 for inference and 2 for training (batch norm needs two samples per channel).
    The model is moved to ``device`` (default: where it is); its train/eval mode is restored afterwards.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid choices: {', '.join(MODES)}")
    first = next(iter([*model.parameters(), *model.buffers()]), None)
    device = (
        torch.device(device) if device is not None else (first.device if first is not None else torch.device("cpu"))
    )
    if device.type == "meta" or (first is not None and first.device.type == "meta"):
        raise ValueError("measured memory needs a model with real weights; build it without the meta device")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available; use device='cpu'")
    batch_size = batch_size or (1 if mode == "inference" else 2)
    h, w = _sides(image_size)
    was_training = model.training
    model.to(device)
    model.train(mode == "train")
    x = torch.randn(batch_size, in_channels, h, w, device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9) if mode == "train" else None
    try:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            _step(model, x, mode, optimizer)
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) - before
            method = "torch.cuda.max_memory_allocated"
        elif device.type == "cpu":
            peak = _cpu_peak(lambda: _step(model, x, mode, optimizer))
            method = "torch.profiler (CPU allocator events)"
        else:
            raise ValueError(f"measured memory supports 'cpu' and 'cuda' devices, got {device.type!r}")
    finally:
        model.train(was_training)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
    return MeasuredMemory(mode, str(device), batch_size, (h, w), int(peak), method)
