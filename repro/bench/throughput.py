"""Achieved throughput: the MACs of one training step, and a dense matmul of the same MAC count as the yardstick.

* :func:`training_step_macs`: the multiply-accumulates of one forward + backward, counted by the profiler's
  :class:`repro.metrics.macs.MacCounter` on the architecture's own operations
  (:func:`repro.layers.nlp.architecture_ops`: attention through SDPA, no folded projections). The counter has no
  formula for the backward of the CPU fused attention, so it is added here: ``dQ = dS·K``, ``dK = dSᵀ·Q``,
  ``dV = Pᵀ·dO`` and ``dP = dO·Vᵀ`` are four products of the forward's size, i.e. twice the forward's two (the
  recomputed scores are an implementation cost and are not counted). PyTorch's convolution-backward formula
  ignores ``groups`` for the weight gradient (a depthwise conv's backward would count C times its MACs), so
  convolution backwards are counted here as the forward's MACs per requested gradient.
* :func:`matmul_step`: ``C = A·B`` with square fp32 ``n×n`` matrices, ``n³`` ≈ a given MAC count: what the
  machine's BLAS achieves on dense work of that size, timed in the same process as the layer.

GFLOP/s = 2·MACs / time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from repro.metrics.macs import MacCounter, op_macs

__all__ = ["gflops", "matmul_size", "matmul_step", "training_step_macs"]

_CPU_FLASH_BACKWARD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)


def _conv_backward_macs(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed, *rest) -> int:
    """``convolution_backward``: the forward's MACs once for the input gradient and once for the weight gradient
    (each that is requested). PyTorch's formula ignores ``groups`` for the weight gradient, which counts a
    depthwise conv's backward C times too high."""
    output_mask = rest[-1]
    per_output = weight.shape[1] * weight[0, 0].numel()  # (C_in / groups) · k² for each output element
    forward = (input.numel() if transposed else grad_output.numel()) * per_output
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def _backward_macs(func, args: tuple, kwargs: dict, out) -> int:
    """MACs of one ATen call of a backward pass: :func:`repro.metrics.macs.op_macs`, with the CPU fused attention's
    backward (four products of the forward's size) and a groups-aware convolution backward."""
    packet = func._overloadpacket
    if _CPU_FLASH_BACKWARD is not None and packet == _CPU_FLASH_BACKWARD:
        _, query, key, value = args[:4]
        return 2 * query.shape[:-1].numel() * key.shape[-2] * (query.shape[-1] + value.shape[-1])
    if packet == torch.ops.aten.convolution_backward:
        return _conv_backward_macs(*args, **kwargs)
    return op_macs(func, args, kwargs, out)


class _TrainingMacCounter(MacCounter):
    """:class:`MacCounter` with the backward formulas of :func:`_backward_macs`."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        macs = _backward_macs(func, args, kwargs, out)
        if macs:
            self.total += macs
            self.by_op[str(func._overloadpacket)] += macs
        return out


def training_step_macs(step: Callable[[], object]) -> int:
    """MACs of one call of ``step`` (a forward + backward), counted on the architecture's operations."""
    from repro.layers.nlp import architecture_ops

    with architecture_ops(), _TrainingMacCounter() as counter:
        step()
    return counter.total


def matmul_size(macs: int) -> int:
    """Side ``n`` of the square matmul with ``n³`` closest to ``macs`` (at least 16)."""
    return max(16, round(macs ** (1 / 3)))


def matmul_step(macs: int, device: torch.device | str = "cpu") -> tuple[Callable[[], None], int]:
    """A dense fp32 ``n×n`` by ``n×n`` matmul with ``n³`` ≈ ``macs`` (``torch.mm`` into a preallocated output), and
    its exact MAC count ``n³``."""
    n = matmul_size(macs)
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=generator).to(device) for _ in range(2))
    out = torch.empty(n, n, device=device)

    def step() -> None:
        torch.mm(a, b, out=out)

    return step, n**3


def gflops(macs: float, ms: float) -> float:
    """Achieved GFLOP/s of ``macs`` multiply-accumulates in ``ms`` milliseconds (2 FLOPs per MAC)."""
    return 2 * macs / (ms * 1e6)
