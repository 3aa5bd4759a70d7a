"""The zoo as a listing (`repro list`): grammar backbones, pools, placements and registered models."""

from __future__ import annotations

import json

from repro.arch import ARCH_BACKBONES, STAGE_COUNTS, STANDARD_STRIDES, parse_arch
from repro.layers import list_pools
from repro.models.registry import list_models, model_defaults, model_family
from repro.models.sap_common import PLACEMENT_HELP, PLACEMENTS

__all__ = ["describe_zoo", "format_zoo"]


def describe_zoo() -> dict[str, object]:
    """Backbones, pools, placements and registered models, as plain data."""
    family = {b: parse_arch(f"{b}-skip-{STANDARD_STRIDES[b]}").family for b in ARCH_BACKBONES}
    backbones = [
        {
            "backbone": b,
            "family": family[b],
            "default_placement": parse_arch(f"{b}-skip-{STANDARD_STRIDES[b]}").placement,
            "placements": list(PLACEMENTS[family[b]]),
            "stages": STAGE_COUNTS[b],
            "standard_strides": STANDARD_STRIDES[b],
            "example": f"{b}-nlp_headfix2-{STANDARD_STRIDES[b]}",
        }
        for b in ARCH_BACKBONES
    ]
    models = []
    for m in list_models():
        defaults = model_defaults(m)
        size = defaults.image_size
        models.append(
            {
                "model": m,
                "family": model_family(m),
                "num_classes": defaults.num_classes,
                "image_size": size if isinstance(size, int) else f"{size[0]}x{size[1]}",
                "dtype": defaults.dtype,
            }
        )
    return {
        "backbones": backbones,
        "pools": list_pools(),
        "placements": [{"placement": k, "meaning": v} for k, v in PLACEMENT_HELP.items()],
        "models": models,
    }


def format_zoo(fmt: str = "table") -> str:
    """:func:`describe_zoo` as JSON (``fmt='json'``) or as plain-text tables (``fmt='table'``)."""
    zoo = describe_zoo()
    if fmt == "json":
        return json.dumps(zoo, indent=2)
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; choose 'table' or 'json'")
    from tabulate import tabulate

    backbones = [{**b, "placements": ", ".join(b["placements"])} for b in zoo["backbones"]]
    parts = [
        "Backbones (name grammar: [prepool-<POOL>-<K>-][dy]<BACKBONE>-<POOL>-<STRIDES>)",
        tabulate(backbones, headers="keys"),
        "",
        "Pools: " + ", ".join(zoo["pools"]),
        "",
        "Placements",
        tabulate(zoo["placements"], headers="keys"),
        "",
        "Registered models",
        tabulate(zoo["models"], headers="keys") if zoo["models"] else "(none)",
    ]
    return "\n".join(parts)
