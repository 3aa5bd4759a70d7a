"""The Self-Attentive-Pooling architecture-name grammar, parsed into frozen dataclasses.

Grammar (names are lower-cased first)::

    name     := [ "prepool-" PREPOOL "-" K "-" ] ["dy"] BACKBONE "-" POOL "-" STRIDES
    POOL     := SOTA | MINE { "_" MODIFIER }
    STRIDES  := one digit 1-9 per stage (4 ResNet/ResNeXt, 7 MobileNetV2, 11 MNv3-small, 15 MNv3-large)

``resnet18-nlp_headfix2-1222`` is ResNet18 with self-attentive pooling (2 heads) in stages 2-4; digit 1 keeps a
stage as it is (``skip``). ``dy`` switches every conv to a dynamic convolution; ``prepool-<PREPOOL>-<K>-`` replaces the
stem downsampling by a pool of stride K.

By default the parser reproduces the official one, quirks included (see :func:`parse_arch`); ``strict=True`` rejects
tokens the official parser silently ignores and gives every accepted token the meaning its name says.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

__all__ = [
    "ARCH_BACKBONES",
    "EXTENSION_POOLS",
    "MINE_POOLS",
    "MODIFIERS",
    "SOTA_POOLS",
    "STAGE_COUNTS",
    "STANDARD_STRIDES",
    "Arch",
    "ArchError",
    "StagePool",
    "parse_arch",
]

ARCH_BACKBONES: tuple[str, ...] = (
    "resnet18",
    "resnet18_v2",
    "resnet50",
    "resnet50_v2",
    "resnext",
    "mobilenet",
    "mobilenet_v2",
    "mobilenetv3_small",
    "mobilenetv3_large",
)
SOTA_POOLS: tuple[str, ...] = ("skip", "maxp", "avgp", "lip", "gaussian_pool", "attnpool")
EXTENSION_POOLS: tuple[str, ...] = ("lip_orig", "softpool")
"""Pools this package adds to the grammar (not in the official code): the LIP paper's operator and SoftPool.
They behave like the exact-match pools and never change how an official name parses."""
_EXACT_POOLS: tuple[str, ...] = SOTA_POOLS + EXTENSION_POOLS
MINE_POOLS: tuple[str, ...] = (
    "nlp",
    "dfmnlp",
    "mixp",
    "dfmixp",
    "nlpnoexp",
    "nlpnosigmoid",
    "nlpnope",
    "nlpnobn1",
    "nlpnobn2",
)
MODIFIERS: tuple[str, ...] = ("reduced", "reduced0211", "reduced0842", "headfix2", "nowin")  # application order

STAGE_COUNTS: dict[str, int] = {
    "resnet18": 4,
    "resnet18_v2": 4,
    "resnet50": 4,
    "resnet50_v2": 4,
    "resnext": 4,
    "mobilenet": 7,
    "mobilenet_v2": 7,
    "mobilenetv3_small": 11,
    "mobilenetv3_large": 15,
}

#: The strides of the unmodified network per backbone (digit 1 = the stage keeps its resolution).
STANDARD_STRIDES: dict[str, str] = {
    "resnet18": "1222",
    "resnet18_v2": "1222",
    "resnet50": "1222",
    "resnet50_v2": "1222",
    "resnext": "1222",
    "mobilenet": "1222121",
    "mobilenet_v2": "1222121",
    "mobilenetv3_small": "22121111211",
    "mobilenetv3_large": "121211211111121",
}
"""Number of stride digits (stages) per backbone."""

_FAMILY = {
    "resnet18": "resnet",
    "resnet18_v2": "resnet",
    "resnet50": "resnet",
    "resnet50_v2": "resnet",
    "resnext": "resnext",
    "mobilenet": "mobilenetv2",
    "mobilenet_v2": "mobilenetv2",
    "mobilenetv3_small": "mobilenetv3",
    "mobilenetv3_large": "mobilenetv3",
}
_PLACEMENT = {
    "resnet18": "stage_end",
    "resnet50": "stage_end",
    "resnet18_v2": "block_end",
    "resnet50_v2": "block_end",
    "resnext": "block_end",
    "mobilenet": "stage_start",
    "mobilenet_v2": "after_projection",
    "mobilenetv3_small": "after_projection",
    "mobilenetv3_large": "after_projection",
}
# Accepted by the official parser, but the official model builder has no such network.
_UNBUILDABLE = {
    "resnext_v2": "resnext",
    "mobilenetv3_small_v2": "mobilenetv3_small",
    "mobilenetv3_large_v2": "mobilenetv3_large",
}

# Self-attentive defaults per number of stages (reference_spec §1.2).
_HEADS = {
    4: (4, 8, 16, 32),
    7: (2, 4, 8, 16, 32, 64, 128),
    11: (2, 4, 8, 16, 32, 64, 128, 128, 128, 128, 128),
    15: (2, 4, 8, 16, 32, 64, 128) + (128,) * 8,
}
_REDUCED_PATCH = {4: (4, 2, 1, 1), 7: (4, 4, 4, 2, 2, 1, 1)}
_REDUCED_VARIANT_PATCH = {"reduced0211": (0, 2, 1, 1), "reduced0842": (0, 8, 4, 2)}  # 4 stages only; 0 = placeholder
_PREPOOL_PATCH, _PREPOOL_HEADS = 2, 8
_MAX_PREPOOL_DIGITS = 4

_GRAMMAR = "[prepool-<PREPOOL>-<K>-][dy]<BACKBONE>-<POOL>-<STRIDES>, e.g. 'resnet18-nlp_headfix2-1222'"


class ArchError(ValueError):
    """An architecture name that the grammar does not accept (or that the official code cannot build)."""


@dataclass(frozen=True)
class StagePool:
    """The pool of one stage (or of the stem): ``type`` with kernel = stride = ``stride``.

    ``None`` fields mean "the layer's own default" (always so for the SOTA pools and ``skip``). ``conv`` names the
    conv flavour used *inside* a self-attentive pool: ``'dynamic'`` for ``dy`` names, else ``'norm'``.
    """

    type: str
    stride: int
    patch_size: int | None = None
    reduction: float | None = None
    heads: int | None = None
    win_norm: bool | None = None
    conv: str = "norm"

    @property
    def is_skip(self) -> bool:
        """True when no pool module is built (the conv keeps the stride)."""
        return self.type == "skip"

    def pool_kwargs(self) -> dict:
        """Keyword arguments for :func:`repro.layers.create_pool` (``None`` values dropped)."""
        cfg = {"patch_size": self.patch_size, "heads": self.heads, "reduction": self.reduction}
        cfg["win_norm"] = self.win_norm
        return {k: v for k, v in cfg.items() if v is not None}


@dataclass(frozen=True)
class Arch:
    """A parsed architecture name; ``str(arch)`` is the canonical lower-case name.

    Fields:
        name: canonical name; ``parse_arch(arch.name, strict=arch.strict) == arch``.
        backbone: one of :data:`ARCH_BACKBONES`; ``family``: resnet | resnext | mobilenetv2 | mobilenetv3.
        placement: where a stage pool goes: ``stage_end`` (resnet18/50), ``block_end`` (resnet*_v2, resnext),
            ``stage_start`` (mobilenet), ``after_projection`` (mobilenet_v2, mobilenetv3_*).
        dynamic: ``dy`` prefix, i.e. dynamic convolutions in the backbone and inside self-attentive pools.
        pool: the POOL token as written; ``pool_type``: its base (``nlp``, ``lip``, ...).
        modifiers: modifiers of POOL that the parser found (substring match, as the official parser), in
            application order; ``reduced`` is implied by, and not listed with, ``reduced0211``/``reduced0842``.
        strides: one stride per stage; ``stages``: one :class:`StagePool` per stage (digit 1 → ``skip``, stride 1).
        prepool: the stem pool config (``None`` without a prepool); ``prepool_token``/``prepool_stride``: as written.
            ``prepool.type == 'skip'`` means "the stem conv downsamples": on MobileNet its stride becomes K. On
            ResNet the official builder instead removes all stem downsampling (quirk B14); builders follow that when
            ``strict`` is False and give the stem conv stride K when ``strict`` is True (see :attr:`stem_stride`).
        strict: parsed with ``strict=True`` (corrected semantics instead of the official quirks).
        ignored_suffixes: ``_`` tokens of POOL or PREPOOL that are not a modifier name. The official parser
            ignores them (quirk B23: ``nlp_headfix2_nowin_noexp`` is plain ``nlp`` + headfix2 + nowin), apart from
            any modifier name they contain as a substring.
    """

    name: str
    backbone: str
    family: str
    placement: str
    dynamic: bool
    pool: str
    pool_type: str
    modifiers: tuple[str, ...]
    strides: tuple[int, ...]
    stages: tuple[StagePool, ...]
    prepool: StagePool | None
    prepool_token: str | None
    prepool_stride: int | None
    strict: bool = False
    ignored_suffixes: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.name

    @property
    def stem_stride(self) -> int:
        """Downsampling before the first stage (stem conv x stem pool), as the model builder implements it."""
        if self.family == "resnext":
            return 4  # fixed stem: conv s2 + max-pool s2
        if self.prepool is None:
            return 4 if self.family == "resnet" else 2
        if self.family == "resnet" and self.prepool.is_skip and not self.strict:
            return 1  # quirk B14: stem conv s1 and no pool
        return self.prepool.stride

    @property
    def total_stride(self) -> int:
        """Input size / final feature-map size: the stem stride times every stage stride."""
        return self.stem_stride * math.prod(self.strides)


def parse_arch(name: str, *, strict: bool = False) -> Arch:
    """Parse an architecture name of the official Self-Attentive Pooling code into an :class:`Arch`.

    Faithful to the official parser by default: modifiers are matched as substrings of POOL; unknown ``_`` suffixes
    are ignored (B23, recorded in ``Arch.ignored_suffixes``); ``reduced`` has no effect on MobileNetV3 and
    ``reduced0211``/``reduced0842`` act as plain ``reduced`` on MobileNetV2; ``nowin`` has no effect on a prepool;
    ``prepool-skip-K`` on ResNet removes the stem downsampling (B14).

    ``strict=True`` raises :class:`ArchError` for the ignored suffixes and the modifiers without effect, applies
    ``nowin`` to a prepool, and makes ``prepool-skip-K`` on ResNet a stem conv of stride K.

    Always rejected, although the official parser accepts them: ``reduced0211``/``reduced0842`` with a first stride
    digit > 1 (placeholder patch size 0, B13: the official build crashes); ``resnext_v2`` and ``mobilenetv3_*_v2``
    (no such model); ``dy`` or a prepool on ``resnext`` (the official ResNeXt keeps plain convs in the backbone and
    silently drops the prepool); tokens before ``prepool`` or before NET (the official parser skips them).

    Raises:
        ArchError: for any invalid name, naming the bad token and the valid choices.
    """
    if not isinstance(name, str):
        raise TypeError(f"architecture name must be a str, got {type(name).__name__}")
    text = name.strip().lower()
    if not text:
        raise ArchError(f"empty architecture name; expected {_GRAMMAR}")
    parts = text.split("-")
    prepool_token = prepool_stride = None
    if "prepool" in parts:
        if parts[0] != "prepool":
            raise ArchError(f"'prepool' must be the first token of {text!r}; expected {_GRAMMAR}")
        if len(parts) != 6:
            raise ArchError(
                f"{text!r} has {len(parts)} '-'-separated tokens; a prepool name needs 6: "
                "prepool-<PREPOOL>-<K>-<NET>-<POOL>-<STRIDES>, e.g. 'prepool-nlp_headfix2-4-resnet18-skip-1222'"
            )
        prepool_token, prepool_stride = parts[1], _parse_prepool_stride(parts[2], text)
        parts = parts[3:]
    elif len(parts) != 3:
        few = "too few" if len(parts) < 3 else "too many"
        raise ArchError(f"{text!r} has {few} '-'-separated tokens ({len(parts)}, need 3); expected {_GRAMMAR}")
    net, pool, stride_text = parts

    dynamic, backbone = _parse_net(net, text)
    strides = _parse_strides(stride_text, backbone, text)
    conv = "dynamic" if dynamic else "norm"
    if backbone == "resnext" and prepool_token is not None:
        raise ArchError(
            f"a prepool is not supported on resnext ({text!r}): the official ResNeXt has a fixed stem and drops it; "
            "use a resnet or mobilenet backbone, or remove the prepool-<PREPOOL>-<K>- prefix"
        )

    pool_type, found, ignored = _split_pool(pool, text, what="pool")
    if strict and ignored:
        raise ArchError(_ignored_message(ignored, pool, text))
    modifiers = tuple(m for m in MODIFIERS if found[m] and not (m == "reduced" and _has_reduced_variant(found)))
    if pool_type in _EXACT_POOLS:
        stages = tuple(StagePool("skip", 1) if s == 1 else StagePool(pool_type, s) for s in strides)
    else:
        stages = _mine_stages(pool_type, found, strides, conv, strict, text)

    prepool = None
    if prepool_token is not None:
        pre_type, pre_found, pre_ignored = _split_pool(prepool_token, text, what="prepool")
        if strict and pre_ignored:
            raise ArchError(_ignored_message(pre_ignored, prepool_token, text))
        ignored += pre_ignored
        prepool = _prepool_config(pre_type, pre_found, prepool_stride, conv, strict, text)

    prefix = f"prepool-{prepool_token}-{prepool_stride}-" if prepool_token is not None else ""
    canonical = f"{prefix}{'dy' if dynamic else ''}{backbone}-{pool}-{''.join(map(str, strides))}"
    return Arch(
        name=canonical,
        backbone=backbone,
        family=_FAMILY[backbone],
        placement=_PLACEMENT[backbone],
        dynamic=dynamic,
        pool=pool,
        pool_type=pool_type,
        modifiers=modifiers,
        strides=strides,
        stages=stages,
        prepool=prepool,
        prepool_token=prepool_token,
        prepool_stride=prepool_stride,
        strict=strict,
        ignored_suffixes=ignored,
    )


def _parse_prepool_stride(token: str, text: str) -> int:
    if not (token.isascii() and token.isdigit()) or int(token) < 1:
        raise ArchError(f"prepool stride {token!r} in {text!r} must be a positive integer (e.g. 2, 4, 6, 8)")
    if len(token.lstrip("0")) > _MAX_PREPOOL_DIGITS:
        raise ArchError(f"prepool stride {token!r} in {text!r} is too large (at most {_MAX_PREPOOL_DIGITS} digits)")
    return int(token)


def _parse_net(net: str, text: str) -> tuple[bool, str]:
    """Split NET into (dynamic, backbone)."""
    dynamic = net.startswith("dy")
    backbone = net[2:] if dynamic else net
    if backbone in STAGE_COUNTS:
        if dynamic and backbone == "resnext":
            raise ArchError(
                f"dynamic convolution ('dy' prefix) is not supported on resnext ({text!r}): the official ResNeXt "
                "keeps plain convs in the backbone; use 'resnext' or a 'dy' ResNet/MobileNet backbone"
            )
        return dynamic, backbone
    if backbone in _UNBUILDABLE:
        raise ArchError(
            f"backbone {backbone!r} in {text!r} is accepted by the official parser but has no model "
            f"(official: 'Undefined Backbone Type'); use {_UNBUILDABLE[backbone]!r}"
        )
    hint = ""
    if "dy" in net and not dynamic:
        hint = "; 'dy' must be a prefix, e.g. 'dyresnet18'"
    else:
        close = difflib.get_close_matches(backbone, ARCH_BACKBONES, n=1)
        if close:
            hint = f"; did you mean {('dy' if dynamic else '') + close[0]!r}?"
    raise ArchError(
        f"unknown backbone {net!r} in {text!r}; valid backbones: {', '.join(ARCH_BACKBONES)} "
        f"(optionally prefixed by 'dy' for dynamic convolutions){hint}"
    )


def _parse_strides(token: str, backbone: str, text: str) -> tuple[int, ...]:
    n = STAGE_COUNTS[backbone]
    bad = [c for c in token if c not in "123456789"]
    if bad or not token:
        what = f"has invalid character {bad[0]!r}" if bad else "is empty"
        raise ArchError(
            f"stride string {token!r} in {text!r} {what}: it must be {n} digits 1-9, one per stage of {backbone}"
        )
    if len(token) != n:
        raise ArchError(
            f"stride string {token!r} in {text!r} has {len(token)} digits; {backbone} needs {n} (one per stage), "
            f"e.g. {_EXAMPLE_STRIDES[n]!r}"
        )
    return tuple(int(c) for c in token)


_EXAMPLE_STRIDES = {4: "1222", 7: "1222121", 11: "22121111211", 15: "121211211111121"}


def _split_pool(token: str, text: str, *, what: str) -> tuple[str, dict[str, bool], tuple[str, ...]]:
    """Return (base type, modifier → found as substring, ignored suffix tokens) of a POOL/PREPOOL token."""
    if token in _EXACT_POOLS:
        return token, dict.fromkeys(MODIFIERS, False), ()
    base, *suffixes = token.split("_")
    if base in MINE_POOLS:
        found = {m: m in token for m in MODIFIERS}
        return base, found, tuple(s for s in suffixes if s not in MODIFIERS)
    sota = "gaussian_pool" if token.startswith("gaussian_pool_") else base
    if sota in SOTA_POOLS:
        raise ArchError(
            f"{what} {token!r} in {text!r}: {sota!r} takes no modifiers (official: 'Undefined Pooling Type'); "
            f"modifiers ({', '.join(MODIFIERS)}) apply only to {', '.join(MINE_POOLS)}"
        )
    close = difflib.get_close_matches(base, _EXACT_POOLS + MINE_POOLS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ArchError(
        f"unknown {what} {token!r} in {text!r}; valid: {', '.join(_EXACT_POOLS)} (exact), or "
        f"{', '.join(MINE_POOLS)} optionally followed by _modifiers ({', '.join(MODIFIERS)}){hint}"
    )


def _has_reduced_variant(found: dict[str, bool]) -> bool:
    return found["reduced0211"] or found["reduced0842"]


def _ignored_message(ignored: tuple[str, ...], token: str, text: str) -> str:
    return (
        f"unknown suffix(es) {', '.join(map(repr, ignored))} in {token!r} of {text!r} (strict mode); valid "
        f"modifiers: {', '.join(MODIFIERS)}. The official parser ignores them; use strict=False to reproduce that"
    )


def _mine_stages(
    pool_type: str, found: dict[str, bool], strides: tuple[int, ...], conv: str, strict: bool, text: str
) -> tuple[StagePool, ...]:
    """Per-stage configs of a self-attentive pool (reference_spec §1.2), modifiers applied in the official order."""
    n = len(strides)
    patch = (1,) * n
    if found["reduced"]:
        if n not in _REDUCED_PATCH and strict:
            raise ArchError(
                f"'reduced' in {text!r} has no patch sizes for {n}-stage backbones (strict mode); the official "
                "parser ignores it there. Remove it, or use strict=False"
            )
        patch = _REDUCED_PATCH.get(n, patch)
    for variant, variant_patch in _REDUCED_VARIANT_PATCH.items():
        if not found[variant]:
            continue
        if n == len(variant_patch):
            patch = variant_patch
        elif strict:
            raise ArchError(
                f"{variant!r} in {text!r} is defined only for 4-stage backbones (strict mode); the official parser "
                "applies plain 'reduced' instead. Use '_reduced', or strict=False"
            )
    if patch[0] == 0 and strides[0] > 1:
        raise ArchError(
            f"{text!r}: reduced0211/reduced0842 give stage 1 the placeholder patch size 0, so the first stride digit "
            f"must be 1 (got {strides[0]}); the official build crashes here (quirk B13). Use a first digit of 1 or "
            "'_reduced'"
        )
    heads = (2,) * n if found["headfix2"] else _HEADS[n]
    win_norm = not found["nowin"]
    return tuple(
        StagePool("skip", 1) if s == 1 else StagePool(pool_type, s, p, 1.0, h, win_norm, conv)
        for s, p, h in zip(strides, patch, heads)
    )


def _prepool_config(
    pool_type: str, found: dict[str, bool], stride: int, conv: str, strict: bool, text: str
) -> StagePool:
    """The stem pool (reference_spec §1.2 'Prepool'); ``nowin`` applies only when ``strict``."""
    if pool_type in _EXACT_POOLS:
        return StagePool(pool_type, stride)
    if strict and _has_reduced_variant(found):
        raise ArchError(
            f"reduced0211/reduced0842 in the prepool of {text!r} are not defined for a prepool (strict mode); the "
            "official parser applies plain 'reduced'. Use '_reduced', or strict=False"
        )
    patch, reduction = (stride, 0.25) if found["reduced"] else (_PREPOOL_PATCH, 1.0)
    heads = 2 if found["headfix2"] else _PREPOOL_HEADS
    win_norm = not (strict and found["nowin"])
    return StagePool(pool_type, stride, patch, reduction, heads, win_norm, conv)
