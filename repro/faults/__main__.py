"""``python -m repro.faults``: run the fault-injection families and write the figures of ``docs/reliability.md``.

A tool above the command line (it drives ``repro train`` and ``dvc repro``), so it has its own entry point rather than
a ``repro`` command: the package imports :mod:`repro.cli`, never the other way round.
"""

from __future__ import annotations

import sys

import typer

from repro.cli import EXIT_USAGE, fail

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def faults(
    families: str = typer.Option("", help="comma-separated families (default: all; see --list)"),
    count: list[str] | None = typer.Option(  # noqa: B008
        None, "--count", metavar="FAMILY=N", help="trials of one family, repeatable"
    ),
    scale: float = typer.Option(1.0, min=0.0, help="multiply every default count (at least 1 trial)"),
    seed: int = typer.Option(0, help="seed of the random kill points and damage"),
    work_dir: str | None = typer.Option(None, help="where trials run (default: a temporary folder, removed after)"),
    doc: str = typer.Option("docs/reliability.md", help="document whose generated section is written"),
    no_doc: bool = typer.Option(False, "--no-doc", help="do not write the document"),
    json_out: str | None = typer.Option(None, "--json", help="also write every trial record here"),
    list_families: bool = typer.Option(False, "--list", help="list the families and their default counts"),
) -> None:
    """Fault injection: SIGKILL in training and in dvc repro, full disks, concurrent runs, crafted and corrupt files,
    with counts; rewrites the generated figures of docs/reliability.md. Exit 1 if a trial failed."""
    import shlex

    from repro.faults import FAMILIES
    from repro.faults.suite import run_suite, trial_counts

    if list_families:
        for family in FAMILIES.values():
            typer.echo(f"{family.name} ({family.default_count}): {family.description}")
        return
    overrides = {}
    for item in count or []:
        name, _, value = item.partition("=")
        if not value.isdigit():
            raise fail(f"--count {item!r} is not FAMILY=N", EXIT_USAGE)
        overrides[name] = int(value)
    try:
        counts = trial_counts([n for n in families.split(",") if n] or list(FAMILIES), scale, overrides)
    except ValueError as exc:
        raise fail(exc, EXIT_USAGE) from None
    command = "python -m repro.faults" + "".join(" " + shlex.quote(a) for a in sys.argv[1:])
    result = run_suite(
        counts, seed=seed, work_dir=work_dir, doc=None if no_doc else doc, json_out=json_out, command=command
    )
    typer.echo(f"{result.survived}/{len(result.records)} trials survived in {result.seconds:.0f} s")
    if result.doc is not None:
        typer.echo(f"wrote {result.doc}")
    if result.survived != len(result.records):
        raise typer.Exit(1)


if __name__ == "__main__":
    sys.exit(app())
