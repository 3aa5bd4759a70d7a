"""The experiment runners (Table 7, App. C.2, shoot-out) on tiny budgets, their search, statistics and settings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from repro.experiments.c2_probes import run_c2_probes
from repro.experiments.jobs import JobCache, run_jobs
from repro.experiments.settings import SettingsError
from repro.experiments.shootout import ShootoutSettings, run_shootout, train_one
from repro.experiments.stats import paired_comparison
from repro.experiments.table7 import Table7Settings, run_table7, search_order

TINY_FIT = {"epochs": 1, "batch_size": 16}


def _monotone(threshold):
    calls = []

    def passes(h1, h2):
        calls.append((h1, h2))
        return h1 * h2 >= threshold

    return passes, calls


@pytest.mark.parametrize("threshold", [1, 32, 64, 128, 4096])
def test_staircase_finds_every_minimal_passing_configuration(threshold):
    hidden = (2, 4, 8, 16, 32)
    passes, calls = _monotone(threshold)
    visited = search_order(hidden, passes, "staircase")
    assert visited == calls and len(visited) <= 2 * len(hidden) - 1
    minimal = {(a, b) for a in hidden for b in hidden if a * b >= threshold} - {
        (a, b)
        for a in hidden
        for b in hidden
        for c in hidden
        for d in hidden
        if c * d >= threshold and (c, d) != (a, b) and c <= a and d <= b
    }
    assert minimal <= set(visited)  # every minimal passing configuration was tried (so the cheapest one too)
    grid = search_order(hidden, _monotone(threshold)[0], "grid")
    assert len(grid) == len(hidden) ** 2


def test_table7_tiny_run_writes_records_tables_plot_and_resumes(tmp_path):
    settings = {"rows": ["lines@32"], "conv": [True, False], "hidden": [2, 4], "n_train": 48, "n_test": 16,
                "fit": TINY_FIT, "workers": 1}  # fmt: skip
    records = run_table7(settings, tmp_path)
    assert records["schema"] == "repro.table7/1" and records["provenance"]["git_revision"] is not None
    assert {p.name for p in tmp_path.iterdir()} >= {"table7.json", "table7.md", "table7.csv", "table7.png",
                                                   "table7.svg", "cache"}  # fmt: skip
    assert [(r["data"], r["image_size"], r["conv"]) for r in records["rows"]] == [("(1)", 32, True), ("(1)", 32, False)]
    for row in records["rows"]:
        assert set(row) >= {"data", "image_size", "conv", "h1", "h2", "params", "seeds_passed", "test_accuracy"}
        tried = [c for c in records["sweep"] if c["conv"] == row["conv"]]
        assert row["configs_tried"] == len(tried) >= 2
    assert "(1)" in (tmp_path / "table7.md").read_text()
    again = run_table7(settings, tmp_path)  # every run comes from the cache: identical results
    assert again["sweep"] == records["sweep"]


def test_table7_pass_rule_counts_seeds_and_orders_by_parameters(tmp_path):
    settings = {"rows": ["lines@32"], "conv": [True], "hidden": [2, 4], "n_train": 32, "n_test": 16, "fit": TINY_FIT,
                "target_accuracy": 0.01, "workers": 1}  # fmt: skip
    row = run_table7(settings, tmp_path)["rows"][0]
    assert row["reached"] and (row["h1"], row["h2"]) == (2, 2)  # everything passes: the smallest one wins
    assert row["seeds_run"] == 2 and row["seeds_passed"] == 2 and set(row["test_accuracy"]) == {"0", "1"}
    strict = run_table7({**settings, "target_accuracy": 1.0}, tmp_path / "strict")["rows"][0]
    assert not strict["reached"] and strict["h1"] is None and strict["closest"]["h1"] in (2, 4)


def test_c2_tiny_run_and_timing(tmp_path):
    settings = {"operators": ["rnnpool", "max", "lip"], "pool_options": {}, "fit": TINY_FIT, "workers": 1,
                "data": {"n_train": 32, "n_test": 16, "image_size": 32, "glyph": 3}}  # fmt: skip
    records = run_c2_probes(settings, tmp_path)
    assert records["schema"] == "repro.c2_probes/1" and records["comparable"] is False
    assert [r["operator"] for r in records["rows"]] == ["rnnpool", "max", "lip"]
    assert "not comparable" in (tmp_path / "c2_probes.md").read_text()
    timing = run_c2_probes({**settings, "mode": "timing", "timing": {"n_train": 64, "n_test": 32, "steps": 2}},
                           tmp_path)  # fmt: skip
    assert timing["schema"] == "repro.c2_timing/1"
    for row in timing["rows"]:
        assert row["n_train"] == 64 and row["steps_timed"] == 2 and row["seconds_per_step"] > 0


SHOOTOUT = {
    "methods": {"maxp": {}, "rnnpool": {}},
    "datasets": {"compass": {"n_train": 48, "n_test": 24, "image_size": 16, "glyph": 3}},
    "epochs": {},
    "seeds": [0, 1],
    "fit": TINY_FIT,
    "workers": 1,
}


def test_shootout_tiny_run_rows_comparisons_and_not_applicable(tmp_path):
    records = run_shootout(SHOOTOUT, tmp_path)
    assert records["schema"] == "repro.shootout/1"
    rows = {(r["setting"], r["method"]): r for r in records["rows"]}
    assert set(rows) == {(s, m) for s in ("standard", "aggressive") for m in ("maxp", "rnnpool")}
    assert not rows[("aggressive", "rnnpool")]["applicable"]  # a 2x2 map cannot take a 4x4 patch
    maxp = rows[("standard", "maxp")]
    assert set(maxp["accuracy"]) == {"0", "1"} and maxp["params"] > 0 and maxp["peak_memory_bytes"] > 0
    assert rows[("aggressive", "maxp")]["peak_memory_bytes"] < maxp["peak_memory_bytes"]
    assert {c["setting"] for c in records["comparisons"]} == {"standard"}  # one applicable pair only there
    assert [d["method"] for d in records["drops"]] == ["maxp"]
    assert {p.name for p in tmp_path.iterdir()} >= {"shootout.json", "shootout.md", "shootout.csv", "shootout.png"}


def test_same_seed_gives_the_same_shootout_row():
    first = train_one(SHOOTOUT, "compass", "standard", "maxp", seed=1)
    second = train_one(SHOOTOUT, "compass", "standard", "maxp", seed=1)
    other = train_one(SHOOTOUT, "compass", "standard", "maxp", seed=2)
    assert first["final_accuracy"] == second["final_accuracy"]
    assert first["param_digest"] == second["param_digest"]
    assert first["history"] == second["history"]
    assert other["param_digest"] != first["param_digest"]


def test_paired_comparison_matches_a_hand_computed_t_test():
    a = {"0": 0.80, "1": 0.82, "2": 0.81}
    b = {"0": 0.70, "1": 0.72, "2": 0.69}
    result = paired_comparison(a, b)
    diffs = np.array([0.10, 0.10, 0.12])
    t = diffs.mean() / (diffs.std(ddof=1) / np.sqrt(3))
    assert result["t"] == pytest.approx(t) and result["mean_difference"] == pytest.approx(diffs.mean())
    assert result["significant"] and result["p_value"] < 0.05
    assert result["sign_p_value"] == pytest.approx(0.25)  # 3 of 3 positive, two-sided
    same = paired_comparison({"0": 0.5, "1": 0.6}, {"0": 0.5, "1": 0.6})
    assert same["significant"] is False and same["p_value"] == 1.0 and same["t"] is None


def test_settings_errors_name_the_key():
    with pytest.raises(SettingsError, match=r"table7: unknown setting\(s\) \['hiden'\]"):
        Table7Settings.from_mapping({"hiden": [4]})
    with pytest.raises(SettingsError, match=r"shootout\.seeds\[0\]: expected an integer"):
        ShootoutSettings.from_mapping({"seeds": ["a", 1]})
    with pytest.raises(SettingsError, match="at least 2 seeds"):
        ShootoutSettings.from_mapping({"seeds": [0]})
    nested = Table7Settings.from_mapping({"fit": {"epochs": 3}})
    assert nested.fit.epochs == 3 and nested.fit.batch_size == Table7Settings().fit.batch_size


def _square(job):
    return {"value": job["x"] ** 2}


def test_job_cache_reuses_only_identical_jobs(tmp_path):
    cache = JobCache(tmp_path)
    jobs = [{"id": "a", "x": 2}, {"id": "b", "x": 3}]
    assert run_jobs(jobs, _square, cache=cache) == [{"value": 4}, {"value": 9}]
    cache.put({"id": "a", "x": 2}, {"value": -1})
    assert run_jobs(jobs, _square, cache=cache)[0] == {"value": -1}  # reused
    assert run_jobs([{"id": "a", "x": 5}], _square, cache=cache) == [{"value": 25}]  # changed job: recomputed
    (tmp_path / "b.json").write_text("{not json")
    assert run_jobs(jobs[1:], _square, cache=cache) == [{"value": 9}]  # unreadable entry: recomputed
    assert json.loads((tmp_path / "b.json").read_text())["result"] == {"value": 9}


@pytest.mark.slow
def test_shootout_results_do_not_depend_on_the_number_of_workers(tmp_path):
    one = run_shootout(SHOOTOUT, tmp_path / "one")
    two = run_shootout({**SHOOTOUT, "workers": 2}, tmp_path / "two")
    assert [r.get("param_digest") for r in one["rows"]] == [r.get("param_digest") for r in two["rows"]]


def test_experiment_command_reads_a_settings_section_and_overrides(tmp_path):
    from typer.testing import CliRunner

    from repro.cli import app

    params = tmp_path / "params.yaml"
    params.write_text(
        "probes:\n  c2:\n    operators: [max]\n    pool_options: {}\n    workers: 1\n"
        "    data: {n_train: 32, n_test: 16, image_size: 32, glyph: 3}\n"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["experiment", "c2", "--out", str(out), "--settings", str(params), "--section",
                                      "probes.c2", "--set", '{"fit": {"epochs": 1}}', "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    records = json.loads((out / "c2_probes.json").read_text())
    assert records["settings"]["fit"]["epochs"] == 1 and [r["operator"] for r in records["rows"]] == ["max"]
    bad = CliRunner().invoke(app, ["experiment", "c2", "--out", str(out), "--settings", str(params), "--section",
                                   "probes.table7"])  # fmt: skip
    assert bad.exit_code != 0 and "probes.table7" in str(bad.exception)


@pytest.mark.slow
def test_default_table7_cell_is_fitted_to_100_percent(tmp_path):
    """The default run (one cell, about 8 CPU-minutes): some configuration reaches 100 % on a seed."""
    row = run_table7({}, tmp_path)["rows"][0]
    assert row["reached"] and row["seeds_passed"] >= 1 and max(row["test_accuracy"].values()) == 1.0
    assert row["configs_tried"] <= 7


@pytest.mark.slow
def test_default_c2_ranks_the_relation_keeping_operators_above_the_pools(tmp_path):
    rows = {r["operator"]: r["accuracy_mean"] for r in run_c2_probes({}, tmp_path)["rows"]}
    assert rows["strided_conv"] > 0.25 and rows["rnnpool"] > 0.2  # chance is 0.125
    assert max(rows["max"], rows["avg"]) < 0.2


@pytest.mark.slow
def test_default_shootout_is_far_from_chance_and_not_saturated(tmp_path):
    records = run_shootout({}, tmp_path)
    learned = [r for r in records["rows"] if r["applicable"] and r["method"] not in ("skip", "rnnpool")]
    assert len(records["rows"]) == 44 and len(records["runs"]) == 126
    assert all(0.3 < r["accuracy_mean"] < 0.99 for r in learned)
    assert all(len(r["accuracy"]) == 3 for r in learned)
