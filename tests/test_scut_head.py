"""SCUT-HEAD Part B: the VOC layout reader, its errors, and the evaluation path (WIDER protocol, every head counts)."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from repro.cli import app
from repro.data import DatasetError, get_dataset
from repro.detection.wider_predictions import write_prediction_file
from repro.metrics.widerface_eval import evaluate_scut_head

HEADS = {"PartB_00001": [(10, 12, 40, 44), (60, 10, 90, 45)], "PartB_00002": [(5, 5, 25, 30)], "PartB_00003": []}


def _xml(name: str, boxes) -> str:
    objects = "".join(
        f"<object><name>person</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax>"
        "</bndbox></object>"
        for a, b, c, d in boxes
    )
    size = "<size><width>100</width><height>60</height></size>"
    return f"<annotation><filename>{name}.jpg</filename>{size}{objects}</annotation>"


def _write_part_b(root):
    part = root / "scut_head" / "SCUT_HEAD_Part_B"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (part / sub).mkdir(parents=True)
    for name, boxes in HEADS.items():
        Image.new("RGB", (100, 60), (90, 90, 90)).save(part / "JPEGImages" / f"{name}.jpg")
        (part / "Annotations" / f"{name}.xml").write_text(_xml(name, boxes))
    (part / "ImageSets" / "Main" / "test.txt").write_text("PartB_00001\nPartB_00002\nPartB_00003\n")
    return part


def test_reads_voc_layout_and_edgeml_list(tmp_path):
    part = _write_part_b(tmp_path)
    test = get_dataset("scut_head", tmp_path, "test")
    assert test.names == list(HEADS)
    image, target = test[0]
    assert image.size == (100, 60) and target["file"] == "PartB_00001.jpg"
    assert target["boxes"].tolist() == [[10, 12, 40, 44], [60, 10, 90, 45]]
    edgeml = tmp_path / "face_val_scutB.txt"
    edgeml.write_text("JPEGImages/PartB_00002.jpg 1 5 5 20 25 1 \n")
    assert get_dataset("scut_head", tmp_path, "val", list_file=edgeml).names == ["PartB_00002"]
    assert (part / "Annotations").is_dir()


def test_missing_dataset_names_where_to_put_it(tmp_path):
    with pytest.raises(DatasetError, match=r"scut_head/SCUT_HEAD_Part_B.*Expected layout: .*HCIILAB/SCUT-HEAD"):
        get_dataset("scut_head", tmp_path, "test")
    _write_part_b(tmp_path)
    with pytest.raises(DatasetError, match=r"no split list .*val.txt \(found: test\)"):
        get_dataset("scut_head", tmp_path, "val")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<annotation><object>", "is not well-formed XML"),
        ("<annotation><object><bndbox><xmin>a</xmin></bndbox></object></annotation>", "object 1 has no numeric bndbox"),
        (_xml("x", [(30, 5, 10, 9)]), r"object 1 has an invalid box"),
        ('<!DOCTYPE a [<!ENTITY e "x">]><annotation/>', "has a document type declaration"),
    ],
)
def test_bad_annotation_names_the_file(tmp_path, text, message):
    part = _write_part_b(tmp_path)
    (part / "Annotations" / "PartB_00002.xml").write_text(text)
    with pytest.raises(DatasetError, match=f"PartB_00002.xml: {message}"):
        get_dataset("scut_head", tmp_path, "test")


def test_scut_head_evaluation_counts_every_head(tmp_path):
    _write_part_b(tmp_path)
    pred = tmp_path / "pred"
    # image 1: a hit (0.9), a false positive (0.8) and a hit (0.3); image 2 has no file; image 3 has no head
    write_prediction_file(
        pred / "PartB_00001.txt",
        "PartB_00001.jpg",
        [[10, 12, 40, 44], [0, 50, 5, 55], [61, 10, 91, 45]],
        [0.9, 0.8, 0.3],
        inclusive_width=False,
    )
    write_prediction_file(pred / "PartB_00003.txt", "PartB_00003.jpg", [[1, 1, 9, 9]], [0.95], inclusive_width=False)
    result = evaluate_scut_head(pred, tmp_path, "test")
    # 3 heads: precision 1 up to recall 1/3, then 2/3 up to recall 2/3; the image without heads adds no FP
    assert result.aps() == {"all": pytest.approx(1 / 3 + 1 / 3 * 2 / 3)}
    assert result.missing == ("PartB_00002",)
    cli = CliRunner().invoke(
        app, ["eval-scut-head", "--pred", str(pred), "--data-root", str(tmp_path), "--split", "test"]
    )
    assert cli.exit_code == 0 and json.loads(cli.stdout.strip()) == {"all": pytest.approx(5 / 9)}
    missing = CliRunner().invoke(app, ["eval-scut-head", "--pred", str(pred), "--data-root", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
