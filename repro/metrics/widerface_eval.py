"""WIDER FACE evaluation computed exactly as the official MATLAB ``eval_tools`` (``wider_eval.m``).

The steps, with the official function each one mirrors:

1. ``read_pred``: every image's boxes ``x y w h score``, sorted by score, descending (stable for ties). A missing
   prediction file means no detections for that image.
2. ``norm_score``: the scores are min-max normalised over the whole prediction set. The bounds start from
   ``realmin('single')`` / ``realmax('single')``, so MATLAB computes them, and the normalised scores, in single
   precision; that is reproduced (it decides on which side of a threshold a score falls).
3. ``evaluation`` / ``image_evaluation``, per setting (easy, medium, hard) and image: images with no ground-truth
   box or no prediction are skipped (they add no false positive; their counted faces still count). Each prediction,
   in score order, goes to the ground-truth box of largest IoU (``boxoverlap``: ``x2 = x + w``, areas counted
   inclusively, ``+ 1``). At IoU >= 0.5 an ignored face (not in the setting's ``gt_list``) takes the prediction out
   of the proposals; a counted face is recalled the first time and a second hit is a false positive.
4. ``image_pr_info`` / ``dataset_pr_info``: for the 1000 thresholds ``1 - t/1000`` (t = 1..1000), the proposals and
   recalled faces among each image's predictions down to the last one scoring >= the threshold, summed over the
   images; precision = recalled / proposals, recall = recalled / counted faces.
5. ``VOCap`` (called by ``wider_plot``): VOC area under the precision envelope. Precision is NaN where no proposal
   passes the threshold yet; MATLAB's ``max`` skips NaN, and so does the envelope here.

MATLAB's arithmetic follows the class of the stored ground-truth boxes. The official ``.mat`` files hold ``int32``
boxes: ``boxoverlap`` then rounds the prediction's corners to integers (half away from zero) and the IoU itself to
0 or 1, so a prediction that overlaps two faces at IoU >= 0.5 goes to the *first* of them, not the closer one.
``double`` boxes (as the generated sets store them) give plain double IoUs, ``single`` boxes single ones. All three
are reproduced. See docs/face_detection.md for what was checked against the official code and how.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repro.detection.wider_predictions import PredictionFileError, prediction_path, read_prediction_file
from repro.utils.atomic import write_json_atomic
from repro.utils.provenance import provenance

__all__ = [
    "GT_FILES",
    "IOU_THRESHOLD",
    "NUM_THRESHOLDS",
    "SETTINGS",
    "EvaluationResult",
    "FaceGroundTruth",
    "GroundTruthError",
    "PredictionFileError",
    "SettingResult",
    "eval_scut_head_command",
    "eval_widerface_command",
    "evaluate_faces",
    "evaluate_scut_head",
    "evaluate_widerface",
    "few_faces_keys",
    "load_widerface_ground_truth",
    "normalise_scores",
    "read_predictions",
    "scut_head_ground_truth",
    "subset_ground_truth",
    "voc_ap",
]

IOU_THRESHOLD = 0.5
NUM_THRESHOLDS = 1000
SETTINGS = ("easy", "medium", "hard")
GT_FILES = {"all": "wider_face_val.mat", **{s: f"wider_{s}_val.mat" for s in SETTINGS}}
_REALMIN_SINGLE = float(np.finfo(np.float32).tiny)
_REALMAX_SINGLE = float(np.finfo(np.float32).max)


class GroundTruthError(ValueError):
    """A ground-truth file that is missing or malformed; the message names the file and the field."""


@dataclass(frozen=True)
class FaceGroundTruth:
    """The faces of an evaluation set.

    ``keys``: one ``<event>/<name>`` per image (the prediction file is ``<pred_dir>/<key>.txt``). ``boxes``: per image
    an (n, 4) array ``x y w h`` in the numeric class it was stored in (it selects MATLAB's arithmetic). ``counted``:
    per setting, per image, the 0-based indices of the faces that count; the other faces are ignored.
    """

    keys: tuple[str, ...]
    boxes: tuple[np.ndarray, ...]
    counted: Mapping[str, tuple[np.ndarray, ...]]
    source: str = ""


@dataclass(frozen=True)
class SettingResult:
    """AP and the precision/recall curve of one setting over the 1000 thresholds (highest first)."""

    ap: float
    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray
    num_faces: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; NaN precisions (no proposal at that threshold) become ``None``."""
        return {
            "ap": self.ap,
            "num_faces": self.num_faces,
            "thresholds": self.thresholds.tolist(),
            "precision": [None if np.isnan(p) else float(p) for p in self.precision],
            "recall": self.recall.tolist(),
        }


@dataclass(frozen=True)
class EvaluationResult:
    """The per-setting results, and the images that had no prediction file."""

    settings: dict[str, SettingResult]
    missing: tuple[str, ...] = field(default=())

    def aps(self) -> dict[str, float]:
        return {name: result.ap for name, result in self.settings.items()}


# ------------------------------------------------------------------------------------------ ground truth (.mat)


def _load_mat(path: Path) -> dict[str, Any]:
    from scipy.io import loadmat

    if not path.is_file():
        raise GroundTruthError(
            f"{path}: missing; the ground-truth directory must hold {', '.join(GT_FILES.values())} "
            "(eval_tools/ground_truth of the WIDER FACE eval tool)"
        )
    try:
        return loadmat(path)  # reads numeric, char and cell arrays only; nothing in the file is executed
    except NotImplementedError:
        raise GroundTruthError(
            f"{path}: a MATLAB v7.3 (HDF5) file; save it with -v7 (as the official files are)"
        ) from None
    except Exception as err:  # scipy raises many kinds on a corrupt file (ValueError, struct.error, zlib.error, ...)
        raise GroundTruthError(f"{path}: not a readable MATLAB .mat file ({type(err).__name__}: {err})") from None


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    return f"a {type(value).__name__}"


def _cells(value: Any, path: Path, name: str) -> np.ndarray:
    """A MATLAB cell vector as a flat object array (an empty numeric array counts as an empty cell)."""
    if isinstance(value, np.ndarray) and value.size == 0:
        return np.empty(0, dtype=object)
    if not (isinstance(value, np.ndarray) and value.dtype == object and value.ndim == 2 and 1 in value.shape):
        raise GroundTruthError(f"{path}: field {name} must be a cell vector, got {_describe(value)}")
    return value.reshape(-1)


def _text(value: Any, path: Path, name: str) -> str:
    if isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.size == 1:
        return str(value.reshape(-1)[0])
    raise GroundTruthError(f"{path}: field {name} must be a character string, got {_describe(value)}")


def _check_length(path: Path, name: str, items: Sequence, other: str, expected: int) -> None:
    if len(items) != expected:
        raise GroundTruthError(f"{path}: field {name} has {len(items)} entries where {other} has {expected}")


def _field(mat: Mapping[str, Any], path: Path, name: str) -> Any:
    if name not in mat:
        raise GroundTruthError(f"{path}: field {name} is missing (found: {', '.join(k for k in mat if k[0] != '_')})")
    return mat[name]


def _names(mat: Mapping[str, Any], path: Path) -> tuple[list[str], list[list[str]]]:
    event_cells = _cells(_field(mat, path, "event_list"), path, "event_list")
    events = [_text(v, path, f"event_list{{{i + 1}}}") for i, v in enumerate(event_cells)]
    files = _cells(_field(mat, path, "file_list"), path, "file_list")
    _check_length(path, "file_list", files, "event_list", len(events))
    names = []
    for i, cell in enumerate(files):
        where = f"file_list{{{i + 1}}}"
        names.append([_text(v, path, f"{where}{{{j + 1}}}") for j, v in enumerate(_cells(cell, path, where))])
    return events, names


def _boxes(value: Any, path: Path, name: str) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf" or value.dtype == np.float16:
        raise GroundTruthError(f"{path}: field {name} must be a numeric (n, 4) array, got {_describe(value)}")
    if value.size == 0:
        return np.zeros((0, 4), dtype=value.dtype)
    if value.ndim != 2 or value.shape[1] != 4:
        raise GroundTruthError(f"{path}: field {name} must be an (n, 4) array of x y w h, got shape {value.shape}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise GroundTruthError(f"{path}: field {name} holds NaN or infinite values")
    return value


def _indices(value: Any, path: Path, name: str, num_faces: int) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf":
        raise GroundTruthError(f"{path}: field {name} must be a numeric vector of face indices, got {_describe(value)}")
    if value.size == 0:
        return np.zeros(0, dtype=np.int64)
    if value.ndim != 2 or 1 not in value.shape:
        raise GroundTruthError(f"{path}: field {name} must be a vector of face indices, got shape {value.shape}")
    flat = value.reshape(-1).astype(np.float64)
    if not (np.isfinite(flat).all() and (flat == np.round(flat)).all()):
        raise GroundTruthError(f"{path}: field {name} holds non-integer face indices")
    indices = flat.astype(np.int64)
    if indices.min() < 1 or indices.max() > num_faces:
        raise GroundTruthError(
            f"{path}: field {name} holds face index {indices.min() if indices.min() < 1 else indices.max()}, "
            f"outside 1..{num_faces} (the image's face count in {GT_FILES['all']})"
        )
    if len(np.unique(indices)) != len(indices):
        raise GroundTruthError(f"{path}: field {name} repeats a face index")
    return indices - 1


def load_widerface_ground_truth(gt_dir: str | Path, settings: Sequence[str] = SETTINGS) -> FaceGroundTruth:
    """The faces of ``wider_face_val.mat`` (``event_list``, ``file_list``, ``face_bbx_list``) and, per setting, the
    counted faces of ``wider_<setting>_val.mat`` (``gt_list``, 1-based). Every field is checked; a setting file whose
    lists (or, where it has one, ``face_bbx_list``) differ from ``wider_face_val.mat`` is an error.
    """
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise GroundTruthError(f"{gt_dir}: not a directory (expected eval_tools/ground_truth with the four .mat files)")
    main_path = gt_dir / GT_FILES["all"]
    main = _load_mat(main_path)
    events, names = _names(main, main_path)
    box_cells = _cells(_field(main, main_path, "face_bbx_list"), main_path, "face_bbx_list")
    _check_length(main_path, "face_bbx_list", box_cells, "event_list", len(events))
    keys: list[str] = []
    boxes: list[np.ndarray] = []
    for i, (event, files) in enumerate(zip(events, names)):
        where = f"face_bbx_list{{{i + 1}}}"
        cell = _cells(box_cells[i], main_path, where)
        _check_length(main_path, where, cell, f"file_list{{{i + 1}}}", len(files))
        for j, name in enumerate(files):
            keys.append(f"{event}/{name}")
            boxes.append(_boxes(cell[j], main_path, f"{where}{{{j + 1}}}"))

    counted: dict[str, tuple[np.ndarray, ...]] = {}
    for setting in settings:
        path = gt_dir / GT_FILES[setting]
        mat = _load_mat(path)
        if _names(mat, path) != (events, names):
            raise GroundTruthError(f"{path}: fields event_list/file_list differ from those of {main_path.name}")
        gt_cells = _cells(_field(mat, path, "gt_list"), path, "gt_list")
        _check_length(path, "gt_list", gt_cells, "event_list", len(events))
        own_boxes = _cells(mat["face_bbx_list"], path, "face_bbx_list") if "face_bbx_list" in mat else None
        per_image: list[np.ndarray] = []
        k = 0
        for i, files in enumerate(names):
            where = f"gt_list{{{i + 1}}}"
            cell = _cells(gt_cells[i], path, where)
            _check_length(path, where, cell, f"file_list{{{i + 1}}}", len(files))
            box_cell = None if own_boxes is None else _cells(own_boxes[i], path, f"face_bbx_list{{{i + 1}}}")
            for j in range(len(files)):
                if box_cell is not None and not np.array_equal(
                    _boxes(box_cell[j], path, f"face_bbx_list{{{i + 1}}}{{{j + 1}}}"), boxes[k]
                ):
                    raise GroundTruthError(
                        f"{path}: field face_bbx_list{{{i + 1}}}{{{j + 1}}} differs from that of {main_path.name}"
                    )
                per_image.append(_indices(cell[j], path, f"{where}{{{j + 1}}}", len(boxes[k])))
                k += 1
        counted[setting] = tuple(per_image)
    return FaceGroundTruth(tuple(keys), tuple(boxes), counted, source=str(gt_dir))


def subset_ground_truth(ground_truth: FaceGroundTruth, keys: Sequence[str]) -> FaceGroundTruth:
    """The images of ``keys`` only, in the ground truth's order (an evaluation on part of a split); a key that the
    ground truth lacks raises :class:`GroundTruthError`."""
    wanted = set(keys)
    missing = sorted(wanted - set(ground_truth.keys))
    if missing:
        raise GroundTruthError(f"{ground_truth.source}: no ground truth for {missing[0]} ({len(missing)} images)")
    index = [i for i, key in enumerate(ground_truth.keys) if key in wanted]
    counted = {name: tuple(per_image[i] for i in index) for name, per_image in ground_truth.counted.items()}
    boxes = tuple(ground_truth.boxes[i] for i in index)
    return FaceGroundTruth(tuple(ground_truth.keys[i] for i in index), boxes, counted, ground_truth.source)


def few_faces_keys(ground_truth: FaceGroundTruth, max_faces: int = 3) -> list[str]:
    """The images with at most ``max_faces`` annotated faces (RNNPool Table 4's "<=3 faces" columns)."""
    return [key for key, boxes in zip(ground_truth.keys, ground_truth.boxes) if len(boxes) <= max_faces]


# ------------------------------------------------------------------------------------------------ predictions


def read_predictions(pred_dir: str | Path, keys: Sequence[str]) -> tuple[list[np.ndarray], list[str]]:
    """Each image's (n, 5) ``x y w h score`` sorted by score, descending and stable (MATLAB ``sort(..., 'descend')``),
    and the keys without a prediction file (they get an empty array, as ``read_pred.m`` leaves them)."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise PredictionFileError(f"{pred_dir}: not a directory (expected <event>/<image>.txt prediction files)")
    predictions, missing = [], []
    for key in keys:
        path = prediction_path(pred_dir, key)
        if not path.is_file():
            missing.append(key)
            predictions.append(np.zeros((0, 5)))
            continue
        rows = read_prediction_file(path)
        predictions.append(rows[np.argsort(-rows[:, 4], kind="stable")])
    return predictions, missing


def normalise_scores(predictions: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``norm_score.m``: ``(s - min) / (max - min)`` over all predictions, in single precision as MATLAB computes
    it (the bounds start from ``realmin('single')`` / ``realmax('single')``, and single wins over double)."""
    scores = [p[:, 4] for p in predictions if len(p)]
    if not scores:
        return [p.copy() for p in predictions]
    high = np.float32(max(_REALMIN_SINGLE, max(float(s.max()) for s in scores)))
    low = np.float32(min(_REALMAX_SINGLE, min(float(s.min()) for s in scores)))
    out = []
    for p in predictions:
        p = p.copy()
        if len(p):
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                p[:, 4] = (p[:, 4].astype(np.float32) - low) / (high - low)
        out.append(p)
    return out


# --------------------------------------------------------------------------------------------- the evaluation


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """MATLAB's double -> integer rounding (exact: ``x - trunc(x)`` is exact in floating point)."""
    whole = np.trunc(x)
    return whole + np.where(np.abs(x - whole) >= 0.5, np.sign(x), 0.0)


def _overlaps(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``boxoverlap`` of every prediction (rows, double ``x1 y1 x2 y2``) with every face (columns, ``x1 y1 x2 y2`` in
    the stored class), in MATLAB's arithmetic for that class."""
    p = pred[:, None, :]
    pred_area = ((p[..., 2] - p[..., 0]) + 1) * ((p[..., 3] - p[..., 1]) + 1)  # always double
    if gt.dtype.kind in "iu":
        info = np.iinfo(gt.dtype)

        def sat(x):  # a MATLAB integer-class result: rounded, saturated
            return np.clip(_round_half_away(np.asarray(x, dtype=np.float64)), info.min, info.max)

        g, q = gt.astype(np.float64)[None], sat(p)
        x1, y1 = np.maximum(g[..., 0], q[..., 0]), np.maximum(g[..., 1], q[..., 1])
        x2, y2 = np.minimum(g[..., 2], q[..., 2]), np.minimum(g[..., 3], q[..., 3])
        w, h = sat(sat(x2 - x1) + 1), sat(sat(y2 - y1) + 1)
        inter = sat(w * h)
        gt_area = sat(sat(sat(g[..., 2] - g[..., 0]) + 1) * sat(sat(g[..., 3] - g[..., 1]) + 1))
        union = sat(sat(gt_area + pred_area) - inter)
        with np.errstate(all="ignore"):  # x/0 saturates, 0/0 is 0 in an integer class
            ratio = inter / union
            overlap = np.where(np.isnan(ratio), 0.0, sat(ratio))
    else:
        dtype = gt.dtype.type
        g, q = gt[None], p.astype(dtype)  # a double operand of a single operation is made single first
        x1, y1 = np.maximum(g[..., 0], q[..., 0]), np.maximum(g[..., 1], q[..., 1])
        x2, y2 = np.minimum(g[..., 2], q[..., 2]), np.minimum(g[..., 3], q[..., 3])
        one = dtype(1)
        w, h = (x2 - x1) + one, (y2 - y1) + one
        inter = w * h
        gt_area = ((g[..., 2] - g[..., 0]) + one) * ((g[..., 3] - g[..., 1]) + one)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            overlap = inter / ((gt_area + pred_area.astype(dtype)) - inter)
    overlap = np.asarray(overlap, dtype=np.float64)
    overlap[(w <= 0) | (h <= 0)] = 0.0
    return overlap


def _corners(boxes: np.ndarray) -> np.ndarray:
    """``x y w h`` -> ``x1 y1 x2 y2`` with ``x2 = x + w``, in the array's own class (integers saturate)."""
    out = boxes.copy()
    if boxes.dtype.kind in "iu":
        info = np.iinfo(boxes.dtype)
        wide = boxes.astype(np.float64)
        out[:, 2:] = np.clip(wide[:, :2] + wide[:, 2:], info.min, info.max).astype(boxes.dtype)
    else:
        out[:, 2:] = boxes[:, :2] + boxes[:, 2:]
    return out


def _image_evaluation(
    pred: np.ndarray, gt: np.ndarray, counted: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """``image_evaluation``: per prediction, whether it stays a proposal and the faces recalled so far."""
    pred_xyxy = pred[:, :4].copy()
    pred_xyxy[:, 2:] += pred_xyxy[:, :2]
    overlap = _overlaps(_corners(gt), pred_xyxy)
    best_index = np.where(np.isnan(overlap), -np.inf, overlap).argmax(axis=1)  # MATLAB max: first, NaN skipped
    best = overlap[np.arange(len(pred)), best_index]
    hit = best >= iou_threshold
    is_counted = np.zeros(len(gt), dtype=bool)
    is_counted[counted] = True
    proposal = ~(hit & ~is_counted[best_index])
    recall_hit = np.flatnonzero(hit & is_counted[best_index])
    first_hit = np.zeros(len(pred), dtype=np.int64)
    _, first = np.unique(best_index[recall_hit], return_index=True)
    first_hit[recall_hit[first]] = 1
    return proposal, np.cumsum(first_hit)


def _image_pr_info(scores: np.ndarray, proposal: np.ndarray, pred_recall: np.ndarray, thresholds: np.ndarray):
    """``image_pr_info``: proposals and recalled faces down to the last prediction scoring >= each threshold."""
    passes = scores[None, :] >= thresholds[:, None]
    any_pass = passes.any(axis=1)
    last = len(scores) - 1 - passes[:, ::-1].argmax(axis=1)
    proposals = np.where(any_pass, np.cumsum(proposal)[last], 0)
    recalled = np.where(any_pass, pred_recall[last], 0)
    return proposals, recalled


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """``VOCap.m``: area under the precision envelope at the points where recall changes (NaN precision skipped)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.fmax.accumulate(mpre[::-1])[::-1]
    change = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[change] - mrec[change - 1]) * mpre[change]))


def evaluate_faces(
    predictions: Sequence[np.ndarray],
    ground_truth: FaceGroundTruth,
    *,
    normalise: bool = True,
    iou_threshold: float = IOU_THRESHOLD,
    num_thresholds: int = NUM_THRESHOLDS,
) -> dict[str, SettingResult]:
    """The official protocol on ``predictions`` (one (n, 5) ``x y w h score`` array per ground-truth image, sorted by
    score as :func:`read_predictions` gives them). ``normalise=False`` skips step 2 (EdgeML's SCUT-HEAD script)."""
    if len(predictions) != len(ground_truth.keys):
        raise ValueError(f"{len(predictions)} prediction arrays for {len(ground_truth.keys)} images")
    if normalise:
        predictions = normalise_scores(predictions)
    thresholds = 1.0 - np.arange(1, num_thresholds + 1) / num_thresholds
    results = {}
    for setting, counted in ground_truth.counted.items():
        proposals = np.zeros(num_thresholds, dtype=np.int64)
        recalled = np.zeros(num_thresholds, dtype=np.int64)
        num_faces = 0
        for pred, gt, keep in zip(predictions, ground_truth.boxes, counted):
            num_faces += len(keep)
            if len(gt) == 0 or len(pred) == 0:
                continue
            proposal, pred_recall = _image_evaluation(pred, gt, keep, iou_threshold)
            p, r = _image_pr_info(pred[:, 4], proposal, pred_recall, thresholds)
            proposals += p
            recalled += r
        if num_faces == 0:
            raise GroundTruthError(f"{ground_truth.source}: setting {setting!r} counts no face; its AP is undefined")
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = recalled / proposals
        recall = recalled / num_faces
        results[setting] = SettingResult(voc_ap(recall, precision), precision, recall, thresholds, num_faces)
    return results


def evaluate_widerface(pred_dir: str | Path, gt_dir: str | Path) -> EvaluationResult:
    """Easy/medium/hard AP of the prediction layout in ``pred_dir`` against the eval tool's ``.mat`` files."""
    ground_truth = load_widerface_ground_truth(gt_dir)
    predictions, missing = read_predictions(pred_dir, ground_truth.keys)
    return EvaluationResult(evaluate_faces(predictions, ground_truth), tuple(missing))


# ------------------------------------------------------------------------------------------------- SCUT-HEAD


def scut_head_ground_truth(dataset) -> FaceGroundTruth:
    """Every head of a :class:`repro.data.scut_head.ScutHead` split counts (setting ``all``); boxes ``x y w h``
    with ``w = xmax - xmin`` in double, so that the protocol's ``x2 = x + w`` gives back ``xmax``."""
    boxes = tuple(np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1) for b in dataset.boxes)
    counted = {"all": tuple(np.arange(len(b)) for b in boxes)}
    return FaceGroundTruth(tuple(dataset.names), boxes, counted, source=str(dataset.list_file))


def evaluate_scut_head(
    pred_dir: str | Path,
    data_root: str | Path | None = None,
    split: str = "val",
    list_file: str | Path | None = None,
    normalise: bool = False,
) -> EvaluationResult:
    """AP on SCUT-HEAD Part B with the WIDER protocol and no ignored heads, predictions in ``<pred_dir>/<name>.txt``.

    ``normalise=False`` follows EdgeML's ``scut_evaluation.py``, which defines the score normalisation but never
    calls it (thresholds apply to the raw scores); ``True`` normalises as the WIDER tool does.
    """
    from repro.data import get_dataset

    options = {} if list_file is None else {"list_file": list_file}
    ground_truth = scut_head_ground_truth(get_dataset("scut_head", data_root, split, **options))
    predictions, missing = read_predictions(pred_dir, ground_truth.keys)
    return EvaluationResult(evaluate_faces(predictions, ground_truth, normalise=normalise), tuple(missing))


# --------------------------------------------------------------------------------------------------- commands


def _report_missing(result: EvaluationResult) -> None:
    """One line on stderr when some images had no prediction file (they count as images without detections)."""
    if result.missing:
        print(
            f"warning: {len(result.missing)} images have no prediction file (first: {result.missing[0]}.txt); "
            "they count as images without detections, as in the official tool",
            file=sys.stderr,
        )


def _run_command(evaluate: Callable[[], EvaluationResult], out: str | None, record: dict[str, Any]) -> int:
    """Print the APs as one JSON object; ``out`` also gets the curves, ``record`` and the provenance."""
    from repro.data.errors import DatasetError

    try:
        result = evaluate()
    except (GroundTruthError, PredictionFileError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _report_missing(result)
    print(json.dumps(result.aps()))
    if out:
        settings = {name: r.to_dict() for name, r in result.settings.items()}
        full = {**record, "missing_predictions": list(result.missing), "settings": settings}
        write_json_atomic(out, {**full, "provenance": provenance(accelerator=False)})
    return 0


def eval_widerface_command(pred: str, gt: str, out: str | None = None) -> int:
    """``repro eval-widerface``: print ``{"easy": AP, "medium": AP, "hard": AP}``."""
    protocol = "WIDER FACE eval_tools (MATLAB): IoU 0.5, normalised scores, 1000 thresholds, VOC AP"
    return _run_command(
        lambda: evaluate_widerface(pred, gt), out, {"protocol": protocol, "pred_dir": pred, "gt_dir": gt}
    )


def eval_scut_head_command(
    pred: str,
    data_root: str | None = None,
    split: str = "val",
    list_file: str | None = None,
    normalise: bool = False,
    out: str | None = None,
) -> int:
    """``repro eval-scut-head``: print ``{"all": AP}``."""
    protocol = f"WIDER FACE protocol, no ignored heads, {'normalised' if normalise else 'raw'} scores (EdgeML)"
    record = {"protocol": protocol, "pred_dir": pred, "split": split, "list_file": list_file}
    return _run_command(lambda: evaluate_scut_head(pred, data_root, split, list_file, normalise=normalise), out, record)
