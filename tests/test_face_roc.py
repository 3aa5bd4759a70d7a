"""Condensation-Net's metric (TPR vs false positives per image) on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from repro.metrics.face_roc import face_roc, face_roc_from_wider, match_detections
from repro.metrics.widerface_eval import FaceGroundTruth


def _case():
    faces = [
        np.array([[0, 0, 10, 10], [20, 0, 30, 10], [50, 50, 60, 60]]),
        np.array([[0, 0, 10, 10]]),
        np.zeros((0, 4)),
    ]
    counted = [np.array([True, True, False]), np.array([True]), np.zeros(0, bool)]
    detections = [
        (
            np.array([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [21, 0, 31, 10]]),
            np.array([0.9, 0.8, 0.85, 0.6]),
        ),
        (np.array([[100, 100, 110, 110], [0, 1, 10, 11]]), np.array([0.95, 0.6])),
        (np.array([[5, 5, 15, 15]]), np.array([0.7])),
    ]
    return detections, faces, counted


def test_matching_true_duplicate_and_ignored_detections():
    (boxes, scores), faces, counted = _case()[0][0], _case()[1][0], _case()[2][0]
    # 0.9 takes face 0; 0.85 lies on the ignored face; 0.8 repeats face 0; 0.6 has IoU 90/110 with face 1
    assert match_detections(boxes, scores, faces, counted).tolist() == [1, 0, -1, 1]


def test_roc_points_and_tpr_at_fppi_by_hand():
    roc = face_roc(*_case())
    assert roc.num_faces == 3 and roc.num_images == 3
    assert roc.thresholds.tolist() == [np.inf, 0.95, 0.9, 0.8, 0.7, 0.6]  # the tie at 0.6 is one point
    assert roc.true_positive_rate == pytest.approx([0, 0, 1 / 3, 1 / 3, 1 / 3, 1])
    assert roc.false_positives.tolist() == [0, 1, 1, 2, 3, 3]
    assert roc.false_positives_per_image == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 1, 1])
    assert roc.tpr_at(0.1) == 0.0  # no point has at most 0.3 false positives except the origin
    assert roc.tpr_at(1 / 3) == pytest.approx(1 / 3)
    assert roc.tpr_at(0.67) == pytest.approx(1 / 3)
    assert roc.tpr_at(1.0) == 1.0
    assert roc.to_dict()["tpr_at_fppi_0.1"] == 0.0


def test_tpr_at_fppi_counts_false_positives_over_all_images():
    faces = [np.array([[0, 0, 10, 10]])] + [np.zeros((0, 4))] * 9
    detections = [(np.array([[0, 0, 10, 10], [40, 40, 50, 50]]), np.array([0.5, 0.9]))] + [(np.zeros((0, 4)), [])] * 9
    roc = face_roc(detections, faces)
    assert roc.tpr_at(0.1) == 1.0  # 1 false positive over 10 images is FPPI 0.1
    assert face_roc(detections[:1], faces[:1]).tpr_at(0.1) == 0.0  # over 1 image it is FPPI 1


def test_roc_from_wider_layout_uses_settings_and_x_plus_w():
    gt = FaceGroundTruth(
        ("e/a",), (np.array([[0, 0, 10, 10], [50, 50, 10, 10]], dtype=np.int32),), {"easy": (np.array([0]),)}
    )
    predictions = [np.array([[50, 50, 10, 10, 0.9], [0, 0, 10, 10, 0.8]])]
    assert face_roc_from_wider(predictions, gt, "easy").false_positives.tolist() == [0, 0]  # ignored face skipped
    every = face_roc_from_wider(predictions, gt)
    assert every.num_faces == 2 and every.true_positive_rate[-1] == 1.0


def test_bad_input():
    with pytest.raises(ValueError, match="detection sets for"):
        face_roc([], [np.zeros((0, 4))])
    with pytest.raises(ValueError, match="no counted face"):
        face_roc([(np.zeros((0, 4)), np.zeros(0))], [np.zeros((0, 4))])
