"""Hostile and malformed dataset files: no code runs from data, and every bad file gives one error naming the file,
the record and the field. The official-format CIFAR batches come from ``cifar_official.py``."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import time

import numpy as np
import pytest
from cifar_official import write_official_cifar10
from typer.testing import CliRunner

from repro.cli import app
from repro.data import DatasetError, get_dataset
from repro.data.errors import DataFileError
from repro.data.safe_pickle import ForbiddenGlobalError, PickleFileError, load_data_pickle
from repro.faults.files import Reduce, payloads

runner = CliRunner()


def test_the_official_python2_layout_still_loads(tmp_path):
    directory = write_official_cifar10(tmp_path)
    raw = (directory / "data_batch_1").read_bytes()
    expected = pickle.loads(raw, encoding="latin1")  # what an unrestricted unpickler makes of it
    ours = load_data_pickle(directory / "data_batch_1")
    assert ours.keys() == expected.keys() and ours["labels"] == expected["labels"]
    np.testing.assert_array_equal(ours["data"], expected["data"])
    assert ours["data"].dtype == np.uint8 and ours["data"].shape == (2, 3072)
    train = get_dataset("cifar10", tmp_path, "train")
    assert len(train) == 10 and train.classes[0] == "airplane"
    image, label = train[0]
    np.testing.assert_array_equal(np.asarray(image), expected["data"][0].reshape(3, 32, 32).transpose(1, 2, 0))
    assert label == expected["labels"][0]


@pytest.mark.parametrize("protocol", [0, 2, 3, 4])
def test_numpy_batches_pickled_by_python3_load(tmp_path, protocol):
    batch = {"data": np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072), "labels": [1, 2]}
    (tmp_path / "b").write_bytes(pickle.dumps(batch, protocol=protocol))
    loaded = load_data_pickle(tmp_path / "b")
    np.testing.assert_array_equal(loaded["data"], batch["data"])


# -- crafted pickles never run ----------------------------------------------------------------------------------------


def test_the_issue_scenario_is_refused_and_the_payload_never_runs(tmp_path):
    """A batch with a ``__reduce__`` payload in ``<root>/cifar10/cifar-10-batches-py/``, then ``repro prepare``."""
    directory = write_official_cifar10(tmp_path)
    marker = tmp_path / "payload-ran"
    (directory / "data_batch_3").write_bytes(pickle.dumps(Reduce(os.system, (f"touch {marker}",)), protocol=2))
    result = runner.invoke(app, ["prepare", "cifar10", "--data-root", str(tmp_path)])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert (
        f"{directory / 'data_batch_3'} is not a CIFAR file: refused: it references the global 'posix.system'"
        in (lines[0])
    )
    assert not marker.exists()


@pytest.mark.parametrize("name", list(payloads(__import__("pathlib").Path("x"))))
def test_every_crafted_payload_is_refused_before_it_runs(tmp_path, name):
    marker = tmp_path / "ran"
    obj, protocol = payloads(marker)[name]
    (tmp_path / "batch").write_bytes(pickle.dumps(obj, protocol=protocol))
    with pytest.raises(ForbiddenGlobalError, match=r"batch: refused: it references the global '[\w.]+'") as info:
        load_data_pickle(tmp_path / "batch")
    assert info.value.global_name in str(info.value)
    assert not marker.exists()


def test_a_length_field_claiming_gigabytes_is_refused_without_allocating(tmp_path):
    path = tmp_path / "batch"
    path.write_bytes(b"\x80\x02B" + struct.pack("<I", 2**31) + b"x" * 16)  # BINBYTES of 2 GiB, 16 bytes present
    started = time.perf_counter()
    with pytest.raises(PickleFileError, match="is truncated or not a pickle"):
        load_data_pickle(path)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: {**b, "data": b["data"].astype(np.float32)}, r"field 'data' is a float32 array, not a uint8 array"),
        (lambda b: {**b, "data": b["data"][:, :100]}, r"field 'data' has shape \(2, 100\), not \(2, 3072\)"),
        (lambda b: {**b, "labels": [0, 10]}, r"field 'labels' has labels outside 0..9"),
        (lambda b: {**b, "labels": "01"}, r"field 'labels' is not a list of integers"),
        (lambda b: {k: v for k, v in b.items() if k != "data"}, r"field 'data' is missing"),
        (lambda b: [b], r"holds a list, not a dict"),
    ],
)
def test_wrong_dtype_shape_or_labels_name_the_file_and_the_field(tmp_path, change, message):
    directory = write_official_cifar10(tmp_path)
    batch = load_data_pickle(directory / "data_batch_2")
    (directory / "data_batch_2").write_bytes(pickle.dumps(change(batch), protocol=2))
    with pytest.raises(DataFileError, match=rf"data_batch_2.*{message}"):
        get_dataset("cifar10", tmp_path, "train")


# -- COCO annotations -------------------------------------------------------------------------------------------------


def _coco(root):
    directory = root / "coco"
    for split in ("train2017", "val2017"):
        (directory / split).mkdir(parents=True)
    content = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 20], "area": 200, "iscrowd": 0}],
        "categories": [{"id": 3, "name": "car"}],
    }
    (directory / "annotations").mkdir()
    return directory / "annotations" / "instances_val2017.json", content


_RECORD = r"(top level|annotations\[0\] \(id 7\)|images\[0\]( \(id 1\))?)"
_COCO_CASES = {
    "negative box": (["annotations", 0, "bbox"], [1, 2, -5, 20], r"field 'bbox' .*negative"),
    "box out of the image": (["annotations", 0, "bbox"], [60, 2, 10, 20], r"field 'bbox' .*outside the 64x48 image 1"),
    "box of strings": (["annotations", 0, "bbox"], ["1", 2, 3, 4], r"field 'bbox' .*not four finite numbers"),
    "non-finite box": (["annotations", 0, "bbox"], [1, 2, float("inf"), 4], r"field 'bbox' .*not four finite"),
    "unknown category": (["annotations", 0, "category_id"], 99, r"field 'category_id' is 99, not the id of a category"),
    "unknown image": (["annotations", 0, "image_id"], 5, r"field 'image_id' is 5, not the id of an image"),
    "image id of the wrong type": (["images", 0, "id"], "1", r"field 'id' is '1', not an integer"),
    "zero width": (["images", 0, "width"], 0, r"field 'width' is 0, not a positive number"),
    "path out of the folder": (["images", 0, "file_name"], "../../etc/passwd", r"field 'file_name' .*not a relative"),
    "annotations not a list": (["annotations"], {"a": 1}, r"field 'annotations' is a dict, not a list"),
    "crowd flag": (["annotations", 0, "iscrowd"], 2, r"field 'iscrowd' is 2, not 0 or 1"),
}


@pytest.mark.parametrize("case", list(_COCO_CASES))
def test_coco_annotation_errors_name_the_file_the_record_and_the_field(tmp_path, case):
    path, content = _coco(tmp_path)
    keys, value, message = _COCO_CASES[case]
    target = content
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    path.write_text(json.dumps(content))
    with pytest.raises(DataFileError, match=rf"instances_val2017.json: {_RECORD}: {message}"):
        get_dataset("coco", tmp_path, "val")


def test_coco_errors_reach_the_command_line_as_one_line_and_exit_1(tmp_path):
    path, content = _coco(tmp_path)
    content["annotations"][0]["bbox"] = [1, 2, -5, 20]
    path.write_text(json.dumps(content))
    (path.parent / "instances_train2017.json").write_text(json.dumps(content))
    result = runner.invoke(app, ["prepare", "coco", "--data-root", str(tmp_path)])
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "instances_train2017.json: annotations[0] (id 7): field 'bbox'" in result.stderr


# -- WIDER FACE annotations -------------------------------------------------------------------------------------------


def _wider(root, lines: list[str]):
    directory = root / "widerface"
    (directory / "WIDER_train" / "images").mkdir(parents=True)
    (directory / "wider_face_split").mkdir()
    path = directory / "wider_face_split" / "wider_face_train_bbx_gt.txt"
    path.write_text("\n".join(lines) + "\n")
    return directory


_VALID = ["0--Parade/a.jpg", "2", "1 2 10 12 0 0 0 0 0 0 ", "5 5 4 4 2 1 1 1 2 1 ", "1--Handshaking/b.jpg", "0"]
_VALID += ["0 0 0 0 0 0 0 0 0 0 "]


@pytest.mark.parametrize(
    ("line", "value", "message"),
    [
        (2, "-1 2 10 12 0 0 0 0 0 0", r":3: field 'x' of a face of 0--Parade/a.jpg is -1, not in 0..\d+"),
        (3, "5 5 4 4 3 0 0 0 0 0", r":4: field 'blur' of a face of 0--Parade/a.jpg is 3, not in 0..2"),
        (3, "5 5 inf 4 0 0 0 0 0 0", r":4: non-numeric box"),
        (1, "-2", r":2: face count -2 of 0--Parade/a.jpg is negative"),
        (0, "../../secret.jpg", r":1: image path '../../secret.jpg' leaves the image folder"),
        (1, "3", r"announces 3 faces but the file ends|expected 'x y w h"),
    ],
)
def test_wider_annotation_errors_name_the_file_the_line_and_the_field(tmp_path, line, value, message):
    lines = list(_VALID)
    lines[line] = value
    _wider(tmp_path, lines)
    with pytest.raises(DataFileError, match=rf"wider_face_train_bbx_gt.txt{message}"):
        get_dataset("widerface", tmp_path, "train")


def test_a_wider_face_outside_its_image_is_an_error_when_the_image_is_read(tmp_path):
    from PIL import Image

    directory = _wider(tmp_path, ["0--Parade/a.jpg", "1", "70 2 10 12 0 0 0 0 0 0 "])
    (directory / "WIDER_train" / "images" / "0--Parade").mkdir()
    Image.new("RGB", (64, 48)).save(directory / "WIDER_train" / "images" / "0--Parade" / "a.jpg")
    dataset = get_dataset("widerface", tmp_path, "train")
    with pytest.raises(
        DataFileError, match=r"bbx_gt.txt:1: face 1 of 0--Parade/a.jpg: .* 70 2 10 12, outside the 64x48"
    ):
        dataset[0]


# -- other readers ----------------------------------------------------------------------------------------------------


def test_vww_annotations_of_the_wrong_type_are_one_clear_error(tmp_path):
    directory = tmp_path / "vww"
    (directory / "all2014").mkdir(parents=True)
    (directory / "annotations").mkdir()
    bad = {"images": [{"id": "x1", "file_name": "a.jpg"}], "annotations": [{"image_id": "x1", "category_id": 1}]}
    (directory / "annotations" / "instances_train.json").write_text(json.dumps(bad))
    with pytest.raises(DataFileError, match=r"instances_train.json is truncated or not a VWW annotation file"):
        get_dataset("vww", tmp_path, "train")


def test_a_decompression_bomb_is_refused(tmp_path):
    from PIL import Image

    from repro.data.base import load_rgb

    path = tmp_path / "bomb.png"
    buffer = io.BytesIO()
    Image.new("1", (30000, 30000)).save(buffer, format="PNG")  # a few kB that decode to 900 megapixels
    path.write_bytes(buffer.getvalue())
    with pytest.raises(DataFileError, match=r"cannot read image .*bomb.png: .*refusing it"):
        load_rgb(path)


def test_generated_set_metadata_that_is_not_ours_means_regenerate(tmp_path):
    from repro.data import prepare
    from repro.data.generated import read_meta

    target = prepare("shapes", tmp_path, n_train=10, n_test=10, image_size=24)
    for junk in (b"\x00\xff", b"[1, 2]", b'{"name": "other"}', b"{"):
        (target / "meta.json").write_bytes(junk)
        assert read_meta(target) is None
    assert prepare("shapes", tmp_path, n_train=10, n_test=10, image_size=24) == target
    assert read_meta(target)["n_train"] == 10


def test_truncated_or_missing_dataset_files_are_data_or_usage_errors(tmp_path):
    with pytest.raises(DatasetError) as missing:
        get_dataset("cifar10", tmp_path, "train")
    assert missing.value.exit_code == 2 and not isinstance(missing.value, DataFileError)
    directory = write_official_cifar10(tmp_path)
    (directory / "test_batch").write_bytes((directory / "test_batch").read_bytes()[:-10])
    with pytest.raises(DataFileError, match=r"test_batch is truncated or not a pickle") as bad:
        get_dataset("cifar10", tmp_path, "test")
    assert bad.value.exit_code == 1


def test_wider_eval_files_that_are_not_mat_files_name_the_file(tmp_path):
    from repro.data.widerface import load_eval_sets

    for name in ("easy", "medium", "hard"):
        (tmp_path / f"wider_{name}_val.mat").write_bytes(b"\x00" * 200)
    with pytest.raises(DataFileError, match=r"wider_easy_val.mat is truncated or not a WIDER FACE eval file"):
        load_eval_sets(tmp_path)
