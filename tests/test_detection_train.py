"""The detection engine on a tiny generated COCO-format set, on CPU: outputs, exact kill-and-resume, refused resume,
NaN stop, schedules of the paper recipes, BatchNorm re-estimation, the loaders and the command line."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

import repro.data.detection_loader as loader_module
import repro.detection
from repro.cli import app
from repro.data import prepare
from repro.data.coco import CocoDetection
from repro.data.detection_loader import DetectionLoader
from repro.data.detection_transforms import DetectionTransform
from repro.engine.checkpoint import capture_rng_state
from repro.engine.detection_recipes import get_detection_recipe, list_detection_recipes
from repro.engine.errors import NonFiniteLossError, TrainConfigError, TrainingInterruptedError
from repro.engine.precise_bn import recompute_bn_stats
from repro.engine.schedule import scheduled_lr
from repro.engine.train_detection import DetectionTrainConfig, parse_image_size, train_detection

VOLATILE = ("wall_time_s", "train_time_s", "images_per_s", "provenance", "config", "epoch_time_s")


@pytest.fixture(scope="module")
def det_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    prepare("shapes_det", root, n_train=12, n_val=6, image_size=64, max_objects=3, min_scale=0.2, max_scale=0.6)
    return root


@pytest.fixture(scope="module")
def reference(det_root, tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted run of :func:`make_config` (2 epochs x 3 steps of SSD at 64 px): its directory and metrics."""
    out = tmp_path_factory.mktemp("reference") / "run"
    return out, train_detection(make_config(det_root, out))


def make_config(root: Path, out: Path, **overrides) -> DetectionTrainConfig:
    values = {
        "arch": "mobilenet-skip-1222121",
        "detector": "ssd",
        "data_root": str(root),
        "out_dir": str(out),
        "device": "cpu",
        "image_size": 64,
        "epochs": 2,
        "batch_size": 2,
        "max_steps_per_epoch": 3,
        "eval_max_images": 4,
        "progress": False,
    }
    values.update(overrides)
    return DetectionTrainConfig(**values)


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in VOLATILE}


def history(out: Path) -> list[dict]:
    rows = torch.load(out / "checkpoint.pt", weights_only=True)["history"]
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]


# -- outputs -------------------------------------------------------------------------------------------------------


def test_smoke_run_writes_every_output(det_root, reference):
    out, metrics = reference
    for name in ("checkpoint.pt", "metrics.json", "detections.json", "predictions.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["complete"] and saved["detector"] == "ssd" and saved["recipe"] == "ssd-smoke"
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert saved[key] is None or 0.0 <= saved[key] <= 1.0, key
    assert set(saved["per_class"]) == {"circle", "square", "triangle", "diamond", "cross"}
    assert saved["compat"] == {"compat_b26": False, "compat_b27": False}
    assert saved["precise_bn"] == {"enabled": True, "batches": 2}
    assert saved["config"]["arch"] == "mobilenet-skip-1222121" and "git_revision" in saved["provenance"]
    assert saved["evaluated_images"] == 4 and set(saved["losses"]) == {
        "bbox_regression",
        "classification",
        "train_loss",
    }
    assert metrics["param_digest"] == saved["param_digest"]
    plots = out / "dvclive" / "plots"
    for name in ("train_loss", "bbox_regression", "classification", "lr"):
        assert (plots / "metrics" / f"{name}.tsv").read_text().count("\n") == 3, name  # header + 2 epochs
    curve = json.loads((plots / "custom" / "pr_iou50.json").read_text())
    assert len(curve) == 101 and set(curve[0]) == {"recall", "precision"}
    assert (out / "predictions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # detections.json is a valid COCO results file for the split's annotations
    from pycocotools.coco import COCO

    gt = COCO(str(det_root / "shapes_det" / "annotations" / "instances_val2017.json"))
    dets = json.loads((out / "detections.json").read_text())
    assert dets and {d["image_id"] for d in dets} <= {1, 2, 3, 4}
    gt.loadRes(dets)


@pytest.mark.parametrize(
    ("detector", "arch"), [("faster_rcnn", "resnet18-skip-1222"), ("yolov3", "resnet18-skip-2222")]
)
def test_the_other_detectors_run_their_smoke_recipe(det_root, tmp_path, detector, arch):
    config = make_config(det_root, tmp_path, detector=detector, arch=arch, epochs=1, max_steps_per_epoch=1)
    metrics = train_detection(config)
    assert metrics["complete"] and metrics["recipe"] == f"{detector}-smoke" and metrics["evaluated_images"] == 4
    assert metrics["anchor_strides"] == ([4.0, 8.0, 16.0, 32.0, 64.0] if detector == "faster_rcnn" else [64, 32, 16])


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


def test_kill_mid_epoch_then_resume_ends_with_the_uninterrupted_metrics(det_root, reference, tmp_path, monkeypatch):
    ref_dir, expected = reference
    build = loader_module.build_detection_loader

    def interrupted(dataset, split, **kwargs):
        loader = build(dataset, split, **kwargs)
        if kwargs.get("train") and kwargs.get("augment") != "none":
            return _SigtermAt(loader, epoch=2, step=1)
        return loader

    monkeypatch.setattr(loader_module, "build_detection_loader", interrupted)
    out = tmp_path / "resumed"
    with pytest.raises(TrainingInterruptedError, match="interrupted at epoch 2, step 2/3"):
        train_detection(make_config(det_root, out))
    monkeypatch.setattr(loader_module, "build_detection_loader", build)
    resumed = train_detection(make_config(det_root, out, resume=True))
    assert comparable(resumed) == comparable(expected)
    assert resumed["param_digest"] == expected["param_digest"]
    assert history(out) == history(ref_dir)
    assert (out / "detections.json").read_text() == (ref_dir / "detections.json").read_text()


def test_planned_stop_between_epochs_then_resume_matches(det_root, reference, tmp_path):
    first = train_detection(make_config(det_root, tmp_path / "split", stop_after_epochs=1))
    assert not first["complete"] and first["epochs"] == 1
    resumed = train_detection(make_config(det_root, tmp_path / "split", resume=True))
    assert comparable(resumed) == comparable(reference[1])


def test_resume_with_other_options_is_refused(det_root, tmp_path):
    train_detection(make_config(det_root, tmp_path, epochs=1, max_steps_per_epoch=1))
    with pytest.raises(TrainConfigError, match=r"lr: None -> 0\.5"):
        train_detection(make_config(det_root, tmp_path, epochs=1, max_steps_per_epoch=1, lr=0.5, resume=True))
    with pytest.raises(TrainConfigError, match="already holds a run"):
        train_detection(make_config(det_root, tmp_path, epochs=1, max_steps_per_epoch=1))


def test_nan_loss_stops_with_a_clear_message(det_root, tmp_path, monkeypatch):
    real = repro.detection.build_detector

    def nan_detector(*args, **kwargs):
        model = real(*args, **kwargs)
        forward = model.forward

        def poisoned(images, targets=None):
            out = forward(images, targets)
            return {k: v * float("nan") for k, v in out.items()} if model.training else out

        model.forward = poisoned
        return model

    monkeypatch.setattr(repro.detection, "build_detector", nan_detector)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 1, step 1.*no checkpoint was written yet"):
        train_detection(make_config(det_root, tmp_path))


def test_wrong_recipe_for_the_detector_is_refused(det_root, tmp_path):
    with pytest.raises(TrainConfigError, match="is for faster_rcnn, not ssd"):
        train_detection(make_config(det_root, tmp_path, recipe="faster_rcnn-smoke"))


# -- recipes and schedules -----------------------------------------------------------------------------------------


def test_paper_recipes_follow_the_official_schedules():
    frcnn = get_detection_recipe("faster_rcnn-sap")
    assert (frcnn.epochs, frcnn.batch_size, frcnn.image_size, frcnn.grad_clip) == (12, 2, (800, 1333), 20.0)
    steps = 1000
    assert scheduled_lr(frcnn, 1, 0, steps) == pytest.approx(0.02 * 0.001)
    assert scheduled_lr(frcnn, 1, 250, steps) == pytest.approx(0.02 * (1 - 0.5 * 0.999))
    assert scheduled_lr(frcnn, 1, 500, steps) == pytest.approx(0.02)
    assert scheduled_lr(frcnn, 8, 999, steps) == pytest.approx(0.02)  # mmdetection step=[8, 11]: epochs 9 and 12
    assert scheduled_lr(frcnn, 9, 0, steps) == pytest.approx(0.002)
    assert scheduled_lr(frcnn, 12, 0, steps) == pytest.approx(0.0002)
    yolo = get_detection_recipe("yolov3-sap")
    assert (yolo.grad_clip, yolo.warmup_iters, yolo.warmup_ratio, yolo.epochs) == (35.0, 2000, 0.1, 10)
    assert scheduled_lr(yolo, 1, 0, 500) == pytest.approx(1e-4)
    assert scheduled_lr(yolo, 10, 499, 500) == pytest.approx(1e-3)  # the steps at 218/246 never fire
    ssd = get_detection_recipe("ssd-sap")
    assert (ssd.epochs, ssd.batch_size, ssd.image_size, ssd.lr) == (20, 16, 320, 0.015)
    assert scheduled_lr(ssd, 11, 0, 100) == pytest.approx(0.015 * (1 + math.cos(math.pi * 10 / 20)) / 2)
    for name in list_detection_recipes():
        recipe = get_detection_recipe(name)
        if name.endswith("-smoke"):
            side = recipe.image_size if isinstance(recipe.image_size, int) else max(recipe.image_size)
            assert side <= 128 and recipe.max_steps_per_epoch <= 2 and recipe.precise_bn, name


def test_image_size_parsing():
    assert parse_image_size("128") == 128 and parse_image_size("800x1333") == (800, 1333)
    with pytest.raises(TrainConfigError, match="SHORTxLONG"):
        parse_image_size("big")


# -- precise BN ----------------------------------------------------------------------------------------------------


def test_precise_bn_averages_batch_statistics_and_leaves_weights_and_rng_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5))
    batches = [torch.randn(2, 3, 8, 8) * (i + 1) + i for i in range(3)]
    weights = [p.detach().clone() for p in model.parameters()]
    model.eval()
    before = capture_rng_state()["torch"]
    used = recompute_bn_stats(model, batches + batches, 3, lambda m, x: m(x))
    assert used == 3 and not model.training and model[1].momentum == 0.1
    with torch.no_grad():
        outs = [model[0](x) for x in batches]
    expected_mean = torch.stack([o.mean(dim=(0, 2, 3)) for o in outs]).mean(0)
    expected_var = torch.stack([o.var(dim=(0, 2, 3), unbiased=True) for o in outs]).mean(0)
    torch.testing.assert_close(model[1].running_mean, expected_mean)
    torch.testing.assert_close(model[1].running_var, expected_var)
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert torch.equal(capture_rng_state()["torch"], before)


# -- loaders -------------------------------------------------------------------------------------------------------


@pytest.fixture
def mixed_orientation(tmp_path) -> CocoDetection:
    images, anns = [], []
    for i in range(8):
        w, h = (80, 40) if i % 2 else (40, 80)
        Image.new("RGB", (w, h), (i * 20, 0, 0)).save(tmp_path / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": w, "height": h})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [2, 2, 20, 20], "area": 400})
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
    return CocoDetection(tmp_path, ann, label_offset=1)


def test_detection_loader_is_epoch_deterministic_and_groups_orientation(mixed_orientation):
    def loader():
        return DetectionLoader(
            mixed_orientation, transform=DetectionTransform("flip"), batch_size=2, shuffle=True, seed=3,
            group_aspect=True,
        )  # fmt: skip

    first, again = loader(), loader()
    for epoch in (0, 1):
        first.set_epoch(epoch)
        again.set_epoch(epoch)
        batches = first.batches()
        assert batches == again.batches()
        assert sorted(i for b in batches for i in b) == list(range(8))
        assert all(len({i % 2 for i in b}) == 1 for b in batches)  # one orientation per batch
        for (imgs_a, tgts_a), (imgs_b, tgts_b) in zip(first, again):
            assert all(torch.equal(a, b) for a, b in zip(imgs_a, imgs_b))
            assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(tgts_a, tgts_b))
            assert all(t["labels"].tolist() == [1] for t in tgts_a)
    first.set_epoch(0)
    e0 = first.batches()
    first.set_epoch(1)
    assert first.batches() != e0


def test_transforms_keep_boxes_with_the_image_and_can_merge_classes(mixed_orientation):
    image, target = mixed_orientation[1]
    torch.manual_seed(0)
    for augment in ("ssd", "yolov3"):
        out, moved = DetectionTransform(augment, class_agnostic=True)(image, target)
        assert out.dtype == torch.float32 and out.min() >= 0.0 and out.max() <= 1.0
        assert moved["boxes"].shape[1] == 4 and (moved["labels"] == 1).all()
        assert (moved["boxes"][:, 2] <= out.shape[-1]).all() and (moved["boxes"][:, 3] <= out.shape[-2]).all()
    out, same = DetectionTransform("none")(image, target)
    assert out.shape == (3, 40, 80) and torch.equal(same["boxes"], target["boxes"])


# -- command line --------------------------------------------------------------------------------------------------


def test_cli_train_detection_and_its_errors(det_root, tmp_path):
    runner = CliRunner()
    common = ["--data-root", str(det_root), "--device", "cpu", "--detector", "ssd", "--arch", "mobilenet-skip-1222121"]
    common += ["--image-size", "64", "--epochs", "1", "--max-steps-per-epoch", "1", "--eval-max-images", "2"]
    ok = runner.invoke(app, ["train-detection", *common, "--out", str(tmp_path / "a")])
    assert ok.exit_code == 0, ok.output
    assert "done: ssd on mobilenet-skip-1222121, shapes_det, 1 epochs" in ok.output
    bad = runner.invoke(app, ["train-detection", *common, "--out", str(tmp_path / "b"), "--compat-b27"])
    assert bad.exit_code == 2 and "compat_b27 reproduces the official MobileNet 4222121" in bad.output


@pytest.mark.slow
def test_two_process_ddp_evaluates_every_image_once(det_root, tmp_path):
    """torchrun, 2 CPU processes (gloo): identical weights, 5 test images (an odd count: the shards are padded) each
    evaluated once."""
    import subprocess
    import sys

    script = tmp_path / "ddp.py"
    script.write_text(
        "import sys\n"
        "from repro.engine.train_detection import DetectionTrainConfig, train_detection\n"
        "train_detection(DetectionTrainConfig(arch='mobilenet-skip-1222121', detector='ssd', out_dir=sys.argv[1],"
        f" data_root={str(det_root)!r}, device='cpu', image_size=64, epochs=1, batch_size=4, max_steps_per_epoch=2,"
        " eval_max_images=5, progress=False))\n"
    )
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distributed"]["world_size"] == 2 and metrics["distributed"]["params_identical"]
    assert metrics["evaluated_images"] == 5
    dets = json.loads((out / "detections.json").read_text())
    assert sorted({d["image_id"] for d in dets}) == [1, 2, 3, 4, 5] and len(dets) == 5 * 200
