"""The App. C.1 probe sets and the compass set: deterministic, and the labels say what is drawn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from repro.data.errors import DatasetError
from repro.data.generate_compass import CLASSES as COMPASS_CLASSES
from repro.data.generate_compass import DEFAULTS as COMPASS_DEFAULTS
from repro.data.generate_compass import glyph_centres, make_compass
from repro.data.probe_sets import (
    ANGLES,
    DEFAULTS,
    POLYGON_CLASSES,
    make_probe_set,
    polygon_vertices,
    render,
)


@pytest.mark.parametrize("name", ["lines", "multi_lines", "polygons"])
def test_same_seed_same_images_other_seed_other_images(name):
    a = make_probe_set(name, "train", n=12, image_size=32, seed=3)
    b = make_probe_set(name, "train", n=12, image_size=32, seed=3)
    c = make_probe_set(name, "train", n=12, image_size=32, seed=4)
    test = make_probe_set(name, "test", n=12, image_size=32, seed=3)
    assert a.digest() == b.digest()
    assert a.digest() != c.digest() and a.digest() != test.digest()
    assert a.images.shape == (12, 32, 32) and a.images.dtype == np.uint8
    # image i depends only on (seed, split, i): a longer split starts with the same images
    longer = make_probe_set(name, "train", n=20, image_size=32, seed=3)
    assert np.array_equal(longer.images[:12], a.images)


def _item_pixels(name: str, item, size: int) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    from repro.data.probe_sets import draw_item

    draw_item(ImageDraw.Draw(canvas), name, item, size)
    return np.asarray(canvas) > 0


def _orientation(mask: np.ndarray) -> float:
    """Orientation in degrees [0, 180) of the pixels of ``mask`` (principal axis; y up)."""
    ys, xs = np.nonzero(mask)
    coords = np.stack([xs - xs.mean(), -(ys - ys.mean())])
    _, vectors = np.linalg.eigh(coords @ coords.T)
    vx, vy = vectors[:, -1]
    return math.degrees(math.atan2(vy, vx)) % 180.0


@pytest.mark.parametrize("name, size", [("lines", 32), ("multi_lines", 32), ("multi_lines", 64)])
def test_every_segment_has_the_orientation_of_its_label(name, size):
    options = {**DEFAULTS, "image_size": size}
    for index in range(40):
        image, items = render(name, np.random.default_rng([0, 0, index]), options)
        pixels = np.asarray(image)
        assert len({item.label for item in items}) == len(items) <= options["max_items"]
        for item in items:
            mask = _item_pixels(name, item, size)
            assert (pixels[mask] >= 192).all()  # ink is 192-255; a crossing segment may have overwritten a few
            error = abs((_orientation(mask) - ANGLES[item.label] + 90) % 180 - 90)
            assert error < 7.0, (index, item, error)


def test_lines_targets_are_class_indices_and_multi_label_targets_are_multi_hot():
    lines = make_probe_set("lines", "train", n=30, image_size=32)
    assert lines.targets.dtype == np.int64 and set(lines.targets) <= set(range(9)) and not lines.multilabel
    multi = make_probe_set("multi_lines", "train", n=30, image_size=32)
    assert multi.targets.shape == (30, 9) and multi.multilabel
    assert set(multi.targets.sum(1)) <= {1, 2, 3} and multi.targets.sum(1).max() > 1
    for index in range(5):
        _, items = render("multi_lines", np.random.default_rng([0, 0, index]), DEFAULTS)
        assert sorted(np.flatnonzero(multi.targets[index])) == sorted(item.label for item in items)


def test_polygon_geometry_and_hand_checked_labels():
    # the vertex count is the number of sides, all on the circumcircle; the square stands on a side
    for kind, sides in zip(POLYGON_CLASSES[1:], (3, 4, 5, 6)):
        vertices = polygon_vertices(kind, 10.0, 10.0, 5.0)
        assert len(vertices) == sides
        assert all(math.isclose(math.hypot(x - 10, y - 10), 5.0) for x, y in vertices)
    square = polygon_vertices("square", 0.0, 0.0, 1.0)
    assert sorted({round(y, 6) for _, y in square}) == [round(-math.sqrt(0.5), 6), round(math.sqrt(0.5), 6)]
    # seed 0, train images 0-3 at 64 px, checked by eye: triangle+square+pentagon, the same, square+pentagon,
    # circle+pentagon
    polygons = make_probe_set("polygons", "train", n=4, image_size=64)
    assert polygons.targets.tolist() == [[0, 1, 1, 1, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 0], [1, 0, 0, 1, 0]]
    for index in range(20):
        image, items = render("polygons", np.random.default_rng([0, 0, index]), {**DEFAULTS, "image_size": 64})
        for item in items:  # each shape's outline is in the image, inside its own disc
            mask = _item_pixels("polygons", item, 64)
            assert (np.asarray(image)[mask] == item.ink).all()  # shapes never touch


def test_bad_options_fail_with_the_option_named():
    with pytest.raises(DatasetError, match="unknown option"):
        make_probe_set("lines", n=2, colour=3)
    with pytest.raises(DatasetError, match="max_items"):
        make_probe_set("polygons", n=2, max_items=6)
    with pytest.raises(DatasetError, match="unknown probe set"):
        make_probe_set("circles", n=2)


def test_compass_is_deterministic_balanced_and_labelled_by_direction():
    a, labels, _ = make_compass("train", n=16, seed=1)
    b, _, _ = make_compass("train", n=16, seed=1)
    c, _, _ = make_compass("test", n=16, seed=1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.shape == (16, 16, 16, 3) and labels.tolist() == list(range(8)) * 2
    options = dict(COMPASS_DEFAULTS)
    for label in range(len(COMPASS_CLASSES)):
        for index in range(10):
            (px, py), (rx, ry) = glyph_centres(np.random.default_rng([index, label]), label, options)
            angle = math.degrees(math.atan2(-(ry - py), rx - px)) % 360
            assert abs((angle - 45 * label + 180) % 360 - 180) <= options["jitter"] + 1e-6
            distance = math.hypot(rx - px, ry - py) / options["image_size"]
            assert options["min_distance"] - 1e-9 <= distance <= options["max_distance"] + 1e-9
    with pytest.raises(DatasetError, match="odd"):
        make_compass(n=2, glyph=4, image_size=32)
