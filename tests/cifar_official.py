"""CIFAR-10 batches byte for byte as the official files: written opcode by opcode as Python 2's ``cPickle``
(protocol 2) wrote them — ``SHORT_BINSTRING`` keys, ``numpy.core.multiarray._reconstruct``, the raw pixel string."""

from __future__ import annotations

import struct

import numpy as np


def _s(text: str | bytes) -> bytes:
    """A Python 2 ``str`` as cPickle protocol 2 writes it (``SHORT_BINSTRING`` / ``BINSTRING``)."""
    data = text.encode("latin1") if isinstance(text, str) else text
    return b"U" + bytes([len(data)]) + data if len(data) < 256 else b"T" + struct.pack("<i", len(data)) + data


def _int(value: int) -> bytes:
    return b"K" + bytes([value]) if value < 256 else b"M" + struct.pack("<H", value)


def py2_cifar_batch(data: np.ndarray, labels: list[int], key: str = "labels") -> bytes:
    """The bytes of ``{'batch_label', key, 'data', 'filenames'}`` as the official ``data_batch_*`` files hold them."""
    n = len(labels)
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + _int(0) + b"\x85" + _s("b") + b"\x87R"
        + b"(" + _int(1) + _int(n) + _int(3072) + b"\x86"
        + b"cnumpy\ndtype\n" + _s("u1") + _int(0) + _int(1) + b"\x87R"
        + b"(" + _int(3) + _s("|") + b"NNN" + b"J\xff\xff\xff\xff" * 2 + _int(0) + b"tb"
        + b"\x89" + _s(data.astype(np.uint8).tobytes()) + b"tb"
    )  # fmt: skip
    items = b"".join(_int(v) for v in labels)
    names = b"".join(_s(f"image_{i:06d}.png") for i in range(n))
    body = (
        _s("batch_label") + _s("training batch 1 of 5") + _s(key) + b"](" + items + b"e"
        + _s("data") + array + _s("filenames") + b"](" + names + b"e"
    )  # fmt: skip
    return b"\x80\x02}(" + body + b"u."


def py2_meta(names: list[str], key: str = "label_names") -> bytes:
    return b"\x80\x02}(" + _s(key) + b"](" + b"".join(_s(n) for n in names) + b"e" + _s("num_vis") + _int(3072) + b"u."


def write_official_cifar10(root, per_file: int = 2):
    directory = root / "cifar10" / "cifar-10-batches-py"
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k, name in enumerate([*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]):
        data = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
        (directory / name).write_bytes(py2_cifar_batch(data, [(k + i) % 10 for i in range(per_file)]))
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (directory / "batches.meta").write_bytes(py2_meta(classes))
    return directory
