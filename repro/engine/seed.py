"""Seeding and determinism switches, in one place."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def set_deterministic(enabled: bool = True) -> None:
    """Deterministic kernels (as the SAP code: ``cudnn.deterministic=True, benchmark=False``) or fast ones.

    ``torch.use_deterministic_algorithms`` runs in ``warn_only`` mode, so an op without a deterministic kernel warns
    instead of failing. On CUDA this needs ``CUBLAS_WORKSPACE_CONFIG``, which is set here if absent.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled
