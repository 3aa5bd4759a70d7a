"""Parameter counts of the RNNPool classification models next to the paper's parameter columns (Tables 1-3, 18).

:data:`PAPER_PARAM_CELLS` maps every reported parameter cell to the registered model and options that build it. The
reported values are *not* stored here: they are read from a ``paper_numbers.yaml``-style file (a list of records with
``paper``, ``table``, ``backbone``, ``method``, ``metric: parameters``, ``value``, ``unit``) passed by the caller.

A cell agrees when our count rounds to the printed value at the printed precision (``2.2`` -> +-0.05M, ``4.03`` ->
+-0.005M, ``296`` (K) -> +-0.5K), or truncates to it (the paper is not consistent about rounding). Trailing zeros
are taken as padding (Table 1 prints ``2.20M`` next to ``4.03M``), but millions always keep one decimal.
Command: ``repro rnnpool-params --reported PATH``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from repro.models.rnnpool_common import count_parameters

UNITS = {"millions": 1e6, "thousands": 1e3}


@dataclass(frozen=True)
class PaperParamCell:
    """One reported parameter cell and the model configuration that reproduces it."""

    table: str
    backbone: str
    method: str
    model: str
    num_classes: int
    options: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.table, self.backbone, self.method

    def build(self):
        from repro.models import build_model

        return build_model(self.model, self.num_classes, **self.options)


_RNNPOOL = "RNNPool (RNNPoolLayer replaces early blocks)"
_LAST = {"last_layer_rnnpool": True}


def _table1() -> list[PaperParamCell]:
    pairs = {
        "MobileNetV2": "mobilenetv2",
        "EfficientNet-B0": "efficientnet_b0",
        "ResNet18": "resnet18",
        "DenseNet121": "densenet121",
        "GoogLeNet": "googlenet",
    }
    cells = []
    for backbone, base in pairs.items():
        cells.append(PaperParamCell("Table 1", backbone, "base", base, 10))
        cells.append(PaperParamCell("Table 1", backbone, _RNNPOOL, f"{base}_rnnpool", 10))
    return cells


def _table2() -> list[PaperParamCell]:
    columns = {
        "MobileNetV2": ("mobilenetv2", "mobilenetv2_rnnpool", 10),
        "DenseNet121": ("densenet121", "densenet121_rnnpool", 10),
        "MobileNetV2-0.35x": ("mobilenetv2_035_vww", "mobilenetv2_035_rnnpool_vww", 2),
    }
    rows = {
        "Average Pooling": {"replace": "avg"},
        "Max Pooling": {"replace": "max"},
        "Strided Convolution": {"replace": "strided_conv"},
        "ReNet": {"replace": "renet"},
        "RNNPoolLayer": {},
        "RNNPoolLayer + Last layer RNNPool": _LAST,
    }
    cells = []
    for backbone, (base, rnnpool, classes) in columns.items():
        cells.append(PaperParamCell("Table 2", backbone, "Base Network", base, classes))
        cells.append(PaperParamCell("Table 2", backbone, "Last layer RNNPool", base, classes, _LAST))
        cells += [PaperParamCell("Table 2", backbone, row, rnnpool, classes, opts) for row, opts in rows.items()]
    return cells


def _table3() -> list[PaperParamCell]:
    cells = []
    for backbone, name in (("MobileNetV1", "mobilenetv1"), ("MobileNetV2", "mobilenetv2")):
        cells.append(PaperParamCell("Table 3", backbone, "base", name, 1000))
        cells.append(PaperParamCell("Table 3", backbone, "ReNet", f"{name}_renet", 1000))
        cells.append(PaperParamCell("Table 3", backbone, "RNNPool", f"{name}_rnnpool", 1000))
    return cells


def _table18() -> list[PaperParamCell]:
    return [
        PaperParamCell("Table 18", "MobileNetV2-RNNPool", f"RNNPool with {label} cell", "mobilenetv2_rnnpool", 10,
                       {"rnn_cell": cell})
        for label, cell in (("LSTM", "lstm"), ("GRU", "gru"), ("FastGRNN", "fastgrnn"))
    ]  # fmt: skip


PAPER_PARAM_CELLS: tuple[PaperParamCell, ...] = (*_table1(), *_table2(), *_table3(), *_table18())


def load_reported_parameters(path: str | Path) -> dict[tuple[str, str, str], tuple[float, str]]:
    """``{(table, backbone, method): (value, unit)}`` for the RNNPool parameter cells of a paper-numbers YAML file."""
    import yaml

    records = yaml.safe_load(Path(path).read_text())
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a list of records (paper, table, backbone, method, metric, value, unit)")
    out = {}
    for rec in records:
        if not str(rec.get("paper", "")).startswith("RNNPool") or rec.get("metric") != "parameters":
            continue
        table = str(rec["table"]).split(" (")[0].strip()
        out[(table, str(rec["backbone"]), str(rec["method"]))] = (float(rec["value"]), str(rec["unit"]))
    return out


def printed_decimals(value: float) -> int:
    """Decimals needed to write ``value`` (2.2 -> 1, 4.03 -> 2, 296.0 -> 0)."""
    text = repr(float(value)).rstrip("0").rstrip(".")
    return len(text.split(".")[1]) if "." in text else 0


def agreement(ours: int, reported: float, unit: str) -> str:
    """``round``, ``truncated`` or ``mismatch`` at the printed precision of ``reported``."""
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; valid: {', '.join(UNITS)}")
    scaled = ours / UNITS[unit]
    # The paper prints millions with at least one decimal ("2.0M"; Table 1 pads to "2.00M"), thousands as integers.
    decimals = max(printed_decimals(reported), 1 if unit == "millions" else 0)
    step = 10.0**-decimals
    if abs(scaled - reported) <= step / 2 + 1e-9:
        return "round"
    if abs(math.floor(scaled / step + 1e-9) * step - reported) <= step * 1e-6:
        return "truncated"
    return "mismatch"


def parameter_counts() -> dict[tuple[str, str, str], int]:
    """Our parameter count for every paper cell; models are built on the ``meta`` device (no memory, no init cost)."""
    counts, cache = {}, {}
    with torch.device("meta"):
        for cell in PAPER_PARAM_CELLS:
            config = (cell.model, cell.num_classes, tuple(sorted(cell.options.items())))
            if config not in cache:
                cache[config] = count_parameters(cell.build())
            counts[cell.key] = cache[config]
    return counts


def parameter_agreement(reported: dict | None = None, counts: dict | None = None) -> list[dict]:
    """One row per paper cell: our count, the reported value (when ``reported`` has it) and the verdict."""
    counts = parameter_counts() if counts is None else counts
    rows = []
    for cell in PAPER_PARAM_CELLS:
        ours = counts[cell.key]
        row = {"table": cell.table, "backbone": cell.backbone, "method": cell.method, "model": cell.model,
               "num_classes": cell.num_classes, "options": cell.options, "ours": ours}  # fmt: skip
        if reported is not None and cell.key in reported:
            value, unit = reported[cell.key]
            row.update(reported=value, unit=unit, verdict=agreement(ours, value, unit))
        rows.append(row)
    return rows


def format_agreement(rows: list[dict]) -> str:
    """Markdown table of :func:`parameter_agreement` rows."""
    lines = [
        "| table | backbone | row | model (options) | classes | ours | reported | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        model = f"`{r['model']}`" + (f" ({opts})" if opts else "")
        if "reported" in r:
            millions = r["unit"] == "millions"
            decimals = max(printed_decimals(r["reported"]), 1 if millions else 0)
            reported = f"{r['reported']:.{decimals}f}{'M' if millions else 'K'}"
        else:
            reported, r["verdict"] = "-", "-"
        lines.append(
            f"| {r['table']} | {r['backbone']} | {r['method']} | {model} | {r['num_classes']} | {r['ours']:,} | "
            f"{reported} | {r['verdict']} |"
        )
    return "\n".join(lines)


def main(reported_path: str | Path | None = None) -> str:
    """Build every cell's model and return the agreement table (Markdown)."""
    reported = load_reported_parameters(reported_path) if reported_path is not None else None
    return format_agreement(parameter_agreement(reported))
