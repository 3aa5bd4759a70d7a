"""The one atomic writer: whole files or nothing, the previous file intact on failure (disk full included)."""

from __future__ import annotations

import errno
import json

import pytest

from repro.utils.atomic import AtomicWriteError, atomic_open, atomic_path, write_json_atomic, write_text_atomic


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_writes_replace_whole_files_and_leave_no_temporaries(tmp_path):
    path = write_text_atomic(tmp_path / "a" / "b.txt", "one")
    write_text_atomic(path, "two")
    assert path.read_text() == "two"
    assert _names(path.parent) == ["b.txt"]


def test_an_exception_inside_the_block_keeps_the_previous_file(tmp_path):
    path = write_json_atomic(tmp_path / "m.json", {"a": 1})
    with pytest.raises(RuntimeError), atomic_open(path, "w") as handle:
        handle.write('{"half": ')
        raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"a": 1}
    assert _names(tmp_path) == ["m.json"]


def test_disk_full_names_the_file_and_keeps_the_previous_one(tmp_path):
    path = write_text_atomic(tmp_path / "checkpoint.pt", "good")

    with pytest.raises(AtomicWriteError) as info, atomic_open(path, "wb") as handle:
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.errno == errno.ENOSPC
    assert str(path) in str(info.value) and "no space left" in str(info.value)
    assert "previous file is intact" in str(info.value)
    assert path.read_text() == "good"
    assert _names(tmp_path) == ["checkpoint.pt"]


def test_atomic_path_keeps_the_extension_for_writers_that_look_at_it(tmp_path):
    with atomic_path(tmp_path / "plot.png", suffix=".png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"\x89PNG")
    assert (tmp_path / "plot.png").read_bytes() == b"\x89PNG"
    assert _names(tmp_path) == ["plot.png"]


def test_only_whole_file_modes_are_accepted(tmp_path):
    with pytest.raises(ValueError, match="mode"), atomic_open(tmp_path / "x", "a"):
        pass


def test_new_files_get_the_usual_permissions_and_replaced_files_keep_theirs(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "new.txt", "x")
        assert path.stat().st_mode & 0o777 == 0o644
        path.chmod(0o640)
        write_text_atomic(path, "y")
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)
