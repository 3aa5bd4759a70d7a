"""The profiler against the reported RNNPool numbers in paper_tables/rnnpool (Tables 1-3 and 18, Section 5.2 VWW),
judged by the one tolerance rule of the tables (repro.records.tolerance, with each table's printing convention).

One test per cell. A cell the suite cannot match is an explicit, strict xfail whose reason names why; the full
discussion is in docs/profiling.md ("Cells that are not matched").
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from repro.metrics.cells import CellEvaluator
from repro.pipeline.stages.profile import entry_dtype
from repro.records.entries import load_entries
from repro.records.reported import PROFILE_METRICS, ReportedCell, load_table

REPO = Path(__file__).resolve().parents[1]
TABLES = REPO / "paper_tables" / "rnnpool"
FILES = ("table1", "table2", "table3", "table4", "table5", "table18", "vww_text")

_TV_PARAMS = "torchvision's {0} has {1} parameters; the paper prints {2}"
_RNN_MACS = (
    "the RNNPool/ReNet block costs {0} M MACs (EdgeML operator: both passes of RNN1 and both directions of RNN2 on "
    "every patch) and the rest of the network {1} M; the paper's total implies a different cost, and the same "
    "RNNPool block is priced differently in different rows (docs/profiling.md)"
)
_FACE_MACS = (
    "our {0} counts the RNNPool block as EdgeML's operator computes it and every S3FD head; the paper prints {1} "
    "(the same pricing gap as the classifiers' RNNPool rows, docs/profiling.md)"
)
_PARAMS_MODEL = (
    "the model built from the paper's architecture tables has {0} parameters, the paper prints {1} "
    "(docs/rnnpool.md, 'Parameter counts against the paper')"
)

KNOWN_MISMATCHES: dict[str, str] = {
    # ---- Table 1
    "table1:mobilenetv2-rnnpool-params": _PARAMS_MODEL.format("2.217M", "2.00M"),
    "table1:mobilenetv2-rnnpool-macs": _RNN_MACS.format(49.3, 214.3),
    "table1:efficientnet_b0-base-params": _TV_PARAMS.format("EfficientNet-B0 (10 classes)", "4,020,358", "4.03M"),
    "table1:efficientnet_b0-rnnpool-params": _PARAMS_MODEL.format("3.993M", "3.90M"),
    "table1:efficientnet_b0-rnnpool-macs": _RNN_MACS.format(49.3, 295.9),
    "table1:resnet18-rnnpool-params": _PARAMS_MODEL.format("10.513M", "10.60M"),
    "table1:resnet18-rnnpool-macs": _RNN_MACS.format(334.4, 940.1),
    "table1:resnet18-base-memopt-macs": "patch-by-patch recomputation of conv1..layer2.0 for every pixel of the "
    "28x28x128 map gives 20.92 G (paper 21.58 G, -3.1 %); the paper does not give the exact patch schedule",
    "table1:densenet121-rnnpool-macs": _RNN_MACS.format(609.1, 912.8),
    "table1:densenet121-base-memopt-macs": "the earliest cut that reaches the 1.53 MB peak recomputes up to "
    "transition1.conv (75.3 G); the paper's 24.41 G implies a schedule App. E.3 does not describe",
    "table1:googlenet-base-macs": "torchvision's GoogLeNet uses 3x3 convs in the '5x5' inception branch "
    "(1.497 G); the original GoogLeNet (paper: 1.57 G) uses 5x5",
    "table1:googlenet-base-memopt-macs": "3x3 instead of 5x5 inception branches (see googlenet-base-macs) and an "
    "unspecified patch schedule: 2.77 G vs 3.32 G",
    "table1:googlenet-rnnpool-params": _PARAMS_MODEL.format("9.837M", "9.35M"),
    "table1:googlenet-rnnpool-peak_memory": "GoogLeNet-RNNPool as specified (RNNPool to 28x28x128, then inception "
    "3a/3b at 28x28) peaks at inception 3b (1.63 MB); the paper's 0.78 MB is inception 4e, so its model does not "
    "run 3a/3b at 28x28, which App. F does not describe",
    "table1:googlenet-rnnpool-macs": _RNN_MACS.format(334.4, 1127.3),
    # ---- Table 2
    "table2:mobilenetv2-lastlayer-macs": _RNN_MACS.format(55.9, 299.5),
    "table2:mobilenetv2-lastlayer-params": _PARAMS_MODEL.format("2.955M", "2.9M"),
    "table2:mobilenetv2-avg-macs": "conv + 4x4 average pool + Table 10's bottlenecks (first one on 64 channels) "
    "cost 215.9 M; the paper prints 0.200 G",
    "table2:mobilenetv2-avg-params": _PARAMS_MODEL.format("2.218M", "2.0M"),
    "table2:mobilenetv2-max-macs": "conv + 4x4 max pool + Table 10's bottlenecks cost 215.9 M; the paper prints "
    "0.200 G",
    "table2:mobilenetv2-max-params": _PARAMS_MODEL.format("2.218M", "2.0M"),
    "table2:mobilenetv2-strided_conv-macs": "conv + strided conv + Table 10's bottlenecks cost 272.1 M; the paper "
    "prints 0.258 G",
    "table2:mobilenetv2-strided_conv-params": _PARAMS_MODEL.format("2.289M", "2.1M"),
    "table2:mobilenetv2-renet-macs": _RNN_MACS.format(96.3, 214.3),
    "table2:mobilenetv2-rnnpool-macs": _RNN_MACS.format(49.3, 214.3),
    "table2:mobilenetv2-rnnpool-params": _PARAMS_MODEL.format("2.217M", "2.0M"),
    "table2:mobilenetv2-rnnpool_lastlayer-macs": _RNN_MACS.format(105.2, 214.3),
    "table2:mobilenetv2-rnnpool_lastlayer-params": _PARAMS_MODEL.format("2.935M", "2.7M"),
    "table2:densenet121-lastlayer-macs": _RNN_MACS.format(35.8, 2833.1),
    "table2:densenet121-lastlayer-params": _PARAMS_MODEL.format("7.424M", "7.41M"),
    "table2:densenet121-avg-macs": "the network after the 4x4 average pool (transition2 onwards, Fig. 2) costs "
    "922.4 M; the paper prints 0.71 G",
    "table2:densenet121-avg-params": _PARAMS_MODEL.format("5.606M", "5.59M"),
    "table2:densenet121-max-macs": "the network after the 4x4 max pool costs 922.4 M; the paper prints 0.71 G",
    "table2:densenet121-max-params": _PARAMS_MODEL.format("5.606M", "5.59M"),
    "table2:densenet121-strided_conv-macs": "conv + strided conv + the rest of DenseNet121 cost 1529.4 M; the paper "
    "prints 1.33 G",
    "table2:densenet121-renet-macs": _RNN_MACS.format(635.8, 912.8),
    "table2:densenet121-rnnpool-macs": _RNN_MACS.format(609.1, 912.8),
    "table2:densenet121-rnnpool_lastlayer-macs": _RNN_MACS.format(644.9, 912.8),
    "table2:mobilenetv2_035_vww-base-params": _PARAMS_MODEL.format("287.3K", "296K"),
    "table2:mobilenetv2_035_vww-lastlayer-macs": _RNN_MACS.format(3.5, 52.7),
    "table2:mobilenetv2_035_vww-lastlayer-params": _PARAMS_MODEL.format("332.5K", "300K"),
    "table2:mobilenetv2_035_vww-avg-params": _PARAMS_MODEL.format("281.9K", "255K"),
    "table2:mobilenetv2_035_vww-max-params": _PARAMS_MODEL.format("281.9K", "255K"),
    "table2:mobilenetv2_035_vww-strided_conv-params": _PARAMS_MODEL.format("290.9K", "264K"),
    "table2:mobilenetv2_035_vww-renet-params": _PARAMS_MODEL.format("300.2K", "277K"),
    "table2:mobilenetv2_035_vww-rnnpool-macs": _RNN_MACS.format(9.0, 31.4),
    "table2:mobilenetv2_035_vww-rnnpool-params": _PARAMS_MODEL.format("281.9K", "255K"),
    "table2:mobilenetv2_035_vww-rnnpool_lastlayer-macs": _RNN_MACS.format(12.5, 31.4),
    "table2:mobilenetv2_035_vww-rnnpool_lastlayer-params": _PARAMS_MODEL.format("327.0K", "259K"),
    # ---- Table 3
    "table3:mobilenetv1_rnnpool-macs": _RNN_MACS.format(49.3, 390.5),
    "table3:mobilenetv2-params": _TV_PARAMS.format("MobileNetV2 (1000 classes)", "3,504,872", "3.4M")
    + " (the MobileNetV2 paper's own rounded count)",
    "table3:mobilenetv2_renet-macs": _RNN_MACS.format(96.3, 215.6),
    "table3:mobilenetv2_rnnpool-params": _PARAMS_MODEL.format("3.485M", "3.2M"),
    "table3:mobilenetv2_rnnpool-macs": _RNN_MACS.format(49.3, 215.6),
    # ---- Table 18 (the paper prints 2.0M for all three cells; the rest of the network costs 214.3 M MACs)
    "table18:lstm-macs": _RNN_MACS.format(197.1, 214.3),
    "table18:gru-macs": _RNN_MACS.format(147.8, 214.3),
    "table18:fastgrnn-macs": _RNN_MACS.format(49.3, 214.3),
    **{
        f"table18:{cell}-params": _PARAMS_MODEL.format(n, "2.0M")
        for cell, n in (("lstm", "2.221M"), ("gru", "2.219M"), ("fastgrnn", "2.217M"))
    },
    # ---- Tables 4 and 5 (face detectors; docs/profiling.md, "Face detectors")
    "table4:face_c-macs": _FACE_MACS.format("2.016 G", "1.80 G"),
    "table4:face_b-macs": _FACE_MACS.format("1.275 G", "1.18 G"),
    "table4:face_a-macs": _FACE_MACS.format("0.163 G", "0.10 G"),
    "table4:face_quant-macs": _FACE_MACS.format("0.180 G", "0.12 G"),
    "table5:face_m4-macs": _FACE_MACS.format("103.3 M", "70 M"),
    "table4:face_b-params": _PARAMS_MODEL.format("1.250M", "1.12M"),
    "table4:face_a-params": _PARAMS_MODEL.format("0.118M", "0.06M"),
    "table4:face_quant-peak_memory": "the paper's 225 KB is the MBConv after RNNPool, 80x60x32 + 80x60x16 bytes; our "
    "layerwise peak (569 KB) holds the six detection-head sources until the heads run, and the largest map (300 KB) "
    "is the stem conv's 240x320x4, which the paper computes patch by patch with RNNPool",
    "table5:face_m4-peak_memory": "no step of the M4 model holds 188 KB at 1 or 4 bytes per element: the largest map "
    "is RNNPool's 30x40x64 (75 KB in int8, 300 KB in fp32)",
    # ---- Section 5.2 (VWW, 8-bit)
    "vww_text:vww-base-224-peak_memory": "MobileNetV2-0.35x with an 8-channel stem peaks at its first MBConv, "
    "112x112x8 + 112x112x8 bytes = 196 KB (294 KB with torchvision's 16-channel stem); 250 KB is also the "
    "challenge's RAM limit, and no step of the model holds 250 KB",
    "vww_text:vww-rnnpool-224-peak_memory": "the EdgeML VWW model peaks at the MBConv after RNNPool, 28x28x32 + "
    "14x14x24 bytes = 29.09 KB; 33.68 KB (34,488 B) is not the size of any step",
    "vww_text:vww-rnnpool-224-peak_memory-approx": "same model as vww-rnnpool-224-peak_memory: 29.09 KB, not 34 KB",
}


def _cells() -> list:
    params = []
    for name in FILES:
        for cell in load_table(TABLES / f"{name}.yaml").cells:
            if cell.metric not in PROFILE_METRICS or cell.value is None or not (cell.model or cell.entry):
                continue  # no reported value, or a competitor method the suite does not build
            key = f"{name}:{cell.id}"
            marks = [pytest.mark.xfail(strict=True, reason=KNOWN_MISMATCHES[key])] if key in KNOWN_MISMATCHES else []
            params.append(pytest.param(cell, id=key, marks=marks))
    return params


CELLS = _cells()


@pytest.fixture(scope="module")
def evaluator() -> CellEvaluator:
    return CellEvaluator()


def test_every_known_mismatch_names_an_existing_cell():
    ids = {p.id for p in CELLS}
    assert set(KNOWN_MISMATCHES) <= ids, sorted(set(KNOWN_MISMATCHES) - ids)


def test_the_data_files_cover_the_required_cells():
    ids = {p.id for p in CELLS}
    for model in ("mobilenetv2", "efficientnet_b0", "resnet18", "densenet121", "googlenet"):
        for column in ("base-peak_memory", "base-macs", "rnnpool-peak_memory", "rnnpool-macs", "rnnpool-params"):
            assert f"table1:{model}-{column}" in ids
    assert sum(i.startswith("table2:") for i in ids) == 48
    assert sum(i.startswith("table3:") for i in ids) == 18
    assert sum(i.startswith("vww_text:") for i in ids) == 4


def _with_model(cell: ReportedCell) -> ReportedCell:
    """A cell without its own model block is computed from its entry, as the profile stage does."""
    if cell.model:
        return cell
    entry = load_entries(REPO / "pipelines")[cell.entry]
    spec = {
        "name": entry.arch,
        "num_classes": entry.num_classes,
        "image_size": entry.image_size,
        "opts": dict(entry.model_opts),
        "dtype": entry_dtype(entry),
    }
    return dataclasses.replace(cell, model=spec)


@pytest.mark.parametrize("cell", CELLS)
def test_reported_cell(cell, evaluator):
    ours = evaluator.value(_with_model(cell))
    assert cell.allows(ours), f"ours {ours:.4g} {cell.unit} vs {cell.printed} ({cell.tolerance.describe()})"


def test_reported_parameter_values_are_those_of_the_shared_reference():
    """Every params cell of the RNNPool tables carries a value that the reference transcription
    (shared/reference/paper_numbers.yaml) lists for the same table."""
    import os

    import yaml

    shared = Path(os.environ.get("REPRO_SHARED", REPO.parent / "shared")) / "reference" / "paper_numbers.yaml"
    if not shared.is_file():
        pytest.skip(f"{shared} not found (set REPRO_SHARED to the shared/ directory)")
    reported: dict[str, set[float]] = {}
    for rec in yaml.safe_load(shared.read_text()):
        if str(rec.get("paper", "")).startswith("RNNPool") and rec.get("metric") == "parameters":
            table = str(rec["table"]).split(" (")[0].strip().lower().replace(" ", "")
            reported.setdefault(table, set()).add(round(float(rec["value"]), 6))  # M or K, as the cell
    checked = 0
    for name in ("table1", "table2", "table3", "table18"):
        for cell in load_table(TABLES / f"{name}.yaml").cells:
            if cell.metric == "params" and cell.value is not None:
                assert round(cell.value, 6) in reported[name], (name, cell.id, cell.value)
                checked += 1
    assert checked >= 30
