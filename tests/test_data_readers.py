"""Each real-dataset reader on a miniature fixture in the real on-disk layout, written by the test itself."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from PIL import Image

from repro.data import DatasetError, get_dataset, prepare, resolve_data_root
from repro.data.coco import COCO8_CLASSES
from repro.data.imagenet import IMAGENET10_SYNSETS


def _rgb(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _save(path, array, fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


# ---------------------------------------------------------------------------------------------- data root


def test_data_root_precedence(tmp_path, monkeypatch):
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  root: from_params\n")
    monkeypatch.delenv("REPRO_DATA_ROOT", raising=False)
    assert resolve_data_root(None, params) == tmp_path / "from_params"
    monkeypatch.setenv("REPRO_DATA_ROOT", str(tmp_path / "from_env"))
    assert resolve_data_root(None, params) == tmp_path / "from_env"
    assert resolve_data_root(tmp_path / "explicit", params) == tmp_path / "explicit"
    monkeypatch.delenv("REPRO_DATA_ROOT")
    assert str(resolve_data_root(None, tmp_path / "absent.yaml")) == "data"


# ------------------------------------------------------------------------------------------------- STL10


def _write_stl10(root, counts=(("train", 4), ("test", 3))):
    directory = root / "stl10" / "stl10_binary"
    directory.mkdir(parents=True)
    images = {}
    for split, n in counts:
        imgs = np.stack([_rgb(k + 10 * len(split), 96, 96) for k in range(n)])
        imgs.transpose(0, 3, 2, 1).tofile(directory / f"{split}_X.bin")  # channel-major, column-major
        np.arange(1, n + 1, dtype=np.uint8).tofile(directory / f"{split}_y.bin")
        images[split] = imgs
    return directory, images


def test_stl10_reads_torchvision_binary_layout(tmp_path):
    _, images = _write_stl10(tmp_path)
    for split in ("train", "test"):
        ds = get_dataset("stl10", tmp_path, split)
        assert len(ds) == len(images[split])
        image, label = ds[1]
        np.testing.assert_array_equal(np.asarray(image), images[split][1])
        assert label == 1  # stored 1-based
    assert get_dataset("stl10", tmp_path, "val").labels.tolist() == [0, 1, 2]  # val -> test


def test_stl10_truncated_file_fails_with_its_name(tmp_path):
    directory, _ = _write_stl10(tmp_path)
    data = (directory / "train_X.bin").read_bytes()
    (directory / "train_X.bin").write_bytes(data[:-100])
    with pytest.raises(DatasetError, match=r"train_X.bin is truncated"):
        get_dataset("stl10", tmp_path, "train")
    (directory / "train_X.bin").write_bytes(data[: 96 * 96 * 3 * 2])
    with pytest.raises(DatasetError, match=r"2 images but train_y.bin 4 labels"):
        prepare("stl10", tmp_path)


# ------------------------------------------------------------------------------------------------- CIFAR


def _write_cifar(root, name="cifar10"):
    if name == "cifar10":
        directory = root / "cifar10" / "cifar-10-batches-py"
        files = {f"data_batch_{i}": 2 for i in range(1, 6)} | {"test_batch": 3}
        key, meta_name, meta = "labels", "batches.meta", {"label_names": [f"c{i}" for i in range(10)]}
    else:
        directory = root / "cifar100" / "cifar-100-python"
        files = {"train": 4, "test": 3}
        key, meta_name, meta = "fine_labels", "meta", {"fine_label_names": [f"c{i}" for i in range(100)]}
    directory.mkdir(parents=True)
    first = None
    for k, (file_name, n) in enumerate(files.items()):
        images = np.stack([_rgb(100 * k + i, 32, 32) for i in range(n)])
        first = images[0] if first is None else first
        entry = {"data": images.transpose(0, 3, 1, 2).reshape(n, -1), key: [(k + i) % 10 for i in range(n)]}
        (directory / file_name).write_bytes(pickle.dumps(entry))
    (directory / meta_name).write_bytes(pickle.dumps(meta))
    return directory, first


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_reads_pickled_batches(tmp_path, name):
    directory, first = _write_cifar(tmp_path, name)
    train = get_dataset(name, tmp_path, "train")
    assert len(train) == (10 if name == "cifar10" else 4)
    image, label = train[0]
    np.testing.assert_array_equal(np.asarray(image), first)
    assert label == 0 and len(train.classes) == (10 if name == "cifar10" else 100)
    assert len(get_dataset(name, tmp_path, "test")) == 3
    assert prepare(name, tmp_path) == directory


def test_cifar_truncated_pickle_fails(tmp_path):
    directory, _ = _write_cifar(tmp_path)
    path = directory / "data_batch_3"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(DatasetError, match=r"data_batch_3 is truncated or not a pickle"):
        get_dataset("cifar10", tmp_path, "train")


# ------------------------------------------------------------------------------------ ImageNet, ImageNet-10


def _write_image_folder(split_dir, classes, per_class=2, size=(40, 30)):
    for c, wnid in enumerate(classes):
        for i in range(per_class):
            _save(split_dir / wnid / f"{wnid}_{i}.JPEG", _rgb(c * 10 + i, size[1], size[0]), "JPEG")


def test_imagenet_image_folder(tmp_path):
    classes = ["n01440764", "n01443537", "n01484850"]
    for split in ("train", "val"):
        _write_image_folder(tmp_path / "imagenet" / split, classes)
    train = get_dataset("imagenet", tmp_path, "train")
    assert train.classes == classes and len(train) == 6
    image, label = train[5]
    assert image.size == (40, 30) and label == 2
    assert len(get_dataset("imagenet", tmp_path, "test")) == 6  # test -> val


def test_imagenet_unsorted_val_is_a_wrong_layout(tmp_path):
    _write_image_folder(tmp_path / "imagenet" / "train", ["n01440764"])
    _save(tmp_path / "imagenet" / "val" / "ILSVRC2012_val_00000001.JPEG", _rgb(0, 8, 8), "JPEG")
    with pytest.raises(DatasetError, match=r"loose images .* instead of class folders"):
        get_dataset("imagenet", tmp_path, "val")


def test_imagenet10_selects_the_ten_synsets(tmp_path):
    synsets = [*IMAGENET10_SYNSETS, "n09999999"]
    for split in ("train", "val"):
        _write_image_folder(tmp_path / "imagenet" / split, synsets, per_class=1, size=(12, 12))
    ds = get_dataset("imagenet10", tmp_path, "val")
    assert ds.classes == sorted(IMAGENET10_SYNSETS) and len(ds) == 10
    (tmp_path / "imagenet10" / "train" / IMAGENET10_SYNSETS[0]).mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"lacks 19 synset folder"):
        get_dataset("imagenet10", tmp_path, "train")


# -------------------------------------------------------------------------------------------------- COCO


def _write_coco(root):
    directory = root / "coco"
    names = {
        1: "person",
        2: "bicycle",
        3: "car",
        4: "motorcycle",
        6: "bus",
        7: "train",
        8: "truck",
        10: "traffic light",
    }
    categories = [{"id": k, "name": v} for k, v in names.items()] + [{"id": 18, "name": "dog"}]
    images, annotations = [], []
    boxes = {
        1: [(1, [2, 3, 10, 20], 0), (3, [5, 5, 8, 8], 0), (1, [0, 0, 30, 30], 1), (1, [4, 4, 0.5, 9], 0)],
        2: [(18, [1, 1, 9, 9], 0)],  # only a dog: absent from coco8 training
        3: [(3, [50, 50, 5, 5], 0)],  # outside the image: an error, or dropped with out_of_image="drop"
    }
    for image_id in (1, 2, 3):
        for split in ("train2017", "val2017"):
            _save(directory / split / f"{image_id:012d}.jpg", _rgb(image_id, 40, 48), "JPEG")
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": 48, "height": 40})
        for cat, bbox, crowd in boxes[image_id]:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat, "bbox": bbox,
                                "area": bbox[2] * bbox[3], "iscrowd": crowd})  # fmt: skip
    (directory / "annotations").mkdir()
    content = json.dumps({"images": images, "annotations": annotations, "categories": categories})
    for split in ("train", "val"):
        (directory / "annotations" / f"instances_{split}2017.json").write_text(content)
    return directory


def test_coco_all_classes_and_8_class_subset(tmp_path):
    _write_coco(tmp_path)
    with pytest.raises(DatasetError, match=r"annotations\[5\] \(id 6\): field 'bbox' .* outside the 48x40 image 3"):
        get_dataset("coco", tmp_path, "val")
    full = get_dataset("coco", tmp_path, "val", out_of_image="drop")
    assert len(full.classes) == 9 and full.classes[-1] == "dog" and len(full) == 3
    image, target = full[0]
    assert image.size == (48, 40)
    assert target["boxes"].tolist() == [[2, 3, 12, 23], [5, 5, 13, 13]]  # xyxy; crowd and w < 1 boxes left out
    assert target["labels"].tolist() == [0, 2]  # person, car
    assert target["boxes_ignore"].tolist() == [[0, 0, 30, 30]]
    assert full.target(3)["boxes"].shape == (0, 4)
    eight = get_dataset("coco8", tmp_path, "train", out_of_image="drop")
    assert eight.classes == list(COCO8_CLASSES) and eight.cat_ids == [1, 2, 3, 4, 6, 7, 8, 10]
    # Training drops images without an annotation of the chosen classes (MMDetection's filter_empty_gt): image 2.
    assert eight.image_ids == [1, 3]
    assert get_dataset("coco8", tmp_path, "val", out_of_image="drop").image_ids == [1, 2, 3]
    first = get_dataset("coco8", tmp_path, "val", label_offset=1, out_of_image="drop")[0]
    assert first[1]["labels"].tolist() == [1, 3]


def test_coco_truncated_json_fails(tmp_path):
    directory = _write_coco(tmp_path)
    path = directory / "annotations" / "instances_val2017.json"
    path.write_text(path.read_text()[:40])
    with pytest.raises(DatasetError, match=r"instances_val2017.json is truncated or not JSON"):
        get_dataset("coco", tmp_path, "val")


# ---------------------------------------------------------------------------------------------- WIDER FACE


def _cell(items):
    cell = np.empty((len(items), 1), dtype=object)
    for k, item in enumerate(items):
        cell[k, 0] = item
    return cell


def _write_widerface(root):
    from scipy.io import savemat

    directory = root / "widerface"
    images = {
        "0--Parade/0_Parade_a_1.jpg": [[10, 12, 20, 24, 0, 0, 0, 0, 0, 0], [40, 5, 6, 8, 2, 0, 0, 0, 1, 0]],
        "0--Parade/0_Parade_a_2.jpg": [],
        "1--Handshaking/1_Handshaking_b_1.jpg": [[1, 2, 30, 30, 0, 0, 0, 0, 0, 0]],
    }
    lines = []
    for path, faces in images.items():
        for split in ("train", "val"):
            _save(directory / f"WIDER_{split}" / "images" / path, _rgb(len(path), 50, 60), "JPEG")
        lines += [path, str(len(faces))] + [" ".join(map(str, f)) + " " for f in faces or [[0] * 10]]
    (directory / "wider_face_split").mkdir()
    for split in ("train", "val"):
        (directory / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt").write_text("\n".join(lines) + "\n")
    # The eval tool's cell arrays: event_list{i}, file_list{i}{j}, face_bbx_list{i}{j}, gt_list{i}{j} (1-based).
    events = ["0--Parade", "1--Handshaking"]
    files = [["0_Parade_a_1", "0_Parade_a_2"], ["1_Handshaking_b_1"]]
    keep = {"easy": [[[1], []], [[1]]], "medium": [[[1], []], [[1]]], "hard": [[[1, 2], []], [[1]]]}
    event_list = _cell([np.array([e]) for e in events])
    file_list = _cell([_cell([np.array([f]) for f in fs]) for fs in files])
    gt_dir = directory / "eval_tools" / "ground_truth"
    gt_dir.mkdir(parents=True)
    for name, sets in keep.items():
        gt_list = _cell([_cell([np.array(k, dtype=float).reshape(-1, 1) for k in ks]) for ks in sets])
        savemat(
            gt_dir / f"wider_{name}_val.mat", {"event_list": event_list, "file_list": file_list, "gt_list": gt_list}
        )
    return directory


def test_widerface_annotations_and_eval_sets(tmp_path):
    _write_widerface(tmp_path)
    train = get_dataset("widerface", tmp_path, "train")
    assert len(train) == 3 and "keep" not in train.target(0)
    val = get_dataset("widerface", tmp_path, "val")
    image, target = val[0]
    assert image.size == (60, 50)
    assert target["boxes"].tolist() == [[10, 12, 30, 36], [40, 5, 46, 13]]
    assert target["blur"].tolist() == [0, 2] and target["occlusion"].tolist() == [0, 1]
    assert target["keep"]["easy"].tolist() == [True, False]
    assert target["keep"]["hard"].tolist() == [True, True]
    assert val.target(1)["boxes"].shape == (0, 4)  # "0" faces, followed by a line of zeros
    assert val.target(2)["keep"]["medium"].tolist() == [True]


def test_widerface_truncated_annotations_and_missing_eval_files(tmp_path):
    directory = _write_widerface(tmp_path)
    (directory / "eval_tools" / "ground_truth" / "wider_hard_val.mat").unlink()
    with pytest.raises(DatasetError, match=r"missing file .*wider_hard_val.mat"):
        get_dataset("widerface", tmp_path, "val")
    path = directory / "wider_face_split" / "wider_face_train_bbx_gt.txt"
    path.write_text("\n".join(path.read_text().splitlines()[:3]))
    with pytest.raises(DatasetError, match=r"announces 2 faces but the file ends"):
        get_dataset("widerface", tmp_path, "train")


# ------------------------------------------------------------------------------------------ Visual Wake Words


def test_vww_reads_pyvww_annotations(tmp_path):
    from repro.data.vww import build_vww_annotations

    directory = tmp_path / "vww"
    coco = {
        "images": [
            {"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg", "width": 100, "height": 100} for i in (3, 1, 2)
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100.0, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 2, 2], "area": 4.0, "iscrowd": 0},  # < 0.5 %
            {"id": 3, "image_id": 3, "category_id": 18, "bbox": [0, 0, 50, 50], "area": 2500.0, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
    }
    (directory / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (directory / "annotations" / f"instances_{split}.json").write_text(json.dumps(build_vww_annotations(coco)))
    for image in coco["images"]:
        _save(directory / "all2014" / image["file_name"], _rgb(image["id"], 20, 20), "JPEG")
    ds = get_dataset("vww", tmp_path, "test")
    assert [label for _, label in ds.samples] == [1, 0, 0]  # image ids 1, 2, 3
    assert ds[0][0].size == (20, 20) and ds.classes == ["not-person", "person"]
    (directory / "annotations" / "instances_train.json").write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match=r"not a VWW annotation file"):
        get_dataset("vww", tmp_path, "train")


# -------------------------------------------------------------------------------------------------- digits


def test_digits_is_the_real_sklearn_set_upscaled():
    train, test = get_dataset("digits", None, "train"), get_dataset("digits", None, "test", image_size=16)
    assert (len(train), len(test)) == (1437, 360)
    image, label = train[0]
    assert image.size == (32, 32) and image.mode == "RGB" and 0 <= label <= 9
    assert test[0][0].size == (16, 16)
