"""A generated classification set whose label is the spatial relation of two distant, finely different parts.

Each RGB image holds two small glyphs of random bright colours over a noisy background with clutter: a *plus* and a
*ring* (a square outline) of the same size. The class is the compass direction from the plus to the ring: E, NE, N,
NW, W, SW, S, SE (8 classes, the angle within ±15° of the direction, the glyphs 0.4-0.75 image sides apart). The two
glyphs differ only in which of their pixels are lit, so a pool that blurs them into two equal blobs leaves the
direction ambiguous up to its sign (at best 50 % accuracy); the label needs both the fine detail and the relation of
parts half an image apart. Images are generated in memory, deterministic: image ``i`` of split ``s`` depends only on
``(seed, s, i)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from repro.data.errors import DatasetError
from repro.data.generate_shapes import bright_colour, noisy_background
from repro.data.generated import require_positive, resolve_options

NAME = "compass"
CLASSES: tuple[str, ...] = ("E", "NE", "N", "NW", "W", "SW", "S", "SE")
SPLITS = ("train", "test")
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "n": 1000,
    "image_size": 16,
    "glyph": 3,  # glyph side in pixels (odd)
    "clutter": 4,  # distractor strokes and dots per image
    "jitter": 15.0,  # degrees around the class direction
    "min_distance": 0.4,  # glyph centres apart, as a fraction of the image side
    "max_distance": 0.75,
}

Colour = tuple[int, int, int]


def draw_glyph(draw: ImageDraw.ImageDraw, kind: str, x0: int, y0: int, side: int, colour: Colour) -> None:
    """A ``plus`` (the middle row and column) or a ``ring`` (the border) in the ``side x side`` box at (x0, y0)."""
    x1, y1, mid = x0 + side - 1, y0 + side - 1, side // 2
    if kind == "plus":
        draw.line((x0, y0 + mid, x1, y0 + mid), fill=colour)
        draw.line((x0 + mid, y0, x0 + mid, y1), fill=colour)
    elif kind == "ring":
        draw.rectangle((x0, y0, x1, y1), outline=colour)
    else:
        raise ValueError(f"unknown glyph {kind!r}; valid: plus, ring")


def draw_strokes(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, count: int) -> None:
    """``count`` distractors: single dots and 2-4 px strokes of random colours (never a plus or a ring)."""
    for _ in range(count):
        colour = tuple(int(v) for v in rng.integers(60, 256, size=3))
        x, y = (int(v) for v in rng.integers(0, size, size=2))
        if rng.random() < 0.5:
            draw.point((x, y), fill=colour)
        else:
            length = int(rng.integers(1, 4))
            dx, dy = ((length, 0), (0, length), (length, length), (length, -length))[int(rng.integers(4))]
            draw.line((x, y, x + dx, y + dy), fill=colour)


def glyph_centres(rng: np.random.Generator, label: int, options: Mapping[str, Any]) -> tuple[tuple[float, float], ...]:
    """Centres of the plus and the ring: the ring lies in direction ``CLASSES[label]`` from the plus."""
    size, half = options["image_size"], options["glyph"] / 2
    angle = math.radians(45.0 * label + rng.uniform(-options["jitter"], options["jitter"]))
    for _ in range(100):
        distance = rng.uniform(options["min_distance"], options["max_distance"]) * size
        dx, dy = distance * math.cos(angle), -distance * math.sin(angle)  # image y points down
        lo_x, hi_x = half + max(0.0, -dx), size - half - max(0.0, dx)
        lo_y, hi_y = half + max(0.0, -dy), size - half - max(0.0, dy)
        if lo_x <= hi_x and lo_y <= hi_y:
            x, y = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
            return (x, y), (x + dx, y + dy)
    raise DatasetError(f"{NAME}: the glyphs do not fit {options['max_distance']} image sides apart; lower it")


def render(rng: np.random.Generator, label: int, options: Mapping[str, Any]) -> Image.Image:
    size, side = options["image_size"], options["glyph"]
    image = noisy_background(rng, size, size)
    draw = ImageDraw.Draw(image)
    draw_strokes(draw, rng, size, options["clutter"])
    for kind, (cx, cy) in zip(("plus", "ring"), glyph_centres(rng, label, options)):
        x0 = min(max(0, round(cx - side / 2)), size - side)
        y0 = min(max(0, round(cy - side / 2)), size - side)
        draw_glyph(draw, kind, x0, y0, side, bright_colour(rng))
    return image


def make_compass(split: str = "train", **opts: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(images (n, S, S, 3) uint8, labels (n,) int64, options)`` of one split; classes cycle through
    :data:`CLASSES` (balanced)."""
    if split not in SPLITS:
        raise DatasetError(f"{NAME}: unknown split {split!r}; valid: {', '.join(SPLITS)}")
    options = resolve_options(NAME, DEFAULTS, opts)
    require_positive(NAME, options, "n")
    require_positive(NAME, options, "glyph", minimum=3)
    require_positive(NAME, options, "image_size", minimum=4 * options["glyph"])
    if options["glyph"] % 2 == 0:
        raise DatasetError(f"{NAME}: glyph must be odd (a plus needs a middle row), got {options['glyph']}")
    if not 0 < options["min_distance"] <= options["max_distance"] < 1:
        raise DatasetError(
            f"{NAME}: need 0 < min_distance <= max_distance < 1, got {options['min_distance']}, "
            f"{options['max_distance']}"
        )
    size = options["image_size"]
    images = np.empty((options["n"], size, size, 3), dtype=np.uint8)
    labels = np.arange(options["n"], dtype=np.int64) % len(CLASSES)
    for index in range(options["n"]):
        rng = np.random.default_rng([options["seed"], SPLITS.index(split), index])
        images[index] = np.asarray(render(rng, int(labels[index]), options))
    return images, labels, dict(options)
