"""The three detectors learn on CPU: on easy generated shapes at 96 px, one Faster R-CNN, one SSD and one YOLOv3
reach an AP50 far above the same model untrained (BatchNorm statistics re-estimated before both evaluations).

Budgets (the ``<detector>-learn`` recipes, 1 thread): Faster R-CNN 50 steps of batch 4 (class-aware, 5 classes); SSD
and YOLOv3 150 steps of batch 8, class-agnostic (one ``object`` class: their 5-way shape classification needs far
more steps). "Untrained" is one step at lr 1e-12 through the same pipeline. Run with ``pytest -m slow -s`` to see
the numbers.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from repro.data import prepare
from repro.engine.train_detection import DetectionTrainConfig, train_detection

pytestmark = [pytest.mark.slow, pytest.mark.learning]

CASES = [
    # detector, arch, class-agnostic, AP50 the trained model must reach
    ("faster_rcnn", "resnet18-skip-1222", False, 0.10),
    ("ssd", "mobilenet-skip-1222121", True, 0.08),
    ("yolov3", "mobilenet-skip-1222121", True, 0.25),
]


@pytest.fixture(scope="module")
def easy_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    prepare("shapes_det", root, image_size=96, min_scale=0.25, max_scale=0.7, max_objects=3, clutter=0)
    return root


@pytest.mark.parametrize(("detector", "arch", "agnostic", "min_ap50"), CASES)
def test_detector_learns_on_easy_shapes(easy_root, tmp_path, detector, arch, agnostic, min_ap50):
    torch.set_num_threads(1)
    common = {
        "arch": arch,
        "detector": detector,
        "recipe": f"{detector}-learn",
        "data_root": str(easy_root),
        "device": "cpu",
        "class_agnostic": agnostic,
        "progress": False,
    }
    untrained = train_detection(
        DetectionTrainConfig(out_dir=str(tmp_path / "untrained"), epochs=1, max_steps_per_epoch=1, lr=1e-12, **common)
    )
    started = time.perf_counter()
    trained = train_detection(DetectionTrainConfig(out_dir=str(tmp_path / "trained"), **common))
    wall = time.perf_counter() - started
    steps = trained["epochs"] * trained["steps_per_epoch"]
    print(
        f"\n{detector} {arch} ({'class-agnostic' if agnostic else 'class-aware'}): AP50 untrained "
        f"{untrained['AP50']:.4f} -> {trained['AP50']:.4f} after {steps} steps (AP {trained['AP']:.4f}; train "
        f"{trained['train_time_s']:.0f} s, run {wall:.0f} s, 1 thread)"
    )
    assert trained["evaluated_images"] == untrained["evaluated_images"] == 50
    assert trained["AP50"] >= min_ap50
    assert trained["AP50"] >= 10 * max(untrained["AP50"], 1e-3)
