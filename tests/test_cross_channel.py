"""Cross-channel pooling (Condensation-Net, our reading) and the Tiny-YOLOv2 face detector with and without it."""

from __future__ import annotations

import pytest
import torch

from repro.detection.yolov2 import YOLOv2Loss, decode_yolo, detect_yolov2
from repro.layers import create_pool
from repro.layers.cross_channel import CondensedConv2d, CrossChannelPool
from repro.models import build_model
from repro.models.condensation import TinyYOLOv2


@pytest.mark.parametrize("k", [1, 2, 3])
def test_max_and_avg_reduce_groups_of_adjacent_channels(k):
    x = torch.randn(2, 4 * k, 5, 6)
    for mode, reduce in (("max", lambda t: t.max(dim=1).values), ("avg", lambda t: t.mean(dim=1))):
        y = CrossChannelPool(k, mode)(x)
        assert y.shape == (2, 4, 5, 6)
        for j in range(4):
            torch.testing.assert_close(y[:, j], reduce(x[:, j * k : (j + 1) * k]))


def test_pool_has_no_parameters_and_reports_virtual_factor():
    pool = CrossChannelPool(3)
    assert not list(pool.parameters())
    assert pool.virtual_input_channels_factor == 3


def test_condensed_conv_is_conv_with_k_filters_then_pool():
    block = CondensedConv2d(3, 8, k=2, mode="max")
    assert block.conv.out_channels == 16 and block.virtual_channels == 16
    assert block.virtual_input_channels_factor == 2
    x = torch.randn(1, 3, 9, 9)
    full = block.conv(x)
    torch.testing.assert_close(block(x), torch.maximum(full[:, 0::2], full[:, 1::2]))


@pytest.mark.parametrize("name", ["cross_channel_max", "cross_channel_avg"])
def test_registered_pools(name):
    pool = create_pool(name, 16, 2, k=2)
    assert pool.virtual_input_channels_factor == 2
    assert pool(torch.randn(2, 32, 8, 8)).shape == (2, 16, 4, 4)
    assert create_pool(name, 16, 1)(torch.randn(1, 32, 5, 5)).shape == (1, 16, 5, 5)


def test_errors_are_actionable():
    with pytest.raises(ValueError, match="divisible by 2"):
        CrossChannelPool(2)(torch.randn(1, 5, 4, 4))
    with pytest.raises(ValueError, match="mode"):
        CrossChannelPool(2, "median")
    with pytest.raises(ValueError, match="k must be"):
        CrossChannelPool(0)


def test_tiny_yolov2_grid_and_condensation_widths():
    with torch.device("meta"):
        base = build_model("tiny_yolov2_face", num_classes=1)
        condensed = build_model("condensation_tiny_yolov2_face", num_classes=1)
        out = base(torch.empty(1, 3, 416, 416))
        out_c = condensed(torch.empty(1, 3, 416, 416))
    assert out.shape == out_c.shape == (1, 5, 6, 13, 13)
    blocks = [m for m in condensed.modules() if isinstance(m, CondensedConv2d)]
    assert len(blocks) == 8 and all(b.conv.out_channels == 2 * b.out_channels for b in blocks)
    n_base = sum(p.numel() for p in base.parameters())
    n_cond = sum(p.numel() for p in condensed.parameters())
    assert n_cond > 1.9 * n_base  # twice the conv filters; the stored maps (BN widths) are unchanged


def test_face_only_class_count():
    with pytest.raises(ValueError, match="num_classes=2"):
        build_model("tiny_yolov2_face", num_classes=1000)


def _small(cross_channel):
    return TinyYOLOv2(widths=(4, 4, 8, 8, 8, 8, 8, 8), cross_channel=cross_channel)


@pytest.mark.parametrize("cross_channel", [None, "max", "avg"])
def test_forward_loss_decode(cross_channel):
    torch.manual_seed(0)
    model = _small(cross_channel)
    x = torch.randn(2, 3, 96, 96)
    targets = [torch.tensor([[0.1, 0.2, 0.4, 0.6, 1.0], [0.6, 0.6, 0.9, 0.95, 1.0]]), torch.zeros(0, 5)]
    pred = model(x)
    assert pred.shape == (2, 5, 6, 3, 3)
    loss = YOLOv2Loss()(pred, targets, model.anchors)
    loss.backward()
    assert torch.isfinite(loss) and model.head.weight.grad is not None
    model.eval()
    dets = detect_yolov2(model, x, conf_thresh=0.0)
    assert len(dets) == 2 and dets[0]["boxes"].shape[1] == 4
    assert (dets[0]["scores"][:-1] >= dets[0]["scores"][1:]).all()


def test_loss_decreases_when_fitting_one_batch():
    torch.manual_seed(0)
    model = _small("max")
    x = torch.randn(2, 3, 64, 64)
    targets = [torch.tensor([[0.2, 0.2, 0.6, 0.7, 1.0]]), torch.tensor([[0.5, 0.1, 0.9, 0.4, 1.0]])]
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = YOLOv2Loss()(model(x), targets, model.anchors)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_decoder_recovers_an_encoded_box():
    anchors = torch.tensor([[2.0, 2.0]])
    pred = torch.full((1, 1, 6, 4, 4), -10.0)
    pred[0, 0, :4, 1, 2] = torch.tensor([0.0, 0.0, 0.0, 0.0])  # centre (2.5, 1.5) cells, size = anchor
    pred[0, 0, 4, 1, 2] = 10.0
    det = decode_yolo(pred, anchors, image_size=(40, 40), conf_thresh=0.5)[0]
    torch.testing.assert_close(det["boxes"], torch.tensor([[15.0, 5.0, 35.0, 25.0]]))
