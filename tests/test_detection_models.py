"""SAP detectors (Faster R-CNN + FPN, SSD, YOLOv3): priors at the backbone's real strides, RoI levels equal to
mmdetection's, the YOLOv3 assigner/coder/loss/neck, the B26/B27 compat flags, and a training step plus decoding for
the SAP detection entries (a subset by default, every entry with ``-m slow``)."""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

import pytest
import torch
import yaml
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import MultiScaleRoIAlign

from repro.detection import DetectorError, build_detector, detector_record, official_compat
from repro.detection.anchors import StridedRoIAlign, rpn_anchor_generator
from repro.detection.yolov3 import LOSS_WEIGHTS, decode_boxes, encode_boxes, grid_assign
from repro.models import build_model
from repro.models.sap_common import InputSizeError

REPO = Path(__file__).resolve().parents[1]
ENTRIES = yaml.safe_load((REPO / "pipelines" / "sap_detection.yaml").read_text())["entries"]
MULTIPLIER = {"1222": 1, "2222": 2, "4222": 4}


def _batch(size: int = 64):
    images = [torch.rand(3, size, size), torch.rand(3, size - 8, size)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [30.0, 10.0, 60.0, 34.0]]), "labels": torch.tensor([1, 3])},
        {"boxes": torch.tensor([[10.0, 12.0, 40.0, 50.0]]), "labels": torch.tensor([2])},
    ]
    return images, targets


def _step_and_decode(detector: str, arch: str, size: int = 64, **opts) -> None:
    torch.manual_seed(0)
    if detector == "faster_rcnn":
        opts = {"rpn_post_nms_top_n_train": 100, "box_batch_size_per_image": 32, **opts}
    if detector == "yolov3":
        opts = {"train_scales": None, **opts}
    model = build_detector(detector, arch, 8, size, **opts)
    images, targets = _batch(size)
    model.train()
    losses = model(images, targets)
    loss = sum(losses.values())
    assert torch.isfinite(loss) and loss > 0, losses
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for det, image in zip(out, images):
        assert det["boxes"].shape[1] == 4 and det["scores"].shape == det["labels"].shape
        assert (det["labels"] >= 1).all() and (det["labels"] <= 8).all()
        if len(det["boxes"]):
            assert (det["boxes"][:, 2:] <= torch.tensor(image.shape[-1:-3:-1]) + 1e-3).all()


# -- Faster R-CNN: anchors and RoI levels ------------------------------------------------------------------------


@pytest.mark.parametrize("strides", ["1222", "2222", "4222"])
@pytest.mark.parametrize("depth", ["resnet18", "resnet50"])
def test_faster_rcnn_anchor_strides_are_the_backbone_strides(depth, strides):
    arch = f"{depth}-skip-{strides}"
    model = build_detector("faster_rcnn", arch, 8, 128)
    m = MULTIPLIER[strides]
    real = build_model(arch, num_classes=1, features_only=True).feature_info.reduction()
    assert list(model.anchor_strides) == [*real, 2 * real[-1]] == [4 * m, 8 * m, 16 * m, 32 * m, 64 * m]
    assert model.rpn.anchor_generator.sizes == tuple((8 * s,) for s in model.anchor_strides)
    assert model.roi_heads.box_roi_pool.scales == [1 / s for s in model.anchor_strides[:4]]
    assert detector_record(model)["anchor_strides"] == [float(s) for s in model.anchor_strides]


@pytest.mark.parametrize("strides", ["2222", "4222"])
def test_anchors_sit_on_the_real_grid_at_800x1344_where_torchvision_would_drift(strides):
    """torchvision infers stride = padded size // map size: wrong for the rounded-up maps of a stride-changed net."""
    plan = build_model(f"resnet18-skip-{strides}", num_classes=1, features_only=True).spatial_plan
    heights, widths = list(plan.sizes(800).values())[1:], list(plan.sizes(1344).values())[1:]  # layer1..layer4
    maps = [torch.zeros(1, 1, h, w) for h, w in zip(heights, widths)]
    maps.append(torch.zeros(1, 1, -(-heights[-1] // 2), -(-widths[-1] // 2)))  # P6: max-pool k1 s2 of P5
    m = MULTIPLIER[strides]
    strides_px = [4 * m, 8 * m, 16 * m, 32 * m, 64 * m]
    image_list = ImageList(torch.zeros(1, 3, 800, 1344), [(800, 1344)])
    ours = rpn_anchor_generator(strides_px)(image_list, maps)[0]
    offset = 0
    for fm, stride in zip(maps, strides_px):
        level = ours[offset : offset + fm.shape[-2] * fm.shape[-1] * 3].view(fm.shape[-2], fm.shape[-1], 3, 4)
        offset += level.numel() // 4
        if fm.shape[-1] > 1:
            torch.testing.assert_close(level[0, 1, :, 0] - level[0, 0, :, 0], torch.full((3,), float(stride)))
        if fm.shape[-2] > 1:
            torch.testing.assert_close(level[1, 0, :, 1] - level[0, 0, :, 1], torch.full((3,), float(stride)))
    inferred = [(800 // fm.shape[-2], 1344 // fm.shape[-1]) for fm in maps]
    assert any(pair != (s, s) for pair, s in zip(inferred, strides_px))  # the trait the explicit strides avoid
    stock = AnchorGenerator(tuple((8 * s,) for s in strides_px), ((0.5, 1.0, 2.0),) * 5)(image_list, maps)[0]
    assert not torch.equal(stock, ours)


def _mmdet_level(sides: torch.Tensor) -> torch.Tensor:
    """mmdetection 2.x SingleRoIExtractor.map_roi_levels with finest_scale 56 and 4 levels."""
    return torch.floor(torch.log2(sides / 56 + 1e-6)).clamp(0, 3).long()


@pytest.mark.parametrize("strides", ["1222", "2222", "4222"])
def test_roi_levels_equal_mmdetection_for_every_stride_string(strides):
    m = MULTIPLIER[strides]
    sides = torch.linspace(4, 2000, 4000)
    boxes = [torch.stack([torch.zeros_like(sides), torch.zeros_like(sides), sides, sides], dim=1)]
    ours = StridedRoIAlign(["0", "1", "2", "3"], [4 * m, 8 * m, 16 * m, 32 * m])
    assert torch.equal(ours.map_levels(boxes), _mmdet_level(sides))
    if m > 1:  # torchvision's default canonical level maps by absolute size: a different assignment
        stock = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 0)
        stock.scales = ours.scales
        from torchvision.ops.poolers import initLevelMapper

        k_min = int(math.log2(4 * m))
        stock.map_levels = initLevelMapper(k_min, k_min + 3)
        assert not torch.equal(stock.map_levels(boxes), _mmdet_level(sides))


def test_b26_keeps_the_1222_strides_only_when_asked():
    arch = "resnet50-nlp_reduced-2222"
    assert build_detector("faster_rcnn", arch, 8, 128).anchor_strides == (8, 16, 32, 64, 128)
    compat = build_detector("faster_rcnn", arch, 8, 128, compat_b26=True)
    assert compat.anchor_strides == (4, 8, 16, 32, 64)
    assert compat.roi_heads.box_roi_pool.scales == [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    assert compat.compat == {"compat_b26": True, "compat_b27": False}
    assert official_compat("faster_rcnn", "resnet50-nlp-2222") == {"compat_b26": True, "compat_b27": False}
    assert official_compat("faster_rcnn", "dyresnet50-nlp-4222")["compat_b26"]
    for detector, arch in [("faster_rcnn", "resnet50-lip-2222"), ("faster_rcnn", "resnet50-nlp-1222")]:
        assert not official_compat(detector, arch)["compat_b26"]
    with pytest.raises(DetectorError, match="faster_rcnn only"):
        build_detector("ssd", "mobilenet-skip-1222121", 8, 128, compat_b26=True)


def test_b11_entries_cannot_run_at_the_official_size():
    with pytest.raises(InputSizeError, match="B11"):
        build_detector("faster_rcnn", "resnet18-nlp-1222", 8, (800, 1333))


# -- SSD -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("arch", "m"), [("mobilenet-skip-1222121", 1), ("mobilenet-skip-2222121", 2),
                                          ("mobilenet-skip-4222121", 4), ("resnet18-skip-1222", 1)])  # fmt: skip
def test_ssd_default_boxes_follow_the_sap_config(arch, m):
    model = build_detector("ssd", arch, 8, 320).eval()
    assert model.anchor_generator.num_anchors_per_location() == [6] * 6
    assert model.anchor_strides == tuple(m * s for s in (16, 32, 64, 107, 160, 320))
    expected_maps = {1: [20, 10, 5, 3, 2, 1], 2: [10, 5, 3, 2, 1, 1], 4: [5, 3, 2, 1, 1, 1]}[m]
    with torch.no_grad():
        maps = list(model.backbone(torch.zeros(1, 3, 320, 320)).values())
    assert [f.shape[-1] for f in maps] == expected_maps
    image_list = ImageList(torch.zeros(1, 3, 320, 320), [(320, 320)])
    boxes = model.anchor_generator(image_list, maps)[0]  # xyxy pixels, 6 per location
    assert boxes.shape[0] == 6 * sum(s * s for s in expected_maps)
    first = boxes[:6]
    centre = (first[:, :2] + first[:, 2:]) / 2
    torch.testing.assert_close(centre, torch.full((6, 2), 0.5 * 16 * m))
    sides = sorted({round(float(w)) for w in (first[:, 2] - first[:, 0])})
    assert 48 in sides and round(math.sqrt(48 * 100)) in sides  # min size and sqrt(min * next min)


# -- YOLOv3 --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "expected"),
    [("resnet18-skip-1222", (32, 16, 8)), ("resnet18-lip-2222", (64, 32, 16)), ("resnet18-skip-4222", (128, 64, 32)),
     ("mobilenet-skip-1222121", (32, 16, 8)), ("mobilenet-skip-4222121", (128, 64, 32))],
)  # fmt: skip
def test_yolov3_anchor_strides_are_the_backbone_strides(arch, expected):
    assert build_detector("yolov3", arch, 8, 128).anchor_strides == expected


def test_b27_reproduces_the_copy_paste_configs_only_when_asked():
    arch = "mobilenet-skip-4222121"
    assert build_detector("yolov3", arch, 8, 128, compat_b27=True).anchor_strides == (64, 32, 16)
    ssd_as_official = build_detector("ssd", arch, 8, 128, compat_b27=True)
    assert ssd_as_official.detector_kind == "yolov3" and ssd_as_official.anchor_strides == (32, 16, 8)
    assert build_detector("ssd", arch, 8, 128).detector_kind == "ssd"
    assert official_compat("ssd", arch) == {"compat_b26": False, "compat_b27": True}
    assert not official_compat("yolov3", "mobilenet-skip-2222121")["compat_b27"]
    with pytest.raises(DetectorError, match="MobileNet 4222121"):
        build_detector("yolov3", "resnet18-skip-4222", 8, 128, compat_b27=True)


@pytest.mark.parametrize("arch", ["resnet18-skip-2222", "mobilenet-skip-4222121"])
@pytest.mark.parametrize("size", [(608, 608), (480, 608)])
def test_yolov3_neck_upsamples_to_the_lateral_size(arch, size):
    """With the official rounding the deep maps are not exact halves (19 -> 10), so a x2 upsample cannot concatenate."""
    model = build_detector("yolov3", arch, 8, 608).eval()
    with torch.no_grad():
        feats = list(model.body(torch.zeros(1, 3, *size)))[::-1]
        maps = model.neck(feats)
    assert [tuple(m.shape[-2:]) for m in maps] == [tuple(f.shape[-2:]) for f in feats]
    assert any(2 * deep.shape[-1] != shallow.shape[-1] for deep, shallow in itertools.pairwise(feats))


def test_grid_assigner_cases():
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 20, 20], [30, 30, 40, 40], [1, 1, 11, 11], [50, 50, 60, 60]])
    responsible = torch.tensor([True, True, False, False, True])
    gts = torch.tensor([[0.0, 0, 10, 10], [30, 30, 41, 41]])
    assigned = grid_assign(anchors, responsible, gts)
    # 0: responsible, IoU 1 -> box 1; 1: responsible, IoU 0.25 <= 0.5 -> negative; 2: IoU 0.83 but not
    # responsible -> ignored (-1); 3: IoU 0.68 with box 0, not responsible -> ignored; 4: IoU 0 -> negative
    assert assigned.tolist() == [1, 0, -1, -1, 0]
    # a box whose responsible anchors all overlap it <= 0.5 still takes its best responsible anchor
    assigned = grid_assign(anchors, responsible, torch.tensor([[0.0, 0, 19, 6]]))
    assert assigned.tolist() == [1, 0, 0, 0, 0]
    assert grid_assign(anchors, responsible, torch.zeros(0, 4)).tolist() == [0] * 5


def test_yolo_box_coder_round_trip():
    anchors = torch.tensor([[0.0, 0, 116, 90], [100, 40, 130, 101]])
    boxes = torch.tensor([[10.0, 5, 100, 80], [105, 45, 140, 90]])
    strides = torch.tensor([32.0, 16.0])
    encoded = encode_boxes(anchors, boxes, strides)
    assert ((encoded[:, :2] > 0) & (encoded[:, :2] < 1)).all()
    torch.testing.assert_close(decode_boxes(anchors, encoded[:, :2], encoded[:, 2:], strides), boxes)


def test_yolov3_loss_terms_and_weights():
    """One box, predictions all zero: the loss terms follow from the assignment, summed and weighted 1/1/2/2."""
    torch.manual_seed(0)
    model = build_detector("yolov3", "resnet18-skip-1222", 3, 64, train_scales=None)
    for p in model.head.preds:  # zero predictions: every logit 0
        torch.nn.init.zeros_(p.weight)
        torch.nn.init.zeros_(p.bias)
    target = {"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([2])}
    model.train()
    losses = model([torch.rand(3, 64, 64)], [target])
    assert set(losses) == set(LOSS_WEIGHTS)
    sizes = [(2, 2), (4, 4), (8, 8)]
    anchors, strides = model.grid_anchors(sizes, torch.device("cpu"))
    assigned = grid_assign(anchors, model.responsible_flags(target["boxes"], sizes), target["boxes"])
    pos, neg = int((assigned > 0).sum()), int((assigned == 0).sum())
    bce0 = math.log(2.0)  # BCE of logit 0 against 0 or 1
    assert losses["loss_conf"].item() == pytest.approx(LOSS_WEIGHTS["loss_conf"] * bce0 * (pos + neg), rel=1e-5)
    assert losses["loss_cls"].item() == pytest.approx(LOSS_WEIGHTS["loss_cls"] * bce0 * 3 * pos, rel=1e-5)
    encoded = encode_boxes(anchors[assigned > 0], target["boxes"].expand(pos, 4), strides[assigned > 0])
    xy = torch.nn.functional.binary_cross_entropy_with_logits(torch.zeros(pos, 2), encoded[:, :2], reduction="sum")
    assert losses["loss_xy"].item() == pytest.approx(2 * xy.item(), rel=1e-5)
    assert losses["loss_wh"].item() == pytest.approx(2 * encoded[:, 2:].pow(2).sum().item(), rel=1e-5)


# -- every SAP detection entry -------------------------------------------------------------------------------------

FAST = [
    ("faster_rcnn", "resnet18-skip-1222"),
    ("faster_rcnn", "resnet50-skip-2222"),
    ("faster_rcnn", "resnet18-lip-4222"),
    ("ssd", "mobilenet-skip-1222121"),
    ("ssd", "mobilenet-skip-4222121"),
    ("ssd", "resnet18-skip-1222"),
    ("yolov3", "mobilenet-skip-1222121"),
    ("yolov3", "resnet18-skip-2222"),
    ("yolov3", "resnet18-skip-4222"),
]


@pytest.mark.parametrize(("detector", "arch"), FAST)
def test_a_training_step_and_decoding(detector, arch):
    size = 128 if "lip-4222" in arch else 64
    _step_and_decode(detector, arch, size)


def test_b27_ssd_entry_trains_as_the_official_yolov3():
    _step_and_decode("ssd", "mobilenet-skip-4222121", 64, compat_b27=True, train_scales=None)


@pytest.mark.slow
@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_every_sap_detection_entry_trains_a_step_and_decodes(entry):
    spec = ENTRIES[entry]
    _step_and_decode(spec["detector"], spec["arch"], 128)
    assert official_compat(spec["detector"], spec["arch"]).keys() == {"compat_b26", "compat_b27"}


def test_entries_cover_the_three_detectors():
    kinds = {spec["detector"] for spec in ENTRIES.values()}
    assert kinds == {"faster_rcnn", "ssd", "yolov3"}
    assert {spec["num_classes"] for spec in ENTRIES.values()} == {8}


def test_detection_package_stays_below_data_metrics_and_engine():
    forbidden = ("repro.data", "repro.metrics", "repro.engine", "repro.tables", "repro.pipeline", "repro.cli")
    for path in (REPO / "repro" / "detection").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n == f or n.startswith(f + ".") for n in names for f in forbidden), (path.name, names)


def test_unknown_detector_and_unsupported_backbones_are_clear_errors():
    with pytest.raises(DetectorError, match="unknown detector"):
        build_detector("retinanet", "resnet18-skip-1222", 8)
    with pytest.raises(DetectorError, match="MobileNetV2 and ResNet18"):
        build_detector("yolov3", "resnet50-skip-1222", 8, 128)
    with pytest.raises(DetectorError, match="not an SAP backbone"):
        build_detector("faster_rcnn", "resnet18-bogus-1222", 8, 128)
