"""Tests of the SAP model zoo: parameter counts and state-dict layout against the official code, placements, stems,
feature maps, input-size limits, init, features-only mode, the official golden outputs and ``repro list``.

The parameter counts in ``SPEC_PARAMS`` are reference_spec §3's table; those in ``VERIFIED_PARAMS`` were obtained by
building the official implementation (commit 7287eaea) with ``num_classes=10`` and counting its parameters; for every
one of them the official state-dict keys and shapes equal this package's.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from repro.arch import ArchError, parse_arch
from repro.compat import load_official_state_dict
from repro.layers.dynamic_conv import DynamicConv2d
from repro.models import build_model
from repro.models.sap import build_sap_model
from repro.models.sap_common import InputSizeError
from repro.models.summary import feature_shapes, input_size_range, max_input_size, min_input_size


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# reference_spec §3, "Total parameters, with 10 classes"
SPEC_PARAMS: dict[str, int] = {
    "resnet18-skip-1222": 11_181_642,
    "resnet18-skip-2222": 11_185_866,
    "resnet18-skip-4222": 11_185_866,
    "resnet18-lip-1222": 11_528_394,
    "resnet18-gaussian_pool-1222": 11_704_458,
    "resnet18_v2-gaussian_pool-1222": 11_704_458,
    "resnet18-nlp-1222": 13_484_362,
    "resnet18-nlp_headfix2-1222": 13_484_362,
    "resnet18-nlp_nowin-1222": 13_484_362,
    "resnet18-nlp-4222": 13_525_962,
    "resnet18-nlp_reduced-1222": 13_533_514,
    "resnet18-dfmnlp-1222": 13_507_667,
    "resnet18-mixp-1222": 13_854_419,
    "resnet18-dfmixp-1222": 13_854_419,
    "resnet18-attnpool-1222": 14_516_554,
    "resnet50-skip-1222": 23_528_522,
    "resnet50-nlp-1222": 57_512_010,
    "resnet50-lip-1222": 29_044_298,
    "dyresnet18-skip-1222": 44_995_394,
    "mobilenet_v2-skip-1222121": 2_236_682,
    "mobilenet_v2-lip-1222121": 2_268_818,
    "mobilenet-lip-1222121": 2_248_258,
    "mobilenet_v2-gaussian_pool-1222121": 2_285_726,
    "mobilenet_v2-nlp-1222121": 2_443_418,
    "mobilenet_v2-nlp_headfix2-1222121": 2_498_938,
    "mobilenet_v2-nlp_headfix2-2222121": 2_504_730,
    "mobilenet_v2-nlp_headfix2-4222121": 2_504_730,
    "mobilenet_v2-nlp_headfix2_nowin_reduced-1222121": 2_535_226,
    "mobilenet-nlp_headfix2-1222121": 2_347_802,
    "mobilenet_v2-attnpool-1222121": 2_592_826,
    "prepool-nlp_headfix2_nowin-4-mobilenet_v2-skip-1222121": 2_254_410,
    "prepool-nlp_headfix2_nowin-6-mobilenet_v2-skip-1222121": 2_254_410,
    "prepool-nlp_headfix2-4-resnet18-nlp_headfix2-1222": 13_538_250,
    "prepool-nlp-4-resnet18-skip-1222": 11_235_530,
    "prepool-nlp-8-resnet18-skip-1222": 11_235_530,
    "mobilenetv3_small-skip-22121111211": 1_241_558,
}

# Counted on the official implementation (see the module docstring): parameters -> architectures.
VERIFIED_PARAMS: dict[int, tuple[str, ...]] = {
    1_241_558: ("prepool-maxp-4-mobilenetv3_small-skip-22121111211",),
    1_253_734: ("mobilenetv3_small-lip-22121111211",),
    1_396_446: ("mobilenetv3_small-nlp-22121111211",),
    2_236_682: (
        "mobilenet-maxp-2222121",
        "mobilenet-skip-1222121",
        "mobilenet-skip-2222121",
        "mobilenet-skip-4222121",
        "prepool-skip-2-mobilenet_v2-skip-1222121",
        "prepool-skip-4-mobilenet_v2-skip-1222121",
        "prepool-skip-6-mobilenet_v2-skip-1222121",
    ),
    2_237_802: (
        "prepool-lip-2-mobilenet_v2-skip-1222121",
        "prepool-lip-4-mobilenet_v2-skip-1222121",
        "prepool-lip-6-mobilenet_v2-skip-1222121",
    ),
    2_238_458: (
        "prepool-gaussian_pool-2-mobilenet_v2-skip-1222121",
        "prepool-gaussian_pool-4-mobilenet_v2-skip-1222121",
        "prepool-gaussian_pool-6-mobilenet_v2-skip-1222121",
    ),
    2_249_378: (
        "mobilenet-lip-2222121",
        "mobilenet-lip-4222121",
    ),
    2_254_410: ("prepool-nlp_headfix2_nowin-2-mobilenet_v2-skip-1222121",),
    2_265_986: ("prepool-nlp-2-mobilenet-lip-1222121",),
    2_269_122: ("mobilenet_v2-lip-4222121",),
    2_286_230: (
        "mobilenet_v2-gaussian_pool-2222121",
        "mobilenet_v2-gaussian_pool-4222121",
    ),
    2_347_802: ("mobilenet-nlp_headfix2_nowin-1222121",),
    2_362_458: (
        "mobilenet-nlp_headfix2-2222121",
        "mobilenet-nlp_headfix2-4222121",
        "mobilenet-nlp_headfix2_nowin-2222121",
        "mobilenet-nlp_headfix2_nowin-4222121",
    ),
    2_391_034: (
        "mobilenet-nlp-1222121",
        "mobilenet-nlp_nowin-1222121",
    ),
    2_405_690: (
        "mobilenet-nlp-2222121",
        "mobilenet-nlp-4222121",
        "mobilenet-nlp_nowin-2222121",
        "mobilenet-nlp_nowin-4222121",
    ),
    2_427_258: ("mobilenet_v2-nlpnope_headfix2_nowin-1222121",),
    2_428_954: ("mobilenet_v2-nlpnope_headfix2_nowin-2222121",),
    2_449_210: (
        "mobilenet_v2-nlp-2222121",
        "mobilenet_v2-nlp-4222121",
    ),
    2_498_938: (
        "mobilenet_v2-nlp_headfix2_nowin-1222121",
        "mobilenet_v2-nlp_headfix2_nowin_noexp-1222121",
        "mobilenet_v2-nlpnoexp_headfix2_nowin-1222121",
        "mobilenet_v2-nlpnosigmoid_headfix2_nowin-1222121",
    ),
    2_504_730: (
        "mobilenet_v2-nlp_headfix2_nowin-2222121",
        "mobilenet_v2-nlp_headfix2_nowin-4222121",
        "mobilenet_v2-nlpnoexp_headfix2_nowin-2222121",
        "mobilenet_v2-nlpnosigmoid_headfix2_nowin-2222121",
    ),
    2_570_481: ("mobilenet_v2-dfmnlp_headfix2_nowin_reduced-1222121",),
    2_687_726: ("mobilenetv3_large-skip-121211211111121",),
    2_741_270: ("mobilenetv3_large-gaussian_pool-121211211111121",),
    2_920_542: ("dymobilenetv3_small-skip-22121111211",),
    2_973_646: ("mobilenetv3_large-nlp_headfix2-121211211111121",),
    5_110_602: ("resnext-skip-1222",),
    5_465_866: ("resnext-lip-2222",),
    5_633_418: ("resnext-gaussian_pool-1222",),
    7_413_322: ("resnext-nlp-1222",),
    7_459_146: ("resnext-nlp_headfix2-4222",),
    8_228_846: ("dymobilenetv3_large-nlp-121211211111121",),
    11_151_010: ("dymobilenet-skip-1222121",),
    11_181_642: (
        "prepool-maxp-4-resnet18-skip-1222",
        "prepool-maxp-6-resnet18-skip-1222",
        "prepool-maxp-8-resnet18-skip-1222",
        "resnet18-avgp-2222",
    ),
    11_185_930: (
        "prepool-lip-4-resnet18-skip-1222",
        "prepool-lip-6-resnet18-skip-1222",
        "prepool-lip-8-resnet18-skip-1222",
    ),
    11_188_266: (
        "prepool-gaussian_pool-4-resnet18-skip-1222",
        "prepool-gaussian_pool-6-resnet18-skip-1222",
        "prepool-gaussian_pool-8-resnet18-skip-1222",
    ),
    11_204_474: ("prepool-nlp_reduced-4-resnet18-skip-1222",),
    11_235_530: (
        "prepool-nlp-6-resnet18-skip-1222",
        "prepool-nlp_headfix2-4-resnet18-skip-1222",
        "prepool-nlp_headfix2-6-resnet18-skip-1222",
        "prepool-nlp_headfix2-8-resnet18-skip-1222",
    ),
    11_528_394: ("resnet18_v2-lip-1222",),
    11_532_682: (
        "prepool-lip-4-resnet18-lip-1222",
        "prepool-lip-6-resnet18-lip-1222",
        "prepool-lip-8-resnet18-lip-1222",
        "resnet18-lip-2222",
        "resnet18-lip-4222",
    ),
    11_715_306: (
        "resnet18_v2-gaussian_pool-2222",
        "resnet18_v2-gaussian_pool-4222",
    ),
    11_764_706: ("dymobilenet_v2-nlp_headfix2_nowin_reduced-1222121",),
    13_254_986: (
        "resnet18-nlpnope-1222",
        "resnet18-nlpnope_headfix2_nowin-1222",
    ),
    13_280_202: ("resnet18-nlpnope_headfix2_nowin-2222",),
    13_482_570: (
        "resnet18-nlpnobn1-1222",
        "resnet18-nlpnobn2-1222",
    ),
    13_484_362: (
        "resnet18-nlp_headfix2_nowin_noexp-1222",
        "resnet18-nlpnoexp-1222",
        "resnet18-nlpnoexp_headfix2_nowin-1222",
        "resnet18-nlpnosigmoid-1222",
        "resnet18-nlpnosigmoid_headfix2_nowin-1222",
        "resnet18_v2-nlp-1222",
        "resnet18_v2-nlp_headfix2-1222",
    ),
    13_525_962: (
        "resnet18-nlp-2222",
        "resnet18-nlp_headfix2-2222",
        "resnet18-nlp_headfix2-4222",
        "resnet18-nlpnoexp_headfix2_nowin-2222",
        "resnet18-nlpnosigmoid_headfix2_nowin-2222",
    ),
    13_530_186: (
        "resnet18_v2-nlp_headfix2-2222",
        "resnet18_v2-nlp_headfix2-4222",
    ),
    13_533_514: ("resnet18-nlp_headfix2_nowin_reduced0211-1222",),
    13_538_250: (
        "prepool-nlp_headfix2-6-resnet18-nlp_headfix2-1222",
        "prepool-nlp_headfix2-8-resnet18-nlp_headfix2-1222",
    ),
    16_286_026: ("resnet18-nlp_headfix2_nowin_reduced0842-1222",),
    23_528_522: (
        "prepool-maxp-4-resnet50-skip-1222",
        "prepool-maxp-6-resnet50-skip-1222",
        "prepool-maxp-8-resnet50-skip-1222",
        "resnet50-skip-2222",
        "resnet50-skip-4222",
    ),
    29_110_602: (
        "resnet50-lip-2222",
        "resnet50-lip-4222",
        "resnet50_v2-lip-4222",
    ),
    31_812_938: ("resnet50_v2-gaussian_pool-1222",),
    31_913_162: (
        "resnet50_v2-gaussian_pool-2222",
        "resnet50_v2-gaussian_pool-4222",
    ),
    45_342_146: ("dyresnet18-lip-1222",),
    45_518_210: ("dyresnet18_v2-gaussian_pool-1222",),
    49_543_538: ("dyresnet18-nlp-1222",),
    49_740_146: ("dyresnet18-nlp_headfix2_nowin_reduced-1222",),
    57_512_010: ("resnet50-nlp_headfix2-1222",),
    57_973_322: (
        "resnet50-nlp-2222",
        "resnet50-nlp-4222",
        "resnet50-nlp_headfix2-2222",
        "resnet50-nlp_headfix2-4222",
        "resnet50_v2-nlp-2222",
    ),
    58_298_442: ("resnet50-nlp_headfix2_nowin_reduced-1222",),
    98_894_922: ("dyresnet50-skip-1222",),
    104_410_698: ("dyresnet50-lip-1222",),
}
_FAST_LIMIT = 3_000_000  # the default suite builds one MobileNet per count below this (fast) and the extras below
_FAST_EXTRA = (
    "resnet18_v2-nlp_headfix2-2222",  # block_end: projection shortcut even where channels do not change
    "resnet18-nlp_headfix2_nowin_reduced0842-1222",
    "resnet18-nlpnope-1222",
    "resnet18-nlpnobn1-1222",
    "resnext-nlp_headfix2-4222",
    "prepool-lip-4-resnet18-lip-1222",
    "dymobilenetv3_large-nlp-121211211111121",
)
_COUNT = {name: count for count, names in VERIFIED_PARAMS.items() for name in names}
FAST_VERIFIED = sorted({names[0] for count, names in VERIFIED_PARAMS.items() if count < _FAST_LIMIT} | set(_FAST_EXTRA))


@pytest.mark.parametrize("name", list(SPEC_PARAMS))
def test_param_count_matches_reference_table(name: str) -> None:
    assert n_params(build_model(name, 10)) == SPEC_PARAMS[name]


@pytest.mark.parametrize("name", FAST_VERIFIED)
def test_param_count_matches_official_code(name: str) -> None:
    assert n_params(build_model(name, 10)) == _COUNT[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(_COUNT))
def test_param_count_matches_official_code_all(name: str) -> None:
    assert n_params(build_model(name, 10)) == _COUNT[name]


# ---------------------------------------------------------------------------------------------- official outputs

FIXTURE_ARCHS = (
    "mobilenet_v2-nlp_headfix2-1222121",
    "mobilenet-lip-1222121",
    "mobilenet_v2-gaussian_pool-2222121",
    "prepool-nlp_headfix2_nowin-4-mobilenet_v2-skip-1222121",
)


def _load_fixture(directory, arch: str) -> dict:
    fixture = torch.load(directory / f"model_{arch}.pt", weights_only=True)
    assert fixture["arch"] == arch
    return fixture


@pytest.mark.parametrize("arch", FIXTURE_ARCHS)
def test_official_golden_output(arch: str, official_fixtures_dir) -> None:
    fixture = _load_fixture(official_fixtures_dir, arch)
    model = build_model(arch, fixture["num_classes"])
    load_official_state_dict(model, fixture["state_dict"])
    model.eval()
    with torch.no_grad():
        out = model(fixture["input"])
    torch.testing.assert_close(out, fixture["output"], rtol=0, atol=1e-5)


def test_features_only_loads_official_checkpoint(official_fixtures_dir) -> None:
    arch = "mobilenet_v2-nlp_headfix2-1222121"
    fixture = _load_fixture(official_fixtures_dir, arch)
    full = load_official_state_dict(build_model(arch, 10), fixture["state_dict"]).eval()
    backbone = load_official_state_dict(build_model(arch, 10, features_only=True), fixture["state_dict"]).eval()
    assert not any(k.startswith("classifier.") for k in backbone.state_dict())
    with torch.no_grad():
        feats = backbone(fixture["input"])
        expected = full.forward_features(fixture["input"])
    assert len(feats) == 8
    torch.testing.assert_close(feats[-1], expected, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- maps and strides

FEATURE_SIZES_128 = {  # reference_spec §3, "Feature-map sizes at 128 px"
    "resnet18-{}-1222": [32, 16, 8, 4],
    "resnet18-{}-4222": [8, 4, 2, 1],
    "mobilenet_v2-{}-1222121": [64, 32, 16, 8, 8, 4, 4],
    "mobilenet_v2-{}-4222121": [16, 8, 4, 2, 2, 1, 1],
    "mobilenet_v2-{}-2222121": [32, 16, 8, 4, 4, 2, 2],
}


@pytest.mark.parametrize("pool", ["skip", "lip", "nlp_headfix2"])
@pytest.mark.parametrize("pattern", list(FEATURE_SIZES_128))
def test_feature_map_sizes_at_128(pattern: str, pool: str) -> None:
    names = [pattern.format(pool)]
    if pattern.startswith("mobilenet_v2"):
        names.append(names[0].replace("mobilenet_v2", "mobilenet"))  # stage_start placement: same sizes
    for name in names:
        model = build_model(name, 10, features_only=True)
        sizes = FEATURE_SIZES_128[pattern]
        shapes = feature_shapes(model, 128)[: len(sizes)]
        assert [(h, w) for _, (_, h, w) in shapes] == [(s, s) for s in sizes]


@pytest.mark.parametrize(
    "name",
    ["resnet18-lip-4222", "resnet18_v2-skip-2222", "mobilenet-lip-2222121", "mobilenetv3_small-lip-22121111211"],
)
def test_feature_shapes_match_forward_on_odd_sizes(name: str) -> None:
    """Analytic shapes (pools floor, strided convs ceil) equal the real ones, odd non-square input included."""
    model = build_model(name, 10, features_only=True).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 131, 145))
    assert [tuple(o.shape[1:]) for o in outs] == [shape for _, shape in feature_shapes(model, (131, 145))]


@pytest.mark.parametrize(
    ("name", "total"),
    [
        ("resnet18-skip-1222", 32),
        ("resnet18-lip-2222", 64),
        ("resnet18-nlp-4222", 128),
        ("resnext-lip-2222", 64),
        ("mobilenet_v2-nlp-1222121", 32),
        ("mobilenet-lip-2222121", 64),
        ("mobilenet_v2-skip-4222121", 128),
        ("mobilenetv3_small-skip-22121111211", 32),
        ("mobilenetv3_large-lip-121211211111121", 32),
        ("prepool-nlp-8-resnet18-skip-1222", 64),
        ("prepool-skip-4-mobilenet_v2-skip-1222121", 64),
        ("prepool-skip-4-resnet18-skip-1222", 8),  # B14: no stem downsampling at all
    ],
)
def test_total_stride(name: str, total: int) -> None:
    model = build_model(name, 10, features_only=True)
    assert model.feature_info.all[-1].reduction == total == parse_arch(name).total_stride


# ---------------------------------------------------------------------------------------------- stems (§1.3, B5, B14)


def test_resnet_stem_maxpool_is_2x2_unless_fixed() -> None:
    official = build_model("resnet18-skip-1222", 10)
    assert (official.pool.kernel_size, official.pool.stride, official.pool.padding) == (2, 2, 0)
    fixed = build_model("resnet18-skip-1222", 10, torchvision_stem_pool=True)
    assert (fixed.pool.kernel_size, fixed.pool.stride, fixed.pool.padding) == (3, 2, 1)
    assert fixed.build_options["torchvision_stem_pool"] is True
    resnext = build_model("resnext-skip-1222", 10)
    assert (resnext.pool.kernel_size, resnext.pool.padding) == (3, 1)
    with pytest.raises(ValueError, match="ResNet only"):
        build_model("mobilenet_v2-skip-1222121", 10, torchvision_stem_pool=True)


def test_prepool_skip_on_resnet_faithful_by_default_and_fixable() -> None:
    name = "prepool-skip-4-resnet18-skip-1222"
    official = build_model(name, 10, features_only=True)
    assert official.conv1.stride == (1, 1) and official.pool is None
    assert official.build_options["corrected_prepool_skip"] is False
    for fixed in (
        build_model(name, 10, features_only=True, corrected_prepool_skip=True),
        build_model(name, 10, features_only=True, strict=True),
    ):
        assert fixed.conv1.stride == (4, 4) and fixed.pool is None
        assert fixed.feature_info.all[-1].reduction == 32
        assert fixed.build_options["corrected_prepool_skip"] is True
    mobilenet = build_model("prepool-skip-4-mobilenet_v2-skip-1222121", 10)
    assert mobilenet.conv1[0].stride == (4, 4) and mobilenet.conv1_pool is None


def test_prepool_pools_follow_a_stride_1_stem() -> None:
    resnet = build_model("prepool-nlp_headfix2-4-resnet18-nlp_headfix2-1222", 10)
    assert resnet.conv1.stride == (1, 1) and resnet.pool.stride == 4
    mnv2 = build_model("prepool-nlp_headfix2_nowin-4-mobilenet_v2-skip-1222121", 10)
    assert mnv2.conv1[0].stride == (1, 1) and mnv2.conv1_pool.stride == 4 and mnv2.conv1_pool.win_norm  # nowin ignored
    mnv3 = build_model("prepool-lip-4-mobilenetv3_small-skip-22121111211", 10)
    assert mnv3.conv1.stride == (1, 1) and mnv3.conv1_pool is not None


# ---------------------------------------------------------------------------------------------- placements (B3, B4)


def test_placement_override_gives_the_official_layout_of_the_other_file() -> None:
    pairs = [
        ("resnet18-nlp_headfix2-1222", "block_end", "resnet18_v2-nlp_headfix2-1222"),
        ("resnet50_v2-lip-2222", "stage_end", "resnet50-lip-2222"),
        ("mobilenet_v2-nlp_headfix2-1222121", "stage_start", "mobilenet-nlp_headfix2-1222121"),
        ("mobilenet-lip-1222121", "after_projection", "mobilenet_v2-lip-1222121"),
    ]
    for name, placement, twin in pairs:
        model, reference = build_model(name, 10, placement=placement), build_model(twin, 10)
        assert model.placement == reference.placement == placement
        assert model.arch.name == name and f"placement={placement}" in model.pretty_name
        assert model.build_options["placement"] == placement
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        assert shapes == {k: v.shape for k, v in reference.state_dict().items()}


def test_placement_keys_match_the_official_files() -> None:
    keys = {
        "resnet18-lip-1222": "layer2.pool.logit.pool_weight.logit.0.weight",
        "resnet18_v2-lip-1222": "layer2.0.pooling.logit.pool_weight.logit.0.weight",
        "mobilenet-lip-1222121": "features.1.0.logit.pool_weight.logit.0.weight",
        "mobilenet_v2-lip-1222121": "features.1.0.pooling.logit.pool_weight.logit.0.weight",
        "mobilenetv3_small-lip-22121111211": "bneck.0.pooling.logit.pool_weight.logit.0.weight",
    }
    for name, key in keys.items():
        assert key in build_model(name, 10).state_dict(), name
    assert "features.1.1.conv.0.weight" in build_model("mobilenet-lip-1222121", 10).state_dict()


def test_stage_end_runs_the_whole_stage_at_full_resolution() -> None:
    """B4: with stage_end the second block of layer2 sees the pre-pool map; with block_end the pooled one."""
    seen = {}
    for placement in ("stage_end", "block_end"):
        model = build_model("resnet18-maxp-1222", 10, placement=placement).eval()
        model.layer2[1].register_forward_hook(lambda _m, _i, out, p=placement: seen.__setitem__(p, out.shape[-1]))
        with torch.no_grad():
            model(torch.randn(1, 3, 64, 64))
    assert seen == {"stage_end": 16, "block_end": 8}


def test_invalid_placement_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="after_projection"):
        build_model("mobilenetv3_small-lip-22121111211", 10, placement="stage_start")
    with pytest.raises(ValueError, match="stage_end, block_end"):
        build_model("resnet18-lip-1222", 10, placement="after_projection")


def test_bad_arch_and_options() -> None:
    with pytest.raises(ArchError):
        build_model("resnet18-nlp-122", 10)
    with pytest.raises(TypeError, match="architecture name"):
        build_sap_model(42, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"valid indices 0\.\.3"):
        build_model("resnet18-skip-1222", 10, features_only=True, out_indices=(4,))
    assert build_sap_model(parse_arch("resnet18-skip-1222"), 10, strict=True).arch.strict


# ---------------------------------------------------------------------------------------------- input sizes


def test_too_small_input_raises_a_clear_error() -> None:
    assert min_input_size("resnet18-lip-4222") == 127  # 127 → 64 → 32 → 8 → 4 → 2 → 1
    model = build_model("resnet18-lip-4222", 10).eval()
    with pytest.raises(InputSizeError, match=r"resnet18-lip-4222: input size 126x126 is too small.*at least 127"):
        model(torch.zeros(1, 3, 126, 126))
    with pytest.raises(InputSizeError, match="127x100"):
        model(torch.zeros(1, 3, 127, 100))
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 127, 127)).shape == (1, 10)
    with pytest.raises(ValueError, match="64x64 is too small"):
        build_model("mobilenet_v2-lip-4222121", 10, image_size=64)
    with pytest.raises(InputSizeError, match="too small"):
        feature_shapes(model, 100)


def test_position_table_cap_is_reported_as_maximum() -> None:
    """B11: 256 positions per axis; the learned table bounds the input size of NLP/attnpool models."""
    assert input_size_range("resnet18-skip-1222") == (3, None)
    assert input_size_range("resnet18-nlp-1222") == (31, 1026)  # layer2 pools a stride-4 map: ⌊⌈n/2⌉/2⌋ ≤ 256
    assert input_size_range("resnet18-attnpool-1222") == (31, 1026)
    assert max_input_size("resnet18-nlpnope-1222") is None  # no position table
    assert max_input_size("mobilenet_v2-nlp_headfix2-1222121") == 512
    assert max_input_size("mobilenet_v2-nlp_headfix2_nowin_reduced-1222121") == 2054  # ⌊⌈n/2⌉/4⌋ ≤ 256 (patch 4)
    model = build_model("mobilenet_v2-nlp_headfix2-1222121", 10)
    with pytest.raises(InputSizeError, match=r"too large.*position table.*between 31 and 512"):
        model(torch.zeros(1, 3, 514, 64))  # rejected before any computation
    with pytest.raises(ValueError, match="position"):  # the layer itself has the limit the plan assumes
        build_model("resnet18-nlp-1222", 10).layer4.pool(torch.zeros(1, 512, 257, 2))


# ---------------------------------------------------------------------------------------------- init and conv types


def _std(t: torch.Tensor) -> float:
    return t.detach().float().std().item()


def test_resnet_init_reaches_pool_convs() -> None:
    model = build_model("resnet18-nlp-1222", 10)
    restore = model.layer4.pool.logit.pool_weight.restore[0]  # 1x1, 512 → 512
    assert _std(restore.weight) == pytest.approx(math.sqrt(2 / 512), rel=0.05)
    assert _std(model.layer4[0].conv1.weight) == pytest.approx(math.sqrt(2 / (9 * 512)), rel=0.05)
    bn = model.layer4.pool.logit.pool_weight.restore[1]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_mobilenetv2_init_includes_attention_projections() -> None:
    model = build_model("mobilenet_v2-nlp_headfix2-1222121", 10)
    attn = model.features[3][0].pooling.logit.pool_weight.multihead_attn  # E = 64
    assert _std(attn.out_proj.weight) == pytest.approx(0.01, rel=0.1) and torch.all(attn.out_proj.bias == 0)
    assert _std(attn.in_proj_weight) > 0.05  # keeps its xavier init
    patch = model.features[3][0].pooling.logit.pool_weight.downsample[0]  # 1x1, 64 → 64, bias zeroed
    assert _std(patch.weight) == pytest.approx(math.sqrt(2 / 64), rel=0.05) and torch.all(patch.bias == 0)
    assert _std(model.classifier.weight) == pytest.approx(0.01, rel=0.1) and torch.all(model.classifier.bias == 0)


def test_mobilenetv3_init() -> None:
    model = build_model("mobilenetv3_large-skip-121211211111121", 10)
    assert _std(model.linear3.weight) == pytest.approx(0.001, rel=0.05) and torch.all(model.linear3.bias == 0)
    assert _std(model.conv2.weight) == pytest.approx(math.sqrt(2 / 960), rel=0.05)


def test_dynamic_conv_where_the_official_code_uses_it() -> None:
    model = build_model("dyresnet18-nlp-1222", 10)
    assert isinstance(model.conv1, DynamicConv2d) and isinstance(model.layer2[0].downsample[0], DynamicConv2d)
    assert isinstance(model.layer2.pool.logit.pool_weight.downsample[0], DynamicConv2d)
    lip = build_model("dyresnet18-lip-1222", 10).layer2.pool.logit.pool_weight.logit[0]
    assert type(lip) is nn.Conv2d  # baseline pools keep plain convs
    v3 = build_model("dymobilenetv3_small-skip-22121111211", 10)
    assert isinstance(v3.conv1, DynamicConv2d) and isinstance(v3.bneck[0].conv2, DynamicConv2d)
    assert type(v3.bneck[0].se.se[1]) is nn.Conv2d and type(v3.conv2) is nn.Conv2d
    assert isinstance(build_model("dymobilenet_v2-skip-1222121", 10).conv2[0], DynamicConv2d)
    with torch.no_grad():  # B12 (crash of dynamic conv after NLP) does not occur
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# ---------------------------------------------------------------------------------------------- forward modes


@pytest.mark.parametrize(
    "name",
    [
        "resnet18-nlp_headfix2-1222",
        "resnet18_v2-lip-1222",
        "resnext-nlp_headfix2-1222",
        "mobilenet-nlp_headfix2_nowin_reduced-1222121",
        "mobilenetv3_small-nlp-22121111211",
    ],
)
def test_train_step_runs(name: str) -> None:
    model = build_model(name, 10).train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_features_only_resnet() -> None:
    model = build_model("resnet18-lip-1222", 10, features_only=True, out_indices=(1, 3)).eval()
    assert not hasattr(model, "fc")
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 128, 8, 8), (2, 512, 2, 2)]
    assert model.feature_info.channels() == [128, 512] and model.feature_info.reduction() == [8, 32]
    assert model.feature_info.module_name() == ["layer2", "layer4"]


def test_features_only_mobilenets() -> None:
    mnv2 = build_model("mobilenet_v2-lip-1222121", 10, features_only=True).eval()
    assert mnv2.feature_info.channels() == [16, 24, 32, 64, 96, 160, 320, 1280]
    assert mnv2.feature_info.reduction() == [2, 4, 8, 16, 16, 32, 32, 32]
    with torch.no_grad():
        outs = mnv2(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == mnv2.feature_info.channels()
    ssd = build_model("mobilenet_v2-skip-1222121", 10, features_only=True, out_indices=(4, 7))  # reference_spec §4.2
    assert ssd.feature_info.channels() == [96, 1280] and ssd.feature_info.reduction() == [16, 32]
    yolo = build_model("mobilenet-skip-1222121", 10, features_only=True, out_indices=[2, 4, 6])
    assert yolo.feature_info.channels() == [32, 96, 320] and yolo.feature_info.reduction() == [8, 16, 32]
    mnv3 = build_model("mobilenetv3_small-skip-22121111211", 10, features_only=True, out_indices=(-2, -1)).eval()
    with torch.no_grad():
        outs = mnv3(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape[1:]) for o in outs] == [(96, 2, 2), (576, 2, 2)]


# ---------------------------------------------------------------------------------------------- repro list


def test_repro_list() -> None:
    from typer.testing import CliRunner

    from repro.arch import ARCH_BACKBONES
    from repro.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["list", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [b["backbone"] for b in data["backbones"]] == list(ARCH_BACKBONES)
    assert {"nlp", "lip", "skip"} <= set(data["pools"])
    assert {p["placement"] for p in data["placements"]} == {"stage_end", "block_end", "stage_start", "after_projection"}
    table = runner.invoke(app, ["list"])
    assert table.exit_code == 0 and "mobilenetv3_large" in table.stdout and "after_projection" in table.stdout
    assert runner.invoke(app, ["list", "--format", "xml"]).exit_code != 0


def test_a_user_pool_goes_into_a_sap_backbone_without_the_grammar():
    """``pool_layer`` (a class, a callable or a registered name) replaces the named pools at the same places."""
    import torch
    from torch import nn

    class HalfPool(nn.Module):
        def __init__(self, channels: int, stride: int) -> None:
            super().__init__()
            self.pool = nn.AvgPool2d(stride)

        def forward(self, x):
            return self.pool(x)

    model = build_sap_model("resnet18-maxp-2222", 10, pool_layer=HalfPool)
    assert sum(isinstance(m, HalfPool) for m in model.modules()) == 4
    assert model.build_options["pool_layer"].endswith("HalfPool")
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    by_callable = build_sap_model("mobilenet_v2-maxp-2222121", 10, pool_layer=lambda c, s: nn.AvgPool2d(s))
    assert sum(isinstance(m, nn.AvgPool2d) for m in by_callable.modules()) == 5
    by_name = build_sap_model("resnet18-maxp-2222", 10, pool_layer="avgp")
    assert not any(isinstance(m, nn.MaxPool2d) for n, m in by_name.named_modules() if n.startswith("layer"))
