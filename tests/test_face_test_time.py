"""Face test-time protocols (EdgeML): scales, flip un-mirroring, multi-scale filters and box voting, by hand."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from repro.detection.face_test_time import (
    PROTOCOLS,
    box_vote,
    detect_flipped,
    detect_multi_scale,
    get_protocol,
    s3fd_predictor,
    write_wider_predictions,
)
from repro.detection.wider_predictions import read_prediction_file


class Recorder:
    """A predictor that records the input sizes and returns fixed boxes given in *original* pixels."""

    def __init__(self, original_width: int, boxes=((0, 0, 4, 4),), scores=(0.9,)):
        self.original_width, self.boxes, self.scores, self.sizes = original_width, boxes, scores, []

    def __call__(self, image):
        self.sizes.append(tuple(image.shape[-2:]))
        scale = image.shape[-1] / self.original_width
        return torch.tensor(self.boxes, dtype=torch.float64) * scale, torch.tensor(self.scores)


def test_single_pass_scales_to_the_reference_area():
    image = torch.zeros(3, 1000, 1500)
    vga = Recorder(1500, boxes=((100, 100, 200, 150),))
    detections = PROTOCOLS["vga"].detect(vga, image)
    scale = (640 * 480 / (1000 * 1500)) ** 0.5  # 0.45255
    assert vga.sizes == [(round(1000 * scale), round(1500 * scale))] == [(453, 679)]
    assert detections[0, :4] == pytest.approx([100, 100, 200, 150], rel=2e-3)  # back in original pixels
    small = torch.zeros(3, 120, 160)
    qvga, vga_small = Recorder(160), Recorder(160)
    PROTOCOLS["qvga"].detect(qvga, small)
    PROTOCOLS["vga"].detect(vga_small, small)
    assert qvga.sizes == [(120, 160)]  # qvga never enlarges (scut_test.py)
    assert vga_small.sizes == [(480, 640)]  # vga does (eval.py): 120x160 -> x4


def test_edgeml_scales_small_image():
    # m = sqrt(320^2 / 20^2) = 16: base 1, flip 1, shrink 0.5, enlarge 2, then 4, 8 (doubling below m), then m = 16
    protocol = dataclasses.replace(PROTOCOLS["edgeml"], area=320 * 320)
    recorder = Recorder(20, boxes=((0, 0, 4, 4), (0, 0, 5, 5)), scores=(0.9, 0.8))
    protocol.detect(recorder, torch.zeros(3, 20, 20))
    assert [s[0] for s in recorder.sizes] == [20, 20, 10, 40, 80, 160, 320]


def test_edgeml_scales_large_image():
    # m = sqrt(1700*1200 / (2000*2000)) = 0.7141 < 0.75: base m, flip m, shrink m/2, enlarge (m/2 + m)/2
    recorder = Recorder(2000)
    PROTOCOLS["edgeml"].detect(recorder, torch.zeros(3, 2000, 2000))
    m = (1700 * 1200) ** 0.5 / 2000
    assert [s[0] for s in recorder.sizes] == [round(2000 * s) for s in (m, m, m / 2, (m / 2 + m) / 2)]


def test_multi_scale_size_filters():
    tiny, mid, huge = (0, 0, 4, 4), (0, 0, 49, 49), (0, 0, 199, 199)  # sides 5, 50 and 200 px (+1 inclusive)
    recorder = Recorder(20, boxes=(tiny, mid, huge), scores=(0.9, 0.8, 0.7))
    shrunk, enlarged = detect_multi_scale(recorder, torch.zeros(3, 20, 20), 16.0, 0.05)
    assert shrunk[:, 2].tolist() == [49, 199]  # the shrunk pass keeps longer side > 30
    assert enlarged[:, 2].tolist() == [4, 49] * 4  # 4 enlarged passes (2, 4, 8, 16) keep shorter side < 100
    low = Recorder(20, boxes=(tiny,), scores=(0.04,))
    assert detect_multi_scale(low, torch.zeros(3, 20, 20), 16.0, 0.05)[1].shape == (0, 5)  # score threshold


def test_flip_unmirrors_boxes():
    image = torch.zeros(3, 40, 100)
    image[:, 5:15, 10:30] = 255.0  # columns 10..29: the continuous box x 10..30

    def bright_box(x):
        rows, cols = torch.nonzero(x[0] > 128, as_tuple=True)
        box = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        return torch.tensor([box], dtype=torch.float64), torch.tensor([0.9])

    flipped = detect_flipped(bright_box, image, 1.0, 0.05)
    assert flipped[0] == pytest.approx([10, 5, 30, 15, 0.9])
    seen = bright_box(image.flip(-1))[0][0].tolist()
    assert seen[0] == 100 - 30 and seen[2] == 100 - 10  # the model saw the mirrored box


def test_box_vote_by_hand():
    detections = np.array(
        [
            [1, 1, 10, 10, 0.6],  # IoU 81/119 with the first: merged into it
            [0, 0, 9, 9, 0.9],
            [50, 50, 59, 59, 0.8],  # alone: dropped, as in EdgeML
            [100, 100, 109, 109, 0.7],
            [102, 100, 111, 109, 0.7],  # IoU 80/120 with the previous: merged, equal weights
        ]
    )
    voted = box_vote(detections)
    assert voted == pytest.approx(np.array([[0.4, 0.4, 9.4, 9.4, 0.9], [101, 100, 110, 109, 0.7]]))
    assert box_vote(detections, top_k=1).shape == (1, 5)
    assert box_vote(np.zeros((0, 5))).shape == (0, 5)
    assert box_vote(detections, iou_threshold=0.675)[:, 4].tolist() == [0.9]  # 0.681 merges, 0.667 splits


def test_unknown_protocol():
    with pytest.raises(ValueError, match="valid names: vga, qvga, edgeml"):
        get_protocol("tta")


@pytest.mark.parametrize(("model_name", "protocol"), [("rnnpool_face_a", "vga"), ("rnnpool_face_m4", "edgeml")])
def test_s3fd_models_write_the_prediction_layout(tmp_path, model_name, protocol):
    from repro.models import build_model

    model = build_model(model_name, num_classes=2)
    small = dataclasses.replace(get_protocol(protocol), area=64 * 48)  # keep the passes small
    images = [
        ("0--Parade/0_Parade_a.jpg", torch.rand(3, 48, 64) * 255),
        ("1--Riot/1_Riot_b.jpg", torch.rand(3, 60, 40) * 255),
    ]
    out = write_wider_predictions(s3fd_predictor(model), images, tmp_path / "pred", small)
    rows = read_prediction_file(out / "0--Parade" / "0_Parade_a.txt")
    assert rows.shape[1] == 5 and (rows[:, 4] >= 0.05).all()
    assert (out / "1--Riot" / "1_Riot_b.txt").read_text().startswith("1--Riot/1_Riot_b.jpg\n")
    record = json.loads((out / "test_time.json").read_text())
    assert record["test_time"]["name"] == protocol and record["test_time"]["area"] == 64 * 48
    assert record["images"] == 2
