"""Tests of the architecture-name grammar (repro.arch).

The expected per-stage configs below were checked against the official ``name_parse`` (reference_spec §1.4 and the
run names of the official logs and configs).
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro.arch import (
    ARCH_BACKBONES,
    MINE_POOLS,
    MODIFIERS,
    SOTA_POOLS,
    STAGE_COUNTS,
    Arch,
    ArchError,
    StagePool,
    parse_arch,
)

SKIP1 = StagePool("skip", 1)


def nlp(stride: int, patch: int, heads: int, win: bool = True, conv: str = "norm", kind: str = "nlp") -> StagePool:
    return StagePool(kind, stride, patch, 1.0, heads, win, conv)


# ---------------------------------------------------------------------------------------------------------------------
# Golden cases (reference_spec §1.4 and further names verified against the official parser)
# ---------------------------------------------------------------------------------------------------------------------

GOLDEN_STAGES = {
    "resnet18-nlp-1222": (SKIP1, nlp(2, 1, 8), nlp(2, 1, 16), nlp(2, 1, 32)),
    "resnet18-nlp_headfix2-4222": (nlp(4, 1, 2), nlp(2, 1, 2), nlp(2, 1, 2), nlp(2, 1, 2)),
    "mobilenet_v2-nlp_headfix2_nowin_reduced-1222121": (
        SKIP1,
        nlp(2, 4, 2, False),
        nlp(2, 4, 2, False),
        nlp(2, 2, 2, False),
        SKIP1,
        nlp(2, 1, 2, False),
        SKIP1,
    ),
    "prepool-nlp_headfix2-4-resnet18-nlp_headfix2-1222": (SKIP1, nlp(2, 1, 2), nlp(2, 1, 2), nlp(2, 1, 2)),
    "resnet18-nlp_headfix2_nowin_reduced0842-1222": (
        SKIP1,
        nlp(2, 8, 2, False),
        nlp(2, 4, 2, False),
        nlp(2, 2, 2, False),
    ),
    "resnet18-nlp_headfix2_nowin_reduced0211-1222": (
        SKIP1,
        nlp(2, 2, 2, False),
        nlp(2, 1, 2, False),
        nlp(2, 1, 2, False),
    ),
    "resnet18-nlp_reduced-4222": (nlp(4, 4, 4), nlp(2, 2, 8), nlp(2, 1, 16), nlp(2, 1, 32)),
    "resnet50-nlp-2222": (nlp(2, 1, 4), nlp(2, 1, 8), nlp(2, 1, 16), nlp(2, 1, 32)),
    "mobilenet-nlp-4222121": (
        nlp(4, 1, 2),
        nlp(2, 1, 4),
        nlp(2, 1, 8),
        nlp(2, 1, 16),
        SKIP1,
        nlp(2, 1, 64),
        SKIP1,
    ),
    "mobilenet_v2-nlpnoexp_headfix2_nowin-2222121": (
        *(nlp(2, 1, 2, False, kind="nlpnoexp") for _ in range(4)),
        SKIP1,
        nlp(2, 1, 2, False, kind="nlpnoexp"),
        SKIP1,
    ),
    "dyresnet18-dfmnlp_reduced-1222": (
        SKIP1,
        nlp(2, 2, 8, conv="dynamic", kind="dfmnlp"),
        nlp(2, 1, 16, conv="dynamic", kind="dfmnlp"),
        nlp(2, 1, 32, conv="dynamic", kind="dfmnlp"),
    ),
    "resnet18-lip-4222": (StagePool("lip", 4), StagePool("lip", 2), StagePool("lip", 2), StagePool("lip", 2)),
    "dyresnet50-lip-1222": (SKIP1, StagePool("lip", 2), StagePool("lip", 2), StagePool("lip", 2)),
    "resnet18_v2-gaussian_pool-2222": tuple(StagePool("gaussian_pool", 2) for _ in range(4)),
    "resnet18-skip-4222": (StagePool("skip", 4), StagePool("skip", 2), StagePool("skip", 2), StagePool("skip", 2)),
    "mobilenetv3_small-nlp-22121111211": (
        nlp(2, 1, 2),
        nlp(2, 1, 4),
        SKIP1,
        nlp(2, 1, 16),
        SKIP1,
        SKIP1,
        SKIP1,
        SKIP1,
        nlp(2, 1, 128),
        SKIP1,
        SKIP1,
    ),
    # 'reduced' has no patch sizes for MobileNetV3: the official parser ignores it.
    "mobilenetv3_large-nlp_reduced_headfix2-121211211111121": tuple(
        SKIP1 if s == 1 else nlp(2, 1, 2) for s in (1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1)
    ),
    # reduced0842 is defined for 4 stages only; on MobileNetV2 the substring 'reduced' applies the plain reduced sizes.
    "mobilenet_v2-nlp_reduced0842-2222121": (
        nlp(2, 4, 2),
        nlp(2, 4, 4),
        nlp(2, 4, 8),
        nlp(2, 2, 16),
        SKIP1,
        nlp(2, 1, 64),
        SKIP1,
    ),
    # B23: unknown suffixes are ignored, so this is plain nlp + headfix2 + nowin.
    "resnet18-nlp_headfix2_nowin_noexp-1222": (SKIP1, nlp(2, 1, 2, False), nlp(2, 1, 2, False), nlp(2, 1, 2, False)),
    # Modifiers are substrings: 'headfix2nowin' switches both on.
    "resnet18-nlp_headfix2nowin-1222": (SKIP1, nlp(2, 1, 2, False), nlp(2, 1, 2, False), nlp(2, 1, 2, False)),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_STAGES))
def test_golden_stages(name: str) -> None:
    assert parse_arch(name).stages == GOLDEN_STAGES[name]


GOLDEN_PREPOOL = {
    "prepool-nlp_headfix2-4-resnet18-nlp_headfix2-1222": StagePool("nlp", 4, 2, 1.0, 2, True, "norm"),
    "prepool-nlp-8-resnet18-skip-1222": StagePool("nlp", 8, 2, 1.0, 8, True, "norm"),
    # nowin is ignored for the prepool (confirmed by the official log of this run).
    "prepool-nlp_headfix2_nowin-6-mobilenet_v2-skip-1222121": StagePool("nlp", 6, 2, 1.0, 2, True, "norm"),
    # reduced: p = K and r = 1/4 (the only place where the official code reduces channels).
    "prepool-dfmnlp_reduced_headfix2-4-dymobilenet_v2-skip-1222121": StagePool(
        "dfmnlp", 4, 4, 0.25, 2, True, "dynamic"
    ),
    "prepool-lip-6-resnet18-lip-1222": StagePool("lip", 6),
    "prepool-maxp-8-resnet50-skip-1222": StagePool("maxp", 8),
    "prepool-gaussian_pool-2-mobilenet_v2-skip-1222121": StagePool("gaussian_pool", 2),
    "prepool-skip-4-mobilenet_v2-skip-1222121": StagePool("skip", 4),
    "resnet18-nlp-1222": None,
}


@pytest.mark.parametrize("name", sorted(GOLDEN_PREPOOL))
def test_golden_prepool(name: str) -> None:
    assert parse_arch(name).prepool == GOLDEN_PREPOOL[name]


def test_fields_of_a_full_name() -> None:
    arch = parse_arch("PREPOOL-NLP_REDUCED-4-DYMOBILENET_V2-NLP_NOWIN_HEADFIX2-1222121")
    assert arch.name == str(arch) == "prepool-nlp_reduced-4-dymobilenet_v2-nlp_nowin_headfix2-1222121"
    assert (arch.backbone, arch.family, arch.placement) == ("mobilenet_v2", "mobilenetv2", "after_projection")
    assert arch.dynamic and not arch.strict
    assert (arch.pool, arch.pool_type, arch.modifiers) == ("nlp_nowin_headfix2", "nlp", ("headfix2", "nowin"))
    assert arch.strides == (1, 2, 2, 2, 1, 2, 1)
    assert (arch.prepool_token, arch.prepool_stride) == ("nlp_reduced", 4)
    assert arch.ignored_suffixes == ()
    assert all(s.conv == "dynamic" for s in arch.stages if not s.is_skip)


def test_modifiers_are_listed_in_application_order() -> None:
    assert parse_arch("resnet18-nlp_nowin_reduced0842_headfix2-1222").modifiers == ("reduced0842", "headfix2", "nowin")
    assert parse_arch("resnet18-nlp_reduced-1222").modifiers == ("reduced",)
    assert parse_arch("resnet18-lip-1222").modifiers == ()


def test_ignored_suffixes_are_recorded() -> None:
    arch = parse_arch("prepool-nlp_foo-4-resnet18-nlp_headfix2_nowin_noexp-1222")
    assert arch.ignored_suffixes == ("noexp", "foo")
    assert arch.pool_type == "nlp"


def test_sota_pools_ignore_dynamic_conv_inside_the_pool() -> None:
    arch = parse_arch("dyresnet18-lip-1222")
    assert arch.dynamic
    assert arch.stages[1] == StagePool("lip", 2, conv="norm")


@pytest.mark.parametrize(
    ("backbone", "family", "placement"),
    [
        ("resnet18", "resnet", "stage_end"),
        ("resnet50", "resnet", "stage_end"),
        ("resnet18_v2", "resnet", "block_end"),
        ("resnet50_v2", "resnet", "block_end"),
        ("resnext", "resnext", "block_end"),
        ("mobilenet", "mobilenetv2", "stage_start"),
        ("mobilenet_v2", "mobilenetv2", "after_projection"),
        ("mobilenetv3_small", "mobilenetv3", "after_projection"),
        ("mobilenetv3_large", "mobilenetv3", "after_projection"),
    ],
)
def test_family_and_placement(backbone: str, family: str, placement: str) -> None:
    arch = parse_arch(f"{backbone}-skip-{'1' * STAGE_COUNTS[backbone]}")
    assert (arch.backbone, arch.family, arch.placement) == (backbone, family, placement)
    assert len(arch.stages) == STAGE_COUNTS[backbone]
    assert set(ARCH_BACKBONES) == set(STAGE_COUNTS)


@pytest.mark.parametrize(
    ("name", "total"),
    [
        ("resnet18-skip-1222", 32),
        ("resnet18-nlp-2222", 64),
        ("resnet50_v2-lip-4222", 128),
        ("resnext-nlp-1222", 32),
        ("mobilenet_v2-skip-1222121", 32),
        ("mobilenet-nlp-2222121", 64),
        ("mobilenet_v2-nlp-4222121", 128),
        ("mobilenetv3_small-skip-22121111211", 32),
        ("mobilenetv3_large-skip-121211211111121", 32),
        ("prepool-nlp-4-resnet18-skip-1222", 32),
        ("prepool-maxp-8-resnet18-skip-1222", 64),
        ("prepool-skip-4-mobilenet_v2-skip-1222121", 64),
        ("prepool-lip-6-mobilenet_v2-skip-1222121", 96),
        ("prepool-skip-4-resnet18-skip-1222", 8),  # B14: no stem downsampling at all
    ],
)
def test_total_stride(name: str, total: int) -> None:
    assert parse_arch(name).total_stride == total


def test_stage_pool_helpers() -> None:
    pool = nlp(2, 4, 2, False)
    assert pool.pool_kwargs() == {"patch_size": 4, "heads": 2, "reduction": 1.0, "win_norm": False}
    assert StagePool("lip", 2).pool_kwargs() == {}
    assert SKIP1.is_skip and StagePool("skip", 2).is_skip and not pool.is_skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        pool.stride = 4  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------------------------------
# Round trip
# ---------------------------------------------------------------------------------------------------------------------

_EXAMPLE_STRIDES = {
    4: ("1222", "4222", "3911"),
    7: ("1222121", "2222121"),
    11: ("22121111211",),
    15: ("121211211111121",),
}
_POOL_TOKENS = (
    *SOTA_POOLS,
    *MINE_POOLS,
    "nlp_headfix2",
    "nlp_headfix2_nowin",
    "nlpnope_nowin_headfix2",
    "dfmixp_reduced",
    "mixp_nowin_reduced_headfix2",
    "nlp_headfix2_nowin_noexp",
)


def _valid_names() -> list[str]:
    names = []
    for backbone, pool in itertools.product(ARCH_BACKBONES, _POOL_TOKENS):
        for strides in _EXAMPLE_STRIDES[STAGE_COUNTS[backbone]]:
            names.append(f"{backbone}-{pool}-{strides}")
            if backbone != "resnext":
                names.append(f"dy{backbone}-{pool}-{strides}")
                names.append(f"prepool-nlp_reduced_headfix2-4-{backbone}-{pool}-{strides}")
                names.append(f"prepool-gaussian_pool-2-dy{backbone}-{pool}-{strides}")
    names += ["resnet18-nlp_reduced0211-1222", "resnet50-dfmnlp_headfix2_nowin_reduced0842-1992"]
    return names


VALID_NAMES = _valid_names()


def test_round_trip_over_many_names() -> None:
    assert len(VALID_NAMES) > 1000
    for name in VALID_NAMES:
        arch = parse_arch(name)
        assert str(arch) == name
        assert parse_arch(str(arch)) == arch
        assert parse_arch(name.upper()) == arch
        assert arch.total_stride >= 1


def test_round_trip_normalises_case_whitespace_and_prepool_stride() -> None:
    arch = parse_arch("  Prepool-NLP-04-ResNet18-Skip-1222\n")
    assert str(arch) == "prepool-nlp-4-resnet18-skip-1222"
    assert parse_arch(str(arch)) == arch


def test_round_trip_strict() -> None:
    arch = parse_arch("prepool-skip-4-resnet18-nlp_headfix2-1222", strict=True)
    assert parse_arch(str(arch), strict=True) == arch
    assert parse_arch(str(arch)) != arch  # the strict flag is part of the value


# ---------------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------------

ERROR_CASES = [
    ("", "empty"),
    ("   ", "empty"),
    ("resnet19-nlp-1222", "'resnet19'"),
    ("resnet19-nlp-1222", "did you mean 'resnet18'"),
    ("resnetdy18-nlp-1222", "'resnetdy18'"),
    ("dydyresnet18-nlp-1222", "'dydyresnet18'"),
    ("dy-resnet18-nlp-1222", "too many"),
    ("resnet18-nlq-1222", "'nlq'"),
    ("resnet18-nlpheadfix2-1222", "'nlpheadfix2'"),
    ("resnet18-lip_headfix2-1222", "'lip_headfix2'"),
    ("resnet18-gaussian_pool_nowin-1222", "takes no modifiers"),
    ("resnet18-skip_nowin-1222", "'skip_nowin'"),
    ("resnet18-nlp-122", "'122'"),
    ("resnet18-nlp-12222", "needs 4"),
    ("mobilenet_v2-nlp-1222", "needs 7"),
    ("mobilenetv3_small-skip-1222121", "needs 11"),
    ("mobilenetv3_large-skip-22121111211", "needs 15"),
    ("resnet18-nlp-12a2", "'a'"),
    ("resnet18-nlp-1022", "'0'"),
    ("resnet18-nlp-", "empty"),
    ("resnet18-nlp-1²22", "'²'"),
    ("resnet18-prepool-nlp-4-x-1222", "'prepool' must be the first"),
    ("prepool-nlp-resnet18-nlp-1222", "needs 6"),
    ("prepool-nlp-x-resnet18-nlp-1222", "'x'"),
    ("prepool-nlp-0-resnet18-nlp-1222", "'0'"),
    ("prepool-nlp--4-resnet18-nlp-1222", "needs 6"),
    ("prepool-nlp-99999-resnet18-nlp-1222", "too large"),
    ("prepool-lip_headfix2-4-resnet18-skip-1222", "'lip_headfix2'"),
    ("prepool-foo-4-resnet18-skip-1222", "'foo'"),
    ("resnet18", "too few"),
    ("resnet18-nlp", "too few"),
    ("extra-resnet18-nlp-1222", "too many"),
    ("resnext_v2-nlp-1222", "'resnext_v2'"),
    ("mobilenetv3_small_v2-skip-22121111211", "'mobilenetv3_small_v2'"),
    ("mobilenetv3_large_v2-skip-121211211111121", "has no model"),
    ("dyresnext-nlp-1222", "'dy'"),
    ("prepool-nlp-4-resnext-skip-1222", "resnext"),
    ("resnet18-nlp_reduced0842-2222", "B13"),
    ("resnet18-nlp_headfix2_reduced0211-4222", "placeholder patch size 0"),
]


@pytest.mark.parametrize(("name", "fragment"), ERROR_CASES)
def test_error_names_the_bad_token(name: str, fragment: str) -> None:
    with pytest.raises(ArchError) as info:
        parse_arch(name)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_errors_list_the_valid_choices() -> None:
    with pytest.raises(ArchError, match="mobilenetv3_large"):
        parse_arch("vgg16-nlp-1222")
    with pytest.raises(ArchError, match=r"gaussian_pool.*softpool.*nlpnobn2.*headfix2"):
        parse_arch("resnet18-mixedpool-1222")


@pytest.mark.parametrize("pool", ["lip_orig", "softpool"])
def test_extension_pools_are_exact_match_pools(pool: str) -> None:
    arch = parse_arch(f"prepool-{pool}-4-resnet18-{pool}-1222")
    assert [s.type for s in arch.stages] == ["skip", pool, pool, pool]
    assert arch.prepool == StagePool(pool, 4)
    assert str(arch) == f"prepool-{pool}-4-resnet18-{pool}-1222"
    with pytest.raises(ArchError, match=r"takes no modifiers|unknown pool"):
        parse_arch(f"resnet18-{pool}_headfix2-1222")


def test_non_string_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_arch(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------------
# Quirks: faithful default versus strict
# ---------------------------------------------------------------------------------------------------------------------


def test_b23_unknown_suffix_default_vs_strict() -> None:
    assert (
        parse_arch("resnet18-nlp_headfix2_nowin_noexp-1222").stages
        == parse_arch("resnet18-nlp_headfix2_nowin-1222").stages
    )
    with pytest.raises(ArchError, match="'noexp'"):
        parse_arch("resnet18-nlp_headfix2_nowin_noexp-1222", strict=True)
    with pytest.raises(ArchError, match="'foo'"):
        parse_arch("prepool-nlp_foo-4-resnet18-skip-1222", strict=True)
    with pytest.raises(ArchError, match="'headfix2nowin'"):
        parse_arch("resnet18-nlp_headfix2nowin-1222", strict=True)


def test_b13_placeholder_patch_is_rejected_in_both_modes() -> None:
    for strict in (False, True):
        with pytest.raises(ArchError, match="B13"):
            parse_arch("resnet18-nlp_reduced0211-2222", strict=strict)
        assert parse_arch("resnet18-nlp_reduced0211-1222", strict=strict).stages[0] == SKIP1


def test_b14_prepool_skip_on_resnet_default_vs_strict() -> None:
    default = parse_arch("prepool-skip-4-resnet18-skip-1222")
    fixed = parse_arch("prepool-skip-4-resnet18-skip-1222", strict=True)
    assert default.prepool == fixed.prepool == StagePool("skip", 4)
    assert (default.stem_stride, default.total_stride) == (1, 8)
    assert (fixed.stem_stride, fixed.total_stride) == (4, 32)
    # MobileNet: the stem conv takes stride K in both modes.
    assert parse_arch("prepool-skip-4-mobilenet_v2-skip-1222121").stem_stride == 4


def test_prepool_nowin_default_vs_strict() -> None:
    name = "prepool-nlp_headfix2_nowin-4-mobilenet_v2-skip-1222121"
    assert parse_arch(name).prepool.win_norm is True
    assert parse_arch(name, strict=True).prepool.win_norm is False


@pytest.mark.parametrize(
    "name",
    [
        "mobilenetv3_small-nlp_reduced-22121111211",
        "mobilenet_v2-nlp_reduced0842-1222121",
        "mobilenet-nlp_reduced0211-1222121",
        "prepool-nlp_reduced0211-4-resnet18-skip-1222",
    ],
)
def test_modifiers_without_effect_default_vs_strict(name: str) -> None:
    parse_arch(name)
    with pytest.raises(ArchError, match="strict mode"):
        parse_arch(name, strict=True)


def test_strict_accepts_clean_names() -> None:
    for name in VALID_NAMES[::7]:
        if "noexp" in name or ("reduced" in name and "mobilenetv3" in name):
            continue  # rejected by strict (see the tests above)
        assert parse_arch(name, strict=True).stages == parse_arch(name).stages


# ---------------------------------------------------------------------------------------------------------------------
# Fuzz: any string gives a valid Arch or an ArchError, never another exception
# ---------------------------------------------------------------------------------------------------------------------


def _check_total(text: str, strict: bool) -> None:
    try:
        arch = parse_arch(text, strict=strict)
    except ArchError as err:
        assert str(err)
        return
    assert isinstance(arch, Arch)
    assert parse_arch(str(arch), strict=strict) == arch
    assert len(arch.stages) == STAGE_COUNTS[arch.backbone]


_ALPHABET = "-_0123456789abcdeilmnoprstuvwxyADHKPRS ²"
_PIECES = [
    *ARCH_BACKBONES,
    *SOTA_POOLS,
    *MINE_POOLS,
    *MODIFIERS,
    "dy",
    "prepool",
    "resnext_v2",
    "noexp",
    "1222",
    "1222121",
    "22121111211",
    "121211211111121",
    "4",
    "0",
    "-",
    "_",
    "",
]


@st.composite
def _near_miss(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(VALID_NAMES))
    parts = name.split("-")
    op = draw(st.sampled_from(["swap", "drop", "dup", "dash", "typo", "digits", "join", "replace"]))
    if op == "swap" and len(parts) > 1:
        i, j = draw(st.integers(0, len(parts) - 1)), draw(st.integers(0, len(parts) - 1))
        parts[i], parts[j] = parts[j], parts[i]
    elif op == "drop":
        del parts[draw(st.integers(0, len(parts) - 1))]
    elif op == "dup":
        i = draw(st.integers(0, len(parts) - 1))
        parts.insert(i, parts[i])
    elif op == "replace":
        parts[draw(st.integers(0, len(parts) - 1))] = draw(st.sampled_from(_PIECES))
    elif op == "digits":
        parts[-1] = draw(st.text("0123456789", max_size=17))
    elif op == "join":
        return "".join(parts) if draw(st.booleans()) else "_".join(parts)
    name = "-".join(parts)
    if op in ("dash", "typo"):
        i = draw(st.integers(0, len(name)))
        if op == "dash":
            return name[:i] + draw(st.sampled_from(["-", "--", "_", ""])) + name[i + 1 :]
        return name[:i] + draw(st.sampled_from(_ALPHABET)) + name[i:]
    return name


_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(text=st.text(max_size=60), strict=st.booleans())
def test_fuzz_random_text(text: str, strict: bool) -> None:
    _check_total(text, strict)


@_FUZZ
@given(text=st.lists(st.sampled_from(_PIECES), max_size=8).map("-".join), strict=st.booleans())
def test_fuzz_token_soup(text: str, strict: bool) -> None:
    _check_total(text, strict)


@_FUZZ
@given(text=_near_miss(), strict=st.booleans())
def test_fuzz_near_miss_names(text: str, strict: bool) -> None:
    _check_total(text, strict)
