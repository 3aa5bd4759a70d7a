"""RNNPool operator and layer: equality with a per-patch reference loop, parameter formula, shapes, errors."""

from __future__ import annotations

import pytest
import torch

from repro.layers import create_pool
from repro.layers.rnnpool import (
    FastGRNNCell,
    GlobalRNNPool2d,
    GRUCell,
    LSTMCell,
    ReNet2d,
    RNNPool,
    RNNPool2d,
    rnnpool_num_params,
)

# ----------------------------------------------------------------------------------- reference (written from the math)


def _fastgrnn_step(cell, x, h):
    pre = x @ cell.W + h @ cell.U
    z = torch.sigmoid(pre + cell.bias_gate)
    c = torch.tanh(pre + cell.bias_update)
    return z * h + (torch.sigmoid(cell.zeta) * (1 - z) + torch.sigmoid(cell.nu)) * c


def _gru_step(cell, x, h):
    r = torch.sigmoid(x @ cell.W1 + h @ cell.U1 + cell.bias_r)
    z = torch.sigmoid(x @ cell.W2 + h @ cell.U2 + cell.bias_gate)
    c = torch.tanh(x @ cell.W3 + (r * h) @ cell.U3 + cell.bias_update)
    return z * h + (1 - z) * c


def _lstm_step(cell, x, state):
    h, c = state
    i = torch.sigmoid(x @ cell.W1 + h @ cell.U1 + cell.bias_i)
    f = torch.sigmoid(x @ cell.W2 + h @ cell.U2 + cell.bias_f)
    g = torch.tanh(x @ cell.W3 + h @ cell.U3 + cell.bias_c)
    o = torch.sigmoid(x @ cell.W4 + h @ cell.U4 + cell.bias_o)
    c = f * c + i * g
    return o * torch.tanh(c), c


def _run(cell, xs):
    """Plain loop over a list of (1, in) inputs from a zero state; returns the final hidden state (1, h)."""
    zeros = torch.zeros(1, cell.hidden_size)
    if isinstance(cell, LSTMCell):
        state = (zeros, zeros)
        for x in xs:
            state = _lstm_step(cell, x, state)
        return state[0]
    step = _gru_step if isinstance(cell, GRUCell) else _fastgrnn_step
    h = zeros
    for x in xs:
        h = step(cell, x, h)
    return h


def _reference_patch(op: RNNPool, patch: torch.Tensor) -> torch.Tensor:
    """RNNPool of one patch (C, r, c) by explicit loops, EdgeML order: [rows fwd, rows bwd, cols fwd, cols bwd]."""
    rnn1, rnn2 = op.cell_rnn.cell, op.cell_bidirrnn.cell
    _, rows, cols = patch.shape
    row_states = [_run(rnn1, [patch[:, i, j][None] for j in range(cols)]) for i in range(rows)]
    col_states = [_run(rnn1, [patch[:, i, j][None] for i in range(rows)]) for j in range(cols)]
    q_rows = [_run(rnn2, row_states), _run(rnn2, row_states[::-1])]
    q_cols = [_run(rnn2, col_states), _run(rnn2, col_states[::-1])]
    return torch.cat([*q_rows, *q_cols], dim=1)[0]


def _reference_layer(layer: RNNPool2d, x: torch.Tensor) -> torch.Tensor:
    k, s = layer.patch_size, layer.stride
    b, _, height, width = x.shape
    lh, lw = (height - k) // s + 1, (width - k) // s + 1
    out = torch.zeros(b, layer.out_channels, lh, lw)
    for n in range(b):
        for i in range(lh):
            for j in range(lw):
                out[n, :, i, j] = _reference_patch(layer.rnn_model, x[n, :, i * s : i * s + k, j * s : j * s + k])
    return out


def _randomise(module: torch.nn.Module) -> None:
    """Move every parameter off its init (zeta/nu away from the +-100 saturation) so all terms matter."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn_like(p))


# ----------------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("rnn_cell", ["fastgrnn", "gru", "lstm"])
def test_rnnpool2d_equals_per_patch_loop(rnn_cell):
    layer = RNNPool2d(3, patch_size=4, stride=3, hidden=(5, 6), rnn_cell=rnn_cell)
    _randomise(layer)
    x = torch.randn(2, 3, 10, 13)
    expected = _reference_layer(layer, x)
    assert expected.shape == (2, 24, 3, 4)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_rnnpool_nonsquare_patch_equals_loop():
    op = RNNPool(2, (3, 4))
    _randomise(op)
    patches = torch.randn(3, 2, 4, 6)
    expected = torch.stack([_reference_patch(op, p) for p in patches])
    torch.testing.assert_close(op(patches), expected, atol=1e-5, rtol=1e-5)


def test_output_order_rows_then_columns():
    """A patch that only varies along rows vs one transposed: the row and column halves swap."""
    op = RNNPool(1, 3)
    _randomise(op)
    patch = torch.randn(1, 1, 5, 5)
    out, out_t = op(patch), op(patch.transpose(2, 3))
    torch.testing.assert_close(out[:, :6], out_t[:, 6:])
    torch.testing.assert_close(out[:, 6:], out_t[:, :6])


@pytest.mark.parametrize(("c", "h1", "h2"), [(3, 4, 4), (8, 8, 8), (32, 16, 16), (64, 48, 48), (5, 7, 3)])
def test_parameter_count_matches_spec_formula(c, h1, h2):
    op = RNNPool(c, (h1, h2))
    expected = (c * h1 + h1 * h1 + 2 * h1 + 2) + (h1 * h2 + h2 * h2 + 2 * h2 + 2)  # reference_spec §2.7
    assert sum(p.numel() for p in op.parameters()) == expected == rnnpool_num_params(c, h1, h2)
    assert op.out_channels == 4 * h2


def test_gru_lstm_parameter_counts():
    assert sum(p.numel() for p in GRUCell(5, 7).parameters()) == 3 * (5 * 7 + 7 * 7 + 7)
    assert sum(p.numel() for p in LSTMCell(5, 7).parameters()) == 4 * (5 * 7 + 7 * 7 + 7)


def test_edgeml_initialisation_and_key_names():
    torch.manual_seed(0)
    layer = RNNPool2d(64, 8, 4, 32)
    cell = layer.rnn_model.cell_rnn.cell
    assert isinstance(cell, FastGRNNCell)
    assert abs(cell.W.std().item() - 0.1) < 0.01 and abs(cell.U.std().item() - 0.1) < 0.03
    assert torch.all(cell.bias_gate == 1) and torch.all(cell.bias_update == 1)
    assert cell.zeta.item() == 100.0 and cell.nu.item() == -100.0
    keys = set(layer.state_dict())
    for name in ("W", "U", "bias_gate", "bias_update", "zeta", "nu"):
        assert f"rnn_model.cell_rnn.cell.{name}" in keys and f"rnn_model.cell_bidirrnn.cell.{name}" in keys


def test_vww_configuration_shapes():
    """EdgeML VWW: RNNPool(6, 6, 8, 8, 8), stride 4, on 112x112x8 -> 27x27x32 -> padded 28x28x32."""
    x = torch.randn(1, 8, 112, 112)
    valid = RNNPool2d(8, 6, 4, 8, padding="none")
    edgeml = RNNPool2d(8, 6, 4, 8, padding="edgeml")
    edgeml.load_state_dict(valid.state_dict())
    y_valid, y_edgeml = valid(x), edgeml(x)
    assert y_valid.shape == (1, 32, 27, 27)
    assert y_edgeml.shape == (1, 32, 28, 28)
    torch.testing.assert_close(y_edgeml[..., :27, :27], y_valid)
    torch.testing.assert_close(y_edgeml[..., 27, :27], y_valid[..., 26, :])  # replicated bottom row
    assert valid.output_size(112, 112) == (27, 27) and edgeml.output_size(112, 112) == (28, 28)


@pytest.mark.parametrize(("size", "stride", "patch"), [(28, 2, 4), (27, 2, 4), (14, 2, 4), (32, 4, 6), (7, 7, 7)])
def test_create_pool_keeps_channels_and_floor_shape(size, stride, patch):
    pool = create_pool("rnnpool", 16, stride, patch_size=patch)
    assert pool.streams_patches is True
    y = pool(torch.randn(2, 16, size, size))
    assert y.shape == (2, 16, size // stride, size // stride)


def test_create_pool_defaults_follow_appendix_f13():
    pool = create_pool("rnnpool", 64, 2)
    assert (pool.patch_size, pool.stride, pool.rnn_model.h1, pool.rnn_model.h2) == (4, 2, 16, 16)


def test_global_rnnpool_is_the_operator_on_the_whole_map():
    pool = GlobalRNNPool2d(16)
    x = torch.randn(2, 16, 7, 7)
    torch.testing.assert_close(pool(x)[:, :, 0, 0], pool.rnn_model(x))
    assert pool(x).shape == (2, 16, 1, 1)


def test_renet_shape_and_parameters():
    renet = ReNet2d(8, hidden=16, patch_size=4)
    assert renet(torch.randn(2, 8, 28, 20)).shape == (2, 32, 7, 5)
    flat = 8 * 16
    expected = 2 * 3 * (flat * 16 + 16 * 16 + 16) + 2 * 3 * (32 * 16 + 16 * 16 + 16)
    assert sum(p.numel() for p in renet.parameters()) == expected


def test_renet_every_position_sees_the_whole_map():
    """Unlike RNNPool, ReNet's bidirectional sweeps give each output cell a global receptive field."""
    renet = ReNet2d(1, hidden=2, patch_size=2)
    x = torch.randn(1, 1, 8, 8, requires_grad=True)
    renet(x)[0, :, 0, 0].sum().backward()
    assert (x.grad[0, 0, 6:, 6:].abs() > 0).any()


def test_gradients_reach_every_parameter():
    layer = RNNPool2d(4, 6, 4, 8, rnn_cell="lstm")
    layer(torch.randn(2, 4, 14, 14)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


def test_single_step_api_matches_reference_step():
    cell = FastGRNNCell(3, 5)
    _randomise(cell)
    x, h = torch.randn(4, 3), torch.randn(4, 5)
    torch.testing.assert_close(cell(x, h), _fastgrnn_step(cell, x, h))


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="rnn_cell"):
        RNNPool2d(3, 4, 2, 4, rnn_cell="transformer")
    with pytest.raises(ValueError, match="padding"):
        RNNPool2d(3, 4, 2, 4, padding="same")
    with pytest.raises(ValueError, match="smaller than its 8x8 patch"):
        RNNPool2d(3, 8, 4, 4)(torch.randn(1, 3, 6, 6))
    with pytest.raises(ValueError, match="3 input channels"):
        RNNPool2d(3, 4, 2, 4)(torch.randn(1, 5, 8, 8))
    with pytest.raises(ValueError, match="divisible by 4"):
        create_pool("rnnpool", 6, 2)
    with pytest.raises(ValueError, match="hidden=16"):
        create_pool("rnnpool", 64, 2, hidden=8)
    with pytest.raises(TypeError, match="heads"):
        create_pool("rnnpool", 64, 2, heads=4)


def test_edgeml_pad_is_one_replicated_row_and_column():
    layer = RNNPool2d(2, 4, 4, 2, padding="edgeml")
    y = layer(torch.randn(1, 2, 16, 12))
    assert y.shape == (1, 8, 5, 4)
    torch.testing.assert_close(y[..., -1, :], y[..., -2, :])
    torch.testing.assert_close(y[..., :, -1], y[..., :, -2])
