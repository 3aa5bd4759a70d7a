"""Self-attentive pooling (nlp and its ablations), attnpool and the position embeddings."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from repro.compat import load_official_state_dict
from repro.layers import create_pool
from repro.layers.attn_pool import AttentionPool2d
from repro.layers.nlp import (
    SelfAttentiveWeights,
    attention_impl,
    embed_dim_for,
    get_default_impl,
    nlp_param_count,
    set_default_impl,
    upsample_nearest,
)
from repro.layers.pos_embed import LearnedPositionEmbedding, SinePositionEmbedding

NLP_POOLS = ("nlp", "nlpnoexp", "nlpnosigmoid", "nlpnope", "nlpnobn1", "nlpnobn2")


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomize_(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Random parameters and BN statistics, so that eval mode and every branch are exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g, dtype=b.dtype) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g, dtype=b.dtype) * 0.1)
    return module


def twin_outputs_and_grads(name: str, channels: int, stride: int, x: torch.Tensor, train: bool, **cfg):
    """Outputs and gradients (input and every parameter) of the fast and faithful implementations."""
    results = []
    for impl in ("fast", "faithful"):
        torch.manual_seed(0)
        pool = randomize_(create_pool(name, channels, stride, impl=impl, **cfg).to(x.dtype)).train(train)
        xi = x.detach().clone().requires_grad_(True)
        y = pool(xi)
        grads = torch.autograd.grad(y.square().sum(), [xi, *pool.parameters()])
        results.append((y.detach(), grads))
    return results


# ----------------------------------------------------------------------------------------------- golden fixtures

GOLDEN = {
    "pool_nlp.pt": ("nlp", {"patch_size": 1, "heads": 4, "reduction": 1.0, "win_norm": True}),
    "pool_nlp_nowin_p2.pt": ("nlp", {"patch_size": 2, "heads": 2, "reduction": 1.0, "win_norm": False}),
    "pool_nlpnoexp.pt": ("nlpnoexp", {"patch_size": 1, "heads": 4, "reduction": 1.0, "win_norm": True}),
    "pool_attnpool.pt": ("attnpool", {}),
}


@pytest.mark.parametrize("impl", ["fast", "faithful"])
@pytest.mark.parametrize("fixture", sorted(GOLDEN))
def test_matches_official_golden_output(official_fixtures_dir, fixture, impl):
    data = torch.load(official_fixtures_dir / fixture, weights_only=True)
    name, cfg = GOLDEN[fixture]
    pool = create_pool(name, data["channels"], data["stride"], impl=impl, **cfg)
    load_official_state_dict(pool, data["state_dict"]).eval()
    with torch.no_grad():
        out = pool(data["input"])
    assert out.shape == data["output"].shape
    torch.testing.assert_close(out, data["output"], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------ embedding size


@pytest.mark.parametrize(
    ("channels", "heads", "reduction", "expected"),
    [
        (64, 2, 1.0, 64),
        (160, 64, 1.0, 128),  # round(2.5) = 2 (banker's), B16
        (10, 4, 1.0, 8),  # round(2.5) = 2
        (14, 4, 1.0, 16),  # round(3.5) = 4
        (3, 8, 1.0, 8),  # round(0.375) = 0 -> 1
        (64, 8, 0.25, 16),
    ],
)
def test_embed_dim_uses_bankers_rounding(channels, heads, reduction, expected):
    assert embed_dim_for(channels, heads, reduction) == expected
    weights = SelfAttentiveWeights(channels, heads=heads, reduction=reduction)
    assert weights.embed_dim == expected
    assert weights.multihead_attn.embed_dim == expected


@pytest.mark.parametrize(
    ("channels", "patch_size", "heads", "reduction"),
    [(64, 1, 2, 1.0), (16, 2, 4, 1.0), (160, 1, 64, 1.0), (24, 4, 2, 0.25), (10, 2, 4, 1.0)],
)
def test_parameter_count_matches_reference_formula(channels, patch_size, heads, reduction):
    e = embed_dim_for(channels, heads, reduction)
    formula = 4 * e * e + (patch_size**2 + 1) * channels * e + 263 * e + 3 * channels
    assert nlp_param_count(channels, patch_size, heads, reduction) == formula
    cfg = {"patch_size": patch_size, "heads": heads, "reduction": reduction}
    assert n_params(create_pool("nlp", channels, 2, **cfg)) == formula
    assert n_params(create_pool("nlpnoexp", channels, 2, **cfg)) == formula
    assert n_params(create_pool("nlpnosigmoid", channels, 2, **cfg)) == formula
    assert n_params(create_pool("nlpnope", channels, 2, **cfg)) == formula - 256 * e
    assert n_params(create_pool("nlpnobn1", channels, 2, **cfg)) == formula - 2 * e
    assert n_params(create_pool("nlpnobn2", channels, 2, **cfg)) == formula - 2 * channels


def test_parameter_count_example_from_spec():
    assert nlp_param_count(64) == 6 * 64**2 + 266 * 64 == 41_600


# ------------------------------------------------------------------------------------------------ pooling identities


def test_constant_weights_give_average_pool():
    pool = randomize_(create_pool("nlp", 8, 2, patch_size=2, heads=2)).eval()
    restore_conv = pool.weight_net.restore[0]
    with torch.no_grad():
        restore_conv.weight.zero_()
        restore_conv.bias.zero_()
    x = torch.randn(2, 8, 8, 10)
    with torch.no_grad():
        torch.testing.assert_close(pool(x), F.avg_pool2d(x, 2), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("win_norm", [True, False])
def test_pool_is_weighted_average_of_weight_net(win_norm):
    pool = randomize_(create_pool("nlp", 6, 2, heads=2, win_norm=win_norm)).eval()
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        w = pool.weight_net(x)
        expected = F.avg_pool2d(x * w, 2)
        if win_norm:
            expected = expected / F.avg_pool2d(w, 2)
        out = pool(x)
    assert out.shape == (2, 6, 4, 4)
    assert bool((w > 1).all() and (w < math.e).all())
    torch.testing.assert_close(out, expected)


def _copy_matching(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    own = dst.state_dict()
    dst.load_state_dict({k: v for k, v in src.state_dict().items() if k in own}, strict=False)


def _weights(name: str, x: torch.Tensor, reference: torch.nn.Module, **cfg) -> torch.Tensor:
    pool = create_pool(name, x.shape[1], 2, **cfg)
    _copy_matching(reference, pool)
    with torch.no_grad():
        return pool.eval().weight_net(x)


def test_ablation_flags_change_only_what_they_name():
    cfg = {"patch_size": 2, "heads": 2}
    nlp = randomize_(create_pool("nlp", 6, 2, **cfg)).eval()
    x = torch.randn(2, 6, 8, 8)
    with torch.no_grad():
        w = nlp.weight_net(x)
        restore_in = upsample_nearest(nlp.weight_net.attend(nlp.weight_net.downsample(x)), (8, 8))
        pre_sigmoid = nlp.weight_net.restore[:2](restore_in)

    # nlpnoexp: the weight is the sigmoid output itself.
    torch.testing.assert_close(_weights("nlpnoexp", x, nlp, **cfg), torch.log(w))
    # nlpnosigmoid: exp(BN(conv)) without the sigmoid.
    torch.testing.assert_close(_weights("nlpnosigmoid", x, nlp, **cfg), torch.exp(pre_sigmoid))

    # nlpnope: no position tables, same as nlp with all-zero tables.
    nope = create_pool("nlpnope", 6, 2, **cfg)
    assert not any("pos_embed" in k for k in nope.state_dict())
    with torch.no_grad():
        nlp.weight_net.pos_embed.row_embed.weight.zero_()
        nlp.weight_net.pos_embed.col_embed.weight.zero_()
        w_zero_pos = nlp.weight_net(x)
    torch.testing.assert_close(_weights("nlpnope", x, nlp, **cfg), w_zero_pos)


@pytest.mark.parametrize(
    ("name", "sequential", "bn_index"), [("nlpnobn1", "downsample", 1), ("nlpnobn2", "restore", 1)]
)
def test_nobn_ablations_drop_exactly_one_batchnorm(name, sequential, bn_index):
    cfg = {"patch_size": 2, "heads": 2}
    nlp = randomize_(create_pool("nlp", 6, 2, **cfg)).eval()
    bn = getattr(nlp.weight_net, sequential)[bn_index]
    assert isinstance(bn, torch.nn.BatchNorm2d)
    ablated = create_pool(name, 6, 2, **cfg)
    missing = set(nlp.state_dict()) - set(ablated.state_dict())
    prefix = f"logit.pool_weight.{sequential}.{bn_index}."
    assert missing == {k for k in nlp.state_dict() if k.startswith(prefix)}
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in getattr(ablated.weight_net, sequential))
    # With the BN made an exact identity, nlp and the ablation agree.
    with torch.no_grad():
        bn.weight.fill_(1.0)
        bn.bias.zero_()
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
    x = torch.randn(2, 6, 8, 8)
    with torch.no_grad():
        expected = nlp.weight_net(x)
    torch.testing.assert_close(_weights(name, x, nlp, **cfg), expected)


# --------------------------------------------------------------------------------------------- fast vs faithful


@pytest.mark.parametrize(
    ("patch_size", "win_norm", "size", "train"),
    [(1, True, (8, 8), True), (2, False, (8, 12), True), (4, True, (9, 9), True), (2, True, (9, 9), False)],
)
def test_fast_equals_faithful_nlp(patch_size, win_norm, size, train):
    cfg = {"patch_size": patch_size, "heads": 2, "win_norm": win_norm}
    x = torch.randn(2, 6, *size, dtype=torch.float64)
    (y_fast, g_fast), (y_ref, g_ref) = twin_outputs_and_grads("nlp", 6, 2, x, train, **cfg)
    torch.testing.assert_close(y_fast, y_ref, atol=1e-10, rtol=1e-10)
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
    # Single precision: same up to rounding.
    (y32, g32), (r32, rg32) = twin_outputs_and_grads("nlp", 6, 2, x.float(), False, **cfg)
    torch.testing.assert_close(y32, r32, atol=1e-5, rtol=0)
    scale = max(g.abs().max() for g in rg32)
    assert max((a - b).abs().max() for a, b in zip(g32, rg32)) <= 1e-5 * scale


@pytest.mark.parametrize(("channels", "stride", "size"), [(8, 2, (8, 8)), (7, 3, (9, 10))])
def test_fast_equals_faithful_attnpool(channels, stride, size):
    x = torch.randn(2, channels, *size, dtype=torch.float64)
    (y_fast, g_fast), (y_ref, g_ref) = twin_outputs_and_grads("attnpool", channels, stride, x, True)
    assert y_fast.shape == (2, channels, size[0] // stride, size[1] // stride)
    torch.testing.assert_close(y_fast, y_ref, atol=1e-10, rtol=1e-10)
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize(("src", "dst"), [(4, 4), (4, 8), (3, 12), (4, 9), (5, 11), (2, 82), (1, 7)])
def test_fast_upsampling_equals_nearest_interpolation(src, dst):
    x = torch.randn(1, 2, src, src + 1)
    size = (dst, dst + (dst // src))
    torch.testing.assert_close(upsample_nearest(x, size, "fast"), F.interpolate(x, size=size, mode="nearest"))


def test_default_impl_switch():
    pool = create_pool("nlp", 4, 2)
    assert pool.weight_net.impl is None
    assert pool.weight_net.active_impl == get_default_impl() == "fast"
    with attention_impl("faithful"):
        assert pool.weight_net.active_impl == "faithful"
    assert pool.weight_net.active_impl == "fast"
    assert create_pool("nlp", 4, 2, impl="faithful").weight_net.active_impl == "faithful"
    with pytest.raises(ValueError, match="valid choices: 'fast', 'faithful'"):
        set_default_impl("quick")
    with pytest.raises(ValueError, match="unknown attention impl 'quick'"):
        create_pool("nlp", 4, 2, impl="quick")


# --------------------------------------------------------------------------------------------- training signal


@pytest.mark.parametrize("name", [*NLP_POOLS, "attnpool"])
def test_gradients_reach_every_parameter(name):
    cfg = {} if name == "attnpool" else {"patch_size": 2, "heads": 2}
    pool = create_pool(name, 6, 2, **cfg).train()
    pool(torch.randn(2, 6, 8, 8)).square().mean().backward()
    for pname, p in pool.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        # Parameters right before a training-mode BN get only rounding noise; all others get a real signal.
        if not pname.endswith(("multihead_attn.out_proj.bias", "restore.0.bias", "downsample.0.bias", "map.0.bias")):
            assert p.grad.abs().max() > 0, pname


@pytest.mark.parametrize("name", NLP_POOLS)
def test_output_shape_floors_odd_sizes(name):
    pool = create_pool(name, 4, 2, patch_size=2, heads=2)
    assert pool(torch.randn(1, 4, 9, 7)).shape == (1, 4, 4, 3)


# --------------------------------------------------------------------------------------------- position embedding


def test_learned_position_embedding_layout():
    pe = LearnedPositionEmbedding(6)
    pos = pe(torch.zeros(2, 6, 3, 4))
    assert pos.shape == (1, 6, 3, 4)
    torch.testing.assert_close(pos[0, :3, 1, 2], pe.col_embed.weight[2])  # columns fill the first half
    torch.testing.assert_close(pos[0, 3:, 1, 2], pe.row_embed.weight[1])
    assert pe.row_embed.weight.min() >= 0 and pe.row_embed.weight.max() <= 1


def test_position_table_limit_has_actionable_error():
    pool = create_pool("nlp", 4, 2, heads=2)
    with pytest.raises(ValueError, match=r"token grid 258x4 exceeds .* at most 256 positions .* larger patch_size"):
        pool(torch.randn(1, 4, 258, 4))
    # A larger patch size brings the token grid within the table.
    assert create_pool("nlp", 4, 2, heads=2, patch_size=2)(torch.randn(1, 4, 258, 4)).shape == (1, 4, 129, 2)


def test_sine_position_embedding_works_without_limit():
    pe = SinePositionEmbedding(8)
    pos = pe(torch.zeros(1, 8, 300, 3))
    assert pos.shape == (1, 8, 300, 3)
    assert torch.equal(pos[0, :4, :, 0], pos[0, :4, :, 2])  # first half depends on the row only
    assert torch.equal(pos[0, 4:, 0, :], pos[0, 4:, 299, :])  # second half on the column only
    # DETR normalisation: the last row is at angle ~2π for the first (sin) channel.
    assert abs(pos[0, 0, -1, 0].item() - math.sin(2 * math.pi * 300 / (300 + 1e-6))) < 1e-5
    pool = create_pool("nlp", 4, 2, heads=2, position_embedding="sine")
    assert pool(torch.randn(1, 4, 258, 4)).shape == (1, 4, 129, 2)
    assert not any("pos_embed" in k for k in pool.state_dict())


# --------------------------------------------------------------------------------------------- registry options


def test_factory_options_are_validated():
    with pytest.raises(ValueError, match="nlpnope has no position embedding"):
        create_pool("nlpnope", 4, 2, position_embedding="sine")
    with pytest.raises(ValueError, match=r"attnpool takes only the stride.*patch_size=2"):
        create_pool("attnpool", 4, 2, patch_size=2)
    with pytest.raises(ValueError, match="patch_size must be >= 1"):
        create_pool("nlp", 4, 2, patch_size=0)
    with pytest.raises(ValueError, match="even embedding size"):
        create_pool("nlp", 5, 2, heads=1)


def test_attnpool_official_configuration():
    pool = create_pool("attnpool", 16, 2, conv_layer=torch.nn.Identity)  # conv_layer is ignored, as officially
    assert isinstance(pool, AttentionPool2d)
    assert pool.multihead_attn.num_heads == 2 and pool.embed_dim == 16
    assert isinstance(pool.map[0], torch.nn.Conv2d) and pool.map[0].stride == (2, 2)
    assert pool(torch.randn(2, 16, 9, 8)).shape == (2, 16, 4, 4)
