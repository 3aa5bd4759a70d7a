"""The classification trainer on the generated ``shapes`` set, on CPU: determinism, exact resume, outputs, failures,
the command line, and a 2-process DDP run (gloo).

Most runs use a tiny CNN in place of the SAP model (the trainer is under test, not the model); the DDP test and the
slow determinism test use SAP models.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import repro.models
from repro.data import prepare
from repro.engine import train as train_module
from repro.engine.checkpoint import load_checkpoint
from repro.engine.errors import NonFiniteLossError, TrainConfigError, TrainingInterruptedError, TrainingOOMError
from repro.engine.evaluate import evaluate_checkpoint
from repro.engine.recipes import get_recipe
from repro.engine.schedule import lr_at
from repro.engine.train import TrainConfig, param_digest, train

REPO_ROOT = Path(__file__).resolve().parents[1]
TIMING_KEYS = ("wall_time_s", "train_time_s", "images_per_s", "provenance", "config")


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    prepare("shapes", root, n_train=64, n_test=24, image_size=32)
    return root


class TinyNet(nn.Module):
    """A few thousand parameters with BatchNorm and Dropout (both use state or randomness the trainer must restore)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(8, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.fixture
def tiny_model(monkeypatch):
    """``TinyNet`` whatever the arch (the trainer and ``evaluate_checkpoint`` call ``repro.models.build_model``)."""
    monkeypatch.setattr(repro.models, "build_model", lambda arch, num_classes=1000, **opts: TinyNet(num_classes))


def make_config(root: Path, out: Path, **overrides) -> TrainConfig:
    values = {
        "arch": "resnet18-skip-1222",
        "recipe": "smoke",
        "data_root": str(root),
        "out_dir": str(out),
        "device": "cpu",
        "epochs": 2,
        "batch_size": 8,
        "max_steps_per_epoch": 3,
        "progress": False,
    }
    values.update(overrides)
    return TrainConfig(**values)


def comparable(metrics: dict) -> dict:
    """The metrics without timings, provenance and the (output-directory-dependent) config."""
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


def dvclive_rows(out: Path, name: str) -> str:
    return (out / "dvclive" / "plots" / "metrics" / f"{name}.tsv").read_text()


# -- determinism ------------------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_metrics_and_another_seed_does_not(shapes_root, tmp_path, tiny_model):
    first = train(make_config(shapes_root, tmp_path / "a", seed=0))
    again = train(make_config(shapes_root, tmp_path / "b", seed=0))
    other = train(make_config(shapes_root, tmp_path / "c", seed=1))
    assert comparable(first) == comparable(again)
    assert first["param_digest"] == again["param_digest"]
    assert other["param_digest"] != first["param_digest"]
    assert other["train_loss_last"] != first["train_loss_last"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18-skip-1222", "resnet18-nlp-1222"])
def test_same_seed_is_deterministic_for_sap_models(shapes_root, tmp_path, arch):
    overrides = {"arch": arch, "epochs": 1, "max_steps_per_epoch": 2}
    first = train(make_config(shapes_root, tmp_path / "a", **overrides))
    again = train(make_config(shapes_root, tmp_path / "b", **overrides))
    assert comparable(first) == comparable(again)


# -- resume -----------------------------------------------------------------------------------------------------------


class _SigtermAt:
    """Wraps a training loader and sends SIGTERM to this process while batch ``step`` of ``epoch`` is handed out."""

    def __init__(self, inner, epoch: int, step: int) -> None:
        self.inner, self.at, self.epoch = inner, (epoch, step), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        for step, batch in enumerate(self.inner):
            if (self.epoch, step) == self.at:
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch


def test_sigterm_mid_epoch_then_resume_matches_an_uninterrupted_run(shapes_root, tmp_path, tiny_model, monkeypatch):
    overrides = {"epochs": 3, "max_steps_per_epoch": 4}
    reference = train(make_config(shapes_root, tmp_path / "ref", **overrides))

    build = train_module.build_loaders

    def interrupted_loaders(**kwargs):
        loaders = build(**kwargs)
        loaders.train = _SigtermAt(loaders.train, epoch=2, step=1)
        return loaders

    monkeypatch.setattr(train_module, "build_loaders", interrupted_loaders)
    out = tmp_path / "run"
    with pytest.raises(TrainingInterruptedError, match="resume") as info:
        train(make_config(shapes_root, out, **overrides))
    assert info.value.exit_code == 128 + signal.SIGTERM
    saved = load_checkpoint(out / "checkpoint.pt")
    assert (saved["epoch"], saved["step"]) == (1, 2)  # the step in progress was finished, then saved
    assert not (out / "metrics.json").exists()

    monkeypatch.setattr(train_module, "build_loaders", build)
    resumed = train(make_config(shapes_root, out, resume=True, **overrides))
    assert comparable(resumed) == comparable(reference)
    for name in ("train_loss", "test_acc", "lr"):
        assert dvclive_rows(out, name) == dvclive_rows(tmp_path / "ref", name)


def test_planned_stop_between_epochs_then_resume_matches(shapes_root, tmp_path, tiny_model):
    reference = train(make_config(shapes_root, tmp_path / "ref", epochs=3))
    out = tmp_path / "run"
    partial = train(make_config(shapes_root, out, epochs=3, stop_after_epochs=1))
    assert partial["complete"] is False and partial["epochs"] == 1
    assert not (out / "metrics.json").exists()
    resumed = train(make_config(shapes_root, out, epochs=3, resume=True))
    assert resumed["complete"] is True
    assert comparable(resumed) == comparable(reference)
    assert json.loads((out / "metrics.json").read_text())["test_acc_last"] == reference["test_acc_last"]


def test_resume_with_other_options_is_refused(shapes_root, tmp_path, tiny_model):
    out = tmp_path / "run"
    train(make_config(shapes_root, out, epochs=2, stop_after_epochs=1))
    with pytest.raises(TrainConfigError, match=r"seed: 0 -> 5"):
        train(make_config(shapes_root, out, epochs=2, seed=5, resume=True))
    with pytest.raises(TrainConfigError, match="already holds a run"):  # a new run never overwrites an old one
        train(make_config(shapes_root, out, epochs=2))
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1


# -- outputs ----------------------------------------------------------------------------------------------------------


def test_outputs_metrics_dvclive_and_checkpoints(shapes_root, tmp_path, tiny_model):
    out = tmp_path / "run"
    metrics = train(make_config(shapes_root, out))
    written = json.loads((out / "metrics.json").read_text())
    assert written["test_acc_last"] == metrics["test_acc_last"]
    for key in ("test_acc_best", "best_epoch", "epochs", "wall_time_s", "images_per_s", "placement", "compat"):
        assert key in written
    assert written["epochs"] == 2 and written["recipe"] == "smoke" and written["dataset"] == "shapes"
    assert written["compat"]["epochs_compat_299"] is False
    assert written["config"]["arch"] == "resnet18-skip-1222"
    assert written["placement"] == "stage_end"
    assert "torch" in written["provenance"]["versions"]
    assert 0.0 <= written["test_acc_last"] <= written["test_acc_best"] <= 1.0
    assert dvclive_rows(out, "test_acc").splitlines()[0] == "step\ttest_acc"
    assert len(dvclive_rows(out, "train_loss").splitlines()) == 3  # header + 2 epochs
    assert json.loads((out / "dvclive" / "metrics.json").read_text())["step"] == 2

    saved = load_checkpoint(out / "checkpoint.pt")
    assert saved["epoch"] == 2 and len(saved["history"]) == 2
    assert evaluate_checkpoint(out / "checkpoint.pt", device="cpu")["top1"] == metrics["test_acc_last"]
    best = evaluate_checkpoint(out / "best.pt", device="cpu")
    assert (best["top1"], best["epoch"]) == (metrics["test_acc_best"], metrics["best_epoch"])


def test_validation_split_selects_an_epoch(shapes_root, tmp_path, tiny_model):
    metrics = train(make_config(shapes_root, tmp_path / "run", val_split=0.25, epochs=3))
    history = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["history"]
    chosen = history[metrics["val_epoch"] - 1]
    assert chosen["val_acc"] == max(row["val_acc"] for row in history) == metrics["val_acc_best"]
    assert metrics["test_acc_at_val"] == chosen["test_acc"]


def test_epochs_compat_299_skips_the_last_epoch_of_the_schedule(shapes_root, tmp_path, tiny_model):
    metrics = train(make_config(shapes_root, tmp_path / "run", epochs=3, epochs_compat_299=True))
    assert (metrics["epochs"], metrics["epochs_planned"]) == (2, 2)
    history = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["history"]
    recipe = get_recipe("smoke").replace(epochs=3, batch_size=8, max_steps_per_epoch=3)
    assert history[1]["lr"] == lr_at(recipe, 2, 0, 3)  # the 3-epoch schedule, not a 2-epoch one


# -- failures ---------------------------------------------------------------------------------------------------------


class _FailingNet(TinyNet):
    """TinyNet whose training forward fails from call ``after`` on: NaN logits or an out-of-memory error."""

    def __init__(self, num_classes: int, after: int, failure: str) -> None:
        super().__init__(num_classes)
        self.calls, self.after, self.failure = 0, after, failure

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                if self.failure == "oom":
                    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
                return super().forward(x) * float("nan")
        return super().forward(x)


def use_failing_net(monkeypatch, *, after: int, failure: str) -> None:
    monkeypatch.setattr(
        repro.models, "build_model", lambda arch, num_classes=1000, **o: _FailingNet(num_classes, after, failure)
    )


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(shapes_root, tmp_path, monkeypatch):
    monkeypatch.setattr(
        repro.models, "build_model", lambda arch, num_classes=1000, **o: _FailingNet(num_classes, 4, "nan")
    )
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 2, step 2 .*last good checkpoint"):
        train(make_config(shapes_root, out, epochs=3))
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    assert not (out / "metrics.json").exists()


def test_out_of_memory_suggests_half_the_batch_size(shapes_root, tmp_path, monkeypatch):
    monkeypatch.setattr(
        repro.models, "build_model", lambda arch, num_classes=1000, **o: _FailingNet(num_classes, 0, "oom")
    )
    with pytest.raises(TrainingOOMError, match=r"batch size 8 .*--batch-size 4"):
        train(make_config(shapes_root, tmp_path / "run"))


# -- command line -----------------------------------------------------------------------------------------------------


def test_cli_train_then_evaluate(shapes_root, tmp_path, tiny_model):
    from repro.cli import app

    out = tmp_path / "run"
    args = ["train", "--arch", "resnet18-skip-1222", "--recipe", "smoke", "--seed", "3", "--out", str(out)]
    args += ["--epochs", "1", "--batch-size", "8", "--max-steps-per-epoch", "2", "--device", "cpu"]
    args += ["--data-root", str(shapes_root)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["seed"] == 3 and metrics["epochs"] == 1

    result = CliRunner().invoke(app, ["evaluate", str(out / "checkpoint.pt"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"top1 {metrics['test_acc_last']:.4f}" in result.output


def test_cli_reports_errors_in_one_line(shapes_root, tmp_path, monkeypatch):
    from repro.cli import app

    common = ["--out", str(tmp_path / "run"), "--data-root", str(shapes_root), "--device", "cpu", "--epochs", "2"]
    result = CliRunner().invoke(app, ["train", "--arch", "resnet18-bogus-1222", *common])
    assert result.exit_code == 2 and result.stderr.startswith("error: ")

    monkeypatch.setattr(
        repro.models, "build_model", lambda arch, num_classes=1000, **o: _FailingNet(num_classes, 1, "nan")
    )
    result = CliRunner().invoke(
        app, ["train", "--arch", "x", *common, "--batch-size", "8", "--max-steps-per-epoch", "2"]
    )
    assert result.exit_code == 3
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: loss is nan")


# -- DistributedDataParallel ------------------------------------------------------------------------------------------


def test_two_process_ddp_on_cpu(shapes_root, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "repro.cli", "train", "--arch", "resnet18-skip-1222", "--recipe", "smoke", "--device", "cpu"]
    cmd += ["--data-root", str(shapes_root), "--out", str(out), "--epochs", "1", "--batch-size", "8"]
    cmd += ["--max-steps-per-epoch", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REPRO_NO_PROGRESS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "checkpoint.pt", "dvclive", "metrics.json"]
    metrics = json.loads((out / "metrics.json").read_text())
    dist = metrics["distributed"]
    assert dist["world_size"] == 2 and dist["backend"] == "gloo"
    assert len(dist["param_digests"]) == 2 and dist["params_identical"] is True
    # the saved model is the one every rank holds
    model = repro.models.build_model("resnet18-skip-1222", num_classes=10)
    model.load_state_dict(load_checkpoint(out / "checkpoint.pt")["model"])
    assert param_digest(model) == dist["param_digests"][0]
    assert metrics["train_images"] == 1 * 2 * 8  # epochs x steps x global batch


_INTERRUPTING_LAUNCHER = """
import os, signal, sys
from repro.engine import train as train_module

class SigtermAt:
    def __init__(self, inner):
        self.inner, self.epoch = inner, 0
    def set_epoch(self, epoch):
        self.epoch = epoch
        self.inner.set_epoch(epoch)
    def __len__(self):
        return len(self.inner)
    def __iter__(self):
        for step, batch in enumerate(self.inner):
            if (self.epoch, step) == (2, 1):
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch

build = train_module.build_loaders

def interrupted_loaders(**kwargs):
    loaders = build(**kwargs)
    if os.environ["RANK"] == "1":  # only one process receives the signal: both must stop at the same step
        loaders.train = SigtermAt(loaders.train)
    return loaders

train_module.build_loaders = interrupted_loaders
from repro.cli import app

app(["train", *sys.argv[1:]])
"""


@pytest.mark.slow
def test_two_process_ddp_sigterm_on_one_rank_then_resume_matches(shapes_root, tmp_path):
    launcher = tmp_path / "interrupting_launcher.py"
    launcher.write_text(_INTERRUPTING_LAUNCHER)
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args = ["--arch", "resnet18-skip-1222", "--recipe", "smoke", "--device", "cpu", "--data-root", str(shapes_root)]
    args += ["--epochs", "3", "--batch-size", "8", "--max-steps-per-epoch", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REPRO_NO_PROGRESS": "1"}

    def launch(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*run, *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    ref = launch("-m", "repro.cli", "train", *args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "run"
    interrupted = launch(str(launcher), *args, "--out", str(out))
    assert interrupted.returncode != 0 and "Run again with --resume" in interrupted.stderr
    saved = load_checkpoint(out / "checkpoint.pt")
    assert (saved["epoch"], saved["step"], len(saved["rng"]), len(saved["partial"])) == (1, 2, 2, 2)
    resumed = launch("-m", "repro.cli", "train", *args, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    assert comparable(json.loads((out / "metrics.json").read_text())) == comparable(expected)


def test_sharded_evaluation_counts_every_image_once():
    from repro.engine.distributed import DistContext
    from repro.engine.evaluate import count_correct
    from repro.engine.loaders import shard_size

    class Oracle(nn.Module):  # right on even labels, wrong on odd ones
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            labels = x[:, 0, 0, 0].long()
            return nn.functional.one_hot(torch.where(labels % 2 == 0, labels, labels + 1) % 4, 4).float()

    labels = torch.arange(25) % 4  # 25 images over 2 processes: rank 1's shard is padded with image 0
    shards = [list(range(0, 25, 2)), [*range(1, 25, 2), 0]]
    assert [shard_size(25, DistContext(rank=r, world_size=2)) for r in (0, 1)] == [13, 12]
    correct = seen = 0
    for rank, shard in enumerate(shards):
        batches = [
            (labels[shard[i : i + 4]].float().view(-1, 1, 1, 1), labels[shard[i : i + 4]]) for i in (0, 4, 8, 12)
        ]
        c, n = count_correct(Oracle(), batches, device="cpu", max_samples=shard_size(25, DistContext(rank, 2)))
        correct, seen = correct + c, seen + n
    assert seen == 25
    assert correct == int((labels % 2 == 0).sum())


def test_classification_loss_adds_auxiliary_heads_of_googlenet():
    import torch.nn.functional as F
    from torchvision.models import GoogLeNetOutputs

    from repro.engine.train import AUX_LOSS_WEIGHT, classification_loss

    labels = torch.tensor([0, 2])
    main, aux2, aux1 = (torch.randn(2, 3) for _ in range(3))
    logits, loss = classification_loss(GoogLeNetOutputs(main, aux2, aux1), labels)
    expected = F.cross_entropy(main, labels) + AUX_LOSS_WEIGHT * (
        F.cross_entropy(aux2, labels) + F.cross_entropy(aux1, labels)
    )
    assert logits is main
    assert torch.allclose(loss, expected)
    plain_logits, plain_loss = classification_loss(main, labels)
    assert plain_logits is main and torch.allclose(plain_loss, F.cross_entropy(main, labels))


def test_googlenet_with_auxiliary_heads_trains_one_step():
    from repro.engine.train import classification_loss
    from repro.models import build_model

    model = build_model("googlenet", num_classes=4).train()
    logits, loss = classification_loss(model(torch.randn(2, 3, 64, 64)), torch.tensor([1, 3]))
    loss.backward()
    assert logits.shape == (2, 4) and torch.isfinite(loss)
