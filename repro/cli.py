"""The ``repro`` command line. Each command is a thin wrapper over a function of the package."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="repro",
    help="Reproduction suite for efficient pooling in CNNs (Self-Attentive Pooling, RNNPool, Condensation-Net).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


# -- commands (each section is owned by one module; edit only your own) --


# -- bench (repro.bench) --
@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    epilog="Options: see `python -m repro.bench layers --help`, `python -m repro.bench models --help` and "
    "benchmarks/README.md.",
)
def bench(ctx: typer.Context) -> None:
    """Benchmark pools (`repro bench layers ...`) or training steps (`repro bench models ...`); writes .md and .csv."""
    from repro.bench.__main__ import main as bench_main

    raise typer.Exit(bench_main(ctx.args or ["--help"]))


# -- profile (repro.metrics.profile) --
@app.command("profile")
def profile(
    arch: str | None = typer.Argument(None, help="Architecture or registered model, e.g. resnet18-nlp-1222."),
    entries: list[str] | None = typer.Option(  # noqa: B008
        None, "--entries", help="YAML file of entries {id, arch|model, image_size(s), num_classes, opts}; repeatable."
    ),
    image_size: list[str] | None = typer.Option(  # noqa: B008
        None, "--image-size", help="Input side N or HxW; repeatable (default 224, or each entry's own)."
    ),
    num_classes: int = typer.Option(10, help="Classifier width for ARCH."),
    convention: list[str] | None = typer.Option(  # noqa: B008
        None,
        "--convention",
        help="Peak-memory convention: layerwise (default), largest-map, io-sum, liveness, layerwise-streamed-pools; "
        "repeatable.",
    ),
    dtype: str = typer.Option("fp32", help="Bytes per activation element: fp32 (4), fp16 (2) or int8 (1)."),
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
) -> None:
    """Params, MACs (attention included) and analytic peak activation memory; docs/profiling.md."""
    from repro.metrics.profile import cells_report, profile_command

    if cells:
        typer.echo(cells_report(cells))
        return
    try:
        text = profile_command(
            arch,
            entries=entries or [],
            image_sizes=image_size or [],
            num_classes=num_classes,
            conventions=convention or ["layerwise"],
            dtype=dtype,
            fmt=fmt,
            output=output,
            measure=measure or [],
            device=device,
            ratios=ratios,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(text)


# -- model zoo listing (repro.models.sap) --
@app.command("list")
def list_zoo(
    fmt: str = typer.Option("table", "--format", help="Output format: table or json."),
) -> None:
    """Backbones of the architecture grammar, pools, pool placements and registered models."""
    from repro.models.sap import format_zoo

    if fmt not in ("table", "json"):
        raise typer.BadParameter(f"unknown format {fmt!r}; choose 'table' or 'json'", param_hint="--format")
    typer.echo(format_zoo(fmt))


# -- datasets (repro.data) --
@app.command("prepare")
def prepare_dataset(
    dataset: str = typer.Argument(
        ...,
        help="Dataset name: stl10, cifar10, cifar100, imagenet, imagenet10, coco, coco8, widerface, vww, digits, "
        "shapes, shapes_det, synth_faces.",
    ),
    data_root: str | None = typer.Option(
        None, "--data-root", help="Data root (default: $REPRO_DATA_ROOT, params.yaml data.root, data/)."
    ),
    backend: str = typer.Option("torch", help="'ffcv' also writes <root>/ffcv/<dataset>/<split>-<mode>.beton."),
    ffcv_mode: str = typer.Option("raw", help="Image storage in the .beton: raw or jpg."),
    ffcv_max_resolution: int | None = typer.Option(None, help="Longest side stored in the .beton (default: as is)."),
    option: list[str] | None = typer.Option(None, "--set", help="Dataset option KEY=VALUE, repeatable."),  # noqa: B008
) -> None:
    """Check a real dataset's layout, or generate a generated one (deterministic, no-op when up to date)."""
    from repro.data.commands import prepare_command

    raise typer.Exit(
        prepare_command(
            dataset,
            data_root=data_root,
            backend=backend,
            ffcv_mode=ffcv_mode,
            ffcv_max_resolution=ffcv_max_resolution,
            options=option or [],
        )
    )


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
    from repro.data.commands import bench_command

    raise typer.Exit(
        bench_command(
            data_root=data_root,
            image_size=image_size,
            num_images=num_images,
            batch_size=batch_size,
            num_workers=num_workers,
            epochs=epochs,
            recipe=recipe,
            ffcv_modes=ffcv_mode or ["jpg", "raw"],
            out=out,
        )
    )


# -- pipeline stages and tables (repro.pipeline, repro.tables) --
@app.command("run-entries")
def run_entries(
    group: str = typer.Argument(..., help="entry group (pipelines/groups.yaml); one process trains all its entries"),
    only: str = typer.Option("", "--only", help="comma-separated entry ids: train only these of the group"),
    pipelines: str = typer.Option("pipelines", help="directory of the entry files"),
    params: str = typer.Option("params.yaml", help="profile and its settings"),
    runs: str = typer.Option("runs", help="run directories: <runs>/<group>/<entry>/"),
    strict: bool = typer.Option(False, help="exit non-zero when an entry failed"),
) -> None:
    """Train (profile-dependent) every entry of GROUP; failures are recorded per entry, not raised."""
    from repro.pipeline.cli import run_entries_command

    ids = [x for x in only.split(",") if x]
    raise typer.Exit(run_entries_command(group, only=ids, pipelines=pipelines, params=params, runs=runs, strict=strict))


@app.command("evaluate-entries")
def evaluate_entries(
    group: str = typer.Argument(..., help="entry group"),
    pipelines: str = typer.Option("pipelines"),
    params: str = typer.Option("params.yaml"),
    runs: str = typer.Option("runs"),
    results: str = typer.Option("results/metrics", help="where <group>/<entry>.json are written"),
) -> None:
    """Write results/metrics/<group>/<entry>.json (the file every table cell points to) from the runs of GROUP."""
    from repro.pipeline.cli import evaluate_entries_command

    raise typer.Exit(evaluate_entries_command(group, pipelines=pipelines, params=params, runs=runs, results=results))


@app.command("pipeline-groups")
def pipeline_groups(
    pipelines: str = typer.Option("pipelines"),
    write: bool = typer.Option(False, "--write", help="regenerate pipelines/groups.yaml"),
    check: bool = typer.Option(False, "--check", help="exit 1 if pipelines/groups.yaml is out of date"),
) -> None:
    """List entry groups (the foreach keys of dvc.yaml), or regenerate / check pipelines/groups.yaml."""
    from repro.pipeline.cli import groups_command

    raise typer.Exit(groups_command(pipelines, write=write, check=check))


@app.command("prepare-stage")
def prepare_stage(
    dataset: str = typer.Argument(..., help="dataset name (params.yaml: datasets)"),
    params: str = typer.Option("params.yaml"),
    marker_dir: str = typer.Option("results/prepared", help="where <dataset>.json records what was done"),
) -> None:
    """prepare@dataset: generate / check DATASET when the profile needs it, else record that it was skipped."""
    from repro.pipeline.cli import prepare_stage_command

    raise typer.Exit(prepare_stage_command(dataset, params=params, marker_dir=marker_dir))


@app.command("profile-stage")
def profile_stage(
    pipelines: str = typer.Option("pipelines"),
    paper_tables: str = typer.Option("paper_tables"),
    out: str = typer.Option("results/profile.csv", help="one row per entry"),
    cells_out: str = typer.Option("results/profile_cells.csv", help="one row per cell with its own model block"),
) -> None:
    """The profile stage: params, MACs, peak memory of every entry and profile-derived cell (exact, any profile)."""
    from repro.pipeline.profile_stage import run_profile_stage

    rows, cells = run_profile_stage(pipelines, paper_tables, out, cells_out)
    typer.echo(f"profiled {rows} entries -> {out}; {cells} cells -> {cells_out}")


@app.command("check-tables")
def check_tables(
    paper_tables: str = typer.Option("paper_tables"),
    results: str = typer.Option("results"),
    smoke: bool = typer.Option(True, help="fail if a smoke accuracy cell was judged against the paper"),
) -> None:
    """Check regenerated tables: every table rendered, RNNPool Tables 1-3 profile cells computed (CI)."""
    from repro.pipeline.check import check_tables as run_check

    errors, notes = run_check(paper_tables, results, smoke=smoke)
    for line in notes:
        typer.echo(line)
    for line in errors:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(1 if errors else 0)


@app.command("tables")
def tables(
    paper_tables: str = typer.Option("paper_tables", help="reported numbers, one YAML per table"),
    results: str = typer.Option("results", help="results directory (metrics/, profile.csv; tables/ is written)"),
    pipelines: str = typer.Option("pipelines"),
    params: str = typer.Option("params.yaml"),
    plots: bool = typer.Option(True, help="write results/plots/*.png|svg"),
    strict: bool = typer.Option(False, help="exit 1 if any cell with both values is outside tolerance"),
) -> None:
    """Regenerate results/tables/<paper>/<table>.{md,tex,csv}, plots, claims and results/README.md."""
    from repro.pipeline.cli import tables_command

    raise typer.Exit(tables_command(paper_tables, results, pipelines, params, plots=plots, strict=strict))


# -- rnnpool-params (repro.models.rnnpool_params) --
@app.command("rnnpool-params")
def rnnpool_params(
    reported: str | None = typer.Option(
        None, help="paper_numbers.yaml-style file with the reported parameter counts (omit to print ours only)."
    ),
) -> None:
    """Parameter counts of the RNNPool classifiers next to the paper's Tables 1-3 and 18 (Markdown)."""
    from repro.models.rnnpool_params import main as rnnpool_params_main

    typer.echo(rnnpool_params_main(reported))


# -- train / evaluate (repro.engine) --
@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog="More options (--epochs, --batch-size, --lr, --device, --val-split, --epochs-compat-299, --amp, "
    "--sync-bn, --compile, ...) pass through: see `python -m repro.engine.train --help` and docs/training.md.",
)
def train(
    ctx: typer.Context,
    arch: str = typer.Option(..., help="Architecture, e.g. resnet18-nlp-1222 or a registered model name."),
    recipe: str = typer.Option(
        "smoke", help="Named recipe: sap-stl10, sap-imagenet, rnnpool-imagenet, rnnpool-vww, smoke."
    ),
    dataset: str | None = typer.Option(None, help="Dataset name (default: the recipe's)."),
    image_size: int | None = typer.Option(None, help="Input side length in pixels (default: the recipe's)."),
    seed: int = typer.Option(0, help="Random seed."),
    out: str = typer.Option("runs/train", help="Run directory: checkpoint.pt, best.pt, dvclive/, metrics.json."),
    resume: bool = typer.Option(False, help="Continue from <out>/checkpoint.pt."),
    nproc_per_node: int = typer.Option(1, help="Processes on this machine (DistributedDataParallel via torchrun)."),
) -> None:
    """Train a classifier under a named recipe; writes metrics.json and per-epoch dvclive logs."""
    from repro.engine.train import main as train_main

    opts = {"--arch": arch, "--recipe": recipe, "--dataset": dataset, "--image-size": image_size, "--seed": seed}
    argv = [str(x) for flag, value in opts.items() if value is not None for x in (flag, value)]
    argv += ["--out", out, "--resume" if resume else "--no-resume"]
    raise typer.Exit(train_main([*argv, *ctx.args], nproc_per_node=nproc_per_node))


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
    from repro.engine.evaluate import cli_evaluate

    raise typer.Exit(
        cli_evaluate(checkpoint, split=split, data_root=data_root, batch_size=batch_size, device=device, out=out)
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


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
