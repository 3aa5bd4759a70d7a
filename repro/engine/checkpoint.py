"""Training checkpoints: atomic writes, ``weights_only`` loads and the random-generator states they carry.

A checkpoint is a plain dict of tensors and Python primitives, so ``torch.load(path, weights_only=True)`` reads it.
The trainer stores (see :mod:`repro.engine.train`): ``format``, ``config``, ``recipe``, ``num_classes``, ``epoch``
(completed epochs), ``step`` (completed steps of the next epoch, > 0 only for a checkpoint written on interruption),
``model``, ``optimizer``, ``history`` (per-epoch metrics), ``partial`` (running sums of an interrupted epoch, one per
process), ``rng`` (one :func:`capture_rng_state` per process) and ``epoch_start_rng`` (the states when the interrupted
epoch began, one per process, used to rebuild its data order).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repro.utils.atomic import atomic_open

CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or incompatible with the requested run."""


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


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, then ``os.replace``."""
    with atomic_open(path, "wb") as handle:
        torch.save(state, handle)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no code from the file is run)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt file, foreign pickle, truncated write
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r} ({type(exc).__name__}: {exc}); delete it to start afresh"
        ) from exc
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{str(path)!r} is not a repro checkpoint (no 'model' entry)")
    return state
