"""Measured peak memory: CPU via the profiler's allocator events (inference and one training step), CUDA if present."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from repro.metrics.measured_memory import measure_peak_memory


def _small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def test_cpu_inference_and_training_step_are_positive_and_ordered():
    model = _small_net()
    inference = measure_peak_memory(model, 32, mode="inference")
    train = measure_peak_memory(model, 32, mode="train")
    activations = 16 * 32 * 32 * 4  # the first conv output alone, fp32
    assert inference.peak_bytes >= activations
    assert train.peak_bytes > inference.peak_bytes  # saved activations, gradients and momentum buffers
    assert train.batch_size == 2 and inference.batch_size == 1
    assert model.training  # mode restored
    assert "profiler" in inference.method


def test_measured_memory_rejects_meta_models_and_bad_modes():
    with torch.device("meta"):
        model = _small_net()
    with pytest.raises(ValueError, match="real weights"):
        measure_peak_memory(model, 32)
    with pytest.raises(ValueError, match="unknown mode 'eval'"):
        measure_peak_memory(_small_net(), 32, mode="eval")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_peak_memory():
    result = measure_peak_memory(_small_net(), 64, mode="train", device="cuda")
    assert result.peak_bytes > 16 * 64 * 64 * 4
    assert result.method == "torch.cuda.max_memory_allocated"
