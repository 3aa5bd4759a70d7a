"""Training checkpoints: atomic writes, ``weights_only`` loads and the random-generator states they carry.

A checkpoint is a plain dict of tensors and Python primitives, so ``torch.load(path, weights_only=True)`` reads it.
The trainer stores (see :mod:`repro.engine.train`): ``format``, ``config``, ``recipe``, ``num_classes``, ``epoch``
(completed epochs), ``step`` (completed steps of the next epoch, > 0 only for a checkpoint written on interruption),
``model``, ``optimizer``, ``history`` (per-epoch metrics), ``partial`` (running sums of an interrupted epoch, one per
process), ``rng`` (one :func:`capture_rng_state` per process) and ``epoch_start_rng`` (the states when the interrupted
epoch began, one per process, used to rebuild its data order).

:func:`save_checkpoint` adds ``digest``, a SHA-256 of everything else in the file; :func:`load_checkpoint` checks it,
so a checkpoint whose bytes changed after it was written (a bit flip, a partial overwrite by another tool) is refused
instead of silently training or evaluating other weights. Only a trainer checkpoint of format 1 (written before the
digest existed) is read without one: any other file without a digest is refused, so that damage to the digest's own
key cannot switch the check off. :func:`check_training_checkpoint` validates the fields the trainer and ``repro
evaluate`` use and :func:`load_model_weights` loads the ``model`` entry into a model with one-line errors.
"""

from __future__ import annotations

import hashlib
import random
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repro.utils.atomic import atomic_open

CHECKPOINT_FORMAT = 2
"""Version of the trainer's checkpoint layout. 2 = 1 plus the mandatory ``digest``; both are read."""
READABLE_FORMATS = (1, 2)


class CheckpointError(RuntimeError):
    """A checkpoint that is unreadable, corrupt or incompatible with the requested run (command-line exit code 1)."""

    exit_code = 1


class CheckpointNotFoundError(CheckpointError):
    """The checkpoint path does not exist (a usage error: exit code 2)."""

    exit_code = 2


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's ``random``, NumPy's global generator, torch CPU and every CUDA device."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`. CUDA states are restored only when CUDA is available."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": np_state["bit_generator"],
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            torch.cuda.set_rng_state(cuda_states[0])


def _feed(sha: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        sha.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        try:
            sha.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        except (RuntimeError, TypeError):  # dtypes without a byte view (quantised, sparse): their values
            sha.update(repr(tensor.tolist()).encode())
    elif isinstance(value, Mapping):
        sha.update(f"D{len(value)}".encode())
        for key, item in value.items():
            sha.update(f"K{type(key).__name__}:{key!r}".encode())
            _feed(sha, item)
    elif isinstance(value, list | tuple):  # a list and a tuple of the same items digest alike
        sha.update(f"L{len(value)}".encode())
        for item in value:
            _feed(sha, item)
    else:
        sha.update(f"V{type(value).__name__}:{value!r}".encode())


def state_digest(state: Mapping[str, Any]) -> str:
    """SHA-256 of a checkpoint's content (tensors by dtype, shape and bytes; other values by type and ``repr``),
    the ``digest`` entry left out."""
    sha = hashlib.sha256()
    _feed(sha, {k: v for k, v in state.items() if k != "digest"})
    return sha.hexdigest()


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` plus its ``digest`` to ``path`` atomically: a temporary file in the same folder, fsync, then
    ``os.replace``. A failed write (disk full) raises :class:`~repro.utils.atomic.AtomicWriteError` and keeps the
    previous file."""
    with atomic_open(path, "wb") as handle:
        torch.save({**state, "digest": state_digest(state)}, handle)
    return Path(path)


def _refusal(message: str) -> str | None:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line, or None for another failure."""
    if "Weights only load failed" not in message:
        return None
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return f"it references the global {found.group(1)!r}, which a checkpoint never needs (it could run code)"
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", message, re.S)
    detail = " ".join(found.group(1).split())[:150] if found else "an instruction outside plain data"
    return f"it is not a plain checkpoint of tensors and values ({detail})"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no code from the file is run) and check its digest."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        with warnings.catch_warnings():  # the refusal below says it all; torch warns about foreign protocols
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt file, foreign pickle, truncated write, a pickle that would run code
        refusal = _refusal(str(exc))
        if refusal:
            raise CheckpointError(
                f"refused checkpoint {str(path)!r}: {refusal}; nothing from the file was executed"
            ) from None
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r} ({reason}); it is truncated, corrupt or not a checkpoint; "
            "delete it to start afresh"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{str(path)!r} is not a repro checkpoint (no 'model' entry)")
    digest = state.pop("digest", None)
    if digest is None and state.get("format") != 1:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or foreign: it has no content digest (every checkpoint written by "
            "repro has one); delete it to start afresh"
        )
    if digest is not None and digest != state_digest(state):
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt: its content does not match the digest written with it "
            "(the file changed after it was written); delete it to start afresh"
        )
    return state


def _field_error(path: Path, field: str, problem: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {str(path)!r}: field {field!r} {problem}; it was not written by `repro train`")


def check_training_checkpoint(state: Mapping[str, Any], path: str | Path) -> None:
    """Fail with the file and the field when ``state`` lacks what a ``repro train`` checkpoint holds (``format``,
    ``config.arch``, ``recipe``, ``num_classes``, ``epoch``, ``model``)."""
    path = Path(path)
    if state.get("format") not in READABLE_FORMATS:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format {state.get('format')!r}, expected one of {READABLE_FORMATS}: "
            "it was written by another version of repro or another program"
        )
    config = state.get("config")
    if not isinstance(config, Mapping):
        raise _field_error(path, "config", "is missing or not a mapping")
    if not isinstance(config.get("arch"), str) or not config["arch"]:
        raise _field_error(path, "config.arch", "is missing or not a string")
    if not isinstance(state.get("recipe"), Mapping):
        raise _field_error(path, "recipe", "is missing or not a mapping")
    for field in ("num_classes", "epoch"):
        value = state.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if field == "num_classes" else 0):
            raise _field_error(path, field, f"is {value!r}, not a valid count")
    model = state.get("model")
    if not isinstance(model, Mapping) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise _field_error(path, "model", "is not a state dict of tensors")


def load_model_weights(model: torch.nn.Module, weights: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(weights)``; a mismatch (another architecture's weights) is one line naming ``path``."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    shapes = [
        f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights and isinstance(weights[k], torch.Tensor) and weights[k].shape != v.shape
    ]
    problems = [
        f"{len(items)} {what} (first: {items[0]})"
        for what, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
        if items
    ]
    if problems:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: field 'model' does not fit {type(model).__name__}: {'; '.join(problems)} "
            "(weights of another architecture or number of classes)"
        )
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: field 'model' cannot be loaded ({' '.join(str(exc).split())[:300]})"
        ) from None
