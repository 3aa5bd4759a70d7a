"""``repro prepare`` / ``repro bench-data``: bad inputs give one clear line and a non-zero exit code."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from repro.cli import app

runner = CliRunner()


def _run(*args: str):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _assert_one_line_error(code: int, stderr: str, pattern: str, expected_code: int = 2) -> None:
    import re

    assert code == expected_code
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in stderr


def test_unknown_dataset_name(tmp_path):
    code, _, err = _run("prepare", "stl-11", "--data-root", str(tmp_path))
    _assert_one_line_error(code, err, r"unknown dataset 'stl-11'; valid names: cifar10, .*stl10")


def test_missing_root(tmp_path):
    code, _, err = _run("prepare", "cifar10", "--data-root", str(tmp_path / "nowhere"))
    _assert_one_line_error(code, err, r"data root .*nowhere does not exist; pass --data-root, set \$REPRO_DATA_ROOT")


def test_missing_dataset_names_layout_and_source(tmp_path):
    code, _, err = _run("prepare", "stl10", "--data-root", str(tmp_path))
    _assert_one_line_error(code, err, r"missing directory .*stl10_binary\. Expected layout: .*Get it: https://")


def test_truncated_file(tmp_path):
    directory = tmp_path / "stl10" / "stl10_binary"
    directory.mkdir(parents=True)
    for split in ("train", "test"):
        (directory / f"{split}_X.bin").write_bytes(bytes(27648 * 2 - 5))
        (directory / f"{split}_y.bin").write_bytes(bytes([1, 2]))
    code, _, err = _run("prepare", "stl10", "--data-root", str(tmp_path))
    _assert_one_line_error(code, err, r"train_X.bin is truncated", expected_code=1)  # a bad file: exit 1


def test_wrong_layout(tmp_path):
    val = tmp_path / "imagenet" / "val"
    (tmp_path / "imagenet" / "train" / "n01440764").mkdir(parents=True)
    (tmp_path / "imagenet" / "train" / "n01440764" / "a.JPEG").write_bytes(b"x")
    val.mkdir(parents=True)
    (val / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"x")
    code, _, err = _run("prepare", "imagenet", "--data-root", str(tmp_path))
    _assert_one_line_error(code, err, r"loose images .* sort them into <wnid>/ sub-directories")


def test_bad_generator_option(tmp_path):
    code, _, err = _run("prepare", "shapes", "--data-root", str(tmp_path), "--set", "sizes=3")
    _assert_one_line_error(code, err, r"unknown option\(s\) \['sizes'\]")
    code, _, err = _run("prepare", "shapes", "--data-root", str(tmp_path), "--set", "n_train")
    _assert_one_line_error(code, err, r"is not KEY=VALUE")


def test_prepare_generates_and_prints_the_path(tmp_path):
    code, out, _ = _run("prepare", "shapes", "--data-root", str(tmp_path), "--set", "n_train=12", "--set", "n_test=3")
    assert code == 0 and out.strip() == str(tmp_path / "shapes")
    assert len(list((tmp_path / "shapes" / "train").rglob("*.png"))) == 12


def test_bench_data_bad_recipe(tmp_path):
    code, _, err = _run("bench-data", "--data-root", str(tmp_path), "--num-images", "8", "--recipe", "nope")
    _assert_one_line_error(code, err, r"unknown recipe 'nope'")


@pytest.mark.slow
def test_bench_data_runs(tmp_path):
    pytest.importorskip("ffcv")
    code, out, _ = _run("bench-data", "--data-root", str(tmp_path), "--num-images", "256", "--epochs", "1",
                        "--out", str(tmp_path / "bench.json"))  # fmt: skip
    assert code == 0 and "x torchvision" in out and (tmp_path / "bench.json").is_file()
