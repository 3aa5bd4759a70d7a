"""Hypothesis fuzzing of what users hand the suite: dataset files, generated-set metadata, ffcv sidecars,
checkpoints and the arguments of ``repro train``, ``repro evaluate``, ``repro prepare`` and ``repro profile``.

Every input gives either success or one clear error (one line naming the file; exit 2 for usage, 1 for data) and
never a traceback. Each fuzz test runs a few examples by default and many more under ``-m slow``.
"""

from __future__ import annotations

import json
import pickle
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from cifar_official import py2_cifar_batch, write_official_cifar10
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from repro.data import DatasetError, get_dataset, prepare
from repro.data.coco import CocoDetection
from repro.data.ffcv_io import read_sidecar
from repro.data.generated import read_meta, require_generated
from repro.data.widerface import read_annotations
from repro.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, state_digest
from repro.faults.workload import TrainWorkload, invoke, register_probe

FAST, SLOW = 15, 300
_COMMON = {"deadline": None, "suppress_health_check": list(HealthCheck), "derandomize": False}
SCRATCH = Path(tempfile.mkdtemp(prefix="repro-fuzz-"))


def fuzz(fast: int = FAST, slow: int = SLOW, **strategies) -> Callable:
    """Decorator: the property as two tests, ``fast`` examples in the default run and ``slow`` under ``-m slow``."""

    def pair(check: Callable) -> tuple[Callable, Callable]:
        quick = settings(max_examples=fast, **_COMMON)(given(**strategies)(check))
        thorough = pytest.mark.slow(settings(max_examples=slow, **_COMMON)(given(**strategies)(check)))
        return quick, thorough

    return pair


def scratch() -> Path:
    return Path(tempfile.mkdtemp(dir=SCRATCH))


def one_line(exc: BaseException, *names: str) -> None:
    message = str(exc)
    assert "\n" not in message and message.strip(), message
    assert any(name in message for name in names), (names, message)


# -- CIFAR batches ----------------------------------------------------------------------------------------------------

_VALID_BATCH = py2_cifar_batch(np.zeros((2, 3072), np.uint8), [1, 2])

arrays = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.int64, np.float32, np.bool_, np.dtype("U2")]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
) | st.lists(st.integers(0, 255) | st.none(), max_size=3).map(lambda items: np.array(items, dtype=object))
batch_values = st.dictionaries(
    st.sampled_from(["data", "labels", "batch_label", "x"]),
    arrays | st.lists(st.integers(-5, 20), max_size=4) | st.text(max_size=3) | st.none() | st.integers(),
    max_size=4,
)
cifar_files = st.one_of(
    st.binary(max_size=300),
    st.integers(0, len(_VALID_BATCH) - 1).map(lambda n: _VALID_BATCH[:n]),
    st.tuples(st.integers(0, len(_VALID_BATCH) - 1), st.integers(1, 255)).map(
        lambda t: _VALID_BATCH[: t[0]] + bytes([_VALID_BATCH[t[0]] ^ t[1]]) + _VALID_BATCH[t[0] + 1 :]
    ),
    st.tuples(batch_values, st.sampled_from([0, 2, 4])).map(lambda t: pickle.dumps(t[0], protocol=t[1])),
)


def _check_cifar_file(content: bytes) -> None:
    root = scratch()
    directory = write_official_cifar10(root, per_file=1)
    (directory / "data_batch_1").write_bytes(content)
    try:
        dataset = get_dataset("cifar10", root, "train")
    except DatasetError as exc:
        one_line(exc, str(directory / "data_batch_1"))
        return
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert image.size == (32, 32) and 0 <= label < 10


test_fuzz_cifar_batches, test_fuzz_cifar_batches_slow = fuzz(content=cifar_files)(_check_cifar_file)


# -- COCO annotation files --------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_COCO = {
    "images": [
        {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
        {"id": 2, "file_name": "b.jpg", "width": 20, "height": 30},
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 20], "area": 200, "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 5, "bbox": [0, 0, 20, 30], "area": 600, "iscrowd": 1},
    ],
    "categories": [{"id": 3, "name": "car"}, {"id": 5, "name": "bus"}],
}
_COCO_PATHS = [
    (section, index, key)
    for section in ("images", "annotations", "categories")
    for index in range(len(_COCO[section]))
    for key in _COCO[section][index]
]


@st.composite
def coco_files(draw) -> bytes:
    kind = draw(st.sampled_from(["mutated", "mutated", "random json", "bytes", "truncated"]))
    if kind == "random json":
        return json.dumps(draw(json_values)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    content = json.loads(json.dumps(_COCO))
    text = json.dumps(content)
    if kind == "truncated":
        return text[: draw(st.integers(0, len(text) - 1))].encode()
    for _ in range(draw(st.integers(1, 3))):
        section, index, key = draw(st.sampled_from(_COCO_PATHS))
        record = content[section][index] if index < len(content[section]) else {}
        if draw(st.booleans()):
            record[key] = draw(json_values | st.lists(st.floats(allow_nan=True) | st.integers(), max_size=5))
        else:
            record.pop(key, None)
    return json.dumps(content).encode()


def _check_coco_file(content: bytes) -> None:
    path = scratch() / "instances_val2017.json"
    path.write_bytes(content)
    try:
        dataset = CocoDetection(path.parent, path)
    except DatasetError as exc:
        one_line(exc, str(path))
        return
    for image_id in dataset.image_ids:
        target = dataset.target(image_id)
        assert target["boxes"].shape[1] == 4 and torch.isfinite(target["boxes"]).all()
        assert len(target["labels"]) == len(target["boxes"])


test_fuzz_coco_files, test_fuzz_coco_files_slow = fuzz(content=coco_files())(_check_coco_file)


# -- WIDER FACE annotation files --------------------------------------------------------------------------------------

_WIDER = ["0--Parade/a.jpg", "2", "1 2 10 12 0 0 0 0 0 0 ", "5 5 4 4 2 1 1 1 2 1 ", "1--Crowd/b.jpg", "0"]
_WIDER += ["0 0 0 0 0 0 0 0 0 0 "]
tokens = st.sampled_from(["0", "1", "-1", "3", "2.5", "nan", "inf", "1e999", "x", "", "a.jpg", "../a.jpg", "99"])


@st.composite
def wider_files(draw) -> str:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text(max_size=120))
    lines = list(_WIDER)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["replace", "drop", "dup", "token"]))
        if op == "replace":
            lines[i] = " ".join(draw(st.lists(tokens, max_size=11)))
        elif op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        else:
            parts = lines[i].split() or [""]
            parts[draw(st.integers(0, len(parts) - 1))] = draw(tokens)
            lines[i] = " ".join(parts)
        if not lines:
            break
    return "\n".join(lines) + "\n"


def _check_wider_file(text: str) -> None:
    path = scratch() / "wider_face_train_bbx_gt.txt"
    path.write_text(text)
    try:
        entries = read_annotations(path)
    except DatasetError as exc:
        one_line(exc, str(path))
        return
    for entry in entries:
        assert entry.faces.shape[1] == 10 and (entry.faces >= 0).all()


test_fuzz_wider_files, test_fuzz_wider_files_slow = fuzz(text=wider_files())(_check_wider_file)


# -- generated-set metadata and ffcv sidecars -------------------------------------------------------------------------

small_files = st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode())


def _check_meta(content: bytes) -> None:
    directory = scratch() / "shapes"
    directory.mkdir()
    (directory / "meta.json").write_bytes(content)
    meta = read_meta(directory)
    assert meta is None or (isinstance(meta, dict) and meta["name"] == "shapes")
    try:
        require_generated(directory, "shapes")
    except DatasetError as exc:
        one_line(exc, "repro prepare shapes")


def _check_sidecar(content: bytes) -> None:
    path = scratch() / "train-raw.beton.json"
    path.write_bytes(content)
    info = read_sidecar(path)
    assert info is None or isinstance(info, dict)


test_fuzz_generated_meta, test_fuzz_generated_meta_slow = fuzz(content=small_files)(_check_meta)
test_fuzz_ffcv_sidecars, test_fuzz_ffcv_sidecars_slow = fuzz(content=small_files)(_check_sidecar)


def test_prepare_rewrites_a_generated_set_whose_metadata_is_garbage(tmp_path):
    target = prepare("shapes", tmp_path, n_train=10, n_test=10, image_size=24)
    (target / "meta.json").write_bytes(b"\x00garbage")
    assert prepare("shapes", tmp_path, n_train=10, n_test=10, image_size=24) == target
    assert read_meta(target)["n_test"] == 10


# -- checkpoints ------------------------------------------------------------------------------------------------------

_CHECKPOINT = SCRATCH / "valid.pt"
save_checkpoint(_CHECKPOINT, {"format": 2, "model": {"w": torch.arange(64.0), "b": torch.ones(3)}, "epoch": 1})
_CHECKPOINT_BYTES = _CHECKPOINT.read_bytes()
_DIGEST = state_digest(load_checkpoint(_CHECKPOINT))

checkpoint_files = st.one_of(
    st.integers(0, len(_CHECKPOINT_BYTES) - 1).map(lambda n: _CHECKPOINT_BYTES[:n]),
    st.tuples(st.integers(0, len(_CHECKPOINT_BYTES) - 1), st.integers(0, 7)).map(
        lambda t: (
            _CHECKPOINT_BYTES[: t[0]] + bytes([_CHECKPOINT_BYTES[t[0]] ^ (1 << t[1])]) + _CHECKPOINT_BYTES[t[0] + 1 :]
        )
    ),
    st.binary(max_size=300),
    json_values.map(lambda v: pickle.dumps(v)),
)


def _check_checkpoint(content: bytes) -> None:
    path = scratch() / "checkpoint.pt"
    path.write_bytes(content)
    try:
        state = load_checkpoint(path)
    except CheckpointError as exc:
        one_line(exc, str(path))
        return
    assert state_digest(state) == _DIGEST  # whatever loads is the original content, never silently other weights


test_fuzz_checkpoints, test_fuzz_checkpoints_slow = fuzz(content=checkpoint_files)(_check_checkpoint)


# -- command-line arguments -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_world(tmp_path_factory) -> dict[str, Path]:
    """A data root with ``shapes``, a valid checkpoint of the probe model and damaged files, for the CLI fuzzing."""
    register_probe()
    root = tmp_path_factory.mktemp("cli")
    workload = TrainWorkload(root / "data", epochs=1, steps=1)
    workload.prepare()
    assert invoke(workload.argv(root / "run", resume=False))[0] == 0
    (root / "corrupt.pt").write_bytes((root / "run" / "checkpoint.pt").read_bytes()[:1000])
    return {"root": root, "data": workload.data_root, "checkpoint": root / "run" / "checkpoint.pt"}


def _check_cli(args: list[str]) -> tuple[int, str]:
    code, stderr = invoke(args)
    assert code in (0, 1, 2), (args, code, stderr)
    assert "Traceback" not in stderr, (args, stderr)
    if code:
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        usage = any(word in stderr for word in ("Usage:", "usage:", "Error"))  # click's and argparse's usage errors
        assert len(errors) == 1 or (code == 2 and usage), (args, stderr)
    return code, stderr


numbers = st.sampled_from(["1", "2", "0", "-1", "3.5", "nan", "x", ""])
arch_names = st.sampled_from(
    ["faults-probe", "resnet18-skip-1222", "resnet18-nlp-1222", "mobilenet_v2-skip-1222121", "resnet18-bogus-1222",
     "resnet18", "-", "", "prepool-nlp-4", "faults-probe-x", "googlenet"]
)  # fmt: skip


def _options(pairs: dict[str, st.SearchStrategy]) -> st.SearchStrategy[list[str]]:
    """A list of ``--flag value`` pairs drawn from ``pairs`` (flags may repeat; ``None`` values are bare flags)."""
    flag = st.sampled_from(sorted(pairs)).flatmap(lambda f: pairs[f].map(lambda v: [f] if v is None else [f, v]))
    return st.lists(flag, max_size=5).map(lambda items: [x for item in items for x in item])


train_options = _options(
    {
        "--arch": arch_names, "--recipe": st.sampled_from(["smoke", "sap-stl10", "nope"]),
        "--dataset": st.sampled_from(["shapes", "cifar10", "nope", "shapes_det"]), "--epochs": numbers,
        "--batch-size": numbers, "--lr": numbers, "--image-size": st.sampled_from(["32", "8", "0", "-3", "x"]),
        "--device": st.sampled_from(["cpu", "cuda", "cuda:7", "tpu"]), "--val-split": numbers,
        "--max-steps-per-epoch": numbers, "--seed": numbers, "--resume": st.none(), "--bogus-flag": st.none(),
        "--backend": st.sampled_from(["torch", "nope"]), "--num-workers": numbers, "--placement": st.text(max_size=4),
    }
)  # fmt: skip


def _check_train(options: list[str], world: dict[str, Path]) -> None:
    out = scratch() / "run"
    base = ["train", "--arch", "faults-probe", "--data-root", str(world["data"]), "--out", str(out), "--device", "cpu"]
    base += ["--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "4", "--image-size", "32"]
    _check_cli([*base, *options])


def test_fuzz_train_arguments(cli_world):
    settings(max_examples=5, **_COMMON)(
        given(options=train_options)(lambda options: _check_train(options, cli_world))
    )()


@pytest.mark.slow
def test_fuzz_train_arguments_slow(cli_world):
    settings(max_examples=150, **_COMMON)(
        given(options=train_options)(lambda options: _check_train(options, cli_world))
    )()


def _inside(args: list[str], flag: str, where: Path) -> list[str]:
    """``args`` with the value of every ``flag`` made a path inside ``where`` (the fuzzing writes nowhere else)."""
    return [str(where / a) if i and args[i - 1] == flag else a for i, a in enumerate(args)]


def _evaluate_args(world: dict[str, Path]) -> st.SearchStrategy[list[str]]:
    paths = st.sampled_from([str(world["checkpoint"]), str(world["root"] / "corrupt.pt"), str(world["root"]),
                             str(world["root"] / "missing.pt"), ""])  # fmt: skip
    options = _options(
        {
            "--split": st.sampled_from(["test", "train", "val", "nope"]), "--batch-size": numbers,
            "--device": st.sampled_from(["cpu", "auto", "cuda:3", "x"]), "--data-root": st.just(str(world["root"])),
            "--out": st.sampled_from(["result.json", "", "dir/"]),
        }
    )  # fmt: skip
    return st.tuples(paths, options).map(lambda t: ["evaluate", t[0], *t[1]])


def _check_evaluate(args: list[str]) -> None:
    where = scratch()
    args = _inside(args, "--out", where)
    (where / "dir").mkdir()
    _check_cli(args)


def test_fuzz_evaluate_arguments(cli_world):
    settings(max_examples=FAST, **_COMMON)(given(args=_evaluate_args(cli_world))(_check_evaluate))()


@pytest.mark.slow
def test_fuzz_evaluate_arguments_slow(cli_world):
    settings(max_examples=SLOW, **_COMMON)(given(args=_evaluate_args(cli_world))(_check_evaluate))()


prepare_args = st.tuples(
    st.sampled_from(["shapes", "digits", "cifar10", "coco", "widerface", "stl10", "synth_faces", "nope", ""]),
    _options(
        {
            "--set": st.tuples(st.sampled_from(["n_train", "n_test", "image_size", "seed", "format", "junk", ""]),
                               st.sampled_from(["2", "0", "-1", "x", "png", "jpg", "1.5", "[1]", "", "{a: 1}"]))
            .map(lambda kv: f"{kv[0]}={kv[1]}"),
            "--backend": st.sampled_from(["torch", "nope"]), "--ffcv-mode": st.sampled_from(["raw", "jpg", "x"]),
        }
    ),
)  # fmt: skip


def _check_prepare(args: tuple[str, list[str]]) -> None:
    name, options = args
    _check_cli(["prepare", name, "--data-root", str(scratch()), "--set", "n_train=4", "--set", "n_test=2", *options])


test_fuzz_prepare_arguments, test_fuzz_prepare_arguments_slow = fuzz(args=prepare_args)(_check_prepare)

profile_args = st.tuples(
    arch_names,
    _options(
        {
            "--image-size": st.sampled_from(["32", "0", "-1", "x", "32x48", "8x", "1000000"]),
            "--convention": st.sampled_from(["layerwise", "largest-map", "io-sum", "nope"]),
            "--dtype": st.sampled_from(["fp32", "int8", "fp64"]),
            "--format": st.sampled_from(["table", "csv", "json", "x"]),
            "--num-classes": st.sampled_from(["1", "10", "x", "2.5"]), "--ratios": st.none(),
            "--output": st.sampled_from(["out.csv", "sub/out.json"]),
        }
    ),
)  # fmt: skip


def _check_profile(args: tuple[str, list[str]]) -> None:
    arch, options = args
    where = scratch()
    (where / "dir").mkdir()
    options = _inside(options, "--output", where)
    _check_cli(["profile", arch, "--image-size", "32", *options])


test_fuzz_profile_arguments, test_fuzz_profile_arguments_slow = fuzz(args=profile_args)(_check_profile)


def test_profile_output_that_cannot_be_written_is_one_line(tmp_path):
    assert _check_cli(["profile", "resnet18-skip-1222", "--image-size", "32", "--output", str(tmp_path)])[0] == 1


def test_profile_negative_num_classes_is_a_usage_error():
    assert _check_cli(["profile", "resnet18-skip-1222", "--image-size", "32", "--num-classes", "-1"])[0] == 2


def teardown_module() -> None:
    shutil.rmtree(SCRATCH, ignore_errors=True)
