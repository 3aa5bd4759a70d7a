"""Deformable self-attentive pools (dfmnlp, mixp, dfmixp) and the deformable sampler's two grids."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import deform_conv2d

from repro.compat import load_official_state_dict
from repro.layers import create_pool
from repro.layers.deform import (
    DeformablePatchEmbed,
    deform_sample,
    dfmnlp_param_count,
    grid_shift,
    mixp_param_count,
)
from repro.layers.nlp import embed_dim_for, nlp_param_count

DEFORM_POOLS = ("dfmnlp", "mixp", "dfmixp")
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomize_(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Random parameters (large offsets, so that samples leave the image) and random BN statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 0.5 if "offset_conv" in name else 0.3
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g, dtype=b.dtype) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g, dtype=b.dtype) * 0.1)
    return module


# ----------------------------------------------------------------------------------------------- golden fixtures


@pytest.mark.parametrize("impl", ["fast", "faithful"])
@pytest.mark.parametrize(("fixture", "name"), [("pool_dfmnlp.pt", "dfmnlp"), ("pool_mixp.pt", "mixp")])
def test_matches_official_golden_output(official_fixtures_dir, fixture, name, impl):
    data = torch.load(official_fixtures_dir / fixture, weights_only=True)
    pool = create_pool(name, data["channels"], data["stride"], patch_size=2, heads=2, win_norm=True, impl=impl)
    load_official_state_dict(pool, data["state_dict"]).eval()
    with torch.no_grad():
        out = pool(data["input"])
    torch.testing.assert_close(out, data["output"], atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------- sampling grids


@pytest.mark.parametrize(("k", "shift"), [(1, 1), (2, 0), (3, 0), (4, -1), (8, -3)])
def test_official_grid_shift_matches_spec(k, shift):
    assert grid_shift(k, "official") == shift
    assert grid_shift(k, "corrected") == 0


@pytest.mark.parametrize("k", [1, 2, 4])
def test_corrected_grid_with_zero_offsets_is_identity(k):
    x = torch.randn(2, 3, 8, 12)
    offset = torch.zeros(2, 2 * k * k, 8 // k, 12 // k)
    assert torch.equal(deform_sample(x, offset, k, "corrected"), x)


@pytest.mark.parametrize("k", [1, 2])
def test_corrected_border_padding_is_a_convex_combination(k):
    x = torch.rand(1, 3, 4, 6) + 1.0
    assert torch.equal(deform_sample(x, torch.zeros(1, 2 * k * k, 4 // k, 6 // k), k, "corrected", "border"), x)
    offset = torch.randn(1, 2 * k * k, 4 // k, 6 // k) * 10  # most points far outside the image
    out = deform_sample(x, offset, k, "corrected", "border")
    assert bool((out >= x.min() - 1e-6).all() and (out <= x.max() + 1e-6).all())
    assert deform_sample(x, offset, k, "corrected", "zeros").min() == 0  # zero padding empties far samples


def test_corrected_pool_survives_offsets_that_leave_the_image():
    pool = randomize_(create_pool("dfmnlp", 4, 2, patch_size=2, grid="corrected")).eval()
    with torch.no_grad():
        pool.weight_net.offset_conv.offset_conv.bias.fill_(50.0)
        out = pool(torch.randn(1, 4, 8, 8))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("k", [1, 2, 3, 4, 8])
def test_official_grid_with_zero_offsets_shifts_and_doubles_borders(k):
    """Zero offsets sample pixel r + shift, clamped; points on/after the last row or before the first count twice."""
    h, w = 2 * k + (k == 1) * 5, 3 * k + (k == 1) * 6
    x = torch.randn(1, 2, h, w)
    out = deform_sample(x, torch.zeros(1, 2 * k * k, h // k, w // k), k, "official")
    shift = grid_shift(k)

    def axis(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        point = torch.arange(size) + shift
        factor = torch.where((point < 0) | (point >= size - 1), 2.0, 1.0)
        return point.clamp(0, size - 1), factor

    rows, fr = axis(h)
    cols, fc = axis(w)
    expected = x[:, :, rows][:, :, :, cols] * fr[:, None] * fc[None, :]
    torch.testing.assert_close(out, expected)
    if k == 1:  # the +1 pixel shift of B8, away from the borders
        torch.testing.assert_close(out[..., : h - 2, : w - 2], x[..., 1 : h - 1, 1 : w - 1])


def _reference_official_sample(x: torch.Tensor, offset: torch.Tensor, k: int) -> torch.Tensor:
    """Scalar transcription of reference_spec §2.2 (grid, clamping, bilinear weights from the clamped point)."""
    b, c, h, w = x.shape
    n = k * k
    u0 = -(k - 1) // 2
    out = torch.zeros(b, c, offset.shape[2] * k, offset.shape[3] * k, dtype=x.dtype)
    for bi in range(b):
        for a in range(offset.shape[2]):
            for bb in range(offset.shape[3]):
                for i in range(k):
                    for j in range(k):
                        m = i * k + j
                        pr = 1 + a * k + u0 + i + offset[bi, m, a, bb].item()
                        pc = 1 + bb * k + u0 + j + offset[bi, n + m, a, bb].item()
                        lo_r, lo_c = math.floor(pr), math.floor(pc)
                        qr = (min(max(lo_r, 0), h - 1), min(max(lo_r + 1, 0), h - 1))
                        qc = (min(max(lo_c, 0), w - 1), min(max(lo_c + 1, 0), w - 1))
                        pr, pc = min(max(pr, 0), h - 1), min(max(pc, 0), w - 1)
                        wr = (1 + (qr[0] - pr), 1 - (qr[1] - pr))
                        wc = (1 + (qc[0] - pc), 1 - (qc[1] - pc))
                        val = sum(wr[s] * wc[t] * x[bi, :, qr[s], qc[t]] for s in (0, 1) for t in (0, 1))
                        out[bi, :, a * k + i, bb * k + j] = val
    return out


@pytest.mark.parametrize("k", [1, 2, 3])
def test_official_grid_matches_scalar_reference_with_random_offsets(k):
    x = torch.randn(2, 3, 2 * k + 1, 3 * k, dtype=torch.float64)
    offset = torch.randn(2, 2 * k * k, math.ceil(x.shape[2] / k), 3, dtype=torch.float64) * 2.5
    torch.testing.assert_close(deform_sample(x, offset, k, "official"), _reference_official_sample(x, offset, k))


@pytest.mark.parametrize("k", [1, 2, 4])
def test_corrected_patch_embedding_equals_torchvision_deform_conv(k):
    torch.manual_seed(3)
    embed = randomize_(DeformablePatchEmbed(4, 6, k, grid="corrected"))
    x = torch.randn(2, 4, 8, 8)
    offset = torch.randn(2, 2 * k * k, 8 // k, 8 // k) * 2.0  # some samples fall outside the image
    n = k * k
    interleaved = torch.stack([offset[:, :n], offset[:, n:]], dim=2).flatten(1, 2)  # (row, col) per position
    mask = torch.sigmoid(embed.m_conv(x))
    expected = deform_conv2d(x, interleaved, embed.conv.weight, stride=k, padding=0, mask=mask)
    torch.testing.assert_close(embed(x, offset), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("grid", "padding"), [("official", "zeros"), ("corrected", "zeros"), ("corrected", "border")])
def test_sampler_gradients_are_correct(grid, padding):
    torch.manual_seed(5)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    offset = (torch.rand(1, 8, 2, 2, dtype=torch.float64) * 3 - 1.5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, o: deform_sample(a, o, 2, grid, padding), (x, offset))


# ----------------------------------------------------------------------------------------------- pools


@pytest.mark.parametrize(
    ("channels", "patch_size", "heads", "reduction"),
    [(16, 2, 2, 1.0), (16, 1, 4, 1.0), (160, 1, 64, 1.0), (12, 4, 2, 0.5)],
)
def test_parameter_counts_match_reference_formulas(channels, patch_size, heads, reduction):
    e = embed_dim_for(channels, heads, reduction)
    p2 = patch_size**2
    dfm = nlp_param_count(channels, patch_size, heads, reduction) - e + 27 * channels * p2 + 3 * p2
    mix = dfm + channels**2 * p2 + 3 * channels
    assert dfmnlp_param_count(channels, patch_size, heads, reduction) == dfm
    assert mixp_param_count(channels, patch_size, heads, reduction) == mix
    cfg = {"patch_size": patch_size, "heads": heads, "reduction": reduction}
    assert n_params(create_pool("dfmnlp", channels, 2, **cfg)) == dfm
    assert n_params(create_pool("mixp", channels, 2, **cfg)) == mix
    assert n_params(create_pool("dfmixp", channels, 2, **cfg)) == mix


def test_mixp_and_dfmixp_are_the_same_pool():
    torch.manual_seed(0)
    mixp = randomize_(create_pool("mixp", 6, 2, patch_size=2)).eval()
    dfmixp = create_pool("dfmixp", 6, 2, patch_size=2).eval()
    dfmixp.load_state_dict(mixp.state_dict())
    x = torch.randn(2, 6, 8, 8)
    with torch.no_grad():
        assert torch.equal(mixp(x), dfmixp(x))


def test_mixp_multiplies_local_weights_into_dfmnlp():
    mixp = randomize_(create_pool("mixp", 6, 2, patch_size=2)).eval()
    dfmnlp = create_pool("dfmnlp", 6, 2, patch_size=2).eval()
    own = dfmnlp.state_dict()
    dfmnlp.load_state_dict({k: v for k, v in mixp.state_dict().items() if k in own})
    x = torch.randn(2, 6, 8, 8)
    with torch.no_grad():
        local = torch.exp(mixp.weight_net.local(x))
        torch.testing.assert_close(mixp.weight_net(x), dfmnlp.weight_net(x) * local)
        assert bool((local > 1).all() and (local < math.e).all())


def test_offset_and_mask_convs_start_at_zero_weight():
    weights = create_pool("dfmnlp", 6, 2, patch_size=2).weight_net
    assert not weights.offset_conv.offset_conv.weight.any()
    assert not weights.downsample[0].m_conv.weight.any()
    assert weights.downsample[0].conv.bias is None


@pytest.mark.parametrize("grid", ["official", "corrected"])
@pytest.mark.parametrize(
    ("name", "patch_size", "train"), [("dfmnlp", 2, True), ("mixp", 1, True), ("dfmixp", 4, False)]
)
def test_fast_equals_faithful(name, patch_size, train, grid):
    outputs = []
    x = torch.randn(2, 6, 8, 8, dtype=torch.float64)
    for impl in ("fast", "faithful"):
        torch.manual_seed(0)
        pool = create_pool(name, 6, 2, patch_size=patch_size, impl=impl, grid=grid).double()
        randomize_(pool).train(train)
        xi = x.clone().requires_grad_(True)
        y = pool(xi)
        outputs.append((y.detach(), torch.autograd.grad(y.square().sum(), [xi, *pool.parameters()])))
    (y_fast, g_fast), (y_ref, g_ref) = outputs
    torch.testing.assert_close(y_fast, y_ref, atol=1e-10, rtol=1e-10)
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("grid", ["official", "corrected"])
@pytest.mark.parametrize("name", DEFORM_POOLS)
def test_gradients_reach_every_parameter(name, grid):
    pool = create_pool(name, 6, 2, patch_size=2, grid=grid).train()
    pool(torch.randn(2, 6, 8, 8)).square().mean().backward()
    for pname, p in pool.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        if not pname.endswith(("multihead_attn.out_proj.bias", "restore.0.bias", "local.0.bias")):
            assert p.grad.abs().max() > 0, pname


def test_corrected_dfmnlp_with_zero_offsets_is_nlp():
    """p = 1, zero offsets: the corrected grid resamples nothing, so dfmnlp is nlp with a mask-scaled patch conv."""
    dfm = {}
    for grid in ("official", "corrected"):
        torch.manual_seed(0)
        dfm[grid] = randomize_(create_pool("dfmnlp", 4, 2, patch_size=1, grid=grid)).eval()
        with torch.no_grad():
            dfm[grid].weight_net.offset_conv.offset_conv.weight.zero_()
            dfm[grid].weight_net.offset_conv.offset_conv.bias.zero_()
            dfm[grid].weight_net.downsample[0].m_conv.weight.zero_()
    nlp = create_pool("nlp", 4, 2, patch_size=1).eval()
    embed = dfm["corrected"].weight_net.downsample[0]
    state = {k: v for k, v in dfm["corrected"].state_dict().items() if k in nlp.state_dict()}
    state["logit.pool_weight.downsample.0.weight"] = embed.conv.weight * torch.sigmoid(embed.m_conv.bias)
    state["logit.pool_weight.downsample.0.bias"] = torch.zeros(nlp.weight_net.embed_dim)
    nlp.load_state_dict(state)
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(dfm["corrected"].weight_net(x), nlp.weight_net(x))
        torch.testing.assert_close(dfm["corrected"](x), nlp(x))
        # The official grid samples pixel (i+1, j+1), in the embedding and again when resampling the weights.
        assert not torch.allclose(dfm["official"].weight_net(x), nlp.weight_net(x), atol=1e-2)


def test_clear_errors():
    with pytest.raises(ValueError, match="multiple of patch_size=2, got 7x8"):
        create_pool("dfmnlp", 4, 2, patch_size=2)(torch.randn(1, 4, 7, 8))
    with pytest.raises(ValueError, match="unknown deformable grid 'centered'; valid choices: 'official', 'corrected'"):
        create_pool("mixp", 4, 2, grid="centered")
    with pytest.raises(ValueError, match=r"offset must have shape \(B=1, 2·k²=8"):
        deform_sample(torch.randn(1, 2, 4, 4), torch.zeros(1, 4, 2, 2), 2)
