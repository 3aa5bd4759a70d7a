"""The face-detection trainer on a tiny generated WIDER-layout set, on CPU: outputs and their agreement with the
official protocol, exact kill-and-resume (also with int8 fake quantisation), refused resumes, the Condensation-Net
pair's TPR, recipes, the S3FD augmentation, the pipeline mapping, the command line and (slow) the learning check."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import repro.data.face_loader as face_loader_module
from repro.cli import app
from repro.data import get_dataset, prepare
from repro.data.face_transforms import FaceTransform
from repro.engine.errors import TrainConfigError, TrainingInterruptedError
from repro.engine.face_recipes import face_recipe_name, get_face_recipe, list_face_recipes
from repro.engine.schedule import scheduled_lr
from repro.engine.train_faces import FaceTrainConfig, face_config_for, parse_face_size, train_faces
from repro.metrics.face_roc import face_roc_from_wider
from repro.metrics.widerface_eval import (
    FaceGroundTruth,
    evaluate_faces,
    evaluate_widerface,
    load_widerface_ground_truth,
    normalise_scores,
    read_predictions,
)
from repro.records.runs import RunRecord

VOLATILE = ("wall_time_s", "train_time_s", "images_per_s", "provenance", "config", "epoch_time_s")


@pytest.fixture(scope="module")
def face_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    prepare("synth_faces", root, n_train=12, n_val=6)
    return root


def make_config(root: Path, out: Path, **overrides) -> FaceTrainConfig:
    values = {
        "arch": "rnnpool_face_a",
        "data_root": str(root),
        "out_dir": str(out),
        "device": "cpu",
        "epochs": 2,
        "max_steps_per_epoch": 3,
        "eval_max_images": 6,
        "progress": False,
    }
    values.update(overrides)
    return FaceTrainConfig(**values)


@pytest.fixture(scope="module")
def reference(face_root, tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted run of :func:`make_config` (2 epochs x 3 steps of RNNPool-Face-A at 160x120)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    return out, train_faces(make_config(face_root, out))


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in VOLATILE}


def history(out: Path) -> list[dict]:
    rows = torch.load(out / "checkpoint.pt", weights_only=True)["history"]
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]


def predictions_text(out: Path) -> dict[str, str]:
    folder = out / "wider_predictions"
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*.txt"))}


# -- outputs -------------------------------------------------------------------------------------------------------


def test_run_writes_every_output_and_its_aps_are_the_official_protocols(face_root, reference):
    out, metrics = reference
    for name in ("checkpoint.pt", "metrics.json", "predictions.png", "wider_predictions/test_time.json"):
        assert (out / name).is_file(), name
    record = RunRecord.read(out / "metrics.json")
    assert record.task == "face_detection" and record.complete and record.recipe == "rnnpool_face-smoke"
    assert record.arch == "rnnpool_face_a" and record.dataset == "synth_faces" and record.image_size == [120, 160]
    assert {"easy", "medium", "hard", "tpr_at_fpr"} <= set(record.detection)
    assert set(record.detection) - {"easy", "medium", "hard", "tpr_at_fpr"} <= {"easy_le3", "medium_le3", "hard_le3"}
    assert all(0.0 <= v <= 1.0 for v in record.detection.values())
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["precise_bn"] == {"enabled": True, "batches": 2}
    assert saved["test_time"]["name"] == "vga" and saved["test_time"]["area"] == 160 * 120
    assert saved["detector"]["kind"] == "s3fd" and saved["quantization"] is None and saved["evaluated_images"] == 6
    assert set(saved["losses"]) == {"loss_loc", "loss_conf", "train_loss"}
    # the prediction folder is the official layout: the evaluator reads it back to the same APs and TPR
    pred = out / "wider_predictions"
    assert len(list(pred.rglob("*.txt"))) == 6
    gt_dir = face_root / "synth_faces" / "eval_tools" / "ground_truth"
    assert evaluate_widerface(pred, gt_dir).aps() == {k: metrics[k] for k in ("easy", "medium", "hard")}
    ground_truth = load_widerface_ground_truth(gt_dir)
    roc = face_roc_from_wider(read_predictions(pred, ground_truth.keys)[0], ground_truth)
    assert roc.tpr_at(0.1) == metrics["tpr_at_fpr"]
    # Table 4's "<=3 faces" columns: the images with at most 3 annotated faces, scores normalised over the whole set
    few = [i for i, boxes in enumerate(ground_truth.boxes) if len(boxes) <= 3]
    assert few and "hard_le3" in metrics  # the generated val set has such images
    normalised = normalise_scores(read_predictions(pred, ground_truth.keys)[0])
    hard_few = FaceGroundTruth(
        tuple(ground_truth.keys[i] for i in few),
        tuple(ground_truth.boxes[i] for i in few),
        {"hard": tuple(ground_truth.counted["hard"][i] for i in few)},
    )
    expected = evaluate_faces([normalised[i] for i in few], hard_few, normalise=False)["hard"].ap
    assert metrics["hard_le3"] == expected
    plots = out / "dvclive" / "plots"
    for name in ("train_loss", "loss_loc", "loss_conf", "lr", "hard", "tpr_at_fpr"):
        assert (plots / "metrics" / f"{name}.tsv").read_text().count("\n") == 3, name  # header + 2 epochs
    for name in ("pr_easy", "pr_medium", "pr_hard", "roc"):
        assert json.loads((plots / "custom" / f"{name}.json").read_text()), name
    assert (out / "predictions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- resume --------------------------------------------------------------------------------------------------------


class _SigtermAt:
    """Wraps the training loader and sends SIGTERM to this process while batch ``step`` of ``epoch`` is handed out."""

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


def test_kill_mid_epoch_then_resume_ends_with_the_uninterrupted_metrics(face_root, reference, tmp_path, monkeypatch):
    ref_dir, expected = reference
    build = face_loader_module.build_face_loader
    calls = []

    def interrupted(dataset, split, **kwargs):
        loader = build(dataset, split, **kwargs)
        calls.append(split)
        return _SigtermAt(loader, epoch=2, step=1) if len(calls) == 1 else loader  # the training loader only

    monkeypatch.setattr(face_loader_module, "build_face_loader", interrupted)
    out = tmp_path / "resumed"
    with pytest.raises(TrainingInterruptedError, match="interrupted at epoch 2, step 2/3"):
        train_faces(make_config(face_root, out))
    monkeypatch.setattr(face_loader_module, "build_face_loader", build)
    resumed = train_faces(make_config(face_root, out, resume=True))
    assert comparable(resumed) == comparable(expected)
    assert resumed["param_digest"] == expected["param_digest"]
    assert history(out) == history(ref_dir)
    assert predictions_text(out) == predictions_text(ref_dir)


def test_int8_fake_quantised_run_resumes_exactly(face_root, tmp_path):
    small = {"quantization": "int8", "max_steps_per_epoch": 2, "eval_max_images": 2, "visualize_images": 0}
    whole = train_faces(make_config(face_root, tmp_path / "whole", **small))
    assert whole["quantization"]["scheme"] == "int8" and whole["quantization"]["quantized_weights"] > 0
    first = train_faces(make_config(face_root, tmp_path / "split", stop_after_epochs=1, **small))
    assert not first["complete"]
    resumed = train_faces(make_config(face_root, tmp_path / "split", resume=True, **small))
    assert comparable(resumed) == comparable(whole)
    weights = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)["model"]
    assert any("weight_fake_quant" in k for k in weights)


def test_resume_with_other_options_is_refused(face_root, tmp_path):
    train_faces(make_config(face_root, tmp_path, epochs=1, max_steps_per_epoch=1, eval_max_images=1))
    with pytest.raises(TrainConfigError, match=r"lr: None -> 0\.5"):
        train_faces(make_config(face_root, tmp_path, epochs=1, max_steps_per_epoch=1, eval_max_images=1, lr=0.5,
                                resume=True))  # fmt: skip
    with pytest.raises(TrainConfigError, match=r"different recipe \(eval_max_images: 1 -> 2\)"):
        train_faces(make_config(face_root, tmp_path, epochs=1, max_steps_per_epoch=1, eval_max_images=2, resume=True))
    with pytest.raises(TrainConfigError, match="already holds a run"):
        train_faces(make_config(face_root, tmp_path, epochs=1, max_steps_per_epoch=1, eval_max_images=1))


def test_wrong_recipe_or_model_is_refused(face_root, tmp_path):
    with pytest.raises(TrainConfigError, match="is for yolov2 face detectors, not rnnpool_face_a"):
        train_faces(make_config(face_root, tmp_path, recipe="tiny_yolov2_face-smoke"))
    with pytest.raises(TrainConfigError, match="'resnet18-skip-1222' is not a face detector"):
        train_faces(make_config(face_root, tmp_path, arch="resnet18-skip-1222"))


# -- Condensation-Net ------------------------------------------------------------------------------------------------


def _condensation_run(face_root: Path, out: Path, arch: str, quantization: str = "none") -> dict:
    config = make_config(face_root, out, arch=arch, epochs=None, max_steps_per_epoch=None, eval_max_images=None,
                         quantization=quantization, checkpoints=False)  # fmt: skip
    return train_faces(config)


def _check_tpr(out: Path, metrics: dict) -> None:
    assert metrics["recipe"] == "tiny_yolov2_face-smoke" and metrics["detector"]["kind"] == "yolov2"
    assert 0.0 <= metrics["tpr_at_fpr"] <= 1.0 and metrics["detection"]["tpr_at_fpr"] == metrics["tpr_at_fpr"]
    gt = load_widerface_ground_truth(Path(metrics["config"]["data_root"]) / "synth_faces/eval_tools/ground_truth")
    evaluated = [k for k in gt.keys if (out / "wider_predictions" / f"{k}.txt").is_file()]
    assert len(evaluated) == metrics["evaluated_images"] == 2
    from repro.metrics.widerface_eval import subset_ground_truth

    subset = subset_ground_truth(gt, evaluated)
    predictions = read_predictions(out / "wider_predictions", subset.keys)[0]
    assert face_roc_from_wider(predictions, subset).tpr_at(0.1) == metrics["tpr_at_fpr"]
    assert not (out / "checkpoint.pt").exists()


@pytest.mark.parametrize(
    ("arch", "cross_channel"), [("tiny_yolov2_face", None), ("condensation_tiny_yolov2_face", "max")]
)
def test_condensation_pair_trains_and_reports_tpr_at_fpr(face_root, tmp_path, arch, cross_channel):
    metrics = _condensation_run(face_root, tmp_path, arch)
    _check_tpr(tmp_path, metrics)
    assert metrics["detector"]["cross_channel"] == cross_channel and metrics["quantization"] is None


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["tiny_yolov2_face", "condensation_tiny_yolov2_face"])
def test_condensation_pair_int8(face_root, tmp_path, arch):
    metrics = _condensation_run(face_root, tmp_path, arch, quantization="int8")
    _check_tpr(tmp_path, metrics)
    assert metrics["quantization"]["scheme"] == "int8" and metrics["quantization"]["quantized_weights"] == 9


# -- recipes, transforms, pipeline mapping ---------------------------------------------------------------------------


def test_app_g_recipe_and_edgeml_schedule():
    recipe = get_face_recipe("rnnpool_face-paper")
    assert (recipe.optimizer, recipe.lr, recipe.momentum, recipe.weight_decay) == ("sgd", 0.01, 0.9, 4e-5)
    assert (recipe.epochs, recipe.batch_size, recipe.image_size, recipe.augment) == (300, 32, (640, 640), "s3fd")
    assert (recipe.test_time, recipe.dataset, recipe.precise_bn) == ("edgeml", "widerface", False)

    def edgeml(epoch0: int, it: int, n: int) -> float:  # EdgeML train.py adjust_learning_rate (epochs from 0)
        warm, current, total = 5 * n, it + epoch0 * n, 300 * n
        if epoch0 < 5:
            return 0.01 * current / warm
        return 0.01 * (1 + math.cos(math.pi * (current - warm) / (total - warm))) / 2

    for epoch0, it in ((0, 0), (0, 7), (4, 99), (5, 0), (150, 50), (299, 99)):
        assert scheduled_lr(recipe, epoch0 + 1, it, 100) == pytest.approx(edgeml(epoch0, it, 100), abs=1e-12)
    m4 = get_face_recipe("rnnpool_face_m4-paper")
    assert (m4.batch_size, m4.image_size, m4.min_face, m4.test_time) == (128, (320, 320), 1.0, "qvga")
    assert m4.decode_options == {"conf_thresh": 0.05}
    for name in list_face_recipes():
        recipe = get_face_recipe(name)
        if name.endswith("-smoke"):
            assert max(recipe.image_size) <= 160 and recipe.max_steps_per_epoch <= 2 and recipe.precise_bn, name
            assert recipe.dataset == "synth_faces" and recipe.eval_max_images <= 4, name


def test_recipe_names_per_model_and_profile():
    assert face_recipe_name("rnnpool_face_c", "s3fd", "full") == "rnnpool_face-paper"
    assert face_recipe_name("rnnpool_face_m4", "s3fd", "full") == "rnnpool_face_m4-paper"
    assert face_recipe_name("condensation_tiny_yolov2_face", "yolov2", "full") == "tiny_yolov2_face-darknet"
    assert face_recipe_name("tiny_yolov2_face", "yolov2", "smoke") == "tiny_yolov2_face-smoke"
    assert face_recipe_name("rnnpool_face_a", "s3fd", "learn") == "rnnpool_face-learn"


def test_face_config_for_maps_pipeline_entries(tmp_path):
    smoke = face_config_for("rnnpool_face_c", "widerface", [480, 640], 2, "smoke", out_dir=str(tmp_path))
    assert (smoke.recipe, smoke.dataset, smoke.checkpoints, smoke.resume) == ("rnnpool_face-smoke", None, False, False)
    full = face_config_for("condensation_tiny_yolov2_face", "widerface", 416, 1, "full", out_dir=str(tmp_path),
                           data_root="/data", epochs=10)  # fmt: skip
    assert (full.recipe, full.dataset, full.epochs, full.resume) == ("tiny_yolov2_face-darknet", "widerface", 10, True)
    m4 = face_config_for("rnnpool_face_m4", "scut_head", [240, 320], 2, "full", out_dir=str(tmp_path),
                         recipe="rnnpool_face_m4-scut")  # fmt: skip
    assert (m4.recipe, m4.dataset) == ("rnnpool_face_m4-scut", "scut_head")
    # an int8 entry: its recipe's quantisation is kept in the smoke profile
    for profile in ("smoke", "full"):
        int8 = face_config_for("tiny_yolov2_face", "widerface", 416, 1, profile, out_dir=str(tmp_path),
                               recipe="tiny_yolov2_face-darknet-int8")  # fmt: skip
        assert int8.resolved_recipe("yolov2").quantization == "int8"
    assert smoke.resolved_recipe("s3fd").quantization == "none"


def test_s3fd_augmentation_keeps_faces_on_the_image(face_root):
    dataset = get_dataset("synth_faces", face_root, "train", label_offset=1)
    transform = FaceTransform("s3fd", (320, 320), crop_side=640)
    torch.manual_seed(0)
    kept = 0
    for index in range(len(dataset)):
        image, target = transform(*dataset[index])
        assert image.shape == (3, 320, 320) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 255
        boxes = target["boxes"]
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        assert ((centres >= 0) & (centres <= 320)).all()  # a kept face has its centre in the crop
        assert (target["labels"] == 1).all() and target["file"].endswith(".jpg")
        kept += len(boxes)
    assert kept > 0
    plain, same = FaceTransform("none", (120, 160))(*dataset[0])
    assert torch.equal(same["boxes"], dataset[0][1]["boxes"]) and plain.shape == (3, 120, 160)


def test_image_size_parsing():
    assert parse_face_size("640") == (640, 640) and parse_face_size("120x160") == (120, 160)
    with pytest.raises(TrainConfigError, match="HxW"):
        parse_face_size("vga")


# -- command line --------------------------------------------------------------------------------------------------


def test_cli_train_faces_and_its_errors(face_root, tmp_path):
    runner = CliRunner()
    common = ["--data-root", str(face_root), "--device", "cpu", "--epochs", "1", "--max-steps-per-epoch", "1"]
    common += ["--eval-max-images", "2", "--no-checkpoints"]
    ok = runner.invoke(app, ["train-faces", "--arch", "rnnpool_face_m4", *common, "--out", str(tmp_path / "a")])
    assert ok.exit_code == 0, ok.output
    assert "done: rnnpool_face_m4 on synth_faces, 1 epochs: easy" in ok.output
    bad = runner.invoke(app, ["train-faces", "--arch", "resnet18", *common, "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "is not a face detector" in bad.output
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["train-faces", "--arch", "rnnpool_face_a", *common, "--out", str(tmp_path / "c"), "--data-root", str(empty)]
    missing = runner.invoke(app, args)
    assert missing.exit_code == 1 and "synth_faces" in missing.output


# -- learning --------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.learning
def test_rnnpool_face_a_learns_the_synthetic_faces(tmp_path):
    """RNNPool-Face-A, ``rnnpool_face-learn`` (300 Adam steps of 8 images at 160x120, BN re-estimated): WIDER AP
    "hard" (every face counts) >= 0.2 and >= 10x the untrained model's, on the 50 val images of synth_faces.
    Measured (docs/face_detection.md, section 0): hard 0.0026 untrained -> 0.48 in about 2 min on one thread."""
    torch.set_num_threads(1)
    root = tmp_path / "data"
    prepare("synth_faces", root)
    common = {"arch": "rnnpool_face_a", "recipe": "rnnpool_face-learn", "data_root": str(root), "device": "cpu"}
    common.update(progress=False, checkpoints=False)
    untrained = train_faces(FaceTrainConfig(out_dir=str(tmp_path / "untrained"), epochs=1, max_steps_per_epoch=1,
                                            lr=1e-9, **common))  # fmt: skip
    trained = train_faces(FaceTrainConfig(out_dir=str(tmp_path / "trained"), **common))
    assert trained["steps_per_epoch"] * trained["epochs"] == 300
    assert trained["hard"] >= 0.2 and trained["hard"] >= 10 * untrained["hard"], (untrained["hard"], trained["hard"])
    assert np.mean([trained[k] for k in ("easy", "medium", "hard")]) >= 0.3
