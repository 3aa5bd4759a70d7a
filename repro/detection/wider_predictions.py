"""The WIDER FACE prediction layout: one ``<event>/<image>.txt`` per image.

Line 1 is the image name, line 2 the number of boxes, then one ``x y w h score`` line per box. The official
MATLAB eval tool (``read_pred.m``) reads it and EdgeML's ``wider_test.py`` writes it; the writer here follows EdgeML
by default (``w = x2 - x1 + 1``, boxes with 1 decimal, scores with 3). The reader is strict: a file that the official
tool would half-read or skip raises :class:`PredictionFileError` naming the file and the line.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from repro.utils.atomic import write_text_atomic

__all__ = [
    "PredictionFileError",
    "format_prediction_file",
    "prediction_path",
    "read_prediction_file",
    "write_prediction_file",
]


class PredictionFileError(ValueError):
    """A prediction file that does not follow the layout; the message names the file and the line."""


def prediction_path(pred_dir: str | Path, key: str) -> Path:
    """``<pred_dir>/<key>.txt`` for an image key ``<event>/<name>`` (or ``<name>`` for flat layouts)."""
    return Path(pred_dir) / f"{key}.txt"


def format_prediction_file(
    image_name: str,
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    inclusive_width: bool = True,
    box_decimals: int = 1,
    score_decimals: int = 3,
) -> str:
    """The text of one prediction file for ``boxes`` (n, 4) ``x1 y1 x2 y2`` and ``scores`` (n,).

    ``inclusive_width``: write ``w = x2 - x1 + 1`` as EdgeML does (the eval tool then adds ``x + w`` and counts
    pixels inclusively, so boxes grow by one pixel); ``False`` writes ``w = x2 - x1``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    extra = 1.0 if inclusive_width else 0.0
    lines = [image_name, str(len(boxes))]
    for (x1, y1, x2, y2), score in zip(boxes, scores):
        values = (x1, y1, x2 - x1 + extra, y2 - y1 + extra)
        lines.append(" ".join(f"{v:.{box_decimals}f}" for v in values) + f" {score:.{score_decimals}f}")
    return "\n".join(lines) + "\n"


def write_prediction_file(path: str | Path, image_name: str, boxes: np.ndarray, scores: np.ndarray, **fmt) -> Path:
    """Write one prediction file atomically (see :func:`format_prediction_file` for ``fmt``)."""
    return write_text_atomic(path, format_prediction_file(image_name, boxes, scores, **fmt))


def read_prediction_file(path: str | Path) -> np.ndarray:
    """The boxes of one prediction file as an (n, 5) float64 array ``x y w h score``, in file order.

    Raises :class:`PredictionFileError` for a missing count line, a count that differs from the number of box
    lines, a line without exactly five numbers, a NaN or infinite value, or a negative width or height.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise PredictionFileError(f"{path}: not a text file (expected the WIDER FACE prediction layout)") from None
    except OSError as err:
        raise PredictionFileError(f"{path}: cannot be read ({err.strerror or err})") from None

    def fail(line_number: int, problem: str) -> PredictionFileError:
        return PredictionFileError(f"{path}, line {line_number}: {problem}")

    if len(lines) < 2:
        raise fail(len(lines) + 1, "missing the number of boxes (line 1: image name, line 2: box count)")
    count_text = lines[1].strip()
    if not count_text.isdigit():
        raise fail(2, f"expected the number of boxes, got {lines[1]!r}")
    count = int(count_text)
    body = lines[2:]
    while body and not body[-1].strip():
        body.pop()
    if len(body) != count:
        raise fail(2, f"announces {count} boxes but {len(body)} box lines follow")
    rows = np.empty((count, 5), dtype=np.float64)
    for k, line in enumerate(body):
        number = k + 3
        fields = line.split()
        if len(fields) != 5:
            raise fail(number, f"expected 'x y w h score', got {line!r}")
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise fail(number, f"non-numeric value in {line!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise fail(number, f"NaN or infinite value in {line!r}")
        if values[2] < 0 or values[3] < 0:
            raise fail(number, f"negative width or height in {line!r}")
        rows[k] = values
    return rows
