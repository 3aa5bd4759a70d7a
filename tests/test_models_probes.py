"""Probe models (RNNPool App. C.1/C.2) and the shoot-out backbone: shapes and parameter counts."""

from __future__ import annotations

import pytest
import torch

from repro.layers.rnnpool import rnnpool_num_params
from repro.models.probes import C2_PAPER_OPERATORS, RNNPoolProbe, probe_num_params, single_operator_probe
from repro.models.stage_pool_net import StagePoolNet


@pytest.mark.parametrize("conv", [False, True])
@pytest.mark.parametrize("size, h1, h2", [(32, 4, 16), (64, 8, 32)])
def test_rnnpool_probe_shapes_and_parameters(conv, size, h1, h2):
    model = RNNPoolProbe(1, 9, (h1, h2), conv=conv)
    assert model(torch.randn(2, 1, size, size)).shape == (2, 9)
    counted = sum(p.numel() for p in model.parameters())
    assert counted == probe_num_params(1, 9, h1, h2, conv=conv)
    # by hand: conv 8x1x3x3 (no bias) + BN 16; FastGRNN RNNPool; FC 4 h2 -> 9
    by_hand = (72 + 16 if conv else 0) + rnnpool_num_params(8 if conv else 1, h1, h2) + 4 * h2 * 9 + 9
    assert counted == by_hand
    if conv:
        assert model.conv[0].stride == (2, 2) and model.conv[0].out_channels == 8


def test_c2_operators_pool_32x32_to_one_vector_of_128():
    paper_params = {}
    for operator in (*C2_PAPER_OPERATORS, "nlp", "lip", "gaussian_pool", "softpool"):
        options = {"patch_size": 4, "heads": 2, "win_norm": False} if operator == "nlp" else None
        model = single_operator_probe(operator, pool_options=options)
        block = model[0]
        assert block(torch.randn(2, 3, 32, 32)).shape[1:] == (128, 1, 1)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        paper_params[operator] = sum(p.numel() for p in model.parameters())
    fc = 128 * 10 + 10
    assert paper_params["rnnpool"] == rnnpool_num_params(3, 32, 32) + fc
    assert paper_params["strided_conv"] == 3 * 32 * 32 * 128 + 2 * 128 + fc  # conv (no bias) + BN
    assert paper_params["max"] == paper_params["avg"] == 3 * 128 + 2 * 128 + fc
    assert single_operator_probe("rnnpool")[0].patch_size == 32  # one patch: the whole image
    with pytest.raises(ValueError, match="renet"):
        single_operator_probe("renet")


@pytest.mark.parametrize("pool", ["skip", "maxp", "lip", "rnnpool"])
def test_stage_pool_net_places_the_pool_and_keeps_the_strides(pool):
    model = StagePoolNet(pool, (1, 2, 2), channels=(8, 16, 32, 64), num_classes=10)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    feats = model.stem(torch.randn(1, 3, 16, 16))
    sizes = []
    for stage in model.stages:
        feats = stage(feats)
        sizes.append(feats.shape[-1])
    assert sizes == [16, 8, 4]
    first = model.stages[1][0]
    if pool == "skip":
        assert first[0].stride == (2, 2)  # the conv keeps the stride
    else:
        assert type(first).__name__ != "Conv2dNormActivation"  # the pool comes first, then a stride-1 conv
        assert model.stages[1][1][0].stride == (1, 1)
    with pytest.raises(ValueError, match="one channel count"):
        StagePoolNet(pool, (1, 2), channels=(8, 16, 32, 64))
