"""Generated detection sets written in the real formats: shapes of widely varied scale in the COCO layout
(``shapes_det``), and face-like objects in the WIDER FACE layout with easy/medium/hard sets (``synth_faces``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from repro.data.coco import CocoDetection, read_coco
from repro.data.errors import DatasetError
from repro.data.generate_shapes import SHAPES, bright_colour, draw_clutter, draw_shape, encode, noisy_background
from repro.data.generated import materialise, require_generated, require_positive, resolve_options
from repro.data.registry import DatasetSpec, register_dataset
from repro.data.widerface import DIFFICULTIES, WiderEntry, WiderFace, write_annotations, write_eval_mats

DET_NAME = "shapes_det"
DET_DEFAULTS = {
    "seed": 0, "n_train": 200, "n_val": 50, "image_size": 128, "max_objects": 6,
    "min_scale": 0.06, "max_scale": 0.6, "clutter": 4, "format": "jpg",
}  # fmt: skip
FACES_NAME = "synth_faces"
FACES_DEFAULTS = {
    "seed": 0, "n_train": 200, "n_val": 50, "width": 160, "height": 120, "max_faces": 8, "clutter": 4,
}  # fmt: skip
# A face counts in a set when its height is at least this fraction of the image height ("hard" counts all faces).
DIFFICULTY_MIN_HEIGHT = {"easy": 0.25, "medium": 0.12, "hard": 0.0}
FACE_EVENTS = ("0--Sparse", "1--Crowd")
SKIN = ((224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172), (241, 194, 125))


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = ix * iy
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / float(area(a) + area(b) - inter)


def place_boxes(
    rng: np.random.Generator,
    width: int,
    height: int,
    count: int,
    min_side: float,
    max_side: float,
    aspect: tuple[float, float],
    max_iou: float = 0.3,
) -> list[tuple[int, int, int, int]]:
    """Up to ``count`` inclusive pixel boxes, sides log-uniform in ``[min_side, max_side]``, overlapping little."""
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(count * 20):
        if len(boxes) == count:
            break
        side = float(np.exp(rng.uniform(np.log(min_side), np.log(max_side))))
        ratio = rng.uniform(*aspect)
        w, h = max(3, round(side * ratio)), max(3, round(side))
        if w > width or h > height:
            continue
        x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        box = (x0, y0, x0 + w - 1, y0 + h - 1)
        if all(_iou(box, other) <= max_iou for other in boxes):
            boxes.append(box)
    return sorted(boxes, key=lambda b: -(b[2] - b[0] + 1) * (b[3] - b[1] + 1))  # large first: small ones on top


# ----------------------------------------------------------------------------------------------- COCO layout


def render_shapes_det(rng: np.random.Generator, options: dict) -> tuple[Image.Image, list[tuple[int, tuple]]]:
    """One image and its objects ``(category index, inclusive pixel box)``."""
    s = options["image_size"]
    image = noisy_background(rng, s, s)
    draw = ImageDraw.Draw(image)
    draw_clutter(draw, rng, s, s, options["clutter"], max_size=0.04 * s)
    count = int(rng.integers(1, options["max_objects"] + 1))
    boxes = place_boxes(rng, s, s, count, options["min_scale"] * s, options["max_scale"] * s, (0.75, 1.33))
    objects = []
    for box in boxes:
        category = int(rng.integers(len(SHAPES)))
        draw_shape(draw, SHAPES[category], box, bright_colour(rng))
        objects.append((category, box))
    return image, objects


def generate_shapes_det(root: Path, **opts) -> Path:
    """Write (or keep) ``<root>/shapes_det`` in the COCO 2017 layout."""
    options = resolve_options(DET_NAME, DET_DEFAULTS, opts)
    require_positive(DET_NAME, options, "n_train", "n_val", "max_objects")
    require_positive(DET_NAME, options, "image_size", minimum=32)
    if not 0 < options["min_scale"] <= options["max_scale"] <= 1:
        raise DatasetError(
            f"{DET_NAME}: need 0 < min_scale <= max_scale <= 1, got {options['min_scale']}, {options['max_scale']}"
        )
    if options["format"] not in ("jpg", "png"):
        raise DatasetError(f"{DET_NAME}: format must be 'jpg' or 'png', got {options['format']!r}")
    categories = [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(SHAPES)]

    def write(directory: Path) -> None:
        (directory / "annotations").mkdir()
        for split_code, split in enumerate(("train", "val")):
            image_dir = directory / f"{split}2017"
            image_dir.mkdir()
            images, annotations = [], []
            for index in range(options[f"n_{split}"]):
                rng = np.random.default_rng([options["seed"], split_code, index])
                image, objects = render_shapes_det(rng, options)
                image_id = index + 1
                file_name = f"{image_id:012d}.{options['format']}"
                (image_dir / file_name).write_bytes(encode(image, options["format"]))
                images.append({"id": image_id, "file_name": file_name, "width": image.width, "height": image.height})
                for category, (x0, y0, x1, y1) in objects:
                    w, h = x1 - x0 + 1, y1 - y0 + 1
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": image_id,
                            "category_id": category + 1,
                            "bbox": [x0, y0, w, h],
                            "area": w * h,
                            "iscrowd": 0,
                        }
                    )
            content = {
                "info": {"description": f"{DET_NAME} (generated, seed {options['seed']})"},
                "images": images,
                "annotations": annotations,
                "categories": categories,
            }
            (directory / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(content))

    return materialise(Path(root), DET_NAME, options, write)


def build_shapes_det(root: Path, split: str, transform=None, **opts) -> CocoDetection:
    directory = Path(root) / DET_NAME
    require_generated(directory, DET_NAME)
    return read_coco(directory, split, name=DET_NAME, transform=transform, **opts)


# ----------------------------------------------------------------------------------------- WIDER FACE layout


def draw_face(draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: tuple[int, int, int, int]) -> None:
    """A face-like pattern filling the box: a skin-tone oval with two eyes and a mouth."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0 + 1, y1 - y0 + 1
    skin = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in SKIN[int(rng.integers(len(SKIN)))])
    draw.ellipse(box, fill=skin)
    dark = tuple(int(v) for v in rng.integers(0, 60, size=3))
    eye_r, eye_y = max(1, w // 10), y0 + int(0.4 * h)
    for ex in (x0 + int(0.3 * w), x0 + int(0.7 * w)):
        draw.ellipse((ex - eye_r, eye_y - eye_r, ex + eye_r, eye_y + eye_r), fill=dark)
    mouth_y = y0 + int(0.72 * h)
    draw.line((x0 + int(0.32 * w), mouth_y, x0 + int(0.68 * w), mouth_y), fill=dark, width=max(1, h // 16))


def render_faces(rng: np.random.Generator, options: dict, crowd: bool) -> tuple[Image.Image, list]:
    """One image and its face boxes; distractors include skin-tone ovals without features."""
    width, height = options["width"], options["height"]
    image = noisy_background(rng, width, height)
    draw = ImageDraw.Draw(image)
    draw_clutter(draw, rng, width, height, options["clutter"], max_size=0.1 * height)
    low, high = (4, options["max_faces"]) if crowd else (1, min(3, options["max_faces"]))
    count = int(rng.integers(min(low, high), high + 1))
    boxes = place_boxes(rng, width, height, count + 1, 6, 0.6 * height, (0.7, 0.85), max_iou=0.1)
    blank = int(rng.integers(len(boxes))) if len(boxes) > count else -1  # a blank oval: a hard negative
    faces = []
    for k, box in enumerate(boxes):
        if k == blank:
            draw.ellipse(box, fill=SKIN[int(rng.integers(len(SKIN)))])
        else:
            draw_face(draw, rng, box)
            faces.append(box)
    return image, faces


def generate_synth_faces(root: Path, **opts) -> Path:
    """Write (or keep) ``<root>/synth_faces`` in the WIDER FACE layout, with the eval tool's .mat files."""
    options = resolve_options(FACES_NAME, FACES_DEFAULTS, opts)
    require_positive(FACES_NAME, options, "n_train", "n_val", "max_faces")
    require_positive(FACES_NAME, options, "width", "height", minimum=48)

    def write(directory: Path) -> None:
        (directory / "wider_face_split").mkdir()
        for split_code, split in enumerate(("train", "val")):
            entries: list[WiderEntry] = []
            for index in range(options[f"n_{split}"]):
                event = FACE_EVENTS[index % len(FACE_EVENTS)]
                rng = np.random.default_rng([options["seed"], split_code, index])
                image, boxes = render_faces(rng, options, crowd=event.endswith("Crowd"))
                stem = f"{event.split('--')[0]}_{event.split('--')[1]}_{index:06d}"
                image_path = directory / f"WIDER_{split}" / "images" / event / f"{stem}.jpg"
                image_path.parent.mkdir(parents=True, exist_ok=True)
                image_path.write_bytes(encode(image, "jpg"))
                faces = np.zeros((len(boxes), 10), dtype=np.int64)
                for k, (x0, y0, x1, y1) in enumerate(boxes):
                    faces[k, :4] = (x0, y0, x1 - x0 + 1, y1 - y0 + 1)
                entries.append(WiderEntry(f"{event}/{stem}.jpg", faces))
            write_annotations(directory / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt", entries)
            if split == "val":
                keep = {
                    d: {
                        e.key: np.flatnonzero(e.faces[:, 3] >= DIFFICULTY_MIN_HEIGHT[d] * options["height"])
                        for e in entries
                    }
                    for d in DIFFICULTIES
                }
                write_eval_mats(directory / "eval_tools" / "ground_truth", entries, keep)

    return materialise(Path(root), FACES_NAME, options, write)


def build_synth_faces(root: Path, split: str, transform=None, **opts) -> WiderFace:
    directory = Path(root) / FACES_NAME
    require_generated(directory, FACES_NAME)
    return WiderFace(
        directory, split, transform=transform, name=FACES_NAME, source=f"run `repro prepare {FACES_NAME}`", **opts
    )


register_dataset(
    DatasetSpec(
        name=DET_NAME,
        task="detection",
        num_classes=len(SHAPES),
        splits=("train", "val"),
        split_aliases={"test": "val"},
        build=build_shapes_det,
        generate=generate_shapes_det,
        description="generated: 1-6 shapes per image, sides from 6% to 60% of the image, COCO 2017 layout",
        source=f"generated by `repro prepare {DET_NAME}`",
    )
)
register_dataset(
    DatasetSpec(
        name=FACES_NAME,
        task="detection",
        num_classes=1,
        splits=("train", "val"),
        split_aliases={"test": "val"},
        build=build_synth_faces,
        generate=generate_synth_faces,
        description="generated: face-like ovals (eyes, mouth) of varied size, WIDER FACE layout with easy/medium/hard",
        source=f"generated by `repro prepare {FACES_NAME}`",
    )
)
