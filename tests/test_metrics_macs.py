"""MAC counting: convolutions and linear layers against a closed form, attention against its formula."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from repro.layers.nlp import SelfAttentiveWeights, attention_impl
from repro.metrics.macs import attention_macs
from repro.metrics.params import count_params
from repro.metrics.trace import count_macs, trace_model


def _conv_linear_macs(model: nn.Module, image_size: int) -> int:
    """Independent closed form: out_h·out_w·out_c·(in_c/groups)·k_h·k_w per conv, in·out per linear layer."""
    total = 0

    def hook(module, args, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        else:
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, image_size, image_size, device="meta"))
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_conv_and_linear_macs_match_the_closed_form(name):
    with torch.device("meta"):
        model = torchvision.models.get_model(name, num_classes=1000)
    assert count_macs(model, 224).total == _conv_linear_macs(model, 224)


def test_resnet18_at_224_is_1_814_gmacs():
    with torch.device("meta"):
        model = torchvision.models.resnet18(num_classes=1000)
    assert round(count_macs(model, 224).total / 1e9, 3) == 1.814


@pytest.mark.parametrize("impl", ["fast", "faithful"])
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_nlp_attention_macs_equal_the_formula(impl, device):
    channels, size, patch, heads = 32, 12, 2, 4
    with torch.device(device):
        module = SelfAttentiveWeights(channels, patch_size=patch, heads=heads, impl=impl).eval()
    tokens, e = (size // patch) ** 2, module.embed_dim
    report = count_macs(module, size, in_channels=channels)
    assert report.attention == attention_macs(tokens, e) == 4 * tokens * e * e + 2 * tokens**2 * e
    convs = tokens * channels * e * patch * patch + size * size * e * channels  # patch embedding + restore 1x1
    assert report.total == report.attention + convs


def test_sdpa_on_cpu_is_counted_where_module_hooks_see_nothing():
    """The 'fast' NLP path calls F.linear + F.scaled_dot_product_attention directly: no nn.Linear or
    nn.MultiheadAttention forward runs, so a module-hook counter sees only the two convs."""
    module = SelfAttentiveWeights(16, patch_size=1, heads=2, impl="fast").eval()
    hooked = []
    handles = [
        m.register_forward_hook(lambda *a, m=m: hooked.append(type(m).__name__))
        for m in module.modules()
        if isinstance(m, (nn.Linear, nn.MultiheadAttention))
    ]
    report = count_macs(module, 8, in_channels=16)
    for h in handles:
        h.remove()
    assert hooked == []
    assert report.attention == attention_macs(64, module.embed_dim)


def test_faithful_and_fast_attention_count_the_same():
    with attention_impl("faithful"):
        with torch.device("meta"):
            from repro.models import build_model

            faithful = build_model("resnet18-nlp_headfix2-1222", 10)
        slow = trace_model(faithful, 64)
    with torch.device("meta"):
        from repro.models import build_model

        fast = build_model("resnet18-nlp_headfix2-1222", 10)
    assert trace_model(fast, 64).macs == slow.macs


def test_params_total_and_trainable_count_shared_parameters_once():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(4, 2))
    model[3].weight.requires_grad_(False)
    counts = count_params(model)
    assert counts.total == 20 + 10
    assert counts.trainable == 20 + 2
    assert counts.frozen == 8
    with torch.device("meta"):
        assert count_params(torchvision.models.resnet18(num_classes=10)).total == 11_181_642
