"""The trace recorder: module calls through global hooks, free operations, and the MAC formulas on shapes."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from repro.metrics.macs import MacCounter
from repro.metrics.trace import trace_model


class _Scale(nn.Module):
    def forward(self, x: torch.Tensor, *, scale: torch.Tensor) -> torch.Tensor:
        return x * scale


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.scale = _Scale()
        self.outside = [nn.ReLU()]  # not registered: not part of the model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        s = y.mean(dim=(2, 3), keepdim=True)
        return self.outside[0](self.scale(y, scale=s))


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_calls_record_keyword_tensors_and_skip_modules_outside_the_model(device):
    with torch.device(device):
        model = _Model()
    trace = trace_model(model, 8)
    assert [c.name for c in trace.calls] == ["", "conv", "scale"]
    conv, scale = trace.calls[1], trace.calls[2]
    mean = next(op for op in trace.ops if op.name == "mean")
    assert scale.inputs == (conv.outputs[0], mean.outputs[0])  # x, then the keyword tensor
    relu = [op for op in trace.ops if op.name == "relu"]
    assert len(relu) == 1 and relu[0].parent == 0  # the outside module's work is the root's free op


def test_a_failed_trace_leaves_no_hooks_behind():
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            raise RuntimeError("broken")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when an always-called hook fails after forward raised
        with pytest.raises(RuntimeError, match="broken"):
            trace_model(Broken(), 8)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    first = trace_model(model, 8)
    assert [c.name for c in trace_model(model, 8).calls] == [c.name for c in first.calls] == ["", "0", "1"]


def test_mac_formulas_on_shapes_equal_torchs_flop_counts():
    a, b, c = torch.randn(6, 5), torch.randn(5, 7), torch.randn(6, 7)
    x, y, z = torch.randn(2, 6, 5), torch.randn(2, 5, 7), torch.randn(2, 6, 7)
    conv = nn.Conv2d(3, 8, 3, stride=2, groups=1)
    image = torch.randn(1, 3, 17, 17)

    def work():
        torch.mm(a, b)
        torch.addmm(c, a, b)
        torch.mm(a, b, out=torch.empty(6, 7))  # an out= overload
        torch.bmm(x, y)
        torch.baddbmm(z, x, y)
        conv(image)

    with torch.no_grad(), FlopCounterMode(display=False) as flops:
        work()
    with torch.no_grad(), MacCounter() as macs:
        work()
    expected = {str(op): n // 2 for op, n in flops.get_flop_counts()["Global"].items()}
    assert dict(macs.by_op) == expected and macs.total == flops.get_total_flops() // 2 > 0
