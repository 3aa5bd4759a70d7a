"""``python -m repro.bench {layers,models,attention,detection} ...``: run a benchmark, write ``<out>.md``/``.csv``."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from collections.abc import Sequence

import torch

from repro.bench.timing import MEMORY_METHODS, cpu_load, set_threads
from repro.bench.variants import check_impls


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _common(parser: argparse.ArgumentParser, out: str) -> None:
    parser.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (cuda when available); default cpu")
    parser.add_argument(
        "--amp", choices=("off", "on", "both"), default=None, help="mixed precision (default: both on CUDA, off on CPU)"
    )
    parser.add_argument(
        "--impls",
        type=_csv,
        default=["fast", "faithful"],
        help="attention impls: fast, fast-sdpa (fast without the compiled small-head kernels), faithful "
        "(default fast,faithful)",
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before timing (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls; the median is reported (default 5)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=out, help=f"output stem: writes <out>.md and <out>.csv (default {out})")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    _busy(parser)


def _busy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--busy",
        type=int,
        default=0,
        metavar="N",
        help="run N CPU-bound processes beside the measurement (a busy machine; default 0)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m repro.bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    layers = sub.add_parser("layers", help="per-layer forward+backward time and peak memory of every pool")
    layers.add_argument(
        "--model",
        action="append",
        help="take the pool sites of this self-attentive arch (repeatable; default resnet18-nlp-1222 and "
        "mobilenet_v2-nlp-1222121)",
    )
    layers.add_argument("--image-size", type=int, default=128, help="input px for --model shapes (default 128)")
    layers.add_argument(
        "--shape", action="append", help="explicit site C:H[xW]:heads[:stride[:patch]], e.g. 64:32:8 (repeatable)"
    )
    layers.add_argument("--pools", type=_csv, default=None, help="comma-separated pools (default: every registered)")
    layers.add_argument(
        "--no-matmul", action="store_true", help="skip the dense matmul of each pool's MAC count (GFLOP/s yardstick)"
    )
    _common(layers, "benchmarks/results/layers")
    models = sub.add_parser("models", help="whole-model training step time and peak memory")
    models.add_argument("--arch", action="append", help="arch to benchmark (repeatable; default resnet18 skip & nlp)")
    models.add_argument(
        "--baseline",
        default=None,
        help="arch the ratios divide by (default: the first --arch), or 'twin': each arch's strided-conv twin "
        "(same backbone and strides, pools replaced by skip) in the same run",
    )
    models.add_argument("--image-size", type=int, default=128, help="input px (default 128)")
    models.add_argument("--channels-last", action="store_true", help="models and input in channels-last memory format")
    _common(models, "benchmarks/results/models")
    detection = sub.add_parser("detection", help="detector training step at a detection recipe's settings")
    detection.add_argument(
        "--detector", action="append", help="DETECTOR:ARCH (repeatable; default the three detectors' smoke settings)"
    )
    detection.add_argument("--profile", default="smoke", help="recipe profile: smoke (default), learn or full")
    detection.add_argument("--image-size", type=int, default=None, help="input px (default: the recipe's)")
    detection.add_argument("--batch-size", type=int, default=None, help="batch (default: the recipe's)")
    detection.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    detection.add_argument("--device", default="cpu", help="cpu, cuda or auto; default cpu")
    detection.add_argument("--warmup", type=int, default=2, help="untimed calls before timing (default 2)")
    detection.add_argument("--repeats", type=int, default=5, help="timed calls; the median is reported (default 5)")
    detection.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    detection.add_argument("--seed", type=int, default=0)
    detection.add_argument("--out", default="benchmarks/results/detection", help="output stem (<out>.md, <out>.csv)")
    detection.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    attention = sub.add_parser("attention", help="attention alone: compiled small-head kernels vs SDPA")
    attention.add_argument("--shape", action="append", help="B:heads:N:d (repeatable; default: a head-size sweep)")
    attention.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    attention.add_argument("--warmup", type=int, default=2, help="untimed calls before timing (default 2)")
    attention.add_argument("--repeats", type=int, default=5, help="timed calls; the median is reported (default 5)")
    attention.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    attention.add_argument("--seed", type=int, default=0)
    attention.add_argument("--out", default="benchmarks/results/attention", help="output stem (<out>.md, <out>.csv)")
    attention.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    _busy(attention)
    return parser


def _load_average() -> str:
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        return "unknown"


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise SystemExit(f"--device {name!r}: valid choices are cpu, cuda, cuda:N, auto")
    return name


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.load_at_start = _load_average()
    from repro.bench import layers as layer_bench
    from repro.bench import models as model_bench
    from repro.bench.report import LAYER_COLUMNS, MODEL_COLUMNS, write_report

    if args.command == "attention":
        return _attention(args, argv)
    if args.command == "detection":
        return _detection(args, argv)
    try:
        check_impls(args.impls)
    except ValueError as exc:
        raise SystemExit(f"--impls: {exc}") from None
    device = _device(args.device)
    amp = args.amp or ("both" if device.startswith("cuda") else "off")
    amp_modes = {"off": (False,), "on": (True,), "both": (False, True)}[amp]
    threads = set_threads(args.threads)
    progress = None if args.quiet else (lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True))
    options = dict(
        batch_size=args.batch_size,
        device=device,
        impls=args.impls,
        amp_modes=amp_modes,
        warmup=args.warmup,
        repeats=args.repeats,
        memory=not args.no_memory,
        seed=args.seed,
        progress=progress,
    )
    if args.command == "layers":
        from repro.layers import list_pools

        if args.shape:
            shapes = [layer_bench.parse_shape(text) for text in args.shape]
        else:
            shapes = []
            for arch in args.model or layer_bench.DEFAULT_MODELS:
                shapes += layer_bench.model_pool_shapes(arch, args.image_size)
        pools = args.pools or list_pools()
        unknown = sorted(set(pools) - set(list_pools()) - {layer_bench.CONV_BASELINE})
        if unknown:
            raise SystemExit(f"unknown pools {unknown}; valid: {', '.join(list_pools())}")
        with cpu_load(args.busy):
            rows = layer_bench.bench_layers(shapes, pools, matmul=not args.no_matmul, **options)
        columns, title = LAYER_COLUMNS, "Per-layer forward + backward"
        what = "one forward and backward of the layer alone (random output gradient), module in train mode"
    else:
        with cpu_load(args.busy):
            rows = model_bench.bench_models(
                args.arch or model_bench.DEFAULT_ARCHS,
                baseline=args.baseline,
                image_size=args.image_size,
                channels_last=args.channels_last,
                **options,
            )
        columns, title = MODEL_COLUMNS, "Whole-model training step"
        what = "forward, cross-entropy, backward and SGD step on random data, model in train mode"
    memory = "not measured" if args.no_memory else MEMORY_METHODS["cuda" if device.startswith("cuda") else "cpu"]
    notes = [
        f"command: `python -m repro.bench {shlex.join(argv if argv is not None else sys.argv[1:])}`",
        f"torch {torch.__version__}, {platform.machine()} {platform.system()}, device {device}, {threads} threads",
        f"time: median of {args.repeats} calls after {args.warmup} warm-up calls, the variants of one "
        f"{'shape' if args.command == 'layers' else 'precision'} timed interleaved (one call each per round); {what}",
        "MACs: the profiler's count of one forward + backward (repro.bench.throughput); GFLOP/s = 2 MACs / time"
        + (
            "; `of matmul` = GFLOP/s / that of a dense fp32 n x n matmul with n^3 = the pool's MACs, timed in the same "
            "rounds"
            if args.command == "layers"
            else "; `time per MAC / baseline` = (time / baseline) / (MACs / baseline)"
        ),
        f"load average (1, 5, 15 min) at start: {args.load_at_start}; at end: {_load_average()}",
        f"machine: {os.cpu_count()} CPUs, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
        f"{args.busy} CPU-bound processes run beside the measurement (--busy)",
        f"peak memory: {memory}",
        "ratios are measured in the same process: `time / conv` divides by the strided 3x3 conv at the same shape "
        "(`time / baseline` by the baseline arch); `speed-up vs faithful` = faithful time / fast time",
    ]
    md_path, csv_path = write_report(rows, args.out, columns, title=title, notes=notes)
    print(md_path.read_text())
    print(f"wrote {md_path} and {csv_path}", file=sys.stderr)
    return 1 if any("error" in row for row in rows) else 0


def _attention(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from repro.bench.attention import DEFAULT_SHAPES, bench_attention, parse_attention_shape
    from repro.bench.report import ATTENTION_COLUMNS, write_report

    try:
        shapes = [parse_attention_shape(text) for text in args.shape] if args.shape else list(DEFAULT_SHAPES)
    except ValueError as exc:
        raise SystemExit(f"--shape: {exc}") from None
    threads = set_threads(args.threads)
    progress = None if args.quiet else (lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True))
    with cpu_load(args.busy):
        rows = bench_attention(
            shapes,
            warmup=args.warmup,
            repeats=args.repeats,
            memory=not args.no_memory,
            seed=args.seed,
            progress=progress,
        )
    notes = [
        f"command: `python -m repro.bench {shlex.join(argv if argv is not None else sys.argv[1:])}`",
        f"torch {torch.__version__}, {platform.machine()} {platform.system()}, device cpu, {threads} threads, fp32",
        f"time: median of {args.repeats} calls after {args.warmup} warm-up calls, kernels and SDPA timed interleaved; "
        "one call is forward + backward of softmax self-attention on a packed (B, N, 3·h·d) projection",
        "GFLOP/s: 2 x the MACs of forward + backward (scores and weighted sum: 2·B·h·N²·d forward, twice that "
        "backward) / time",
        f"load average (1, 5, 15 min) at start: {args.load_at_start}; at end: {_load_average()}",
        f"machine: {os.cpu_count()} CPUs, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
        f"{args.busy} CPU-bound processes run beside the measurement (--busy)",
        f"peak memory: {'not measured' if args.no_memory else MEMORY_METHODS['cpu']}",
        "`speed-up vs sdpa` = SDPA time / kernel time, measured in the same process; `max abs diff` compares the two "
        "forward outputs",
    ]
    md_path, csv_path = write_report(rows, args.out, ATTENTION_COLUMNS, title="Attention: kernels vs SDPA", notes=notes)
    print(md_path.read_text())
    print(f"wrote {md_path} and {csv_path}", file=sys.stderr)
    return 0


def _detection(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from repro.bench.detection import DEFAULT_DETECTORS, bench_detection, parse_detector
    from repro.bench.report import DETECTION_COLUMNS, write_report

    try:
        detectors = [parse_detector(text) for text in args.detector] if args.detector else list(DEFAULT_DETECTORS)
    except ValueError as exc:
        raise SystemExit(f"--detector: {exc}") from None
    device = _device(args.device)
    threads = set_threads(args.threads)
    progress = None if args.quiet else (lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True))
    rows = bench_detection(
        detectors,
        profile=args.profile,
        image_size=args.image_size,
        batch_size=args.batch_size,
        device=device,
        warmup=args.warmup,
        repeats=args.repeats,
        memory=not args.no_memory,
        seed=args.seed,
        progress=progress,
    )
    memory = "not measured" if args.no_memory else MEMORY_METHODS["cuda" if device.startswith("cuda") else "cpu"]
    notes = [
        f"command: `python -m repro.bench {shlex.join(argv if argv is not None else sys.argv[1:])}`",
        f"torch {torch.__version__}, {platform.machine()} {platform.system()}, {device}, {threads} threads, fp32",
        f"time: median of {args.repeats} calls after {args.warmup} warm-up calls; one call is a forward with targets "
        "(every loss term), backward and SGD step on random images with 3 random boxes each, model in train mode, at "
        "the recipe's image size, batch and model options (sampled RoIs, proposals)",
        f"peak memory: {memory}",
        "`time / baseline` divides by the first detector, measured in the same process",
    ]
    md_path, csv_path = write_report(rows, args.out, DETECTION_COLUMNS, title="Detector training step", notes=notes)
    print(md_path.read_text())
    print(f"wrote {md_path} and {csv_path}", file=sys.stderr)
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
