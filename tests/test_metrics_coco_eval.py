"""``repro eval-coco`` and :func:`evaluate_coco` against pycocotools run directly on hand-made cases; bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from repro.cli import app
from repro.metrics.coco_eval import STAT_NAMES, CocoFormatError, evaluate_coco

CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 7, "name": "train"}]
IMAGES = [
    {"id": 10, "width": 640, "height": 480},
    {"id": 11, "width": 320, "height": 240},
    {"id": 12, "width": 200, "height": 200},
]
# (image, category, [x, y, w, h], iscrowd): small (< 32^2), medium and large boxes of three classes
GT_BOXES = [
    (10, 1, [20, 30, 200, 300], 0),
    (10, 1, [300, 40, 60, 80], 0),
    (10, 3, [400, 300, 20, 20], 0),
    (10, 7, [10, 350, 600, 120], 0),
    (11, 1, [5, 5, 25, 30], 0),
    (11, 3, [100, 100, 150, 100], 0),
    (11, 3, [10, 150, 40, 40], 1),  # a crowd region
    (12, 7, [0, 0, 199, 199], 0),
]


def gt_dict() -> dict:
    anns = [
        {"id": i + 1, "image_id": im, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": crowd}
        for i, (im, c, b, crowd) in enumerate(GT_BOXES)
    ]
    return {"images": IMAGES, "annotations": anns, "categories": CATEGORIES}


def perfect() -> list[dict]:
    return [{"image_id": im, "category_id": c, "bbox": b, "score": 0.9} for im, c, b, crowd in GT_BOXES if not crowd]


def shifted() -> list[dict]:
    out = []
    for k, det in enumerate(perfect()):
        x, y, w, h = det["bbox"]
        dx = 0.15 * w * (k % 3)  # IoU 1, ~0.74, ~0.54: passes some thresholds only
        out.append({**det, "bbox": [max(0.0, x - dx), y, w, h], "score": 0.9 - 0.05 * k})
    return out


def duplicate() -> list[dict]:
    """Every box twice, the copy 1 px off and scored just below it: copies are false positives between the hits."""
    ranked = [{**d, "score": 0.9 - 0.1 * k} for k, d in enumerate(perfect())]
    copies = [{**d, "score": d["score"] - 0.05, "bbox": [d["bbox"][0] + 1, *d["bbox"][1:]]} for d in ranked]
    return ranked + copies


def missing() -> list[dict]:
    return perfect()[::2]


def crowd() -> list[dict]:
    inside = [{"image_id": 11, "category_id": 3, "bbox": [12, 152, 15, 15], "score": s} for s in (0.95, 0.3)]
    return perfect() + inside


def mixed_scores() -> list[dict]:
    wrong = [
        {"image_id": 10, "category_id": 3, "bbox": [50, 50, 80, 80], "score": 0.99},  # a confident false positive
        {"image_id": 12, "category_id": 1, "bbox": [20, 20, 50, 50], "score": 0.2},
    ]
    return shifted()[:5] + wrong + missing()


CASES = {
    "perfect": perfect,
    "shifted": shifted,
    "duplicate": duplicate,
    "missing": missing,
    "crowd": crowd,
    "mixed": mixed_scores,
}


def write(tmp_path: Path, name: str, obj) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


def pycocotools_stats(gt_path: Path, dets: list[dict], cat_ids: list[int] | None = None) -> list[float]:
    """The 12 stats of COCOeval run directly on the files, as the pycocotools README does it."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco_gt = COCO(str(gt_path))
    coco_dt = coco_gt.loadRes(json.loads(json.dumps(dets)))
    ev = COCOeval(coco_gt, coco_dt, "bbox")
    if cat_ids is not None:
        ev.params.catIds = cat_ids
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return [float(v) for v in ev.stats]


def as_stats(result: dict) -> list[float]:
    return [-1.0 if result[k] is None else result[k] for k in STAT_NAMES]


@pytest.mark.parametrize("case", list(CASES))
def test_equals_pycocotools_on_hand_made_cases(tmp_path, case):
    gt_path = write(tmp_path, "gt.json", gt_dict())
    dets = CASES[case]()
    ours = evaluate_coco(gt_path, write(tmp_path, "dets.json", dets))
    assert as_stats(ours) == pytest.approx(pycocotools_stats(gt_path, dets), abs=1e-6)
    for cat in CATEGORIES:  # per-class AP = the AP of a one-category evaluation
        single = pycocotools_stats(gt_path, dets, [cat["id"]])[0]
        assert (ours["per_class"][cat["name"]] or -1.0) == pytest.approx(single, abs=1e-6), cat


def test_hand_computed_values():
    gt = gt_dict()
    assert evaluate_coco(gt, perfect())["AP"] == pytest.approx(1.0)
    # 'missing' keeps every other box: per class, recall stops where the detected boxes end
    half = evaluate_coco(gt, missing(), categories=["person"])
    # person: 3 boxes, boxes 0 and 4 of GT_BOXES kept -> recall 2/3 at precision 1: 67 of the 101 recall points
    assert half["AP"] == pytest.approx(67 / 101, abs=1e-6)
    crowd_result = evaluate_coco(gt, crowd())
    assert crowd_result["AP"] == pytest.approx(1.0)  # detections inside a crowd region are ignored, not false


def test_subset_of_categories_and_images_and_faster_backend(tmp_path):
    gt, dets = gt_dict(), mixed_scores()
    gt_path = write(tmp_path, "gt.json", gt)
    subset = evaluate_coco(gt, dets, categories=[1, "train"])
    assert subset["categories"] == ["person", "train"] and set(subset["per_class"]) == {"person", "train"}
    assert as_stats(subset) == pytest.approx(pycocotools_stats(gt_path, dets, [1, 7]), abs=1e-6)
    fast = evaluate_coco(gt, dets, backend="faster-coco-eval")
    reference = evaluate_coco(gt, dets)
    assert as_stats(fast) == pytest.approx(as_stats(reference), abs=1e-6)
    one = evaluate_coco(gt, dets, image_ids=[12])
    assert one["num_images"] == 1 and one["per_class"]["person"] is None  # no person in image 12


def test_no_detections_gives_zero_ap():
    result = evaluate_coco(gt_dict(), [], pr_curves=True)
    assert result["AP"] == 0.0 and result["AP50"] == 0.0
    assert len(result["pr_curves"]["recall"]) == 101 and set(result["pr_curves"]["per_class_iou=0.50"]) == {
        "person",
        "car",
        "train",
    }


@pytest.mark.parametrize(
    ("which", "mutate", "message"),
    [
        ("dets", lambda g, d: d[2].update(bbox=[1, 2, -3, 4]), r"dets\.json: record 2, field 'bbox': .*>= 0"),
        ("dets", lambda g, d: d[0].update(bbox=[600, 10, 100, 10]), r"record 0, field 'bbox': .*outside its 640x480"),
        ("dets", lambda g, d: d[1].update(image_id=99), r"record 1, field 'image_id': 99 is not an image"),
        ("dets", lambda g, d: d[3].update(category_id=2), r"record 3, field 'category_id': 2 is not a category"),
        ("dets", lambda g, d: d[0].pop("score"), r"record 0, field 'score': is missing"),
        ("dets", lambda g, d: d[0].update(score=float("nan")), r"record 0, field 'score': must be a finite number"),
        ("dets", lambda g, d: d[0].update(bbox=[1, 2, 3]), r"record 0, field 'bbox': must be a list"),
        ("gt", lambda g, d: g["annotations"][4].update(image_id="11"), r"gt\.json: annotations\[4\], field 'image_id'"),
        ("gt", lambda g, d: g["annotations"][1].update(id=1), r"annotations\[1\], field 'id': annotation id 1 .*twice"),
        ("gt", lambda g, d: g["images"][0].pop("width"), r"images\[0\], field 'width': is missing"),
        ("gt", lambda g, d: g["annotations"][0].update(iscrowd=2), r"annotations\[0\], field 'iscrowd'"),
        ("gt", lambda g, d: g.pop("categories"), r"gt\.json: the file, field 'categories': is missing"),
    ],
)
def test_bad_files_get_one_clear_error(tmp_path, which, mutate, message):
    gt, dets = json.loads(json.dumps(gt_dict())), perfect()
    mutate(gt, dets)
    with pytest.raises(CocoFormatError, match=message):
        evaluate_coco(write(tmp_path, "gt.json", gt), write(tmp_path, "dets.json", dets))


def test_cli_prints_one_json_object_and_exit_codes(tmp_path):
    runner = CliRunner()
    gt_path, dets_path = write(tmp_path, "gt.json", gt_dict()), write(tmp_path, "dets.json", shifted())
    ok = runner.invoke(app, ["eval-coco", "--gt", str(gt_path), "--dets", str(dets_path)])
    assert ok.exit_code == 0, ok.output
    printed = json.loads(ok.stdout)
    assert set(printed) == {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_class"}
    assert [printed[k] for k in ("AP", "AP50")] == pytest.approx(pycocotools_stats(gt_path, shifted())[:2], abs=1e-6)
    bad = write(tmp_path, "bad.json", [{"image_id": 10, "category_id": 1, "bbox": [0, 0, 1, 1]}])
    failed = runner.invoke(app, ["eval-coco", "--gt", str(gt_path), "--dets", str(bad)])
    assert failed.exit_code == 1 and "bad.json: record 0, field 'score': is missing" in failed.output
    truncated = tmp_path / "truncated.json"
    truncated.write_text('{"images": [')
    assert runner.invoke(app, ["eval-coco", "--gt", str(truncated), "--dets", str(dets_path)]).exit_code == 1
    absent = str(tmp_path / "absent.json")
    assert runner.invoke(app, ["eval-coco", "--gt", absent, "--dets", str(dets_path)]).exit_code == 2
    assert runner.invoke(app, ["eval-coco", "--gt", str(gt_path)]).exit_code == 2  # usage: --dets missing
    bad_backend = runner.invoke(app, ["eval-coco", "--gt", str(gt_path), "--dets", str(dets_path), "--backend", "x"])
    assert bad_backend.exit_code == 2
