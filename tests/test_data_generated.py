"""Generated datasets: deterministic bytes from a seed, real on-disk formats, no-op re-runs, clear option errors."""

from __future__ import annotations

import hashlib

import pytest

from repro.data import DatasetError, get_dataset, prepare
from repro.data.generate_shapes import CLASSES

SMALL = {
    "shapes": {"n_train": 20, "n_test": 10, "image_size": 32},
    "shapes_det": {"n_train": 6, "n_val": 4, "image_size": 64},
    "synth_faces": {"n_train": 6, "n_val": 4, "width": 64, "height": 48},
}


def _tree_digest(directory) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("name", sorted(SMALL))
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, name):
    first = _tree_digest(prepare(name, tmp_path / "a", seed=3, **SMALL[name]))
    again = _tree_digest(prepare(name, tmp_path / "b", seed=3, **SMALL[name]))
    other = _tree_digest(prepare(name, tmp_path / "c", seed=4, **SMALL[name]))
    assert first == again
    assert len(first) > 5
    images = [k for k in first if k.endswith((".png", ".jpg"))]
    assert images and all(first[k] != other[k] for k in images)


def test_rerun_is_a_noop_and_new_options_regenerate(tmp_path):
    path = prepare("shapes", tmp_path, **SMALL["shapes"])
    marker = path / "train" / CLASSES[0] / "000000.png"
    mtime = marker.stat().st_mtime_ns
    assert prepare("shapes", tmp_path, **SMALL["shapes"]) == path
    assert marker.stat().st_mtime_ns == mtime
    prepare("shapes", tmp_path, **{**SMALL["shapes"], "n_train": 30})
    assert len(get_dataset("shapes", tmp_path, "train")) == 30
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary directories left behind


def test_shapes_is_an_image_folder_with_balanced_classes(tmp_path):
    prepare("shapes", tmp_path, **SMALL["shapes"])
    ds = get_dataset("shapes", tmp_path, "train")
    assert ds.classes == list(CLASSES) and len(ds) == 20
    assert sorted(ds.targets) == sorted(list(range(10)) * 2)
    image, _ = ds[0]
    assert image.size == (32, 32)
    jpg = prepare("shapes", tmp_path / "jpg", format="jpg", **SMALL["shapes"])
    assert next((jpg / "test").rglob("*.jpg")).read_bytes()[:2] == b"\xff\xd8"


def test_shapes_det_is_coco_with_varied_box_scales(tmp_path):
    prepare("shapes_det", tmp_path, n_train=30, n_val=2, image_size=64)
    ds = get_dataset("shapes_det", tmp_path, "train")
    assert len(ds.classes) == 5
    sides = []
    for image_id in ds.image_ids:
        boxes = ds.target(image_id)["boxes"]
        assert len(boxes) >= 1 and (boxes[:, 2:] <= 64).all() and (boxes[:, :2] >= 0).all()
        sides += (boxes[:, 3] - boxes[:, 1]).tolist()
    assert min(sides) < 8 and max(sides) > 24  # small and large objects
    image, target = ds[0]
    assert image.size == (64, 64) and target["labels"].dtype.is_signed


def test_synth_faces_is_wider_face_with_difficulty_sets(tmp_path):
    prepare("synth_faces", tmp_path, **SMALL["synth_faces"])
    val = get_dataset("synth_faces", tmp_path, "val")
    counts = {d: 0 for d in ("easy", "medium", "hard")}
    for index in range(len(val)):
        target = val.target(index)
        heights = target["boxes"][:, 3] - target["boxes"][:, 1]
        assert target["keep"]["hard"].all()
        assert (target["keep"]["easy"] == (heights >= 0.25 * 48)).all()
        assert (target["keep"]["medium"] | ~target["keep"]["easy"]).all()  # easy is a subset of medium
        counts = {d: counts[d] + int(target["keep"][d].sum()) for d in counts}
    assert counts["hard"] >= counts["medium"] >= counts["easy"] and counts["hard"] > 0
    assert val[0][0].size == (64, 48)


def test_generated_option_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"unknown option\(s\) \['n_trian'\]; valid options"):
        prepare("shapes", tmp_path, n_trian=3)
    with pytest.raises(DatasetError, match=r"n_train must be >= 1"):
        prepare("shapes", tmp_path, n_train=0)
    with pytest.raises(DatasetError, match=r"run `repro prepare shapes_det`"):
        get_dataset("shapes_det", tmp_path, "train")
