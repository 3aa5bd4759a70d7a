"""The official-checkpoint converter: prefix handling and clear mismatch errors."""

import pytest
import torch
from torch import nn

from repro.compat import CheckpointMismatchError, load_official_state_dict, strip_wrapper_prefixes


def test_strip_wrapper_prefixes_handles_dataparallel_and_network():
    sd = {"module.net.conv.weight": torch.zeros(1), "net.fc.bias": torch.zeros(1), "bn.weight": torch.zeros(1)}
    assert sorted(strip_wrapper_prefixes(sd)) == ["bn.weight", "conv.weight", "fc.bias"]


def test_load_official_state_dict_roundtrip_and_training_checkpoint():
    src = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    dst = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    checkpoint = {"state_dict": {f"module.net.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}
    load_official_state_dict(dst, checkpoint)
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k])


def test_mismatch_lists_keys_and_shapes():
    dst = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(CheckpointMismatchError, match=r"shape conflicts: 0.weight"):
        load_official_state_dict(dst, {"0.weight": torch.zeros(5, 3, 3, 3), "0.bias": torch.zeros(4)})
    with pytest.raises(CheckpointMismatchError, match=r"missing keys: 0.bias.*unexpected keys: 1.weight"):
        load_official_state_dict(dst, {"0.weight": torch.zeros(4, 3, 3, 3), "1.weight": torch.zeros(1)})


def test_map_official_keys_hook_is_used():
    class Renamed(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(2, 2)

        def _map_official_keys(self, sd):
            return {k.replace("old.", "body."): v for k, v in sd.items()}

    m = Renamed()
    load_official_state_dict(m, {"net.old.weight": torch.ones(2, 2), "net.old.bias": torch.zeros(2)})
    assert torch.equal(m.body.weight, torch.ones(2, 2))
