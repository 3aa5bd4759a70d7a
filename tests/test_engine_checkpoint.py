"""Checkpoints: atomic writes, weights_only loads, RNG round trips; configuration and command-line plumbing."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from repro.engine import checkpoint as ckpt
from repro.engine.checkpoint import CheckpointError, capture_rng_state, load_checkpoint, restore_rng_state
from repro.engine.errors import TrainConfigError
from repro.engine.train import TrainConfig, config_to_argv


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    _draws()
    path = ckpt.save_checkpoint(tmp_path / "c.pt", {"model": {}, "rng": capture_rng_state()})
    expected = _draws()
    _draws()  # move every generator on
    restore_rng_state(load_checkpoint(path)["rng"])
    assert _draws() == expected


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    path = tmp_path / "run" / "checkpoint.pt"
    ckpt.save_checkpoint(path, {"model": {"w": torch.ones(3)}, "epoch": 1})

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "epoch": 2})
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]


def test_load_refuses_arbitrary_pickles(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": random.Random(0)}, path)  # a class outside the weights_only allow-list
    with pytest.raises(CheckpointError, match=r"refused checkpoint .*evil\.pt.*the global 'random\.Random'"):
        load_checkpoint(path)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"corrupt\.pt"):
        load_checkpoint(tmp_path / "corrupt.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a repro checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_config_round_trips_through_the_command_line(monkeypatch):
    """``repro train`` turns the arguments of a relaunch (torchrun) back into the same configuration."""
    from typer.testing import CliRunner

    import repro.engine.train as train_module
    from repro.cli import app

    seen = []
    monkeypatch.setattr(train_module, "launch", lambda config, nproc: seen.append((config, nproc)) or 0)
    config = TrainConfig(
        arch="resnet18-nlp-1222",
        recipe="sap-stl10",
        image_size=64,
        seed=3,
        out_dir="runs/x",
        resume=True,
        lr=0.02,
        amp=False,
        epochs_compat_299=True,
        val_split=0.1,
        model_opts={"rnn_cell": "gru"},
    )
    result = CliRunner().invoke(app, ["train", *config_to_argv(config), "--nproc-per-node", "2"])
    assert result.exit_code == 0, result.output
    assert seen == [(config, 2)]
    bad = CliRunner().invoke(app, ["train", "--arch", "a", "--model-opts", "{oops"])
    assert bad.exit_code == 2 and "--model-opts" in bad.output


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"arch": ""}, "arch is required"),
        ({"arch": "a", "backend": "dali"}, "backend"),
        ({"arch": "a", "val_split": 1.0}, "val_split"),
        ({"arch": "a", "epochs": 0}, "epochs"),
        ({"arch": "a", "lr": -1.0}, "lr"),
    ],
)
def test_invalid_configs_name_the_field(kwargs, match):
    with pytest.raises(TrainConfigError, match=match):
        TrainConfig(**kwargs)


def test_unknown_recipe_is_a_config_error():
    with pytest.raises(TrainConfigError, match="unknown recipe"):
        TrainConfig(arch="a", recipe="nope").resolved_recipe()
