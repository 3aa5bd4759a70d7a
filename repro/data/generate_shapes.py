"""A generated classification set whose label depends on non-local structure: which shape, and how a pair is arranged.

Each image holds two copies of one shape (circle, square, triangle, diamond, cross), side by side (horizontal) or
one above the other (vertical), over a noisy background with clutter (lines, dots, small shapes). The class is
``<shape>-<arrangement>``: telling the arrangement apart needs information from two distant places, so pooling
that keeps or loses spatial relations can make a difference. Written as an ImageFolder
(``<root>/shapes/{train,test}/<class>/<index>.png``), deterministic from ``seed``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from repro.data.base import ImageFileDataset, scan_image_folder
from repro.data.errors import DatasetError
from repro.data.generated import materialise, require_generated, require_positive, resolve_options
from repro.data.registry import DatasetSpec, register_dataset

NAME = "shapes"
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
ARRANGEMENTS = ("horizontal", "vertical")
CLASSES = tuple(f"{shape}-{arrangement}" for shape in SHAPES for arrangement in ARRANGEMENTS)
SPLITS = ("train", "test")
DEFAULTS = {"seed": 0, "n_train": 1000, "n_test": 200, "image_size": 64, "clutter": 6, "format": "png"}
FORMATS = {"png": ("PNG", ".png", {"compress_level": 1}), "jpg": ("JPEG", ".jpg", {"quality": 90})}

Box = tuple[int, int, int, int]


def draw_shape(draw: ImageDraw.ImageDraw, kind: str, box: Box, fill: tuple[int, int, int]) -> None:
    """Draw a filled ``kind`` that touches all four sides of the inclusive pixel box ``(x0, y0, x1, y1)``."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    if kind == "circle":
        draw.ellipse(box, fill=fill)
    elif kind == "square":
        draw.rectangle(box, fill=fill)
    elif kind == "triangle":
        draw.polygon([(x0, y1), (x1, y1), (cx, y0)], fill=fill)
    elif kind == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif kind == "cross":
        half = max(1, (x1 - x0) // 6)
        half_h = max(1, (y1 - y0) // 6)
        draw.rectangle((x0, cy - half_h, x1, cy + half_h), fill=fill)
        draw.rectangle((cx - half, y0, cx + half, y1), fill=fill)
    else:
        raise ValueError(f"unknown shape {kind!r}; valid: {', '.join(SHAPES)}")


def noisy_background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A dark random colour with a vertical gradient and pixel noise."""
    base = rng.integers(0, 90, size=3).astype(np.float32)
    gradient = np.linspace(0.0, rng.uniform(-40, 40), height, dtype=np.float32)[:, None, None]
    noise = rng.normal(0.0, 10.0, size=(height, width, 3)).astype(np.float32)
    return Image.fromarray(np.clip(base + gradient + noise, 0, 255).astype(np.uint8))


def bright_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(110, 256, size=3))


def draw_clutter(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int, count: int, max_size: float
) -> None:
    """``count`` distractors: thin lines, dots and small shapes no larger than ``max_size`` pixels."""
    for _ in range(count):
        kind = int(rng.integers(3))
        colour = tuple(int(v) for v in rng.integers(40, 256, size=3))
        if kind == 0:
            x0, x1 = (int(v) for v in rng.integers(0, width, size=2))
            y0, y1 = (int(v) for v in rng.integers(0, height, size=2))
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(1, max(2, width // 48) + 1)))
        else:
            size = int(rng.integers(2, max(3, int(max_size)) + 1))
            x0, y0 = int(rng.integers(0, max(1, width - size))), int(rng.integers(0, max(1, height - size)))
            shape = "circle" if kind == 1 else SHAPES[int(rng.integers(len(SHAPES)))]
            draw_shape(draw, shape, (x0, y0, x0 + size - 1, y0 + size - 1), colour)


def render_pair(rng: np.random.Generator, label: int, image_size: int, clutter: int) -> Image.Image:
    """One image of class ``label``: two copies of a shape in the class's arrangement, with clutter."""
    shape, arrangement = CLASSES[label].split("-")
    s = image_size
    image = noisy_background(rng, s, s)
    draw = ImageDraw.Draw(image)
    draw_clutter(draw, rng, s, s, clutter, max_size=0.08 * s)
    sizes = [max(4, round(rng.uniform(0.14, 0.24) * s)) for _ in range(2)]
    along = rng.uniform(0.4, 0.6) * s  # distance between the centres along the arrangement axis
    across = rng.uniform(-0.08, 0.08) * s  # small offset across it
    margin = max(sizes) / 2 + 1
    lo_a, hi_a = margin + along / 2, s - margin - along / 2
    lo_c, hi_c = margin + abs(across) / 2, s - margin - abs(across) / 2
    centre_a, centre_c = rng.uniform(lo_a, max(lo_a, hi_a)), rng.uniform(lo_c, max(lo_c, hi_c))
    for sign, size in zip((-1, 1), sizes):
        a, c = centre_a + sign * along / 2, centre_c + sign * across / 2
        x, y = (a, c) if arrangement == "horizontal" else (c, a)
        x0, y0 = round(x - size / 2), round(y - size / 2)
        draw_shape(draw, shape, (x0, y0, x0 + size - 1, y0 + size - 1), bright_colour(rng))
    return image


def encode(image: Image.Image, fmt: str) -> bytes:
    codec, _, kwargs = FORMATS[fmt]
    buffer = io.BytesIO()
    image.save(buffer, format=codec, **kwargs)
    return buffer.getvalue()


def generate(root: Path, **opts) -> Path:
    """Write (or keep, when already written with these options) ``<root>/shapes``; returns its directory."""
    options = resolve_options(NAME, DEFAULTS, opts)
    require_positive(NAME, options, "n_train", "n_test")
    require_positive(NAME, options, "image_size", minimum=24)
    if options["format"] not in FORMATS:
        raise DatasetError(f"{NAME}: format must be one of {sorted(FORMATS)}, got {options['format']!r}")
    _, extension, _ = FORMATS[options["format"]]

    def write(directory: Path) -> None:
        for split_code, split in enumerate(SPLITS):
            for name in CLASSES:
                (directory / split / name).mkdir(parents=True)
            for index in range(options[f"n_{split}"]):
                rng = np.random.default_rng([options["seed"], split_code, index])
                label = index % len(CLASSES)
                image = render_pair(rng, label, options["image_size"], options["clutter"])
                path = directory / split / CLASSES[label] / f"{index:06d}{extension}"
                path.write_bytes(encode(image, options["format"]))

    return materialise(Path(root), NAME, options, write)


def build(root: Path, split: str, transform=None) -> ImageFileDataset:
    directory = Path(root) / NAME
    require_generated(directory, NAME)
    samples, classes, _ = scan_image_folder(directory / split, CLASSES)
    return ImageFileDataset(samples, classes, transform, root=directory)


register_dataset(
    DatasetSpec(
        name=NAME,
        task="classification",
        num_classes=len(CLASSES),
        splits=SPLITS,
        split_aliases={"val": "test"},
        build=build,
        generate=generate,
        description="generated: two copies of a shape, side by side or stacked, under clutter (10 classes)",
        source="generated by `repro prepare shapes` (options: "
        + ", ".join(f"{k}={v}" for k, v in DEFAULTS.items())
        + ")",
    )
)
