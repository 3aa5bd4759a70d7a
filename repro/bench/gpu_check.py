"""GPU readiness: run once, on one CUDA device, what the CPU-only test suite cannot, and print a table.

``python -m repro.bench.gpu_check`` (or ``bash scripts/gpu_check.sh``) runs these checks in order; each one passes,
fails (with the error) or is skipped (a missing optional dependency), and the command exits with status 1 if any
failed. Without a CUDA device it prints one line and exits 0.

============  =====================================================================================================
check         what it runs
============  =====================================================================================================
amp-sap       training steps of a SAP model (``resnet18-nlp-1222``) under bf16 and fp16 autocast (fp16 with a
              ``GradScaler``); losses must be finite
amp-rnnpool   the same for an RNNPool model (``mobilenetv2_rnnpool``)
channels      one training step of the SAP model in channels-last and in NCHW: same loss (TF32 tolerance)
last
compile       ``torch.compile`` of the fast ``nlp`` pool, forward + backward, against eager (outputs, input gradient)
torchrun      under ``torchrun --standalone --nproc_per_node=1``: a process group with the NCCL backend, two DDP
              training steps of the SAP model and an all-reduce; then ``repro.engine.train`` on a generated dataset
              (a one-process run; the engine starts a process group only for more than one process)
ffcv          the ffcv pipeline: ``.beton`` files of a generated dataset, then ``repro.engine.train`` with
              ``backend='ffcv'`` on the device
memory        measured peak memory (inference and one training step) beside the analytic layer-wise peak
              (:func:`repro.metrics.profile.profile_model`)
bench         the per-layer and whole-model benchmarks (:mod:`repro.bench`) on the device, fp32 and AMP; their
              reports are written under ``--out``
============  =====================================================================================================

Every check takes a :class:`Settings` (device, sizes, steps), so the same code runs on the CPU in the tests with tiny
settings; only the device differs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from repro.utils.amp import autocast

__all__ = ["CHECKS", "Check", "CheckResult", "Settings", "exit_code", "format_table", "main", "run_checks"]

NO_CUDA_MESSAGE = "no CUDA device: nothing to check on this machine (scripts/gpu_check.sh needs an NVIDIA GPU)"


@dataclass(frozen=True)
class Settings:
    """Where and how big: the GPU defaults; the tests pass tiny CPU settings."""

    device: str = "cuda"
    image_size: int = 128
    batch_size: int = 16
    steps: int = 3
    out_dir: str = "benchmarks/results/gpu_check"
    sap_arch: str = "resnet18-nlp-1222"
    rnnpool_arch: str = "mobilenetv2_rnnpool"
    layer_shapes: tuple[str, ...] = ("64:32:8", "128:16:16", "256:16:16")  # C:H:heads for the per-layer benchmark


class CheckUnavailableError(Exception):
    """A check cannot run here (an optional dependency is missing); it is reported, not failed."""


@dataclass(frozen=True)
class Check:
    name: str
    description: str
    run: Callable[[Settings], str]  # returns a one-line detail; raises on failure


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # "pass" | "fail" | "skip"
    seconds: float
    detail: str


# -- the checks ---------------------------------------------------------------------------------------------------


def _train_steps(
    model: nn.Module, settings: Settings, dtype: torch.dtype | None, *, channels_last: bool = False, seed: int = 0
) -> tuple[list[float], float]:
    """``settings.steps`` SGD steps on fixed random data; the losses and the median step time in ms."""
    device = torch.device(settings.device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=layout).train()
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(settings.batch_size, 3, settings.image_size, settings.image_size, generator=generator)
    x = x.to(device, memory_format=layout)
    y = torch.randint(0, 10, (settings.batch_size,), generator=generator).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16 and device.type == "cuda")
    losses, times = [], []
    for _ in range(settings.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype is not None, dtype or "bf16"):
            loss = nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
        losses.append(loss.item())
    return losses, sorted(times)[len(times) // 2]


def _amp_dtypes(settings: Settings) -> tuple[torch.dtype, ...]:
    return (torch.bfloat16, torch.float16) if settings.device.startswith("cuda") else (torch.bfloat16,)


def _check_amp(arch_field: str) -> Callable[[Settings], str]:
    def run(settings: Settings) -> str:
        from repro.models import build_model

        arch = getattr(settings, arch_field)
        parts = []
        for dtype in _amp_dtypes(settings):
            torch.manual_seed(0)
            losses, ms = _train_steps(build_model(arch, num_classes=10), settings, dtype)
            if not all(map(_finite, losses)):
                raise AssertionError(f"{arch} {dtype}: non-finite loss {losses}")
            parts.append(f"{str(dtype).removeprefix('torch.')} {ms:.1f} ms/step, loss {losses[0]:.3f}→{losses[-1]:.3f}")
        return f"{arch} {settings.image_size}px B={settings.batch_size}: " + "; ".join(parts)

    return run


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")


def check_channels_last(settings: Settings) -> str:
    from repro.models import build_model

    one_step = replace(settings, steps=1)
    results = {}
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = build_model(settings.sap_arch, num_classes=10)
        losses, ms = _train_steps(model, one_step, None, channels_last=channels_last)
        results[channels_last] = (losses[0], ms)
    (loss_a, ms_a), (loss_b, ms_b) = results[False], results[True]
    if abs(loss_a - loss_b) > 1e-2 * max(1.0, abs(loss_a)):
        raise AssertionError(f"channels-last loss {loss_b} differs from NCHW loss {loss_a}")
    return f"{settings.sap_arch}: NCHW {ms_a:.1f} ms, channels-last {ms_b:.1f} ms, loss {loss_a:.4f} vs {loss_b:.4f}"


def check_compile(settings: Settings) -> str:
    from repro.layers import create_pool

    device = torch.device(settings.device)
    torch.manual_seed(0)
    pool = create_pool("nlp", 64, 2, heads=8, impl="fast").to(device).eval()
    x = torch.randn(2, 64, 16, 16, device=device)
    compiled = torch.compile(pool)
    results = []
    start = time.perf_counter()
    for module in (pool, compiled):
        xi = x.clone().requires_grad_(True)
        out = module(xi)
        (grad,) = torch.autograd.grad(out.sum(), xi)
        results.append((out.detach(), grad))
    seconds = time.perf_counter() - start
    (out_a, grad_a), (out_b, grad_b) = results
    diff = max((out_a - out_b).abs().max().item(), (grad_a - grad_b).abs().max().item())
    if diff > 1e-3:
        raise AssertionError(f"compiled pool differs from eager by {diff:.2e}")
    return f"nlp pool C=64 16x16 8 heads: compiled and eager agree to {diff:.1e} (first calls {seconds:.1f} s)"


def _shapes_dataset(root: Path, backend: str = "torch") -> Path:
    from repro.data import prepare

    prepare("shapes", root, backend=backend, n_train=64, n_test=24, image_size=32)
    return root


def ddp_probe(device: str) -> dict:
    """Inside ``torchrun``: join the process group (NCCL on CUDA, gloo on CPU) even for one process, train a
    DDP-wrapped SAP model for two steps and all-reduce a tensor; the facts as a dict (rank 0 prints them as JSON)."""
    import torch.distributed as dist

    from repro.models import build_model

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    target = torch.device(device if device == "cpu" else f"cuda:{local_rank}")
    backend = "nccl" if target.type == "cuda" else "gloo"
    if target.type == "cuda":
        torch.cuda.set_device(target)
    dist.init_process_group(backend=backend, **({"device_id": target} if target.type == "cuda" else {}))
    try:
        torch.manual_seed(0)
        model = build_model("resnet18-nlp-1222", num_classes=10).to(target).train()
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[target.index] if target.type == "cuda" else None)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=1e-3)
        x = torch.randn(4, 3, 32, 32, device=target)
        y = torch.randint(0, 10, (4,), device=target)
        losses = []
        for _ in range(2):
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(ddp(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        total = torch.ones(1, device=target)
        dist.all_reduce(total)
        return {
            "backend": dist.get_backend(),
            "world_size": dist.get_world_size(),
            "all_reduce": total.item(),
            "losses": losses,
        }
    finally:
        dist.destroy_process_group()


def _torchrun(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", *args]
    proc = subprocess.run(
        cmd, env={**os.environ, "REPRO_NO_PROGRESS": "1"}, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"torchrun {' '.join(args[:2])} exited {proc.returncode}: {(proc.stderr or proc.stdout)[-500:]}"
        )
    return proc


def check_torchrun(settings: Settings) -> str:
    device = torch.device(settings.device)
    expected = "nccl" if device.type == "cuda" else "gloo"
    probe = _torchrun(["-m", "repro.bench.gpu_check", "--ddp-probe", "--device", settings.device])
    facts = json.loads(probe.stdout.strip().splitlines()[-1])
    if facts["backend"] != expected or facts["all_reduce"] != 1.0 or not all(map(_finite, facts["losses"])):
        raise AssertionError(f"DDP probe: {facts} (expected backend {expected})")
    with tempfile.TemporaryDirectory(prefix="gpu-check-ddp-") as tmp:
        root = _shapes_dataset(Path(tmp) / "data")
        out = Path(tmp) / "run"
        args = ["-m", "repro.engine.train", "--arch", "resnet18-skip-1222", "--recipe", "smoke"]
        args += ["--device", device.type, "--data-root", str(root), "--out", str(out), "--epochs", "1"]
        _torchrun([*args, "--batch-size", "8", "--max-steps-per-epoch", "2"])
        metrics = json.loads((out / "metrics.json").read_text())
    return (
        f"DDP probe: backend {facts['backend']}, world size {facts['world_size']}, all_reduce ok, "
        f"loss {facts['losses'][0]:.3f}→{facts['losses'][1]:.3f}; repro.engine.train under torchrun: "
        f"test_acc_last {metrics['test_acc_last']:.3f}"
    )


def check_ffcv(settings: Settings) -> str:
    try:
        import ffcv  # noqa: F401
    except ImportError as exc:
        raise CheckUnavailableError(f"ffcv is not installed ({exc})") from None
    from repro.engine.train import TrainConfig, train

    with tempfile.TemporaryDirectory(prefix="gpu-check-ffcv-") as tmp:
        root = _shapes_dataset(Path(tmp) / "data", backend="ffcv")
        config = TrainConfig(
            arch="resnet18-skip-1222",
            recipe="smoke",
            dataset="shapes",
            data_root=str(root),
            out_dir=str(Path(tmp) / "run"),
            backend="ffcv",
            device=settings.device,
            epochs=1,
            batch_size=8,
            max_steps_per_epoch=2,
            progress=False,
        )
        metrics = train(config)
    images, accuracy = metrics["train_images"], metrics["test_acc_last"]
    return f"ffcv backend on {settings.device}: {images} training images, test_acc_last {accuracy:.3f}"


def check_memory(settings: Settings) -> str:
    from repro.metrics.profile import profile_model

    profile = profile_model(
        settings.sap_arch, settings.image_size, measure=("inference", "train"), device=settings.device
    )
    analytic = profile.peak_bytes("layerwise") / 2**20
    measured = {mode: value / 2**20 for mode, value in profile.measured.items()}
    if not all(value > 0 for value in measured.values()) or set(measured) != {"inference", "train"}:
        raise AssertionError(f"measured peaks missing or not positive: {profile.measured}")
    return (
        f"{settings.sap_arch} {settings.image_size}px: analytic layer-wise peak {analytic:.1f} MiB, measured "
        f"inference {measured['inference']:.1f} MiB, train step {measured['train']:.1f} MiB "
        f"({profile.measured_method})"
    )


def check_bench(settings: Settings) -> str:
    from repro.bench.layers import bench_layers, parse_shape
    from repro.bench.models import TWIN, bench_models
    from repro.bench.report import LAYER_COLUMNS, MODEL_COLUMNS, write_report

    amp_modes = (False, True) if settings.device.startswith("cuda") else (False,)
    options = dict(
        device=settings.device,
        amp_modes=amp_modes,
        warmup=1,
        repeats=max(1, settings.steps),
        batch_size=settings.batch_size,
    )
    layer_rows = bench_layers([parse_shape(text) for text in settings.layer_shapes], ["nlp", "maxp"], **options)
    archs = ["resnet18-skip-1222", "resnet18-nlp-1222"]
    model_rows = bench_models(archs, baseline=TWIN, image_size=settings.image_size, **options)
    out = Path(settings.out_dir)
    note = [f"device {settings.device} ({_device_name(settings.device)}), written by python -m repro.bench.gpu_check"]
    write_report(layer_rows, out / "layers", LAYER_COLUMNS, title="Per-layer forward + backward", notes=note)
    write_report(model_rows, out / "models", MODEL_COLUMNS, title="Whole-model training step", notes=note)
    errors = [row["error"] for row in layer_rows + model_rows if "error" in row]
    if errors:
        raise AssertionError(f"{len(errors)} benchmark rows failed, first: {errors[0]}")
    nlp = next(r for r in model_rows if r["arch"] == "resnet18-nlp-1222" and r["impl"] == "fast")
    return (
        f"{len(layer_rows)} layer rows, {len(model_rows)} model rows -> {out}/layers.md, models.md; "
        f"resnet18-nlp fp32 step {nlp['ms']:.1f} ms = {nlp['x_vs_baseline']:.2f}x its strided-conv twin "
        f"({nlp['macs_vs_baseline']:.2f}x the MACs)"
    )


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return "CPU"


CHECKS: tuple[Check, ...] = (
    Check("amp-sap", "AMP bf16/fp16 training steps of a SAP model", _check_amp("sap_arch")),
    Check("amp-rnnpool", "AMP bf16/fp16 training steps of an RNNPool model", _check_amp("rnnpool_arch")),
    Check("channels-last", "SAP training step in channels-last vs NCHW", check_channels_last),
    Check("compile", "torch.compile of the fast nlp pool vs eager", check_compile),
    Check("torchrun", "1-GPU torchrun run of repro.engine.train (NCCL)", check_torchrun),
    Check("ffcv", "ffcv pipeline: .beton files, training with backend ffcv", check_ffcv),
    Check("memory", "measured CUDA peak memory beside the analytic peak", check_memory),
    Check("bench", "per-layer and whole-model benchmarks on the device", check_bench),
)


# -- running and reporting ----------------------------------------------------------------------------------------


def run_checks(
    checks: Sequence[Check], settings: Settings, progress: Callable[[str], None] | None = None
) -> list[CheckResult]:
    """Run every check in order; an exception is a failure (its last line becomes the detail), never an abort."""
    results = []
    for check in checks:
        if progress:
            progress(f"{check.name}: {check.description} ...")
        start = time.perf_counter()
        try:
            status, detail = "pass", check.run(settings)
        except CheckUnavailableError as exc:
            status, detail = "skip", str(exc)
        except Exception as exc:
            status, detail = "fail", f"{type(exc).__name__}: {exc}"
            if progress:
                progress(traceback.format_exc())
        result = CheckResult(check.name, status, time.perf_counter() - start, " ".join(detail.split()))
        if progress:
            progress(f"{check.name}: {result.status} ({result.seconds:.1f} s)")
        results.append(result)
    return results


def format_table(results: Sequence[CheckResult]) -> str:
    """A Markdown table: check, status, seconds, detail; and a summary line."""
    lines = ["| check | status | s | detail |", "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.name} | {r.status.upper()} | {r.seconds:.1f} | {r.detail.replace('|', '/')} |")
    counts = {status: sum(r.status == status for r in results) for status in ("pass", "fail", "skip")}
    total = sum(r.seconds for r in results)
    lines.append("")
    lines.append(f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped in {total:.0f} s")
    return "\n".join(lines) + "\n"


def exit_code(results: Sequence[CheckResult]) -> int:
    """1 if any check failed (or none ran), else 0; skipped checks do not fail the run."""
    if not results:
        return 1
    return 1 if any(r.status == "fail" for r in results) else 0


def _progress(message: str) -> None:
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m repro.bench.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="CUDA device to check (default cuda)")
    parser.add_argument("--only", action="append", choices=[c.name for c in CHECKS], help="run only these checks")
    parser.add_argument("--out", default=Settings.out_dir, help="directory for the table and the benchmark reports")
    parser.add_argument("--image-size", type=int, default=Settings.image_size)
    parser.add_argument("--batch-size", type=int, default=Settings.batch_size)
    parser.add_argument("--steps", type=int, default=Settings.steps, help="training steps per timed check")
    parser.add_argument("--ddp-probe", action="store_true", help=argparse.SUPPRESS)  # run by the torchrun check
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.ddp_probe:
        facts = ddp_probe(args.device)
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(facts))
        return 0
    if not args.device.startswith("cuda") or not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE)
        return 0
    from repro.utils.atomic import write_text_atomic

    settings = Settings(
        device=args.device, image_size=args.image_size, batch_size=args.batch_size, steps=args.steps, out_dir=args.out
    )
    checks = [c for c in CHECKS if not args.only or c.name in args.only]
    header = f"gpu_check on {_device_name(args.device)}: torch {torch.__version__}, CUDA {torch.version.cuda}"
    print(header, flush=True)
    results = run_checks(
        checks, settings, progress=lambda msg: print(f"[gpu_check] {msg}", file=sys.stderr, flush=True)
    )
    table = format_table(results)
    print(table)
    write_text_atomic(Path(args.out) / "gpu_check.md", f"# GPU check\n\n{header}\n\n{table}")
    return exit_code(results)


if __name__ == "__main__":
    raise SystemExit(main())
