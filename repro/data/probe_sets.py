"""The synthetic probe sets of RNNPool App. C.1: 8-bit monochrome images with background noise.

* ``lines`` (set 1, multi-class): one line segment of random length and position; 9 classes, the orientation
  0°, 20°, ..., 160° (counter-clockwise from the x axis, image y pointing down).
* ``multi_lines`` (set 2, multi-label): 1 to ``max_items`` segments of *different* orientations; 9 labels.
* ``polygons`` (set 3, multi-label): 1 to ``max_items`` *different* shapes out of circle, triangle, square,
  pentagon, hexagon, drawn as upright outlines that do not touch each other; 5 labels.

The paper gives neither sizes nor noise level nor segment lengths; the choices are the ``DEFAULTS`` below, and every
experiment records the options it used. Images are ``(N, H, W)`` uint8, generated in memory (a few thousand images
take well under a second) and deterministic: image ``i`` of split ``s`` depends only on ``(seed, s, i)``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from repro.data.errors import DatasetError
from repro.data.generated import require_positive, resolve_options

ANGLES: tuple[int, ...] = tuple(range(0, 180, 20))
LINE_CLASSES: tuple[str, ...] = tuple(f"{a}deg" for a in ANGLES)
POLYGON_CLASSES: tuple[str, ...] = ("circle", "triangle", "square", "pentagon", "hexagon")
POLYGON_SIDES = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}
SPLITS = ("train", "test")
SETS: dict[str, tuple[str, ...]] = {"lines": LINE_CLASSES, "multi_lines": LINE_CLASSES, "polygons": POLYGON_CLASSES}
MULTILABEL = {"lines": False, "multi_lines": True, "polygons": True}

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "n": 1000,
    "image_size": 32,
    "noise": 24.0,  # std of the Gaussian background noise, in grey levels
    "background": 40.0,  # mean background grey level
    "min_length": 0.4,  # segment length, as a fraction of the image side
    "max_length": 0.9,
    "max_items": 3,  # segments (multi_lines) or shapes (polygons) per image, at most
    "min_radius": 0.12,  # polygon circumradius, as a fraction of the image side
    "max_radius": 0.2,
}


@dataclass(frozen=True)
class ProbeSet:
    """One split of a probe set: ``images`` (N, H, W) uint8; ``targets`` (N,) int64 classes, or (N, K) uint8
    multi-hot labels when ``multilabel``."""

    name: str
    split: str
    images: np.ndarray
    targets: np.ndarray
    classes: tuple[str, ...]
    multilabel: bool
    options: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def digest(self) -> str:
        """SHA-256 of the images and targets: equal digests mean the same data."""
        sha = hashlib.sha256(repr((self.images.shape, self.targets.shape)).encode())
        sha.update(np.ascontiguousarray(self.images).tobytes())
        sha.update(np.ascontiguousarray(self.targets).tobytes())
        return sha.hexdigest()


def _background(rng: np.random.Generator, size: int, options: Mapping[str, Any]) -> Image.Image:
    noise = rng.normal(options["background"], options["noise"], size=(size, size))
    return Image.fromarray(np.clip(np.rint(noise), 0, 255).astype(np.uint8), mode="L")


def _stroke_width(size: int) -> int:
    return max(1, size // 32)


def _ink(rng: np.random.Generator) -> int:
    return int(rng.integers(192, 256))


def segment_endpoints(
    rng: np.random.Generator, angle: float, size: int, min_length: float, max_length: float
) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` of a segment at ``angle`` degrees, of random length and position, inside the image."""
    length = rng.uniform(min_length, max_length) * (size - 3)
    dx = 0.5 * length * math.cos(math.radians(angle))
    dy = -0.5 * length * math.sin(math.radians(angle))  # image y points down
    cx = rng.uniform(1 + abs(dx), size - 2 - abs(dx))
    cy = rng.uniform(1 + abs(dy), size - 2 - abs(dy))
    return cx - dx, cy - dy, cx + dx, cy + dy


def draw_segment(draw: ImageDraw.ImageDraw, endpoints: tuple[float, float, float, float], ink: int, width: int) -> None:
    x0, y0, x1, y1 = endpoints
    draw.line((round(x0), round(y0), round(x1), round(y1)), fill=ink, width=width)


def polygon_vertices(kind: str, cx: float, cy: float, radius: float) -> list[tuple[float, float]]:
    """Vertices of the upright regular polygon ``kind`` (a vertex on top; the square stands on a side)."""
    sides = POLYGON_SIDES[kind]
    offset = -math.pi / 2 + (math.pi / 4 + math.pi / 2 if sides == 4 else 0.0)
    return [
        (
            cx + radius * math.cos(offset + 2 * math.pi * k / sides),
            cy + radius * math.sin(offset + 2 * math.pi * k / sides),
        )
        for k in range(sides)
    ]


def draw_polygon(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, radius: float, ink: int, width: int):
    if kind == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=ink, width=width)
    else:
        points = [(round(x), round(y)) for x, y in polygon_vertices(kind, cx, cy, radius)]
        draw.line([*points, points[0]], fill=ink, width=width, joint="curve")


def place_discs(
    rng: np.random.Generator, count: int, size: int, min_radius: float, max_radius: float, tries: int = 200
) -> list[tuple[float, float, float]]:
    """``count`` discs ``(cx, cy, r)`` inside the image, at least 2 px apart (rejection sampling)."""
    for _ in range(tries):
        discs: list[tuple[float, float, float]] = []
        for _ in range(count):
            r = rng.uniform(min_radius, max_radius) * size
            cx, cy = rng.uniform(r + 1, size - 2 - r, size=2)
            if all(math.hypot(cx - x, cy - y) >= r + q + 2 for x, y, q in discs):
                discs.append((cx, cy, r))
        if len(discs) == count:
            return discs
    raise DatasetError(
        f"polygons: cannot place {count} shapes of radius {min_radius}-{max_radius} x {size} px without overlap; "
        "lower max_items or max_radius"
    )


@dataclass(frozen=True)
class Item:
    """One drawn segment or shape: its class index, its geometry (``(x0, y0, x1, y1)`` for a segment, ``(cx, cy,
    r)`` for a shape) and its grey level."""

    label: int
    geometry: tuple[float, ...]
    ink: int


def draw_item(draw: ImageDraw.ImageDraw, name: str, item: Item, size: int) -> None:
    """Draw ``item`` of set ``name`` as :func:`render` does (stroke width ``max(1, size // 32)``)."""
    width = _stroke_width(size)
    if name == "polygons":
        draw_polygon(draw, SETS[name][item.label], *item.geometry, item.ink, width)
    else:
        draw_segment(draw, item.geometry, item.ink, width)


def render(name: str, rng: np.random.Generator, options: Mapping[str, Any]) -> tuple[Image.Image, list[Item]]:
    """One image of set ``name`` and what was drawn on it (one item for ``lines``, classes all different)."""
    size = options["image_size"]
    image = _background(rng, size, options)
    draw = ImageDraw.Draw(image)
    classes = SETS[name]
    count = 1 if name == "lines" else int(rng.integers(1, options["max_items"] + 1))
    present = sorted(int(c) for c in rng.choice(len(classes), size=count, replace=False))
    if name == "polygons":
        discs = place_discs(rng, count, size, options["min_radius"], options["max_radius"])
        items = [Item(label, disc, _ink(rng)) for label, disc in zip(present, discs)]
    else:
        items = [
            Item(
                label,
                segment_endpoints(rng, ANGLES[label], size, options["min_length"], options["max_length"]),
                _ink(rng),
            )
            for label in present
        ]
    for item in items:
        draw_item(draw, name, item, size)
    return image, items


def _check(name: str, options: Mapping[str, Any]) -> None:
    require_positive(name, options, "n", "max_items")
    require_positive(name, options, "image_size", minimum=16)
    if not 0 < options["min_length"] <= options["max_length"] <= 1:
        raise DatasetError(
            f"{name}: need 0 < min_length <= max_length <= 1, got {options['min_length']}, {options['max_length']}"
        )
    if not 0 < options["min_radius"] <= options["max_radius"] < 0.5:
        raise DatasetError(
            f"{name}: need 0 < min_radius <= max_radius < 0.5, got {options['min_radius']}, {options['max_radius']}"
        )
    if options["max_items"] > len(SETS[name]):
        raise DatasetError(f"{name}: max_items must be <= {len(SETS[name])}, got {options['max_items']}")


def make_probe_set(name: str, split: str = "train", **opts: Any) -> ProbeSet:
    """Split ``split`` of probe set ``name`` (``lines``, ``multi_lines``, ``polygons``) with ``DEFAULTS`` updated by
    ``opts`` (``n`` images)."""
    if name not in SETS:
        raise DatasetError(f"unknown probe set {name!r}; valid: {', '.join(SETS)}")
    if split not in SPLITS:
        raise DatasetError(f"{name}: unknown split {split!r}; valid: {', '.join(SPLITS)}")
    options = resolve_options(name, DEFAULTS, opts)
    _check(name, options)
    size, classes = options["image_size"], SETS[name]
    images = np.empty((options["n"], size, size), dtype=np.uint8)
    multilabel = MULTILABEL[name]
    targets = np.zeros((options["n"], len(classes)), dtype=np.uint8) if multilabel else np.empty(options["n"], np.int64)
    for index in range(options["n"]):
        rng = np.random.default_rng([options["seed"], SPLITS.index(split), index])
        image, items = render(name, rng, options)
        images[index] = np.asarray(image)
        if multilabel:
            targets[index, [item.label for item in items]] = 1
        else:
            targets[index] = items[0].label
    return ProbeSet(name, split, images, targets, classes, multilabel, dict(options))
