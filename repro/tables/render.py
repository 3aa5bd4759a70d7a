"""Render one joined table as the paper lays it out (rows x columns) in Markdown (tabulate), LaTeX and CSV.

Each grid cell shows our value, the reported value, the difference and the verdict; the CSV is the long form (one line
per cell) with everything needed to trace a number: entry id, results file, reported source, tolerance.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

from tabulate import tabulate

from repro.records.reported import PaperTable
from repro.records.runs import SELECTIONS
from repro.records.verdict import CellVerdict, Verdict
from repro.utils.atomic import write_text_atomic

DIGITS = {"%": 2, "pp": 2, "MB": 3, "KB": 2, "G": 3, "M": 2, "K": 1, "x": 1, "fraction": 3, "units": 0}
CSV_FIELDS = [
    "paper",
    "table",
    "cell",
    "row",
    "column",
    "metric",
    "selection",
    "convention",
    "unit",
    "reproduced",
    "reported",
    "delta",
    "printed",
    "lower",
    "upper",
    "tolerance",
    "verdict",
    "profile",
    "entry",
    "result_file",
    "kind",
    "source",
    "reason",
    "computation",
]


def fmt(value: float | None, unit: str, signed: bool = False) -> str:
    if value is None:
        return "—"
    digits = DIGITS.get(unit, 2)
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def cell_text(j: CellVerdict) -> str:
    """``ours / reported (Δ) verdict`` for the grid."""
    unit = j.cell.unit
    ours, rep = fmt(j.reproduced, unit), j.cell.printed or fmt(j.cell.value, unit)
    if j.delta is not None:
        return f"{ours} / {rep} (Δ {fmt(j.delta, unit, signed=True)}) {j.verdict.label}"
    return f"{ours} / {rep} {j.verdict.label}"


def grid(table: PaperTable, joined: list[CellVerdict]) -> tuple[list[str], list[list[str]]]:
    """Column headers and rows in the order the cells first appear in the file."""
    rows: list[str] = []
    cols: list[str] = []
    cells: dict[tuple[str, str], list[str]] = {}
    units: dict[str, set[str]] = {}
    for j in joined:
        if j.cell.row not in rows:
            rows.append(j.cell.row)
        if j.cell.column not in cols:
            cols.append(j.cell.column)
        cells.setdefault((j.cell.row, j.cell.column), []).append(cell_text(j))
        units.setdefault(j.cell.column, set()).add(j.cell.unit)
    headers = ["", *[f"{c} [{'/'.join(sorted(units[c]))}]" for c in cols]]
    body = [[r, *["<br>".join(cells.get((r, c), [""])) for c in cols]] for r in rows]
    return headers, body


def counts(joined: list[CellVerdict]) -> Counter:
    return Counter(j.verdict for j in joined)


def counts_text(c: Counter) -> str:
    return ", ".join(f"{v.label}: {c.get(v, 0)}" for v in Verdict)


def to_markdown(table: PaperTable, joined: list[CellVerdict], *, profile: str, header: str = "") -> str:
    headers, body = grid(table, joined)
    out = [f"# {table.paper} / {table.table}: {table.title}", ""]
    out += [f"Reported numbers: {table.source} (`{table.path}`).", ""]
    out += [f"Profile: **{profile}**. {header}".rstrip(), ""]
    out += ["Each cell: ours / reported (Δ = ours − reported) verdict. " + counts_text(counts(joined)) + ".", ""]
    out += [tabulate(body, headers=headers, tablefmt="github"), ""]
    claims = [j for j in joined if j.computation]
    if claims:
        out += ["## Computations", ""]
        out += [f"* `{j.cell.id}`: {j.computation}" + (f" ({j.reason})" if j.reason else "") for j in claims]
        out.append("")
    out += [
        "## Provenance",
        "",
        "| cell | entry | our value from | reported source | tolerance | note |",
        "|---|---|---|---|---|---|",
    ]
    for j in joined:
        note = (j.reason or "").replace("|", "\\|").replace("\n", " ")
        tolerance = "—" if j.cell.value is None else j.cell.tolerance.describe()
        out.append(
            f"| `{j.cell.id}` | `{j.cell.entry or '—'}` | `{j.result_file or '—'}` | {j.cell.source} ({j.cell.kind})"
            f" | {tolerance} | {note} |"
        )
    return "\n".join(out) + "\n"


_TEX_ESCAPE = {
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\~{}",
    "^": r"\^{}",
    "\\": r"\textbackslash{}",
    "Δ": r"$\Delta$",
    "—": "--",
    "−": "-",
    "≤": r"$\le$",
}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in text)


def to_latex(table: PaperTable, joined: list[CellVerdict], *, profile: str) -> str:
    headers, body = grid(table, joined)
    spec = "l" + "l" * (len(headers) - 1)
    lines = [
        f"% {table.paper}/{table.table} — profile {profile}; cell = ours / reported (Delta) verdict",
        r"\begin{table}[t]",
        r"\centering\small",
        rf"\caption{{{tex_escape(table.title)} (profile: {tex_escape(profile)})}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(tex_escape(h) for h in headers) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(tex_escape(c.replace("<br>", "; ")) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv(table: PaperTable, joined: list[CellVerdict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for j in joined:
        c = j.cell
        bounds = c.bounds()
        writer.writerow(
            {
                "paper": table.paper,
                "table": table.table,
                "cell": c.id,
                "row": c.row,
                "column": c.column,
                "metric": c.metric,
                "selection": c.selection if c.metric in SELECTIONS else "",
                "convention": c.convention or "",
                "unit": c.unit,
                "reproduced": "" if j.reproduced is None else repr(round(j.reproduced, 6)),
                "reported": "" if c.value is None else repr(c.value),
                "delta": "" if j.delta is None else repr(round(j.delta, 6)),
                "printed": c.printed or "",
                "lower": "" if bounds is None else repr(round(bounds[0], 9)),
                "upper": "" if bounds is None else repr(round(bounds[1], 9)),
                "tolerance": "" if c.value is None else c.tolerance.describe(),
                "verdict": j.verdict.value,
                "profile": j.source_profile or "",
                "entry": c.entry or "",
                "result_file": j.result_file or "",
                "kind": c.kind,
                "source": c.source,
                "reason": j.reason or "",
                "computation": j.computation or "",
            }
        )
    return buf.getvalue()


def write_table(out_dir: Path, table: PaperTable, joined: list[CellVerdict], *, profile: str) -> list[Path]:
    """Write ``<out_dir>/<paper>/<table>.{md,tex,csv}``; returns the paths."""
    base = out_dir / table.paper
    paths = []
    for suffix, text in (
        ("md", to_markdown(table, joined, profile=profile)),
        ("tex", to_latex(table, joined, profile=profile)),
        ("csv", to_csv(table, joined)),
    ):
        path = base / f"{table.table}.{suffix}"
        write_text_atomic(path, text)
        paths.append(path)
    return paths
