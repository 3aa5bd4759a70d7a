"""The fast self-attentive path is numerically the faithful one (fp32, same weights), and reproduces the official
golden outputs: forward and gradients of the input and every parameter, for nlp, its ablations, dfmnlp and mixp."""

from __future__ import annotations

import pytest
import torch

from repro.compat import load_official_state_dict
from repro.layers import create_pool
from repro.layers.nlp import attention_impl

NLP_POOLS = ("nlp", "nlpnoexp", "nlpnosigmoid", "nlpnope", "nlpnobn1", "nlpnobn2")
TOL = 1e-5


def _randomize(module: torch.nn.Module, seed: int = 3) -> torch.nn.Module:
    """Random parameters (small, so that nlpnosigmoid stays finite) and BN statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
    return module


def _run(pool: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor) -> list[torch.Tensor]:
    xi = x.clone().requires_grad_(True)
    y = pool(xi)
    return [y.detach(), *torch.autograd.grad(y, [xi, *pool.parameters()], grad)]


def _assert_equivalent(name: str, channels: int, size: tuple[int, int], train: bool, **cfg) -> None:
    """fast vs faithful on one set of weights, in float64 (the same function) and float32 (the same rounding).

    float32: outputs within 1e-5. In eval mode every gradient is within 1e-5 (relative to the largest gradient entry,
    at least 1). In train mode the restore BatchNorm divides by the batch std of nearly constant attention outputs,
    so even the faithful path's float32 gradients are off from the exact (float64) ones by up to ~1e-4; there the
    fast path must be about as accurate as the faithful one: its largest gradient error vs exact is at most
    1e-5·scale + 16 x the faithful path's largest error.
    """
    torch.manual_seed(0)
    faithful = _randomize(create_pool(name, channels, 2, impl="faithful", **cfg)).train(train)
    fast = create_pool(name, channels, 2, impl="fast", **cfg).train(train)
    fast.load_state_dict(faithful.state_dict())
    assert fast.weight_net.active_impl == "fast" and faithful.weight_net.active_impl == "faithful"
    x = torch.randn(2, channels, *size)
    grad = torch.randn(2, channels, size[0] // 2, size[1] // 2)
    ref, got = _run(faithful, x, grad), _run(fast, x, grad)
    exact = _run(faithful.double(), x.double(), grad.double())
    exact_fast = _run(fast.double(), x.double(), grad.double())
    assert torch.isfinite(ref[0]).all()
    scale = max(1.0, max(g.abs().max().item() for g in exact[1:]))
    names = ["output", "input", *(n for n, _ in faithful.named_parameters())]
    for label, a, b in zip(names, exact_fast, exact):
        assert (a - b).abs().max().item() <= 1e-9 * scale, f"{name}: float64 {label} differs"
    torch.testing.assert_close(got[0], ref[0], atol=TOL, rtol=0)
    if train:
        faithful_error = max((b.double() - e).abs().max().item() for b, e in zip(ref[1:], exact[1:]))
        fast_error = max((a.double() - e).abs().max().item() for a, e in zip(got[1:], exact[1:]))
        assert fast_error <= TOL * scale + 16 * faithful_error, f"{name}: fast gradients are less accurate"
    else:
        for label, a, b in zip(names[1:], got[1:], ref[1:]):
            assert (a - b).abs().max().item() <= TOL * scale, f"{name}: gradient of {label} differs"


@pytest.mark.parametrize("name", NLP_POOLS)
@pytest.mark.parametrize(
    ("patch_size", "win_norm", "size", "train"), [(1, True, (8, 8), True), (2, False, (9, 11), True)]
)
def test_fast_equals_faithful_nlp_family(name, patch_size, win_norm, size, train):
    _assert_equivalent(name, 8, size, train, patch_size=patch_size, heads=2, win_norm=win_norm)


@pytest.mark.parametrize(
    ("patch_size", "win_norm", "size"), [(4, True, (12, 12)), (2, True, (10, 10)), (1, False, (7, 9))]
)
def test_fast_equals_faithful_nlp_eval(patch_size, win_norm, size):
    _assert_equivalent("nlp", 8, size, False, patch_size=patch_size, heads=2, win_norm=win_norm)


@pytest.mark.parametrize("name", ["dfmnlp", "mixp"])
@pytest.mark.parametrize(("patch_size", "win_norm", "train"), [(1, True, True), (2, False, False)])
def test_fast_equals_faithful_deformable(name, patch_size, win_norm, train):
    _assert_equivalent(name, 8, (8, 8), train, patch_size=patch_size, heads=2, win_norm=win_norm)


def test_fast_equals_faithful_at_a_model_shape_in_eval_mode():
    """One ResNet18 stage-2 site (C=128 would be slow here; C=32 with 4 heads, 16x16 tokens)."""
    _assert_equivalent("nlp", 32, (16, 16), False, patch_size=1, heads=4, win_norm=True)


MODEL_FIXTURES = (
    "model_mobilenet_v2-nlp_headfix2-1222121.pt",
    "model_prepool-nlp_headfix2_nowin-4-mobilenet_v2-skip-1222121.pt",
)


@pytest.mark.parametrize("impl", ["fast", "faithful"])
@pytest.mark.parametrize("fixture", MODEL_FIXTURES)
def test_official_model_checkpoint_reproduced_by_both_paths(official_fixtures_dir, fixture, impl):
    from repro.models import build_model

    data = torch.load(official_fixtures_dir / fixture, weights_only=True)
    model = build_model(data["arch"], num_classes=data["num_classes"])
    load_official_state_dict(model, data["state_dict"]).eval()
    with attention_impl(impl), torch.no_grad():
        out = model(data["input"])
    torch.testing.assert_close(out, data["output"], atol=1e-5, rtol=0)


POOL_FIXTURES = {
    "pool_nlp.pt": ("nlp", {"patch_size": 1, "heads": 4, "win_norm": True}),
    "pool_nlp_nowin_p2.pt": ("nlp", {"patch_size": 2, "heads": 2, "win_norm": False}),
    "pool_nlpnoexp.pt": ("nlpnoexp", {"patch_size": 1, "heads": 4, "win_norm": True}),
    "pool_dfmnlp.pt": ("dfmnlp", {"patch_size": 2, "heads": 2, "win_norm": True}),
    "pool_mixp.pt": ("mixp", {"patch_size": 2, "heads": 2, "win_norm": True}),
}


@pytest.mark.parametrize("fixture", sorted(POOL_FIXTURES))
def test_official_pool_checkpoint_loads_into_the_default_fast_path(official_fixtures_dir, fixture):
    data = torch.load(official_fixtures_dir / fixture, weights_only=True)
    name, cfg = POOL_FIXTURES[fixture]
    pool = create_pool(name, data["channels"], data["stride"], **cfg)  # impl=None: the process default
    assert pool.weight_net.active_impl == "fast"
    load_official_state_dict(pool, data["state_dict"]).eval()
    with torch.no_grad():
        torch.testing.assert_close(pool(data["input"]), data["output"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("train", [False, True])
def test_fast_equals_faithful_when_the_map_is_too_small_to_fold_out_proj(train):
    """C ≥ B·N: the token path applies ``out_proj`` to the tokens instead of folding it into the restore conv."""
    _assert_equivalent("nlp", 16, (2, 2), train, patch_size=1, heads=2, win_norm=True)
