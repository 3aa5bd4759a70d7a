"""Dynamic convolution (Chen et al., CVPR 2020), the ``dy`` prefix of the SAP architectures (reference_spec §2.9).

``K`` expert kernels ``W_k`` (and biases ``b_k``) are mixed per sample with attention weights
``α = softmax(FC2(ReLU(FC1(GAP(x)))) / T)``: ``y = conv(x, Σ_k α_k W_k) + Σ_k α_k b_k``. The per-sample kernels are
applied at once as one grouped convolution with ``groups · B`` groups.

Faithful defaults: T = 34 and nothing anneals it (B12), so α stays close to uniform. The fix is to call
:meth:`DynamicConv2d.update_temperature` (or :func:`anneal_temperature` on a whole model) once per epoch, which
lowers T by 3 down to 1 as in the dynamic-convolution paper. Tensors are reshaped with ``.reshape`` rather than
``.view``, so non-contiguous inputs (e.g. after the NLP pool) work (the B12 crash); the result is identical.
Attribute names follow the official code (``weight``, ``bias``, ``attention.fc1``, ``attention.fc2``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair


class DynamicConvAttention(nn.Module):
    """Attention over ``num_experts`` kernels: GAP → Conv1x1 (no bias) → ReLU → Conv1x1 (bias) → softmax(· / T).

    The hidden width is ``int(in_channels · ratio) + 1``, or ``num_experts`` when the input has 3 channels (RGB).
    """

    def __init__(self, in_channels: int, num_experts: int = 4, ratio: float = 0.25, temperature: float = 34) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"dynamic-conv temperature must be > 0, got {temperature}")
        hidden = num_experts if in_channels == 3 else int(in_channels * ratio) + 1
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(hidden, num_experts, kernel_size=1, bias=True)
        self.temperature = temperature
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for fc in (self.fc1, self.fc2):
            nn.init.kaiming_normal_(fc.weight, mode="fan_out", nonlinearity="relu")
            if fc.bias is not None:
                nn.init.zeros_(fc.bias)

    def update_temperature(self, step: float = 3) -> float:
        """Lower the temperature by ``step`` (not below 1) and return the new value."""
        self.temperature = max(1, self.temperature - step)
        return self.temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc2(F.relu(self.fc1(self.avgpool(x))))
        return torch.softmax(logits.reshape(x.shape[0], -1) / self.temperature, dim=1)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class DynamicConv2d(nn.Module):
    """A drop-in for ``nn.Conv2d`` whose kernel is an input-dependent mixture of ``num_experts`` expert kernels.

    Parameters: ``num_experts · (out · in/groups · kh · kw [+ out])`` for the experts plus the attention's
    ``in · hidden + hidden · K + K``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        num_experts: int = 4,
        ratio: float = 0.25,
        temperature: float = 34,
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"DynamicConv2d: in_channels={in_channels} and out_channels={out_channels} must be divisible by "
                f"groups={groups}"
            )
        if num_experts < 1:
            raise ValueError(f"DynamicConv2d needs num_experts >= 1, got {num_experts}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.num_experts = num_experts
        self.attention = DynamicConvAttention(in_channels, num_experts, ratio, temperature)
        self.weight = nn.Parameter(torch.empty(num_experts, out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(num_experts, out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each expert kaiming-uniform (as ``nn.init.kaiming_uniform_`` defaults), biases zero."""
        for expert in self.weight.data:
            nn.init.kaiming_uniform_(expert)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @property
    def temperature(self) -> float:
        return self.attention.temperature

    def update_temperature(self, step: float = 3) -> float:
        """Anneal the attention temperature by ``step`` down to 1 (never called by the official code, B12)."""
        return self.attention.update_temperature(step)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        if channels != self.in_channels:
            raise ValueError(f"DynamicConv2d expects {self.in_channels} input channels, got {channels}")
        alpha = self.attention(x)  # (B, K)
        weight = (alpha @ self.weight.reshape(self.num_experts, -1)).reshape(
            batch * self.out_channels, self.in_channels // self.groups, *self.kernel_size
        )
        bias = (alpha @ self.bias).reshape(-1) if self.bias is not None else None
        y = F.conv2d(
            x.reshape(1, batch * channels, height, width),
            weight,
            bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups * batch,
        )
        return y.reshape(batch, self.out_channels, *y.shape[-2:])

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, num_experts={self.num_experts}"
        )
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


def anneal_temperature(model: nn.Module, step: float = 3) -> int:
    """Call :meth:`DynamicConv2d.update_temperature` on every dynamic conv in ``model``; return how many there are."""
    convs = [m for m in model.modules() if isinstance(m, DynamicConv2d)]
    for conv in convs:
        conv.update_temperature(step)
    return len(convs)
