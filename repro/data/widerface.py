"""WIDER FACE: the official ``wider_face_split`` text annotations and the easy/medium/hard sets of its eval tool."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from repro.data.base import load_rgb
from repro.data.errors import DataFileError, DatasetError, file_error, require_dir, require_file
from repro.data.paths import require_root, safe_relative_path
from repro.data.registry import DatasetSpec, register_dataset

NAME = "widerface"
DIFFICULTIES = ("easy", "medium", "hard")
ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
ATTRIBUTE_MAX = {"blur": 2, "expression": 1, "illumination": 1, "invalid": 1, "occlusion": 2, "pose": 1}
"""Largest value of each attribute flag (the ``readme.txt`` of ``wider_face_split.zip``)."""
FIELDS = ("x", "y", "w", "h", *ATTRIBUTES)
LAYOUT = (
    "<root>/widerface/WIDER_{train,val}/images/<event>/<image>.jpg, "
    "<root>/widerface/wider_face_split/wider_face_{train,val}_bbx_gt.txt, "
    "<root>/widerface/eval_tools/ground_truth/wider_{face,easy,medium,hard}_val.mat"
)
SOURCE = (
    "http://shuoyang1213.me/WIDERFACE/: WIDER_train.zip, WIDER_val.zip, wider_face_split.zip and "
    "eval_tools.zip, unzipped into <root>/widerface/"
)


@dataclass(frozen=True)
class WiderEntry:
    """One image of an annotation file: its path ``<event>/<name>.jpg``, ``(N, 10)`` ints
    ``x y w h blur expression illumination invalid occlusion pose`` and the line of the path (1-based; 0 if unknown)."""

    path: str
    faces: np.ndarray
    line: int = 0

    @property
    def key(self) -> str:
        """``<event>/<name>`` without extension, the key of the eval tool's .mat files."""
        return self.path.rsplit(".", 1)[0]


def read_annotations(path: Path, name: str = NAME, layout: str = LAYOUT, source: str = SOURCE) -> list[WiderEntry]:
    """Parse and validate a ``wider_face_*_bbx_gt.txt`` file (an image with 0 faces is followed by one line of zeros).

    Image paths must be relative and stay inside the image folder; counts are integers >= 0; each face line holds
    integers ``x y w h`` >= 0 and attribute flags within their ranges (:data:`ATTRIBUTE_MAX`). The first violation
    raises :class:`DataFileError` naming the file, the line and the field.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise file_error(name, f"{path} is not a text file ({err})", layout, source) from None
    entries: list[WiderEntry] = []
    i = 0

    def fail(problem: str) -> DataFileError:
        return file_error(
            name, f"{path}:{i + 1}: {problem} (truncated or not a WIDER FACE annotation file)", layout, source
        )

    while i < len(lines):
        image_path = lines[i].strip()
        if not image_path:
            i += 1
            continue
        if not image_path.lower().endswith((".jpg", ".jpeg", ".png")):
            raise fail(f"expected an image path, got {image_path!r}")
        if not safe_relative_path(image_path):
            raise fail(f"image path {image_path!r} leaves the image folder")
        path_line = i + 1
        i += 1
        if i >= len(lines):
            raise fail(f"missing face count after {image_path}")
        try:
            count = int(lines[i].strip())
        except ValueError:
            raise fail(f"expected a face count, got {lines[i]!r}") from None
        if count < 0:
            raise fail(f"face count {count} of {image_path} is negative")
        i += 1
        rows = []
        for _ in range(max(count, 1)):
            if i >= len(lines):
                raise fail(f"{image_path} announces {count} faces but the file ends")
            values = lines[i].split()
            if len(values) < 4:
                raise fail(f"expected 'x y w h ...', got {lines[i]!r}")
            try:
                row = [int(float(v)) for v in (values + ["0"] * 10)[:10]]
            except (ValueError, OverflowError):
                raise fail(f"non-numeric box {lines[i]!r}") from None
            if count > 0:
                for field, value in zip(FIELDS, row, strict=True):
                    limit = ATTRIBUTE_MAX.get(field, 1 << 31)
                    if not 0 <= value <= limit:
                        raise fail(f"field {field!r} of a face of {image_path} is {value}, not in 0..{limit}")
            rows.append(row)
            i += 1
        faces = np.asarray(rows if count > 0 else [], dtype=np.int64).reshape(-1, 10)
        entries.append(WiderEntry(image_path, faces, path_line))
    return entries


def write_annotations(path: Path, entries: Sequence[WiderEntry]) -> None:
    """Write entries in the ``wider_face_*_bbx_gt.txt`` format (the inverse of :func:`read_annotations`)."""
    out = []
    for entry in entries:
        out += [entry.path, str(len(entry.faces))]
        rows = entry.faces if len(entry.faces) else np.zeros((1, 10), dtype=np.int64)
        out += [" ".join(str(int(v)) for v in row) + " " for row in rows]
    path.write_text("\n".join(out) + "\n")


def _cell(items: Sequence) -> np.ndarray:
    """A MATLAB cell column (n, 1) holding ``items``."""
    cell = np.empty((len(items), 1), dtype=object)
    for k, item in enumerate(items):
        cell[k, 0] = item
    return cell


def write_eval_mats(gt_dir: Path, entries: Sequence[WiderEntry], keep: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """Write ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat`` as the official eval tool reads them.

    ``keep[difficulty][entry.key]`` are 0-based indices of the faces counted in that set (stored 1-based).
    The .mat header timestamp is replaced by a fixed text so that the files are reproducible byte for byte.
    """
    from scipy.io import savemat

    events = sorted({entry.key.split("/")[0] for entry in entries})
    by_event = {event: [e for e in entries if e.key.split("/")[0] == event] for event in events}
    event_list = _cell([np.array([event]) for event in events])
    file_list = _cell([_cell([np.array([e.key.split("/", 1)[1]]) for e in by_event[ev]]) for ev in events])
    boxes = _cell([_cell([e.faces[:, :4].astype(np.float64) for e in by_event[ev]]) for ev in events])
    gt_dir.mkdir(parents=True, exist_ok=True)
    files = {"wider_face_val.mat": {"event_list": event_list, "file_list": file_list, "face_bbx_list": boxes}}
    for difficulty in DIFFICULTIES:
        gt_list = _cell(
            [
                _cell(
                    [
                        (np.asarray(keep[difficulty].get(e.key, []), dtype=np.float64) + 1).reshape(-1, 1)
                        for e in by_event[ev]
                    ]
                )
                for ev in events
            ]
        )
        files[f"wider_{difficulty}_val.mat"] = {"event_list": event_list, "file_list": file_list, "gt_list": gt_list}
    for file_name, content in files.items():
        path = gt_dir / file_name
        savemat(path, content, do_compression=False)
        data = bytearray(path.read_bytes())
        data[:116] = b"MATLAB 5.0 MAT-file, written by repro".ljust(116)
        path.write_bytes(bytes(data))


def load_eval_sets(gt_dir: Path, name: str = NAME) -> dict[str, dict[str, np.ndarray]]:
    """``{difficulty: {"<event>/<name>": 0-based indices of the faces that count}}`` from the eval tool's .mat files."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    sets: dict[str, dict[str, np.ndarray]] = {}
    for difficulty in DIFFICULTIES:
        path = require_file(name, gt_dir / f"wider_{difficulty}_val.mat", LAYOUT, SOURCE)
        try:
            mat = loadmat(path)
            per_image: dict[str, np.ndarray] = {}
            for i in range(len(mat["event_list"])):
                event = str(mat["event_list"][i][0][0])
                files, gt_list = mat["file_list"][i][0], mat["gt_list"][i][0]
                for j in range(len(files)):
                    indices = np.asarray(gt_list[j][0], dtype=np.int64).reshape(-1) - 1
                    per_image[f"{event}/{files[j][0][0]}"] = indices
        except (ValueError, KeyError, IndexError, TypeError, OSError, NotImplementedError, MatReadError) as err:
            raise file_error(
                name, f"{path} is truncated or not a WIDER FACE eval file ({err!r})", LAYOUT, SOURCE
            ) from None
        sets[difficulty] = per_image
    return sets


class WiderFace(Dataset):
    """WIDER FACE detection: yields ``(PIL image, target)``.

    ``target``: ``boxes`` (N, 4) float xyxy (x2 = x + w), ``labels`` (N,) = ``label_offset`` (one class, face),
    the six attribute flags as int64 tensors, ``file`` (``<event>/<name>.jpg``) and, for ``val`` with eval sets,
    ``keep`` = ``{"easy"|"medium"|"hard": bool (N,)}``: the faces that count in each set (the others are ignored,
    as in the official evaluation).
    """

    def __init__(
        self,
        dataset_dir: Path,
        split: str,
        *,
        transform: Callable | None = None,
        label_offset: int = 0,
        eval_sets: bool | None = None,
        name: str = NAME,
        source: str = SOURCE,
    ) -> None:
        self.name, self.split = name, split
        layout = LAYOUT.replace("<root>/widerface", f"<root>/{name}")
        self.layout, self.source = layout, source
        self.ann_file: Path | None = None
        self.image_dir = require_dir(name, dataset_dir / f"WIDER_{split}" / "images", layout, source)
        split_dir = dataset_dir / "wider_face_split"
        if split == "test":
            list_file = require_file(name, split_dir / "wider_face_test_filelist.txt", layout, source)
            paths = [line.strip() for line in list_file.read_text(errors="replace").splitlines() if line.strip()]
            unsafe = next((p for p in paths if not safe_relative_path(p)), None)
            if unsafe is not None:
                raise file_error(name, f"{list_file}: image path {unsafe!r} leaves the image folder", layout, source)
            self.entries = [WiderEntry(p, np.zeros((0, 10), dtype=np.int64)) for p in paths]
        else:
            self.ann_file = require_file(name, split_dir / f"wider_face_{split}_bbx_gt.txt", layout, source)
            self.entries = read_annotations(self.ann_file, name, layout, source)
        self.transform = transform
        self.label_offset = label_offset
        self.keep: dict[str, dict[str, np.ndarray]] | None = None
        self.gt_dir: Path | None = None  # the eval tool's ground_truth folder (val only)
        if split == "val" and eval_sets is not False:
            self.gt_dir = next(
                (d for d in (dataset_dir / "eval_tools" / "ground_truth", dataset_dir / "ground_truth") if d.is_dir()),
                dataset_dir / "eval_tools" / "ground_truth",
            )
            self.keep = load_eval_sets(self.gt_dir, name)
            self._check_eval_sets()

    def _check_eval_sets(self) -> None:
        for entry in self.entries:
            for difficulty, per_image in self.keep.items():
                indices = per_image.get(entry.key)
                if indices is None:
                    raise DatasetError(
                        f"{self.name}: {entry.path} is absent from wider_{difficulty}_val.mat; "
                        "the eval files do not match the annotations (re-download eval_tools.zip)"
                    )
                if len(indices) and indices.max() >= len(entry.faces):
                    raise DatasetError(
                        f"{self.name}: wider_{difficulty}_val.mat counts face {indices.max() + 1} of "
                        f"{entry.path}, which has {len(entry.faces)}: annotations and eval files differ"
                    )

    def _check_inside(self, entry: WiderEntry, size: tuple[int, int]) -> None:
        """A face box that does not overlap its image at all is an error (one reaching past the border is kept, as
        the official tools keep it)."""
        width, height = size
        faces = entry.faces
        outside = (faces[:, 0] >= width) | (faces[:, 1] >= height)
        if outside.any():
            k = int(np.flatnonzero(outside)[0])
            x, y, w, h = (int(v) for v in faces[k, :4])
            raise file_error(
                self.name,
                f"{self.ann_file}:{entry.line}: face {k + 1} of {entry.path}: field 'x y w h' is {x} {y} {w} {h}, "
                f"outside the {width}x{height} image",
                self.layout,
                self.source,
            )

    def __len__(self) -> int:
        return len(self.entries)

    def target(self, index: int) -> dict:
        entry = self.entries[index]
        faces = torch.from_numpy(entry.faces)
        boxes = faces[:, :4].to(torch.float32)
        boxes[:, 2:] += boxes[:, :2]
        target = {
            "boxes": boxes,
            "labels": torch.full((len(faces),), self.label_offset, dtype=torch.int64),
            "file": entry.path,
            **{attr: faces[:, 4 + k].clone() for k, attr in enumerate(ATTRIBUTES)},
        }
        if self.keep is not None:
            target["keep"] = {}
            for difficulty, per_image in self.keep.items():
                mask = torch.zeros(len(faces), dtype=torch.bool)
                mask[torch.from_numpy(per_image[entry.key])] = True
                target["keep"][difficulty] = mask
        return target

    def __getitem__(self, index: int):
        entry = self.entries[index]
        image = load_rgb(self.image_dir / entry.path)
        self._check_inside(entry, image.size)
        target = self.target(index)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


def build(root: Path, split: str, transform=None, **opts) -> WiderFace:
    require_root(root, NAME)
    return WiderFace(root / NAME, split, transform=transform, **opts)


def check(root: Path) -> Path:
    for split in ("train", "val"):
        dataset = build(root, split)
        if dataset.entries and not (dataset.image_dir / dataset.entries[-1].path).is_file():
            raise DatasetError(
                f"{NAME}: {dataset.image_dir / dataset.entries[-1].path} is missing: "
                f"the images are incomplete (re-unzip WIDER_{split}.zip)"
            )
    return root / NAME


register_dataset(
    DatasetSpec(
        name=NAME,
        task="detection",
        num_classes=1,
        splits=("train", "val", "test"),
        build=build,
        check=check,
        description="WIDER FACE: 12,880 train / 3,226 val images with easy/medium/hard evaluation sets",
        source=SOURCE,
    )
)
