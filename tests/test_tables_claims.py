"""Abstract claims computed from results, with the computation shown; verdicts and 'not run' reasons."""

from __future__ import annotations

import pytest

from repro.pipeline.entries import Entry
from repro.tables.claims import join_claim, sap_imagenet_avg_gain, sap_iso_memory_gain, sap_memory_reduction
from repro.tables.join import Results
from repro.tables.schema import PaperTable
from repro.tables.verdict import Verdict


def _entry(eid: str, role) -> Entry:
    return Entry(
        id=eid,
        file="p.yaml",
        group="g",
        task="classification",
        dataset="imagenet",
        arch=eid,
        image_size=224,
        num_classes=1000,
        raw={"claim_role": role},
    )


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
        metrics[eid] = {"status": "ok", "profile": profile, "accuracy": {"best": acc, "last": acc}}
    profile_rows = {
        "skip-1222121": {"peak_layerwise_bytes": 2.0 * 2**20},
        "nlp_headfix2_nowin-1222121": {"peak_layerwise_bytes": 2.0 * 2**20},
        "nlp_headfix2_nowin-4222121": {"peak_layerwise_bytes": 0.1 * 2**20},
    }
    return Results(metrics, {}, profile_rows, "profile.csv", [], entries)


def test_average_and_iso_memory_gain():
    res = sap_imagenet_avg_gain(_results())
    assert res.value == pytest.approx((1.0 + 2.5) / 2) and res.comparable
    assert "1222121: nlp_headfix2_nowin 72.00 - lip 71.00 = +1.00 pp" in res.computation
    iso = sap_iso_memory_gain(_results())
    assert iso.value == pytest.approx(2.5) and "at 4222121" in iso.computation
    assert not sap_imagenet_avg_gain(_results("smoke")).comparable


def test_memory_reduction_from_profile():
    res = sap_memory_reduction(_results())
    assert res.value == pytest.approx(20.0) and res.comparable and "nlp_headfix2_nowin-4222121" in res.computation


def test_claim_not_run_when_entries_lack_results():
    results = _results()
    results.metrics["lip-4222121"] = {"status": "failed", "reason": "x"}
    res = sap_imagenet_avg_gain(results)
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
