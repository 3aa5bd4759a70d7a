"""RNNPool (Saha et al., NeurIPS 2020) and ReNet, with the EdgeML cells (reference_spec §2.7).

The RNNPool *operator* summarises one ``C x r x c`` patch into a ``4 * h2`` vector:

1. row pass: RNN1 (C -> h1) runs along the columns of every row; the shared-weight bidirectional RNN2 (h1 -> h2) runs
   over the rows' final states, giving ``q_r = [fwd, bwd]``;
2. column pass: the *same* RNN1 runs down every column; the same RNN2 runs over the columns, giving ``q_c``;
3. output ``[q_r, q_c]`` (EdgeML's ``cat([outputs_rows, outputs_cols])``).

:class:`RNNPool2d` applies the operator to every ``k x k`` patch (stride ``s``) of a feature map. All patches go through
the recurrences as one batch; only the time steps (``k``) are a Python loop. Parameter names follow EdgeML
(``cell_rnn.cell.W``, ``cell_bidirrnn.cell.U``, ...), so EdgeML checkpoints map onto ``rnn_model.*`` directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from repro.layers.create_pool import register_pool

RNN_CELLS = ("fastgrnn", "gru", "lstm")
RNNPOOL_PADDINGS = ("none", "edgeml", "floor")


def _nonlinearity(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """EdgeML's ``gen_nonlinearity``: sigmoid, tanh, relu and the piecewise-linear quantSigm / quantTanh."""
    table: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": torch.relu,
        "quantTanh": lambda a: a.clamp(-1.0, 1.0),
        "quantSigm": lambda a: ((a + 1.0) / 2.0).clamp(0.0, 1.0),
        "quantSigm4": lambda a: ((a + 2.0) / 4.0).clamp(0.0, 1.0),
    }
    if name not in table:
        raise ValueError(f"unknown nonlinearity {name!r}; valid: {', '.join(table)}")
    return table[name]


class _EdgeMLCell(nn.Module):
    """Base of the recurrent cells; subclasses define ``input_weight()`` (all gates' ``W`` side by side) and
    ``step(xw, state)``.

    Internally the state is feature-major, (hidden, N): with the thousands of patches of an RNNPool layer as N, the
    element-wise gate arithmetic then runs over long contiguous rows (a (N, 4) layout is an order of magnitude slower
    on CPU). Parameters keep EdgeML's shapes and names (``W`` (in, h), ``U`` (h, h), biases (1, h)).
    """

    num_gates: int = 1

    def __init__(self, input_size: int, hidden_size: int, gate_nonlinearity: str, update_nonlinearity: str) -> None:
        super().__init__()
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.gate_nonlinearity = gate_nonlinearity
        self.update_nonlinearity = update_nonlinearity
        self._gate = _nonlinearity(gate_nonlinearity)
        self._update = _nonlinearity(update_nonlinearity)

    def project(self, xs: torch.Tensor) -> torch.Tensor:
        """Input projection of a whole sequence: ``xs`` (T, N, input_size) -> (T, num_gates * hidden, N)."""
        return self.input_weight().t() @ xs.transpose(-1, -2)

    def initial_state(self, batch: int, like: torch.Tensor):
        """EdgeML starts every sequence from a zero state (the paper's Algorithm 1 says ``randn``)."""
        return like.new_zeros(self.hidden_size, batch)

    @staticmethod
    def hidden(state) -> torch.Tensor:
        return state

    def forward(self, x: torch.Tensor, state):
        """One step in EdgeML's layout: ``x`` (B, input_size), ``state`` (B, hidden) or a pair of them (LSTM)."""
        transposed = tuple(s.t() for s in state) if isinstance(state, tuple) else state.t()
        new = self.step(self.project(x[None])[0], transposed)
        return tuple(s.t() for s in new) if isinstance(new, tuple) else new.t()

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class FastGRNNCell(_EdgeMLCell):
    """FastGRNN: ``z = g(xW + hU + b_g)``, ``c = u(xW + hU + b_u)``,
    ``h' = z h + (sigmoid(zeta)(1 - z) + sigmoid(nu)) c``.

    EdgeML initialisation: ``W, U ~ 0.1 N(0, 1)``, biases 1; RNNPool passes ``zeta = 100``, ``nu = -100`` (so the update
    starts as a plain GRU-like convex combination). Parameters: ``in*h + h*h + 2h + 2``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        gate_nonlinearity: str = "sigmoid",
        update_nonlinearity: str = "tanh",
        zeta_init: float = 100.0,
        nu_init: float = -100.0,
    ) -> None:
        super().__init__(input_size, hidden_size, gate_nonlinearity, update_nonlinearity)
        self.W = nn.Parameter(0.1 * torch.randn(input_size, hidden_size))
        self.U = nn.Parameter(0.1 * torch.randn(hidden_size, hidden_size))
        self.bias_gate = nn.Parameter(torch.ones(1, hidden_size))
        self.bias_update = nn.Parameter(torch.ones(1, hidden_size))
        self.zeta = nn.Parameter(torch.full((1, 1), float(zeta_init)))
        self.nu = nn.Parameter(torch.full((1, 1), float(nu_init)))

    def input_weight(self) -> torch.Tensor:
        return self.W

    def step(self, xw: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        pre = torch.addmm(xw, self.U.t(), state)
        z = self._gate(pre + self.bias_gate.t())
        c = self._update(pre + self.bias_update.t())
        zeta, nu = torch.sigmoid(self.zeta), torch.sigmoid(self.nu)
        return torch.addcmul(((zeta + nu) - zeta * z) * c, z, state)  # z h + (zeta (1 - z) + nu) c


class GRUCell(_EdgeMLCell):
    """EdgeML's ``GRULRCell`` (full rank): ``r, z`` gates, ``c = u(xW3 + (r h) U3 + b_u)``, ``h' = z h + (1 - z) c``.

    One bias per gate (``bias_r``, ``bias_gate``, ``bias_update``, all ones); parameters ``3 (in*h + h*h + h)``.
    """

    num_gates = 3

    def __init__(
        self, input_size: int, hidden_size: int, gate_nonlinearity: str = "sigmoid", update_nonlinearity: str = "tanh"
    ) -> None:
        super().__init__(input_size, hidden_size, gate_nonlinearity, update_nonlinearity)
        for i in (1, 2, 3):
            setattr(self, f"W{i}", nn.Parameter(0.1 * torch.randn(input_size, hidden_size)))
            setattr(self, f"U{i}", nn.Parameter(0.1 * torch.randn(hidden_size, hidden_size)))
        self.bias_r = nn.Parameter(torch.ones(1, hidden_size))
        self.bias_gate = nn.Parameter(torch.ones(1, hidden_size))
        self.bias_update = nn.Parameter(torch.ones(1, hidden_size))

    def input_weight(self) -> torch.Tensor:
        return torch.cat([self.W1, self.W2, self.W3], dim=1)

    def step(self, xw: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        xr, xz, xc = xw.chunk(3, dim=-2)
        r = self._gate(xr + self.U1.t() @ state + self.bias_r.t())
        z = self._gate(xz + self.U2.t() @ state + self.bias_gate.t())
        c = self._update(xc + self.U3.t() @ (r * state) + self.bias_update.t())
        return z * state + (1.0 - z) * c


class LSTMCell(_EdgeMLCell):
    """EdgeML's ``LSTMLRCell`` (full rank); state ``(h, c)``. As in EdgeML, ``W1/U1`` feed the input gate (``bias_i``)
    and ``W2/U2`` the forget gate (``bias_f``). All biases start at 1; parameters ``4 (in*h + h*h + h)``."""

    num_gates = 4

    def __init__(
        self, input_size: int, hidden_size: int, gate_nonlinearity: str = "sigmoid", update_nonlinearity: str = "tanh"
    ) -> None:
        super().__init__(input_size, hidden_size, gate_nonlinearity, update_nonlinearity)
        for i in (1, 2, 3, 4):
            setattr(self, f"W{i}", nn.Parameter(0.1 * torch.randn(input_size, hidden_size)))
            setattr(self, f"U{i}", nn.Parameter(0.1 * torch.randn(hidden_size, hidden_size)))
        for name in ("bias_f", "bias_i", "bias_c", "bias_o"):
            setattr(self, name, nn.Parameter(torch.ones(1, hidden_size)))

    def input_weight(self) -> torch.Tensor:
        return torch.cat([self.W1, self.W2, self.W3, self.W4], dim=1)

    def initial_state(self, batch: int, like: torch.Tensor):
        zeros = like.new_zeros(self.hidden_size, batch)
        return zeros, zeros

    @staticmethod
    def hidden(state) -> torch.Tensor:
        return state[0]

    def step(self, xw: torch.Tensor, state):
        h, c = state
        uh = torch.cat([self.U1, self.U2, self.U3, self.U4], dim=1).t() @ h
        g1, g2, g3, g4 = (xw + uh).chunk(4, dim=-2)
        i = self._gate(g1 + self.bias_i.t())
        f = self._gate(g2 + self.bias_f.t())
        candidate = self._update(g3 + self.bias_c.t())
        o = self._gate(g4 + self.bias_o.t())
        c = f * c + i * candidate
        return o * self._update(c), c


def make_cell(rnn_cell: str, input_size: int, hidden_size: int, **kwargs) -> _EdgeMLCell:
    """Build a cell by name: ``fastgrnn`` (RNNPool's default), ``gru`` or ``lstm`` (Table 18)."""
    classes = {"fastgrnn": FastGRNNCell, "gru": GRUCell, "lstm": LSTMCell}
    if rnn_cell not in classes:
        raise ValueError(f"unknown rnn_cell {rnn_cell!r}; valid: {', '.join(RNN_CELLS)}")
    return classes[rnn_cell](input_size, hidden_size, **kwargs)


class RNN(nn.Module):
    """Unrolls ``cell`` over a time-major sequence (T, N, input_size). The cell sits at ``.cell`` (EdgeML layout)."""

    def __init__(self, cell: _EdgeMLCell) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, xs: torch.Tensor, return_all: bool = False) -> torch.Tensor:
        """Final hidden state (N, h), or every hidden state (T, N, h) when ``return_all``."""
        xw = self.cell.project(xs)
        state = self.cell.initial_state(xs.shape[1], xs)
        outputs = []
        # unbind, not xw[t]: the backward of T selects would build T zero tensors of xw's full size (O(T^2) memory
        # traffic); unbind's backward stacks the T gradients once.
        for xw_t in xw.unbind(0):
            state = self.cell.step(xw_t, state)
            if return_all:
                outputs.append(self.cell.hidden(state))
        if return_all:
            return torch.stack(outputs).transpose(1, 2)
        return self.cell.hidden(state).t()

    def bidirectional_final(self, xs: torch.Tensor) -> torch.Tensor:
        """Shared-weight bidirectional pass: ``[final forward state, final backward state]`` (N, 2h).

        Both directions run as one batch (the reversed sequence is appended to the batch)."""
        n = xs.shape[1]
        final = self(torch.cat([xs, xs.flip(0)], dim=1))
        return torch.cat([final[:n], final[n:]], dim=1)


def pair_hidden(hidden: int | Sequence[int]) -> tuple[int, int]:
    """``(h1, h2)`` from an int (``h1 = h2``) or a pair."""
    if isinstance(hidden, int):
        return hidden, hidden
    values = tuple(int(h) for h in hidden)
    if len(values) != 2:
        raise ValueError(f"hidden must be an int (h1 = h2) or a pair (h1, h2), got {hidden!r}")
    return values[0], values[1]


class RNNPool(nn.Module):
    """The RNNPool operator on a batch of patches (N, C, r, c) -> (N, 4 * h2). See the module docstring.

    ``cell_rnn`` is RNN1 (C -> h1), shared by the row and the column pass; ``cell_bidirrnn`` is RNN2 (h1 -> h2), shared
    by both directions and both passes. With the FastGRNN cell the parameter count is
    ``(C h1 + h1^2 + 2 h1 + 2) + (h1 h2 + h2^2 + 2 h2 + 2)`` (:func:`rnnpool_num_params`).
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int | Sequence[int],
        rnn_cell: str = "fastgrnn",
        **cell_kwargs,
    ) -> None:
        super().__init__()
        h1, h2 = pair_hidden(hidden)
        if min(in_channels, h1, h2) < 1:
            raise ValueError(f"RNNPool needs positive sizes, got in_channels={in_channels}, h1={h1}, h2={h2}")
        self.in_channels, self.h1, self.h2, self.rnn_cell = int(in_channels), h1, h2, rnn_cell
        self.out_channels = 4 * h2
        if rnn_cell == "fastgrnn":
            cell_kwargs = {"zeta_init": 100.0, "nu_init": -100.0, **cell_kwargs}
        self.cell_rnn = RNN(make_cell(rnn_cell, in_channels, h1, **cell_kwargs))
        self.cell_bidirrnn = RNN(make_cell(rnn_cell, h1, h2, **cell_kwargs))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        if patches.dim() != 4 or patches.shape[1] != self.in_channels:
            raise ValueError(
                f"RNNPool expects patches of shape (N, {self.in_channels}, rows, cols), got {tuple(patches.shape)}"
            )
        n, c, rows, cols = patches.shape
        # Row pass: one sequence per (patch, row), time = column index. Column pass: per (patch, column), time = row.
        along_rows = patches.permute(3, 0, 2, 1).reshape(cols, n * rows, c)
        along_cols = patches.permute(2, 0, 3, 1).reshape(rows, n * cols, c)
        if rows == cols:
            summary = self.cell_rnn(torch.cat([along_rows, along_cols], dim=1))
            row_summary, col_summary = summary[: n * rows], summary[n * rows :]
        else:
            row_summary, col_summary = self.cell_rnn(along_rows), self.cell_rnn(along_cols)
        row_seq = row_summary.view(n, rows, self.h1).transpose(0, 1)  # time = row index
        col_seq = col_summary.view(n, cols, self.h1).transpose(0, 1)  # time = column index
        if rows == cols:
            both = self.cell_bidirrnn.bidirectional_final(torch.cat([row_seq, col_seq], dim=1))  # (2n, 2 h2)
            fwd, bwd = both[:, : self.h2], both[:, self.h2 :]
            q_rows = torch.cat([fwd[:n], bwd[:n]], dim=1)
            q_cols = torch.cat([fwd[n:], bwd[n:]], dim=1)
        else:
            q_rows = self.cell_bidirrnn.bidirectional_final(row_seq)
            q_cols = self.cell_bidirrnn.bidirectional_final(col_seq)
        return torch.cat([q_rows, q_cols], dim=1)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, h1={self.h1}, h2={self.h2}, rnn_cell={self.rnn_cell!r}"


def rnnpool_num_params(in_channels: int, h1: int, h2: int) -> int:
    """Parameter count of the FastGRNN RNNPool operator (reference_spec §2.7)."""
    return (in_channels * h1 + h1 * h1 + 2 * h1 + 2) + (h1 * h2 + h2 * h2 + 2 * h2 + 2)


def _pad_or_crop_bottom_right(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    dh, dw = height - y.shape[-2], width - y.shape[-1]
    if dh < 0 or dw < 0:
        y = y[..., : min(height, y.shape[-2]), : min(width, y.shape[-1])]
    if dh > 0 or dw > 0:
        y = F.pad(y, (0, max(dw, 0), 0, max(dh, 0)), mode="replicate")
    return y


class RNNPool2d(nn.Module):
    """RNNPoolLayer: the RNNPool operator on every ``patch_size`` patch taken with ``stride``, no input padding.

    Output: (B, 4 * h2, L_h, L_w) with ``L = (H - k) // s + 1``, then ``padding``:

    * ``"none"``: leave the ``L_h x L_w`` map as it is;
    * ``"edgeml"``: replicate one extra column on the right and one row at the bottom, as EdgeML does (27 -> 28 for
      the VWW 112x112 map with k = 6, s = 4);
    * ``"floor"``: replicate (or crop) at the right/bottom until the map is ``floor(H / s) x floor(W / s)``, the
      shape contract of :func:`repro.layers.create_pool`. It equals ``"edgeml"`` whenever ``H`` and ``W`` are
      multiples of ``s`` and ``k = s + 2`` or ``k = 2 s``.

    All patches are processed as one batch; the loop is over the ``k`` time steps only.

    Memory tracers: ``streams_patches = True`` means the layer can be executed patch by patch, so only its input
    and output maps (never the unfolded patches or RNN states of all patches) count towards peak memory
    (RNNPool App. E.2: "RNNPool patches are computed on the fly").
    """

    streams_patches = True

    def __init__(
        self,
        in_channels: int,
        patch_size: int,
        stride: int,
        hidden: int | Sequence[int],
        rnn_cell: str = "fastgrnn",
        padding: str = "none",
        **cell_kwargs,
    ) -> None:
        super().__init__()
        if padding not in RNNPOOL_PADDINGS:
            raise ValueError(f"unknown RNNPool padding {padding!r}; valid: {', '.join(RNNPOOL_PADDINGS)}")
        if patch_size < 1 or stride < 1:
            raise ValueError(f"patch_size and stride must be >= 1, got patch_size={patch_size}, stride={stride}")
        self.in_channels = int(in_channels)
        self.patch_size, self.stride, self.padding = int(patch_size), int(stride), padding
        self.rnn_model = RNNPool(in_channels, hidden, rnn_cell=rnn_cell, **cell_kwargs)
        self.out_channels = self.rnn_model.out_channels

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Spatial size of the output for an ``height x width`` input."""
        if self.padding == "floor":
            return height // self.stride, width // self.stride
        lh = (height - self.patch_size) // self.stride + 1
        lw = (width - self.patch_size) // self.stride + 1
        extra = 1 if self.padding == "edgeml" else 0
        return lh + extra, lw + extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        k, s = self.patch_size, self.stride
        if c != self.in_channels:
            raise ValueError(f"RNNPool2d was built for {self.in_channels} input channels, got {c}")
        if height < k or width < k:
            raise ValueError(
                f"RNNPool2d input {height}x{width} is smaller than its {k}x{k} patch; use a larger input or a "
                "smaller patch_size"
            )
        lh, lw = (height - k) // s + 1, (width - k) // s + 1
        patches = F.unfold(x, kernel_size=k, stride=s)  # (B, C*k*k, L)
        patches = patches.transpose(1, 2).reshape(b * lh * lw, c, k, k)
        y = self.rnn_model(patches).view(b, lh, lw, -1).permute(0, 3, 1, 2).contiguous()
        if self.padding == "edgeml":
            y = F.pad(y, (0, 1, 0, 1), mode="replicate")
        elif self.padding == "floor":
            y = _pad_or_crop_bottom_right(y, height // s, width // s)
        return y

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, stride={self.stride}, padding={self.padding!r}"


class GlobalRNNPool2d(nn.Module):
    """RNNPool over the whole map, replacing the final average pool (App. F.1.2): (B, C, H, W) -> (B, 4 h2, 1, 1).

    The paper uses ``h1 = h2 = C / 4`` (the default), so the classifier keeps its input width. The RNN weights do not
    depend on the patch size, so any input resolution works.
    """

    streams_patches = True

    def __init__(self, in_channels: int, hidden: int | Sequence[int] | None = None, rnn_cell: str = "fastgrnn") -> None:
        super().__init__()
        if hidden is None:
            if in_channels % 4:
                raise ValueError(f"last-layer RNNPool needs channels divisible by 4 (h = C/4), got {in_channels}")
            hidden = in_channels // 4
        self.rnn_model = RNNPool(in_channels, hidden, rnn_cell=rnn_cell)
        self.out_channels = self.rnn_model.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn_model(x)[:, :, None, None]


class ReNet2d(nn.Module):
    """ReNet layer (Visin et al., 2015) used as a downsampling block (RNNPool Table 2/3 baseline).

    The map is cut into non-overlapping ``patch_size`` patches, each flattened to ``C k^2``. A bidirectional RNN sweeps
    each column of patches vertically (every hidden state kept), then a second bidirectional RNN sweeps the rows of
    that map horizontally. Unlike RNNPool, forward and backward directions have their own weights and every time step
    contributes an output. Output: (B, 2 * hidden, H // k, W // k). With GRU cells and ``hidden = 2 h2`` (the same
    ``4 h2`` output width as the RNNPool block it replaces) the parameter counts of the paper's ReNet rows are
    reproduced (docs/rnnpool.md).
    """

    def __init__(self, in_channels: int, hidden: int, patch_size: int, rnn_cell: str = "gru") -> None:
        super().__init__()
        self.in_channels, self.hidden, self.patch_size = int(in_channels), int(hidden), int(patch_size)
        flat = in_channels * patch_size * patch_size
        self.vertical_fwd = RNN(make_cell(rnn_cell, flat, hidden))
        self.vertical_bwd = RNN(make_cell(rnn_cell, flat, hidden))
        self.horizontal_fwd = RNN(make_cell(rnn_cell, 2 * hidden, hidden))
        self.horizontal_bwd = RNN(make_cell(rnn_cell, 2 * hidden, hidden))
        self.out_channels = 2 * hidden

    @staticmethod
    def _sweep(fwd: RNN, bwd: RNN, seq: torch.Tensor) -> torch.Tensor:
        return torch.cat([fwd(seq, return_all=True), bwd(seq.flip(0), return_all=True).flip(0)], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        k = self.patch_size
        if height < k or width < k:
            raise ValueError(f"ReNet2d input {height}x{width} is smaller than its {k}x{k} patch")
        lh, lw = height // k, width // k
        flat = F.unfold(x, kernel_size=k, stride=k).view(b, c * k * k, lh, lw)
        vertical = self._sweep(self.vertical_fwd, self.vertical_bwd, flat.permute(2, 0, 3, 1).reshape(lh, b * lw, -1))
        grid = vertical.view(lh, b, lw, 2 * self.hidden)  # (rows, B, cols, 2h)
        horizontal_in = grid.permute(2, 1, 0, 3).reshape(lw, b * lh, 2 * self.hidden)
        horizontal = self._sweep(self.horizontal_fwd, self.horizontal_bwd, horizontal_in)
        return horizontal.view(lw, b, lh, 2 * self.hidden).permute(1, 3, 2, 0).contiguous()

    def extra_repr(self) -> str:
        return f"{self.in_channels}, hidden={self.hidden}, patch_size={self.patch_size}"


@register_pool("rnnpool")
def _create_rnnpool(
    channels: int,
    stride: int,
    patch_size: int | None = None,
    hidden: int | Sequence[int] | None = None,
    rnn_cell: str = "fastgrnn",
    padding: str = "floor",
    **unused,
) -> RNNPool2d:
    """``create_pool('rnnpool', C, s, patch_size=2s, hidden=C/4)``: channel-preserving RNNPool (App. F.1.3 style)."""
    if unused:
        raise TypeError(f"rnnpool does not take {', '.join(sorted(unused))}; it takes patch_size, hidden, rnn_cell")
    if hidden is None:
        if channels % 4:
            raise ValueError(
                f"rnnpool keeps the channel count only when C is divisible by 4 (h = C/4), got C={channels}"
            )
        hidden = channels // 4
    if 4 * pair_hidden(hidden)[1] != channels:
        raise ValueError(
            f"rnnpool outputs 4*h2 channels; hidden={hidden!r} gives {4 * pair_hidden(hidden)[1]}, not C={channels}. "
            f"Use hidden={channels // 4} or leave hidden unset"
        )
    return RNNPool2d(channels, patch_size or 2 * stride, stride, hidden, rnn_cell=rnn_cell, padding=padding)
