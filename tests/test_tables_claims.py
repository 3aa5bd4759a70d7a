"""Abstract claims computed from results, with the computation shown; verdicts and 'not run' reasons."""

from __future__ import annotations

import pytest

from repro.records.entries import ClaimRole, Entry
from repro.records.profile import ProfileRow
from repro.records.reported import PaperTable
from repro.records.runs import MetricsRecord
from repro.records.verdict import Verdict
from repro.tables.claims import join_claim, sap_imagenet_avg_gain, sap_iso_memory_gain, sap_memory_reduction
from repro.tables.results import Results


def _entry(eid: str, roles) -> Entry:
    return Entry(
        id=eid,
        file="p.yaml",
        group="g",
        task="classification",
        dataset="imagenet",
        arch=eid,
        image_size=224,
        num_classes=1000,
        claim_roles=tuple(ClaimRole(**r) for r in roles),
    )


def _record(eid: str, profile: str, acc: float | None) -> MetricsRecord:
    return MetricsRecord(
        entry=eid,
        group="g",
        task="classification",
        arch=eid,
        pipeline_file="p.yaml",
        profile=profile,
        status="ok" if acc is not None else "failed",
        reason=None if acc is not None else "x",
        values={"accuracy": {"best": acc, "last": acc}} if acc is not None else {},
    )


def _row(eid: str, mb: float, streamed_mb: float) -> ProfileRow:
    peaks = {"layerwise": int(mb * 2**20), "layerwise-streamed-pools": int(streamed_mb * 2**20)}
    return ProfileRow(entry=eid, model=eid, image_size="224", num_classes=1000, peak_bytes=peaks)


def _results(profile: str = "full") -> Results:
    accs = {
        ("1222121", "skip"): 70.0,
        ("1222121", "lip"): 71.0,
        ("1222121", "nlp_headfix2_nowin"): 72.0,
        ("4222121", "skip"): 60.0,
        ("4222121", "lip"): 61.0,
        ("4222121", "nlp_headfix2_nowin"): 63.5,
    }
    entries, metrics = {}, {}
    for (variant, method), acc in accs.items():
        eid = f"{method}-{variant}"
        roles = [{"claim": "sap_imagenet", "variant": variant, "method": method}]
        if method.startswith("nlp"):
            roles.append({"claim": "sap_memory", "baseline": "skip-1222121"})
        entries[eid] = _entry(eid, roles)
        metrics[eid] = _record(eid, profile, acc)
    rows = [
        _row("skip-1222121", 2.0, 2.0),
        _row("nlp_headfix2_nowin-1222121", 2.0, 1.0),
        _row("nlp_headfix2_nowin-4222121", 2.5, 0.1),
    ]
    return Results(entries=entries, metrics=metrics, profile={r.entry: r for r in rows}, profile_file="profile.csv")


def _cell(convention: str = "layerwise"):
    return PaperTable.from_dict(
        {
            "paper": "sap",
            "table": "claims",
            "title": "t",
            "source": "abs",
            "cells": [
                {
                    "id": "m",
                    "row": "mem",
                    "column": convention,
                    "metric": "claim",
                    "claim": "sap_memory_reduction",
                    "convention": convention,
                    "value": 22,
                    "unit": "x",
                    "kind": "abstract_claim",
                    "source": "abs",
                }
            ],
        }
    ).cells[0]


def test_average_and_iso_memory_gain():
    res = sap_imagenet_avg_gain(_results(), None)
    assert res.value == pytest.approx((1.0 + 2.5) / 2) and res.comparable
    assert "1222121: nlp_headfix2_nowin 72.00 - lip 71.00 = +1.00 pp" in res.computation
    iso = sap_iso_memory_gain(_results(), None)
    assert iso.value == pytest.approx(2.5) and "at 4222121" in iso.computation
    assert not sap_imagenet_avg_gain(_results("smoke"), None).comparable


def test_memory_reduction_under_the_cells_convention_with_every_convention_shown():
    res = sap_memory_reduction(_results(), _cell("layerwise"))
    assert res.value == pytest.approx(1.0) and res.comparable and "nlp_headfix2_nowin-1222121" in res.computation
    assert "layerwise-streamed-pools 20.00x" in res.computation
    streamed = sap_memory_reduction(_results(), _cell("layerwise-streamed-pools"))
    assert streamed.value == pytest.approx(20.0, rel=1e-4) and "nlp_headfix2_nowin-4222121" in streamed.computation


def test_claim_not_run_when_entries_lack_results():
    results = _results()
    results.metrics["lip-4222121"] = _record("lip-4222121", "full", None)
    res = sap_imagenet_avg_gain(results, None)
    assert res.value is None and "lip-4222121" in res.reason


def test_join_claim_verdicts():
    table = PaperTable.from_dict(
        {
            "paper": "sap",
            "table": "claims",
            "title": "t",
            "source": "abs",
            "cells": [
                {
                    "id": "a",
                    "row": "avg",
                    "column": "gain",
                    "metric": "claim",
                    "claim": "sap_imagenet_avg_gain",
                    "value": 1.2,
                    "unit": "pp",
                    "kind": "abstract_claim",
                    "source": "abstract",
                    "tolerance": {"abs": 0.6},
                },
                {
                    "id": "b",
                    "row": "hw",
                    "column": "gain",
                    "metric": "claim",
                    "claim": "condensation_hardware_memory",
                    "value": 0.2,
                    "unit": "%",
                    "kind": "abstract_claim",
                    "source": "abstract",
                },
                {
                    "id": "c",
                    "row": "?",
                    "column": "gain",
                    "metric": "claim",
                    "claim": "no_such_claim",
                    "value": 1.0,
                    "unit": "%",
                    "kind": "abstract_claim",
                    "source": "abstract",
                },
            ],
        }
    )
    full = [join_claim(table, c, _results()) for c in table.cells]
    assert full[0].verdict is Verdict.WITHIN and full[0].computation  # 1.75 vs 1.2 +- 0.6
    assert full[1].verdict is Verdict.NOT_RUN and "not modelled" in full[1].reason
    assert full[2].verdict is Verdict.NOT_RUN and "unknown claim" in full[2].reason
    assert join_claim(table, table.cells[0], _results("smoke")).verdict is Verdict.SMOKE


def test_condensation_gain_is_the_tpr_difference_of_the_pair():
    from repro.tables.claims import condensation_face_detection_gain

    def face_record(eid: str, profile: str, tpr: float | None) -> MetricsRecord:
        values = {"map": {"easy": 0.5, "tpr_at_fpr": tpr}} if tpr is not None else {}
        return MetricsRecord(
            entry=eid,
            group="condensation",
            task="face_detection",
            arch=eid,
            pipeline_file="p.yaml",
            profile=profile,
            status="ok" if tpr is not None else "failed",
            values=values,
        )

    entries = {m: _entry(m, [{"claim": "condensation", "method": m}]) for m in ("plain", "ccp")}
    results = Results(
        entries=entries,
        metrics={"plain": face_record("plain", "full", 0.60), "ccp": face_record("ccp", "full", 0.615)},
        profile={},
        profile_file="profile.csv",
    )
    res = condensation_face_detection_gain(results, None)
    assert res.value == pytest.approx(1.5) and res.comparable and "ccp 61.50 % - plain 60.00 %" in res.computation
    results.metrics["ccp"] = face_record("ccp", "smoke", 0.0)
    assert not condensation_face_detection_gain(results, None).comparable
    results.metrics["ccp"] = face_record("ccp", "full", None)
    res = condensation_face_detection_gain(results, None)
    assert res.value is None and "ccp" in res.reason
    # the int8 claim reads its own pair only
    from repro.tables.claims import condensation_face_detection_gain_int8

    res = condensation_face_detection_gain_int8(results, None)
    assert res.value is None and "condensation_int8" in res.reason
