"""Multiply-accumulate (MAC, "MAdds") formulas at the ATen level, attention included.

:class:`MacCounter` is a dispatch mode: every ATen operation that reaches the kernels is counted with PyTorch's own
FLOP formulas (``torch.utils.flop_counter``: convolutions, ``mm``/``addmm``/``bmm``/``baddbmm``, fused attention) and
MACs = FLOPs / 2. Formulas PyTorch lacks are added here: the CPU fused attention kernel
(``_scaled_dot_product_flash_attention_for_cpu``, which ``F.scaled_dot_product_attention`` uses on the CPU) and the
fused ``_native_multi_head_attention``. Counters that hook ``nn.Conv2d``/``nn.Linear`` modules miss both, and
everything written with ``torch.matmul`` (the RNNPool cells, the functional attention of the NLP pool).

Conventions (the usual "MAdds" of the papers): only multiply-accumulates of convolutions and matrix products count;
normalisation, activations, pooling, element-wise additions and softmax do not; a bias add is not a MAC.

Self-attention over N tokens of width E (one layer, any number of heads):

    MACs = 4·N·E²  (Q, K, V and output projections)  +  N²·E  (scores Q·Kᵀ)  +  N²·E  (weighted sum of V)

(:func:`attention_macs`), per image.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

__all__ = ["MacCounter", "attention_macs", "op_macs"]

aten = torch.ops.aten


def attention_macs(tokens: int, embed_dim: int, *, projections: bool = True) -> int:
    """MACs of one multi-head self-attention over ``tokens`` tokens of width ``embed_dim`` (batch 1).

    ``4·N·E²`` for the Q/K/V/output projections (dropped with ``projections=False``) plus ``2·N²·E`` for the scores
    and the weighted sum; independent of the number of heads.
    """
    n, e = int(tokens), int(embed_dim)
    return (4 * n * e * e if projections else 0) + 2 * n * n * e


def _sdpa_macs(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> int:
    """Scores (…, Sq, d)·(…, d, Sk) and weighted sum (…, Sq, Sk)·(…, Sk, dv); heads broadcast over key/value."""
    *lead, s_q, d = query.shape
    s_k, d_v = key.shape[-2], value.shape[-1]
    batch = 1
    for n in lead:
        batch *= n
    return batch * s_q * s_k * (d + d_v)


def _cpu_flash_macs(query, key, value, *args, **kwargs) -> int:
    return _sdpa_macs(query, key, value)


def _native_mha_macs(query, key, value, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, *args, **kwargs):
    """Fused ``nn.MultiheadAttention`` (inference fast path): projections + attention; inputs (B, S, E)."""
    b, s_q = query.shape[0], query.shape[1]
    s_k = key.shape[1]
    e = int(embed_dim)
    projections = b * (s_q * e * e + 2 * s_k * e * e + s_q * e * e)
    return projections + b * s_q * s_k * 2 * e


_EXTRA_FORMULAS: dict[object, Callable[..., int]] = {}
for _name, _fn in (
    ("_scaled_dot_product_flash_attention_for_cpu", _cpu_flash_macs),
    ("_native_multi_head_attention", _native_mha_macs),
):
    if hasattr(aten, _name):
        _EXTRA_FORMULAS[getattr(aten, _name)] = _fn


def _shape(value):
    """``value`` with tensors replaced by their shapes, one level into tuples and lists (what the formulas read)."""
    if isinstance(value, torch.Tensor):
        return value.shape
    if isinstance(value, (tuple, list)):
        return type(value)(v.shape if isinstance(v, torch.Tensor) else v for v in value)
    return value


Formula = Callable[[tuple, dict, object], int]  # (args, kwargs, out) -> MACs


def _registry_formula(packet) -> Formula | None:
    """``op_macs``'s formula for one overload packet: PyTorch's FLOP formula called on shapes (without its pytree
    wrapper, which costs more than the formula on the trace's hot path), an extra formula here, or None."""
    formula = flop_registry.get(packet)
    if formula is not None:
        on_shapes = getattr(formula, "__wrapped__", None)
        if on_shapes is None:  # a formula registered with get_raw=True: it takes the tensors themselves
            return lambda args, kwargs, out: int(formula(*args, **kwargs, out_val=out)) // 2

        def macs(args: tuple, kwargs: dict, out) -> int:
            shapes = [_shape(a) for a in args]
            named = {k: _shape(v) for k, v in kwargs.items()}
            return int(on_shapes(*shapes, out_shape=_shape(out), **named)) // 2

        return macs
    extra = _EXTRA_FORMULAS.get(packet)
    if extra is not None:
        return lambda args, kwargs, out: int(extra(*args, **kwargs))
    return None


_FORMULAS: dict[object, Formula | None] = {}  # ATen overload -> its MAC formula (None: not a MAC op)


def op_macs(func, args: tuple, kwargs: dict, out) -> int:
    """MACs of one ATen call (0 for operations that are not multiply-accumulates)."""
    try:
        formula = _FORMULAS[func]
    except KeyError:
        formula = _FORMULAS[func] = _registry_formula(func._overloadpacket)
    return 0 if formula is None else formula(args, kwargs, out)


class MacCounter(TorchDispatchMode):
    """Count MACs of every ATen call; ``scope()`` (optional) names where each one happened (e.g. a module call)."""

    def __init__(self, scope: Callable[[], object] | None = None) -> None:
        super().__init__()
        self.scope = scope
        self.total = 0
        self.by_scope: dict[object, int] = defaultdict(int)
        self.by_op: Counter[str] = Counter()

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # nothing is compiled under a counter: spare every ATen call torch's dynamo-disabling wrapper

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.count(func, args, kwargs, out)
        return out

    def count(self, func, args: tuple, kwargs: dict, out) -> None:
        """Add the MACs of one ATen call (for a dispatch mode that runs the call itself)."""
        macs = op_macs(func, args, kwargs, out)
        if macs:
            self.total += macs
            self.by_op[str(func._overloadpacket)] += macs
            self.by_scope[self.scope() if self.scope is not None else None] += macs
