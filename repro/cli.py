"""The ``repro`` command line: the one command-line layer of the suite (typer). Each command parses its arguments and
calls library functions; errors are one line on stderr: exit 2 for a usage error, 1 for bad data or a failed run
(the trainer's own errors carry their exit codes, docs/training.md)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
import typing
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(
    name="repro",
    help="Reproduction suite for efficient pooling in CNNs (Self-Attentive Pooling, RNNPool, Condensation-Net).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stage_app = typer.Typer(help="The DVC pipeline's stages (dvc.yaml runs them; run one by hand to debug it).")
pipeline_app = typer.Typer(help="The pipeline definition: regenerate or check dvc.yaml and pipelines/groups.yaml.")
app.add_typer(stage_app, name="stage")
app.add_typer(pipeline_app, name="pipeline")

EXIT_USAGE = 2
EXIT_DATA = 1


def fail(message: object, code: int | None = None) -> typer.Exit:
    """Print ``error: message`` on one line of stderr; the caller raises the returned :class:`typer.Exit`. The exit
    code is ``code``, else the error's own ``exit_code`` (a missing dataset is a usage error, 2; a corrupt file 1),
    else 1."""
    typer.echo("error: " + " ".join(str(message).split()), err=True)
    return typer.Exit(code if code is not None else getattr(message, "exit_code", EXIT_DATA))


def _data_errors() -> tuple[type[Exception], ...]:
    from repro.data.errors import DatasetError
    from repro.engine.checkpoint import CheckpointError
    from repro.pipeline.params import ParamsError
    from repro.records import EntryError, PaperTableError, RecordError
    from repro.utils.atomic import AtomicWriteError

    return DatasetError, CheckpointError, ParamsError, EntryError, PaperTableError, RecordError, AtomicWriteError


# -- the zoo ----------------------------------------------------------------------------------------------------------


@app.command("list")
def list_zoo(fmt: str = typer.Option("table", "--format", help="Output format: table or json.")) -> None:
    """Backbones of the architecture grammar, pools, pool placements and registered models (with their defaults)."""
    from repro.models.zoo import format_zoo

    if fmt not in ("table", "json"):
        raise typer.BadParameter(f"unknown format {fmt!r}; choose 'table' or 'json'", param_hint="--format")
    typer.echo(format_zoo(fmt))


@app.command("profile")
def profile(
    arch: str | None = typer.Argument(None, help="Architecture or registered model, e.g. resnet18-nlp-1222."),
    entries: list[str] | None = typer.Option(  # noqa: B008
        None, "--entries", help="pipelines-style YAML file of entries (pipelines/*.yaml); repeatable."
    ),
    image_size: list[str] | None = typer.Option(  # noqa: B008
        None, "--image-size", help="Input side N or HxW; repeatable (default: the model's own, or each entry's)."
    ),
    num_classes: int | None = typer.Option(None, min=1, help="Classifier width for ARCH (default: the model's own)."),
    convention: list[str] | None = typer.Option(  # noqa: B008
        None,
        "--convention",
        help="Peak-memory convention: layerwise (default), largest-map, io-sum, liveness, layerwise-streamed-pools; "
        "repeatable.",
    ),
    dtype: str | None = typer.Option(None, help="Bytes per activation element: fp32 (4), fp16 (2) or int8 (1)."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
    output: str | None = typer.Option(None, "--output", "-o", help="Also write the result here (CSV or JSON)."),
    measure: list[str] | None = typer.Option(  # noqa: B008
        None, "--measure", help="Add measured peak memory: inference and/or train (builds real weights)."
    ),
    device: str = typer.Option("cpu", help="Device for --measure: cpu or cuda."),
    ratios: bool = typer.Option(False, "--ratios", help="Append aggressive-downsampling memory ratios."),
    cells: list[str] | None = typer.Option(  # noqa: B008
        None, "--cells", help="paper_tables YAML: compare its peak_memory/macs/params cells with ours; repeatable."
    ),
    metric: list[str] | None = typer.Option(  # noqa: B008
        None, "--metric", help="With --cells: only cells of this metric (params, macs, peak_memory); repeatable."
    ),
) -> None:
    """Params, MACs (attention included) and analytic peak activation memory; docs/profiling.md."""
    from repro.metrics.profile import profile_entries, profile_model
    from repro.metrics.profile_render import FORMATS, render_profiles, render_ratios, render_rows
    from repro.metrics.ratios import downsampling_ratios
    from repro.models.registry import model_defaults
    from repro.records.entries import load_file, parse_size
    from repro.utils.atomic import write_text_atomic

    if cells:
        try:
            typer.echo(_cells_report(cells, metric))
        except (ValueError, *_data_errors()) as exc:
            raise fail(exc) from None
        return
    if (arch is None) == (not entries):
        raise fail("give either an architecture (repro profile resnet18-nlp-1222) or --entries FILE", EXIT_USAGE)
    if fmt not in FORMATS:
        raise fail(f"--format: unknown format {fmt!r}; valid: {', '.join(FORMATS)}", EXIT_USAGE)
    conventions = convention or ["layerwise"]
    try:
        sizes = [parse_size(s, "--image-size") for s in image_size or []]
        if arch is not None:
            defaults = model_defaults(arch)
            profiles = [
                profile_model(
                    arch,
                    size,
                    num_classes=num_classes,
                    conventions=conventions,
                    dtype=dtype or defaults.dtype,
                    measure=measure or [],
                    device=device,
                )
                for size in sizes or [defaults.image_size]
            ]
            text = render_profiles(profiles, fmt)
            rows = [p.to_row() for p in profiles]
        else:
            items = [e for path in entries for e in load_file(path)]
            if sizes:
                items = [dataclasses.replace(e, id=f"{e.id}@{s}", image_size=s) for e in items for s in sizes]
            rows = profile_entries(items, conventions=conventions, dtype=dtype or "fp32", workers=2, progress=True)
            text = render_rows(rows, fmt, conventions)
    except _data_errors() as exc:
        raise fail(exc) from None
    except (ValueError, FileNotFoundError) as exc:  # an unknown name, size, convention or dtype
        raise fail(exc, EXIT_USAGE) from None
    if ratios:
        for c in conventions:
            text += f"\n\nAggressive-downsampling memory ratios ({c}):\n" + render_ratios(downsampling_ratios(rows, c))
    if output:
        try:
            write_text_atomic(output, text if fmt != "table" else render_rows(rows, "csv", conventions))
        except OSError as exc:  # a folder, a full disk: the message names the file
            raise fail(
                exc if isinstance(exc, _data_errors()) else f"could not write {output}: {exc.strerror}"
            ) from None
    typer.echo(text)


def _cells_report(paths: list[str], metrics: list[str] | None = None, pipelines: str = "pipelines") -> str:
    """Markdown table of every profiler cell of ``paths`` (paper_tables files): reported, ours, tolerance, verdict.
    A cell without its own ``model`` block is computed from its pipeline entry, as the profile stage does."""
    from tabulate import tabulate

    from repro.metrics.cells import CellEvaluator
    from repro.pipeline.stages.profile import entry_dtype
    from repro.records.reported import PROFILE_METRICS, load_table

    evaluator = CellEvaluator()
    entries = None
    rows = []
    for path in paths:
        table = load_table(path)
        for cell in table.cells:
            if cell.metric not in (metrics or PROFILE_METRICS) or cell.value is None:
                continue
            if not cell.model:
                entries = entries if entries is not None else _entries(pipelines)
                entry = entries.get(cell.entry or "")
                if entry is None:
                    continue
                spec = {
                    "name": entry.arch,
                    "num_classes": entry.num_classes,
                    "image_size": entry.image_size,
                    "opts": dict(entry.model_opts),
                    "dtype": entry_dtype(entry),  # as the profile stage: the model's deployed dtype
                }
                cell = dataclasses.replace(cell, model=spec)
            ours = evaluator.value(cell)
            rows.append(
                {
                    "cell": f"{table.table}:{cell.id}",
                    "row": cell.row,
                    "column": cell.column,
                    "reported": f"{cell.printed} {cell.unit}",
                    "ours": f"{ours:.4g} {cell.unit}",
                    "tolerance": cell.tolerance.describe(),
                    "verdict": "match" if cell.allows(ours) else "MISMATCH",
                }
            )
    matched = sum(r["verdict"] == "match" for r in rows)
    return f"{tabulate(rows, headers='keys', tablefmt='github')}\n\n{matched} of {len(rows)} cells within tolerance."


# -- datasets ---------------------------------------------------------------------------------------------------------


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["n_train=500", "format=jpg"]`` -> ``{"n_train": 500, "format": "jpg"}`` (values read as YAML scalars)."""
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise fail(f"option {pair!r} is not KEY=VALUE (e.g. --set n_train=500)", EXIT_USAGE)
        try:
            options[key.strip()] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            raise fail(f"option {pair!r}: the value is not a YAML scalar", EXIT_USAGE) from None
    return options


@app.command("prepare")
def prepare_dataset(
    dataset: str = typer.Argument(
        ...,
        help="Dataset name: stl10, cifar10, cifar100, imagenet, imagenet10, coco, coco8, widerface, vww, digits, "
        "shapes, shapes_det, synth_faces.",
    ),
    data_root: str | None = typer.Option(
        None, "--data-root", help="Data root (default: $REPRO_DATA_ROOT, params.yaml data_root, data/)."
    ),
    backend: str = typer.Option("torch", help="'ffcv' also writes <root>/ffcv/<dataset>/<split>-<mode>.beton."),
    ffcv_mode: str = typer.Option("raw", help="Image storage in the .beton: raw or jpg."),
    ffcv_max_resolution: int | None = typer.Option(None, help="Longest side stored in the .beton (default: as is)."),
    option: list[str] | None = typer.Option(None, "--set", help="Dataset option KEY=VALUE, repeatable."),  # noqa: B008
) -> None:
    """Check a real dataset's layout, or generate a generated one (deterministic, no-op when up to date)."""
    from repro.data import DatasetError, get_spec
    from repro.data.prepare import prepare

    try:
        get_spec(dataset)
    except DatasetError as exc:
        raise fail(exc, EXIT_USAGE) from None
    opts = parse_options(option or [])
    try:
        path = prepare(
            dataset, data_root, backend=backend, ffcv_mode=ffcv_mode, ffcv_max_resolution=ffcv_max_resolution, **opts
        )
    except _data_errors() as exc:
        raise fail(exc) from None
    typer.echo(str(path))


@app.command("bench-data")
def bench_data(
    data_root: str | None = typer.Option(None, "--data-root", help="The set is written to <root>/bench/shapes."),
    image_size: int = typer.Option(96, help="Side of the generated images and of the crops."),
    num_images: int = typer.Option(2000, help="Images in the generated set."),
    batch_size: int = typer.Option(64),
    num_workers: int = typer.Option(1, help="Worker processes (torchvision) / threads (ffcv)."),
    epochs: int = typer.Option(2, help="Timed epochs, after one warm-up epoch."),
    recipe: str = typer.Option("sap-stl10", help="Training recipe of both loaders."),
    ffcv_mode: list[str] | None = typer.Option(None, help="ffcv storage mode to time, repeatable (default: jpg, raw)."),  # noqa: B008
    out: str | None = typer.Option(None, help="Also write the result as JSON here."),
) -> None:
    """Images/s of the ffcv loader against the torchvision JPEG loader on the same generated images."""
    from repro.data import DatasetError
    from repro.data.bench import bench_data as run_bench
    from repro.data.transforms import get_augmentation
    from repro.utils.atomic import write_json_atomic

    try:
        get_augmentation(recipe)
    except DatasetError as exc:
        raise fail(exc, EXIT_USAGE) from None
    try:
        result = run_bench(
            data_root,
            image_size=image_size,
            num_images=num_images,
            batch_size=batch_size,
            num_workers=num_workers,
            epochs=epochs,
            recipe=recipe,
            ffcv_modes=tuple(ffcv_mode or ["jpg", "raw"]),
        )
    except _data_errors() as exc:
        raise fail(exc) from None
    typer.echo("\n".join(result.lines()))
    if out:
        write_json_atomic(out, result.as_dict())


# -- benchmarks -------------------------------------------------------------------------------------------------------


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    epilog="Options: see `repro bench layers --help`, `repro bench models --help` and benchmarks/README.md.",
)
def bench(ctx: typer.Context) -> None:
    """Benchmark pools (`repro bench layers ...`) or training steps (`repro bench models ...`); writes .md and .csv."""
    from repro.bench.__main__ import main as bench_main

    raise typer.Exit(bench_main(ctx.args or ["--help"]))


# -- training and evaluation -------------------------------------------------------------------------------------------


def _option_type(hint: Any) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _train_signature() -> inspect.Signature:
    """One typer option per :class:`~repro.engine.train.TrainConfig` field (``--out`` for ``out_dir``; dicts as
    JSON text), plus ``--nproc-per-node``."""
    from repro.engine.train import FIELD_HELP, TrainConfig, flag_for

    hints = typing.get_type_hints(TrainConfig)
    params = []
    for f in dataclasses.fields(TrainConfig):
        kind = _option_type(hints[f.name])
        flag = flag_for(f.name)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = ... if required else None if f.default is dataclasses.MISSING else f.default
        if kind is dict:  # a mapping field (default_factory), given as JSON text
            kind = str
        decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
        annotation = kind if default is ... or default is not None else kind | None
        option = typer.Option(default, *decls, help=FIELD_HELP.get(f.name))
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
    nproc = typer.Option(1, "--nproc-per-node", help="Processes on this machine (DistributedDataParallel).")
    params.append(inspect.Parameter("nproc_per_node", inspect.Parameter.KEYWORD_ONLY, default=nproc, annotation=int))
    return inspect.Signature(params)


def train(**options: Any) -> None:
    """Train a classifier under a named recipe; writes checkpoints, metrics.json and per-epoch dvclive logs."""
    from repro.engine.errors import TrainConfigError
    from repro.engine.train import TrainConfig, launch

    nproc = options.pop("nproc_per_node")
    if options.get("model_opts"):
        try:
            options["model_opts"] = json.loads(options["model_opts"])
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"not JSON: {exc}", param_hint="--model-opts") from None
    else:
        options["model_opts"] = {}
    try:
        config = TrainConfig(**options)
    except TrainConfigError as exc:
        raise fail(exc, EXIT_USAGE) from None
    raise typer.Exit(launch(config, nproc))


train.__signature__ = _train_signature()  # type: ignore[attr-defined]
app.command("train", epilog="Recipes, resume, DDP and the quirk flags: docs/training.md.")(train)


@app.command()
def evaluate(
    checkpoint: str = typer.Argument(..., help="checkpoint.pt or best.pt written by `repro train`."),
    split: str = typer.Option("test", help="Dataset split to evaluate."),
    data_root: str | None = typer.Option(None, help="Data root (default: $REPRO_DATA_ROOT, params.yaml, data/)."),
    batch_size: int | None = typer.Option(None, help="Evaluation batch size (default: the recipe's)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    out: str | None = typer.Option(None, help="Write the result as JSON to this file."),
) -> None:
    """Top-1 accuracy of a trained checkpoint on one split."""
    from repro.engine.evaluate import evaluate_checkpoint
    from repro.utils.atomic import write_json_atomic

    try:
        result = evaluate_checkpoint(checkpoint, split=split, data_root=data_root, batch_size=batch_size, device=device)
    except _data_errors() as exc:  # a missing file or dataset (2), a corrupt one (1)
        raise fail(exc) from None
    except ValueError as exc:  # an unknown split or device
        raise fail(exc, EXIT_USAGE) from None
    if out:
        try:
            write_json_atomic(out, result)
        except _data_errors() as exc:
            raise fail(exc) from None
    where = f"{result['dataset']}/{result['split']}"
    typer.echo(f"{result['arch']} on {where} (epoch {result['epoch']}): top1 {result['top1']:.4f}")


# -- tables -----------------------------------------------------------------------------------------------------------


def _entries(pipelines: str):
    from repro.records.entries import load_entries

    return load_entries(pipelines)


def _profile_name(params: str) -> str:
    from repro.pipeline.params import load_params

    return load_params(params).profile


@app.command("tables")
def tables(
    paper_tables: str = typer.Option("paper_tables", help="reported numbers, one YAML per table"),
    results: str = typer.Option("results", help="results directory (metrics/, profile.csv; tables/ is written)"),
    pipelines: str = typer.Option("pipelines", help="directory of the entry files"),
    params: str = typer.Option("params.yaml", help="the profile the results came from"),
    plots: bool = typer.Option(True, help="write results/plots/*"),
    strict: bool = typer.Option(False, help="exit 1 if any cell with both values is outside tolerance"),
) -> None:
    """Regenerate results/tables/<paper>/<table>.{md,tex,csv}, plots, claims, results/README.md and summary.json."""
    from repro.pipeline.stages import tables as stage
    from repro.records.verdict import Verdict

    try:
        report = stage.run(
            _entries(pipelines), _profile_name(params), paper_tables=paper_tables, results=results, plots=plots
        )
    except _data_errors() as exc:
        raise fail(exc) from None
    counts = report.counts
    typer.echo(
        f"{len(report.tables)} tables -> {Path(results) / 'tables'}; "
        + ", ".join(f"{v.label}: {counts.get(v, 0)}" for v in Verdict)
    )
    for problem in report.problems:
        typer.echo(f"warning: {problem}", err=True)
    if strict and report.outside:
        for j in report.outside[:20]:
            typer.echo(
                f"outside tolerance: {j.table} {j.cell.id}: ours {j.reproduced:.4g} vs reported {j.cell.printed} "
                f"{j.cell.unit} ({j.cell.tolerance.describe()})",
                err=True,
            )
        raise typer.Exit(1)


@app.command("check-tables")
def check_tables(
    paper_tables: str = typer.Option("paper_tables"),
    results: str = typer.Option("results"),
    smoke: bool = typer.Option(True, help="fail if a smoke accuracy cell was judged against the paper"),
) -> None:
    """Check regenerated tables: every table rendered, RNNPool Tables 1-3 profile cells computed (CI)."""
    from repro.tables.check import check_tables as run_check

    errors, notes = run_check(paper_tables, results, smoke=smoke)
    for line in notes:
        typer.echo(line)
    for line in errors:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(1 if errors else 0)


# -- the pipeline's stages --------------------------------------------------------------------------------------------


def _params(params: str):
    from repro.pipeline.params import load_params

    try:
        return load_params(params)
    except _data_errors() as exc:
        raise fail(exc) from None


@stage_app.command("code")
def stage_code() -> None:
    """Fingerprint the code of every other stage: results/code/<stage>.txt (their DVC dependency on the package)."""
    from repro.pipeline.stages import code as stage

    written = stage.run()
    typer.echo(f"fingerprinted the code of {len(written)} stages: {', '.join(p.stem for p in written)}")


@stage_app.command("prepare")
def stage_prepare(params: str = typer.Option("params.yaml")) -> None:
    """Generate the smoke datasets, or check the full profile's real ones; results/prepared/<dataset>.json."""
    from repro.pipeline.stages import prepare as stage

    try:
        records = stage.run(_params(params))
    except _data_errors() as exc:
        raise fail(exc) from None
    for record in records:
        typer.echo(f"{record.dataset}: " + (record.path or record.note or ""))


@stage_app.command("profile")
def stage_profile(
    pipelines: str = typer.Option("pipelines"),
    paper_tables: str = typer.Option("paper_tables"),
    params: str = typer.Option("params.yaml", help="profile_workers: processes that trace models"),
) -> None:
    """Params, MACs and peak memory of every entry and of every cell with a model block (exact, any profile)."""
    from repro.pipeline.stages import profile as stage
    from repro.records.reported import load_tables

    try:
        tables_, problems = load_tables(paper_tables)
        rows, cells = stage.run(_entries(pipelines), tables_, workers=_params(params).profile_workers, progress=True)
    except _data_errors() as exc:
        raise fail(exc) from None
    for problem in problems:
        typer.echo(f"warning: {problem.message}", err=True)
    failed = sum(bool(r.error) for r in rows)
    typer.echo(f"profiled {len(rows)} entries ({failed} with an error recorded) and {len(cells)} cells")


@stage_app.command("train")
def stage_train(
    group: str = typer.Argument(..., help="entry group (pipelines/groups.yaml); one process trains all its entries"),
    only: str = typer.Option("", "--only", help="comma-separated entry ids: train only these of the group"),
    pipelines: str = typer.Option("pipelines"),
    params: str = typer.Option("params.yaml"),
    runs: str = typer.Option("runs", help="run directories: <runs>/<group>/<entry>/"),
    results: str = typer.Option("results/metrics", help="where <group>/<entry>.json are written"),
    strict: bool = typer.Option(False, help="exit 1 when an entry failed"),
) -> None:
    """Train and evaluate every entry of GROUP; failures are recorded per entry, not raised."""
    from repro.pipeline.stages import train as stage

    try:
        records = stage.run(
            group,
            _entries(pipelines),
            _params(params),
            runs=runs,
            results=results,
            only=[x for x in only.split(",") if x],
        )
    except _data_errors() as exc:
        raise fail(exc) from None
    statuses = [r.status for r in records.values()]
    typer.echo(
        f"[{group}] {len(statuses)} entries: "
        + ", ".join(f"{s} {statuses.count(s)}" for s in ("ok", "failed", "not_run"))
    )
    if strict and "failed" in statuses:
        raise typer.Exit(1)


@stage_app.command("probes")
def stage_probes(pipelines: str = typer.Option("pipelines"), params: str = typer.Option("params.yaml")) -> None:
    """RNNPool Table 7 and the App. C.2 probes, trained for real (params.yaml: probes); results/probes/."""
    from repro.pipeline.stages import probes as stage

    try:
        result = stage.run(_entries(pipelines), _params(params), progress=True)
    except (ValueError, *_data_errors()) as exc:
        raise fail(exc) from None
    rows = result["table7"]["rows"]
    typer.echo(
        f"table7: {sum(r['reached'] for r in rows)}/{len(rows)} cells reached; c2: {len(result['c2']['rows'])} rows"
    )


@stage_app.command("shootout")
def stage_shootout(params: str = typer.Option("params.yaml")) -> None:
    """Every pool in one backbone at two stride settings, with seeds (params.yaml: shootout); results/shootout/."""
    from repro.pipeline.stages import shootout as stage

    try:
        result = stage.run(_params(params), progress=True)
    except (ValueError, *_data_errors()) as exc:
        raise fail(exc) from None
    typer.echo(f"shootout: {len(result['rows'])} rows -> results/shootout")


@stage_app.command("tables")
def stage_tables(
    pipelines: str = typer.Option("pipelines"),
    params: str = typer.Option("params.yaml"),
) -> None:
    """Regenerate every table (the same as `repro tables` with the default paths)."""
    tables(paper_tables="paper_tables", results="results", pipelines=pipelines, params=params, plots=True, strict=False)


@pipeline_app.command("write")
def pipeline_write(pipelines: str = typer.Option("pipelines")) -> None:
    """Regenerate pipelines/groups.yaml and dvc.yaml (after adding entries or changing what a stage imports)."""
    from repro.pipeline.dvcfile import write

    try:
        for path in write(_entries(pipelines), ".", pipelines):
            typer.echo(f"wrote {path}")
    except _data_errors() as exc:
        raise fail(exc) from None


@pipeline_app.command("check")
def pipeline_check(pipelines: str = typer.Option("pipelines")) -> None:
    """Exit 1 if pipelines/groups.yaml or dvc.yaml is out of date with the entries and the import graph."""
    from repro.pipeline.dvcfile import stale

    try:
        outdated = stale(_entries(pipelines), ".", pipelines)
    except _data_errors() as exc:
        raise fail(exc) from None
    if outdated:
        raise fail(f"out of date: {', '.join(outdated)}; run: repro pipeline write")


@pipeline_app.command("groups")
def pipeline_groups(pipelines: str = typer.Option("pipelines")) -> None:
    """List the entry groups (the foreach keys of dvc.yaml): name, entries, file."""
    from repro.pipeline.dvcfile import groups_index

    try:
        index = groups_index(_entries(pipelines), pipelines)
    except _data_errors() as exc:
        raise fail(exc) from None
    for name, info in index["groups"].items():
        typer.echo(f"{name}\t{info['entries']}\t{info['file']}")


# -- WIDER FACE evaluation (repro.metrics.widerface_eval) --
@app.command("eval-widerface")
def eval_widerface(
    pred: str = typer.Option(..., "--pred", help="Predictions: <event>/<image>.txt (name, count, x y w h score)."),
    gt: str = typer.Option(
        ..., "--gt", help="The eval tool's ground_truth/: wider_face_val.mat and wider_{easy,medium,hard}_val.mat."
    ),
    out: str | None = typer.Option(None, "--out", help="Also write the APs, PR curves and provenance as JSON here."),
) -> None:
    """WIDER FACE easy/medium/hard AP as the official MATLAB eval tool computes it; prints one JSON object."""
    from repro.metrics.widerface_eval import eval_widerface_command

    raise typer.Exit(eval_widerface_command(pred, gt, out=out))


# -- SCUT-HEAD evaluation (repro.metrics.widerface_eval) --
@app.command("eval-scut-head")
def eval_scut_head(
    pred: str = typer.Option(..., "--pred", help="Predictions: <name>.txt per image (name, count, x y w h score)."),
    data_root: str | None = typer.Option(None, "--data-root", help="Data root holding scut_head/SCUT_HEAD_Part_B."),
    split: str = typer.Option("val", help="ImageSets/Main/<split>.txt of the release."),
    list_file: str | None = typer.Option(
        None, "--list-file", help="Evaluate the images of this list instead (e.g. EdgeML's data/face_val_scutB.txt)."
    ),
    normalise: bool = typer.Option(
        False, help="Normalise the scores as the WIDER tool does (EdgeML's script does not)."
    ),
    out: str | None = typer.Option(None, "--out", help="Also write the AP, PR curve and provenance as JSON here."),
) -> None:
    """SCUT-HEAD Part B AP with the WIDER FACE protocol, every head counted; prints {"all": AP}."""
    from repro.metrics.widerface_eval import eval_scut_head_command

    raise typer.Exit(eval_scut_head_command(pred, data_root, split, list_file, normalise=normalise, out=out))


# -- eval-coco (repro.metrics.coco_eval) --
@app.command("eval-coco")
def eval_coco(
    gt: str = typer.Option(..., "--gt", help="COCO annotation file (instances_*.json layout)."),
    dets: str = typer.Option(..., "--dets", help="COCO results file: [{image_id, category_id, bbox, score}, ...]."),
    category: list[str] | None = typer.Option(  # noqa: B008
        None, "--category", help="Evaluate only this category (name or id); repeatable (e.g. the 8 COCO-8 classes)."
    ),
    backend: str = typer.Option("pycocotools", help="pycocotools (reference) or faster-coco-eval (same numbers)."),
) -> None:
    """COCO bbox AP, AP50, AP75, APs, APm, APl and per-class AP (pycocotools), printed as one JSON object."""
    from repro.metrics.coco_eval import cli_eval_coco

    raise typer.Exit(cli_eval_coco(gt, dets, categories=category or [], backend=backend))


# -- train-detection (repro.engine.train_detection) --
@app.command("train-detection")
def train_detection_command(
    arch: str = typer.Option(..., help="SAP backbone, e.g. resnet18-skip-1222 or mobilenet-skip-2222121."),
    detector: str = typer.Option("faster_rcnn", help="faster_rcnn, ssd (ssdlite) or yolov3."),
    recipe: str | None = typer.Option(None, help="Detection recipe (default <detector>-smoke; <detector>-sap: paper)."),
    dataset: str | None = typer.Option(None, help="COCO-format dataset (default: the recipe's: shapes_det, coco8)."),
    image_size: str | None = typer.Option(None, help="N, or SHORTxLONG for Faster R-CNN (default: the recipe's)."),
    out: str = typer.Option("runs/detection", help="Run directory (checkpoint.pt, metrics.json, dvclive/, ...)."),
    resume: bool = typer.Option(False, help="Continue from <out>/checkpoint.pt."),
    data_root: str | None = typer.Option(None, help="Data root (default: $REPRO_DATA_ROOT, params.yaml, data/)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    seed: int = typer.Option(0, help="Random seed."),
    epochs: int | None = typer.Option(None, help="Override the recipe's epochs."),
    batch_size: int | None = typer.Option(None, help="Override the recipe's global batch size."),
    lr: float | None = typer.Option(None, help="Override the recipe's learning rate."),
    max_steps_per_epoch: int | None = typer.Option(None, help="Cap the steps of each epoch."),
    eval_max_images: int | None = typer.Option(None, help="Evaluate only the first N test images."),
    compat_b26: bool = typer.Option(False, help="Reproduce B26: the 1222 anchor/RoI strides (Faster R-CNN)."),
    compat_b27: bool = typer.Option(False, help="Reproduce B27: the MobileNet 4222121 copy-paste configs."),
    class_agnostic: bool = typer.Option(False, help="Train and evaluate one 'object' class."),
    precise_bn: bool | None = typer.Option(None, help="Re-estimate BN statistics before evaluation (recipe default)."),
) -> None:
    """Train and evaluate a detector on an SAP backbone; writes COCO metrics, detections and dvclive logs."""
    from repro.engine.train_detection import cli_train_detection

    raise typer.Exit(
        cli_train_detection(
            arch=arch,
            detector=detector,
            recipe=recipe,
            dataset=dataset,
            image_size=image_size,
            out_dir=out,
            resume=resume,
            data_root=data_root,
            device=device,
            seed=seed,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            max_steps_per_epoch=max_steps_per_epoch,
            eval_max_images=eval_max_images,
            compat_b26=compat_b26,
            compat_b27=compat_b27,
            class_agnostic=class_agnostic,
            precise_bn=precise_bn,
        )
    )


# -- experiment (repro.experiments) --
@app.command("experiment")
def experiment(
    name: str = typer.Argument(..., help="table7 (RNNPool App. C.1), c2 (App. C.2 probes) or shootout."),
    out: str = typer.Option(..., "--out", help="Output directory: <name>.json, .md, .csv, plots, cache/."),
    settings: str | None = typer.Option(None, "--settings", help="YAML file with the settings (default: built-in)."),
    section: str | None = typer.Option(None, "--section", help="Dotted key of the settings in that file."),
    set_: str | None = typer.Option(None, "--set", help="JSON mapping over the settings, e.g. '{\"workers\": 1}'."),
    progress: bool = typer.Option(True, help="Progress bars (also off with REPRO_NO_PROGRESS=1)."),
) -> None:
    """Train one experiment for real on the CPU (docs/experiments.md) and write its records, tables and plots."""
    from repro.experiments.command import experiment_command

    raise typer.Exit(experiment_command(name, settings, section, out, set_, progress))


# -- train-faces (repro.engine.train_faces) --
@app.command("train-faces")
def train_faces_command(
    arch: str = typer.Option(..., help="rnnpool_face_{a,b,c,quant,m4} or (condensation_)tiny_yolov2_face."),
    recipe: str | None = typer.Option(None, help="Face recipe (default: the family's smoke recipe; see docs)."),
    dataset: str | None = typer.Option(None, help="widerface, synth_faces or scut_head (default: the recipe's)."),
    image_size: str | None = typer.Option(None, help="Training size N or HxW (default: the recipe's)."),
    out: str = typer.Option("runs/faces", help="Run directory (checkpoint.pt, metrics.json, wider_predictions/...)."),
    resume: bool = typer.Option(False, help="Continue from <out>/checkpoint.pt."),
    data_root: str | None = typer.Option(None, help="Data root (default: $REPRO_DATA_ROOT, params.yaml, data/)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    seed: int = typer.Option(0, help="Random seed."),
    epochs: int | None = typer.Option(None, help="Override the recipe's epochs."),
    batch_size: int | None = typer.Option(None, help="Override the recipe's global batch size."),
    lr: float | None = typer.Option(None, help="Override the recipe's learning rate."),
    max_steps_per_epoch: int | None = typer.Option(None, help="Cap the steps of each epoch."),
    eval_max_images: int | None = typer.Option(None, help="Evaluate only the first N images of the split."),
    test_time: str | None = typer.Option(None, help="Test-time protocol: vga, qvga or edgeml (default: the recipe's)."),
    quantization: str | None = typer.Option(None, help="none or int8 (fake quantisation; default: the recipe's)."),
    init_checkpoint: str | None = typer.Option(None, help="Start from the weights of another face run's checkpoint."),
    precise_bn: bool | None = typer.Option(None, help="Re-estimate BN statistics before evaluation (recipe default)."),
    checkpoints: bool = typer.Option(True, help="Write checkpoint.pt (--no-checkpoints: a run that cannot resume)."),
) -> None:
    """Train and evaluate a face detector; writes WIDER AP, TPR at 0.1 FPPI, the WIDER prediction files, dvclive."""
    from repro.engine.train_faces import cli_train_faces

    raise typer.Exit(
        cli_train_faces(
            arch=arch,
            recipe=recipe,
            dataset=dataset,
            image_size=image_size,
            out_dir=out,
            resume=resume,
            data_root=data_root,
            device=device,
            seed=seed,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            max_steps_per_epoch=max_steps_per_epoch,
            eval_max_images=eval_max_images,
            test_time=test_time,
            quantization=quantization,
            init_checkpoint=init_checkpoint,
            precise_bn=precise_bn,
            checkpoints=checkpoints,
        )
    )


def main() -> None:  # pragma: no cover - console entry point
    """The ``repro`` command. A stage command that succeeded ends the process without the interpreter's teardown
    (about 1 s with torch loaded: module and library finalisers), once its output is flushed: its files are
    written atomically by then, and ``dvc repro`` starts 26 stage processes."""
    try:
        app()
    except SystemExit as exc:
        if sys.argv[1:2] == ["stage"] and exc.code in (0, None):
            _exit_now()
        raise


def _exit_now() -> None:  # pragma: no cover - ends the process
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":  # pragma: no cover - `python -m repro.cli` (torchrun relaunches `repro train` this way)
    sys.exit(main())
