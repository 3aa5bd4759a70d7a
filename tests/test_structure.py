"""Structure facts of the package, checked from its source: no import cycles, the layering of DESIGN.md, and one
implementation of each shared concept (entry loader, tolerance rule, atomic writer, provenance, autocast)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from repro.utils.import_graph import closure, cycles, import_graph, module_files

PACKAGE = Path(__file__).resolve().parents[1] / "repro"
# DESIGN.md, "Layering": lower never imports higher (bench, faults and experiments are tools beside the layers).
LAYERS = ["utils", "arch", "records", "layers", "models", "detection", "data", "metrics", "engine", "tables"]


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE.parent)): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}


def test_no_import_cycles_between_modules():
    assert cycles() == []


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset({"a"})}
    assert cycles(graph) == [["a", "b", "c"]]


def test_nothing_but_the_cli_imports_the_pipeline():
    graph = import_graph()
    importers = sorted(m for m, targets in graph.items() if any(_package(t) == "pipeline" for t in targets))
    assert [m for m in importers if _package(m) != "pipeline"] == ["repro.cli"]


@pytest.mark.parametrize("lower", LAYERS)
def test_a_layer_imports_no_layer_above_it(lower):
    above = set(LAYERS[LAYERS.index(lower) + 1 :]) | {"pipeline", "cli", "bench", "faults", "experiments"}
    graph = import_graph()
    bad = sorted(
        (m, t) for m, targets in graph.items() if _package(m) == lower for t in targets if _package(t) in above
    )
    assert not bad, bad


def test_the_tables_stage_runs_without_models_or_torch_code():
    """The tables stage imports no model, layer or engine code (its DVC deps stay small)."""
    modules = closure(["repro.pipeline.stages.tables"])
    assert not {m for m in modules if _package(m) in ("layers", "models", "engine", "metrics", "data")}


@pytest.mark.parametrize(
    ("pattern", "allowed", "what"),
    [
        (r"os\.replace\(", {"repro/utils/atomic.py"}, "atomic writes"),
        (r"def git_revision|\bgit\b.*rev-parse", {"repro/utils/provenance.py"}, "the git revision"),
        (r"metadata\.version\(", {"repro/utils/provenance.py"}, "package versions"),
        (r"torch\.autocast\(", {"repro/utils/amp.py"}, "autocast"),
        (
            r"def printed_decimals|def allowed_delta|def within\(|def default_tolerance",
            {"repro/records/tolerance.py"},
            "the tolerance rule",
        ),
        (r"\.glob\(\"\*\.yaml\"\)", {"repro/records/entries.py"}, "reading pipelines/*.yaml"),
        (r"\.rglob\(\"\*\.yaml\"\)", {"repro/records/reported.py"}, "reading paper_tables/**/*.yaml"),
    ],
)
def test_one_implementation_of_each_shared_concept(pattern, allowed, what):
    found = {path for path, text in _sources().items() if re.search(pattern, text)}
    assert found == allowed, f"{what} outside {sorted(allowed)}: {sorted(found - allowed)}"


def test_every_module_is_in_the_graph():
    assert set(import_graph()) == set(module_files())
