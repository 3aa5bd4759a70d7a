"""RNNPool face detectors: table shapes at 640x480 (Tables 11-15), S3FD anchors/matching/loss, decoding with NMS."""

from __future__ import annotations

import pytest
import torch

from repro.detection.s3fd import (
    MultiBoxLoss,
    S3FDOutput,
    decode,
    decode_detections,
    detect_faces,
    encode,
    match_s3fd,
    point_form,
    prior_boxes,
    s3fd_output,
)
from repro.models import build_model

# Output of every table row, written "W x H x C" as the tables print the next row's input. The tables print the
# stride-64 map of a 480-pixel-high image as 7 rows; stride-2 convs with padding 1 round 15 up to 8 (docs/rnnpool.md).
TABLE_SHAPES = {
    "rnnpool_face_c": [  # Table 11
        "160x120x64", "160x120x24", "80x60x32", "40x30x64", "20x15x96", "10x8x160", "5x4x320",
    ],
    "rnnpool_face_b": [  # Table 12
        "160x120x24", "160x120x24", "80x60x96", "80x60x32", "80x60x32", "40x30x64", "20x15x128", "10x8x160", "5x4x320",
    ],
    "rnnpool_face_a": [  # Table 13
        "160x120x16", "160x120x16", "80x60x16", "80x60x16", "40x30x24", "20x15x32", "10x8x128", "5x4x160",
    ],
    "rnnpool_face_quant": [  # Table 14
        "320x240x4", "320x240x4", "80x60x32", "80x60x16", "40x30x24", "20x15x32", "10x8x64", "5x4x96",
    ],
    "rnnpool_face_m4": [  # Table 15, 320x240 monochrome input
        "160x120x4", "40x30x64", "40x30x32", "40x30x32", "20x15x64", "20x15x64",
    ],
}  # fmt: skip
DETECTORS = list(TABLE_SHAPES)


def _input_hw(name: str) -> tuple[int, int]:
    return (240, 320) if name == "rnnpool_face_m4" else (480, 640)


@pytest.mark.parametrize("name", DETECTORS)
def test_rows_follow_the_paper_table(name):
    with torch.device("meta"):
        model = build_model(name, num_classes=2)
        x = torch.empty(1, model.in_channels, *_input_hw(name))
        shapes = []
        for row in model.rows:
            x = row(x)
            shapes.append(f"{x.shape[3]}x{x.shape[2]}x{x.shape[1]}")
    assert shapes == TABLE_SHAPES[name]


@pytest.mark.parametrize("name", DETECTORS)
def test_heads_strides_and_anchor_count(name):
    height, width = _input_hw(name)
    with torch.device("meta"):
        model = build_model(name, num_classes=2)
        sources = model.features(torch.empty(1, model.in_channels, height, width))
        heads = [loc(src) for loc, src in zip(model.loc, sources)]
        out = model(torch.empty(1, model.in_channels, height, width))
    for head, step in zip(heads, model.steps):
        assert head.shape[-2:] == (-(-height // step), width // step)
    assert out.loc.shape == (1, sum(h.shape[-2] * h.shape[-1] for h in heads), 4)
    assert out.conf.shape[-1] == 2
    expected_steps = (8, 8, 16, 16) if name == "rnnpool_face_m4" else (4, 8, 16, 32, 64, 128)
    assert model.steps == expected_steps


def test_face_a_hidden_size_reading():
    with torch.device("meta"):
        assert build_model("rnnpool_face_a", num_classes=2).rows[0].out_channels == 16
        assert build_model("rnnpool_face_a", num_classes=2, hidden=16).rows[0].out_channels == 64


def test_detectors_are_face_only_and_default_to_two_classes():
    with pytest.raises(ValueError, match="num_classes=2"):
        build_model("rnnpool_face_c", num_classes=1000)
    assert build_model("rnnpool_face_c").num_classes == 2  # the model's own default, not a classifier's 1000


@pytest.mark.parametrize("name", DETECTORS)
def test_forward_loss_decode_on_a_random_batch(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=2)
    x = torch.randn(2, model.in_channels, 64, 80)
    targets = [torch.tensor([[0.10, 0.10, 0.45, 0.55, 1.0], [0.6, 0.5, 0.8, 0.8, 1.0]]), torch.zeros(0, 5)]
    out = s3fd_output(model, x)
    loss_l, loss_c = MultiBoxLoss()(out, targets)
    (loss_l + loss_c).backward()
    assert torch.isfinite(loss_l) and torch.isfinite(loss_c) and loss_l > 0 and loss_c > 0
    assert all(p.grad is not None for p in model.rows[0].parameters())
    model.eval()
    dets = detect_faces(model, x)
    assert len(dets) == 2
    for det in dets:
        assert det["boxes"].shape[1] == 4 and det["scores"].shape == det["labels"].shape
        assert (det["labels"] == 1).all() and (det["scores"] > 0.01).all()


def test_prior_boxes_follow_edgeml():
    priors = prior_boxes((480, 640), [(2, 3)], [4], [16])
    assert priors.shape == (6, 4)
    torch.testing.assert_close(priors[0], torch.tensor([2 / 640, 2 / 480, 16 / 640, 16 / 480]))
    torch.testing.assert_close(priors[5], torch.tensor([10 / 640, 6 / 480, 16 / 640, 16 / 480]))


def test_encode_decode_roundtrip():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.6, 0.1, 0.3]])
    boxes = torch.tensor([[0.35, 0.42, 0.62, 0.58], [0.2, 0.5, 0.3, 0.9]])
    torch.testing.assert_close(decode(encode(boxes, priors), priors), boxes)


def test_match_exact_anchor_and_empty_image():
    priors = prior_boxes((64, 64), [(4, 4)], [16], [16])
    face = point_form(priors[5:6])
    loc_t, conf_t = match_s3fd(face, torch.ones(1), priors)
    assert conf_t[5] == 1 and conf_t.sum() == 1
    torch.testing.assert_close(loc_t[5], torch.zeros(4), atol=1e-6, rtol=0)
    _, conf_empty = match_s3fd(torch.zeros(0, 4), torch.zeros(0), priors)
    assert conf_empty.sum() == 0


def test_match_stage_two_adds_low_overlap_anchors():
    """A face whose best anchor has IoU >= 0.5 gives N = 1: one more anchor in (0.1, 0.35) becomes positive."""
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.4, 0.4], [0.9, 0.9, 0.1, 0.1]])
    face = torch.tensor([[0.4, 0.4, 0.6, 0.6]])  # equal to anchor 0; IoU with anchor 1 is 0.25
    _, conf = match_s3fd(face, torch.ones(1), priors)
    assert conf.tolist() == [1, 1, 0]


def test_multibox_loss_zero_for_perfect_boxes_and_mines_three_negatives():
    priors = prior_boxes((64, 64), [(4, 4)], [16], [16])
    face = point_form(priors[5:6])
    loc = torch.zeros(1, 16, 4)
    conf = torch.zeros(1, 16, 2)
    conf[0, :, 0] = torch.linspace(0, 1, 16)  # different background confidences -> distinct mining losses
    loss_l, loss_c = MultiBoxLoss()(S3FDOutput(loc, conf, priors), [torch.cat([face, torch.ones(1, 1)], 1)])
    assert loss_l.item() == pytest.approx(0.0, abs=1e-6)
    # 1 positive + 3 mined negatives (lowest background logits); cross-entropy summed over them / 1 positive
    ce = torch.nn.functional.cross_entropy
    negatives = [i for i in range(16) if i != 5][:3]
    expected = ce(conf[0, [5, *negatives]], torch.tensor([1, 0, 0, 0]), reduction="sum")
    assert loss_c.item() == pytest.approx(expected.item(), rel=1e-5)


def test_decoder_applies_nms():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]])
    conf = torch.tensor([[[0.0, 5.0], [0.0, 4.0], [0.0, 3.0]]])
    out = S3FDOutput(torch.zeros(1, 3, 4), conf, priors)
    det = decode_detections(out, image_size=(100, 200))[0]
    assert det["boxes"].shape == (2, 4)
    torch.testing.assert_close(det["boxes"][0], torch.tensor([80.0, 40.0, 120.0, 60.0]))
    assert det["scores"][0] > det["scores"][1]


# -- every face detector of the trainer: a training step through its kind, and boxes from its test-time predictor --

ALL_FACE_DETECTORS = [*DETECTORS, "tiny_yolov2_face", "condensation_tiny_yolov2_face"]


@pytest.mark.parametrize("name", ALL_FACE_DETECTORS)
def test_every_face_detector_trains_a_step_and_predicts_boxes(name):
    from repro.detection.face_detectors import face_detector_kind, normalised_targets

    torch.manual_seed(0)
    kind = face_detector_kind(name)
    model = build_model(name)
    images = torch.rand(2, 3, 64, 96) * 255
    targets = normalised_targets([torch.tensor([[10.0, 8.0, 40.0, 50.0]]), torch.zeros(0, 4)], 64, 96)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    losses = kind.losses(model, model, images, targets)
    loss = sum(losses.values())
    assert (
        torch.isfinite(loss)
        and loss > 0
        and set(losses) == ({"loss_loc", "loss_conf"} if kind.name == "s3fd" else {"loss_region"})
    )
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    boxes, scores = kind.predictor(model, (64, 96))(torch.rand(3, 48, 80) * 255)
    assert boxes.shape == (len(scores), 4) and len(scores) > 0 and (scores > 0.01).all()
    assert kind.record(model)["kind"] == kind.name


def test_non_face_models_have_no_face_kind():
    from repro.detection.face_detectors import face_detector_kind

    with pytest.raises(ValueError, match=r"choose one of .*rnnpool_face_a.*tiny_yolov2_face"):
        face_detector_kind("resnet18-skip-1222")


def test_fake_quantisation_rounds_to_the_int8_grid_and_freezes_observers():
    from repro.models.fake_quant import frozen_observers, prepare_fake_quant

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    assert prepare_fake_quant(model, "none") is None
    record = prepare_fake_quant(model, "int8")
    # one quantiser on the convolution's weights, one on its output
    assert record["quantized_weights"] == 1 and record["fake_quantizers"] == 2
    x = torch.randn(2, 3, 8, 8)
    model(x)  # observers learn the ranges
    quant = model[0].activation_post_process
    scale, zero = float(quant.scale), int(quant.zero_point)
    with frozen_observers(model):
        out = model[0](x * 10)  # far outside the observed range: clamped, ranges unchanged
        assert float(quant.scale) == scale
    levels = (out / scale + zero).detach()
    torch.testing.assert_close(levels, levels.round(), atol=1e-3, rtol=0)
    assert levels.min() >= 0 and levels.max() <= 255
    assert bool(quant.observer_enabled[0])
    with pytest.raises(ValueError, match="none, int8"):
        prepare_fake_quant(model, "int4")
