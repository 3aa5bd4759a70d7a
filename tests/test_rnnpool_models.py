"""RNNPool classification models: Table 10 layer by layer, Table 2 block alternatives, ablations, parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from repro.layers.rnnpool import GlobalRNNPool2d, ReNet2d, RNNPool2d, rnnpool_num_params
from repro.models import build_model, list_models
from repro.models.rnnpool_common import count_parameters

CLASSIFIERS = {
    "mobilenetv2": 10,
    "mobilenetv2_rnnpool": 10,
    "mobilenetv2_renet": 10,
    "mobilenetv2_035_vww": 2,
    "mobilenetv2_035_rnnpool_vww": 2,
    "mobilenetv1": 1000,
    "mobilenetv1_rnnpool": 1000,
    "mobilenetv1_renet": 1000,
    "efficientnet_b0": 10,
    "efficientnet_b0_rnnpool": 10,
    "resnet18": 10,
    "resnet18_rnnpool": 10,
    "densenet121": 10,
    "densenet121_rnnpool": 10,
    "googlenet": 10,
    "googlenet_rnnpool": 10,
}


def _shapes_after_each_feature(model: nn.Module, size: int = 224) -> list[tuple[int, int, int]]:
    with torch.device("meta"):
        x = torch.empty(1, 3, size, size)
        shapes = []
        for layer in model.features:
            x = layer(x)
            shapes.append(tuple(x.shape[1:]))
    return shapes


def test_everything_is_registered():
    assert set(CLASSIFIERS) <= set(list_models(family="rnnpool"))


def test_mobilenetv2_rnnpool_follows_table_10():
    with torch.device("meta"):
        model = build_model("mobilenetv2_rnnpool", num_classes=10)
    shapes = _shapes_after_each_feature(model)
    # row by row: conv2d 3x3; RNNPool block; bottlenecks (6,64,4,2), (6,96,3,1), (6,160,3,2), (6,320,1,1); conv2d 1x1
    rows = [1, 1, 4, 3, 3, 1, 1]
    expected = [(32, 112, 112), (64, 28, 28), (64, 14, 14), (96, 14, 14), (160, 7, 7), (320, 7, 7), (1280, 7, 7)]
    ends = [sum(rows[: i + 1]) - 1 for i in range(len(rows))]
    assert len(shapes) == sum(rows)
    assert [shapes[i] for i in ends] == expected
    rnnpool = model.features[1]
    assert isinstance(rnnpool, RNNPool2d)
    assert (rnnpool.patch_size, rnnpool.stride, rnnpool.rnn_model.h1, rnnpool.rnn_model.h2) == (6, 4, 16, 16)
    expansions = [m.conv[0][0].out_channels // m.conv[0][0].in_channels for m in model.features[2:13]]
    assert expansions == [6] * 11
    with torch.device("meta"):
        assert model(torch.empty(1, 3, 224, 224)).shape == (1, 10)


def test_vww_model_is_edgemls():
    """EdgeML VWW: 8-channel stem at 112x112, RNNPool(6, 6, 8, 8, 8) stride 4 -> 27x27 -> padded 28x28x32."""
    with torch.device("meta"):
        model = build_model("mobilenetv2_035_rnnpool_vww", num_classes=2)
    shapes = _shapes_after_each_feature(model)
    assert shapes[:2] == [(8, 112, 112), (32, 28, 28)]
    assert model.features[1].output_size(112, 112) == (28, 28)
    assert [shapes[i][0] for i in (5, 8, 11, 12, 13)] == [24, 32, 56, 112, 320]
    assert count_parameters(model) == 281_902  # EdgeML's model_mobilenet_rnnpool.py (width 0.35, last 320)


@pytest.mark.parametrize(("replace", "block_type"), [("avg", nn.Sequential), ("max", nn.Sequential),
                                                     ("strided_conv", nn.Sequential), ("renet", ReNet2d),
                                                     ("rnnpool", RNNPool2d)])  # fmt: skip
def test_table2_block_alternatives_only_change_the_block(replace, block_type):
    with torch.device("meta"):
        model = build_model("mobilenetv2_rnnpool", num_classes=10, replace=replace)
        reference = build_model("mobilenetv2_rnnpool", num_classes=10)
    block = model.features[1]
    assert isinstance(block, block_type)
    assert _shapes_after_each_feature(model)[1] == (64, 28, 28)
    rest = count_parameters(model) - count_parameters(block)
    assert rest == count_parameters(reference) - count_parameters(reference.features[1])


def test_block_parameter_counts():
    with torch.device("meta"):
        conv = build_model("mobilenetv2_rnnpool", num_classes=10, replace="strided_conv").features[1]
        renet = build_model("mobilenetv2_rnnpool", num_classes=10, replace="renet").features[1]
        rnnpool = build_model("mobilenetv2_rnnpool", num_classes=10).features[1]
    assert count_parameters(conv) == 32 * 64 * 6 * 6 + 2 * 64  # 4 h2 filters of the patch size + BN
    d, flat = 32, 32 * 4 * 4  # GRU ReNet, 2 h2 units per direction, 4x4 patches
    assert count_parameters(renet) == 6 * (flat * d + d * d + d) + 6 * (2 * d * d + d * d + d)
    assert count_parameters(rnnpool) == rnnpool_num_params(32, 16, 16)


@pytest.mark.parametrize(
    ("opts", "block_shapes"),
    [
        ({"patch_size": 8}, [(64, 28, 28)]),  # (b)
        ({"patch_size": 4}, [(64, 28, 28)]),  # (c)
        ({"hidden": 8}, [(32, 28, 28)]),  # (d)
        ({"hidden": 32}, [(128, 28, 28)]),  # (e)
        ({"patch_size": 12, "stride": 8, "replaced_stages": 4}, [(64, 14, 14)]),  # (f)
        ({"patch_size": (6, 4), "stride": (4, 2), "replaced_stages": 4}, [(64, 28, 28), (64, 14, 14)]),  # (g)
    ],
)
def test_table16_ablations_are_configurations(opts, block_shapes):
    with torch.device("meta"):
        model = build_model("mobilenetv2_rnnpool", num_classes=10, **opts)
    shapes = _shapes_after_each_feature(model)
    assert shapes[1 : 1 + len(block_shapes)] == block_shapes
    assert shapes[-1] == (1280, 7, 7)


@pytest.mark.parametrize("rnn_cell", ["gru", "lstm"])
def test_table18_cells(rnn_cell):
    with torch.device("meta"):
        model = build_model("mobilenetv2_rnnpool", num_classes=10, rnn_cell=rnn_cell)
        assert model(torch.empty(1, 3, 224, 224)).shape == (1, 10)
    assert model.features[1].rnn_model.rnn_cell == rnn_cell


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_output_shape(name):
    with torch.device("meta"):
        model = build_model(name, num_classes=CLASSIFIERS[name]).eval()
        assert model(torch.empty(2, 3, 224, 224)).shape == (2, CLASSIFIERS[name])


@pytest.mark.parametrize("name", [n for n in sorted(CLASSIFIERS) if "rnnpool" in n or "renet" in n])
def test_forward_backward_at_low_resolution(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=CLASSIFIERS[name]).train()
    out = model(torch.randn(2, 3, 32, 32))
    if name.startswith("googlenet"):  # torchvision's GoogLeNetOutputs in training mode (aux heads kept)
        assert out.aux_logits1.shape == out.aux_logits2.shape == (2, 10)
        out = out.logits
    assert out.shape == (2, CLASSIFIERS[name]) and torch.isfinite(out).all()
    out.square().mean().backward()
    block = next(m for m in model.modules() if isinstance(m, (RNNPool2d, ReNet2d)))
    assert all(p.grad is not None for p in block.parameters())


@pytest.mark.parametrize(
    ("name", "slot", "channels"),
    [
        ("efficientnet_b0_rnnpool", ("features", "1"), 64),
        ("resnet18_rnnpool", ("maxpool",), 128),
        ("densenet121_rnnpool", ("features", "pool0"), 192),
        ("googlenet_rnnpool", ("maxpool1",), 128),
    ],
)
def test_table9_settings(name, slot, channels):
    with torch.device("meta"):
        model = build_model(name, num_classes=10)
        block = model.get_submodule(".".join(slot))
        assert isinstance(block, RNNPool2d) and block.out_channels == channels
        assert block(torch.empty(1, block.in_channels, 112, 112)).shape == (1, channels, 28, 28)


def test_densenet121_rnnpool_figure2():
    with torch.device("meta"):
        model = build_model("densenet121_rnnpool", num_classes=10)
        for name in ("denseblock1", "transition1", "denseblock2"):
            assert isinstance(getattr(model.features, name), nn.Identity)
        assert model.features.transition2.conv.in_channels == 192
        assert model.features.transition2.conv.out_channels == 256


def test_last_layer_rnnpool_uses_quarter_channels():
    with torch.device("meta"):
        model = build_model("densenet121", num_classes=10, last_layer_rnnpool=True)
    assert isinstance(model.global_pool, GlobalRNNPool2d)
    assert model.global_pool.rnn_model.h1 == model.global_pool.rnn_model.h2 == 256


def test_bad_options_give_clear_errors():
    with pytest.raises(ValueError, match="replace='pool'"):
        build_model("mobilenetv2_rnnpool", num_classes=10, replace="pool")
    with pytest.raises(ValueError, match="hidden=32"):
        build_model("resnet18_rnnpool", num_classes=10, hidden=16)
    with pytest.raises(ValueError, match="replaced_stages"):
        build_model("mobilenetv2_rnnpool", num_classes=10, replaced_stages=9)
    with pytest.raises(ValueError, match="one entry per block"):
        build_model("mobilenetv2_rnnpool", num_classes=10, patch_size=(6, 4), stride=(4, 2), hidden=(8, 8, 8))
