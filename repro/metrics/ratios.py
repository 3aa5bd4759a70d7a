"""Memory ratios of aggressive down-sampling (SAP abstract: "up to 22x"): every architecture whose first stage
down-samples more than the standard network (a first stride above the standard one, or a prepool) against (a) the
same architecture with the standard first stride and no prepool and (b) the standard strided-conv network."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from repro.arch import STANDARD_STRIDES, ArchError, parse_arch
from repro.records.profile import DEFAULT_CONVENTION, ProfileRow

__all__ = ["DownsamplingRatio", "aggressive_baselines", "downsampling_ratios"]


def aggressive_baselines(name: str) -> tuple[str, str] | None:
    """``(same arch at the standard first stride without prepool, <backbone>-skip-<standard strides>)`` for an
    aggressive-downsampling architecture; ``None`` for any other name."""
    try:
        arch = parse_arch(name)
    except ArchError:
        return None
    standard = STANDARD_STRIDES[arch.backbone]
    digits = "".join(str(s) for s in arch.strides)
    if arch.prepool is None and arch.strides[0] <= int(standard[0]):
        return None
    net = ("dy" if arch.dynamic else "") + arch.backbone
    return f"{net}-{arch.pool}-{standard[0]}{digits[1:]}", f"{net}-skip-{standard}"


@dataclass(frozen=True)
class DownsamplingRatio:
    """Peak memory of ``arch`` against its two baselines at one input size, under one convention."""

    arch: str
    image_size: str
    convention: str
    peak_bytes: int
    same_pool_baseline: str
    same_pool_bytes: int | None
    standard_baseline: str
    standard_bytes: int | None

    @property
    def ratio_vs_same_pool(self) -> float | None:
        return None if not self.same_pool_bytes or not self.peak_bytes else self.same_pool_bytes / self.peak_bytes

    @property
    def ratio_vs_standard(self) -> float | None:
        return None if not self.standard_bytes or not self.peak_bytes else self.standard_bytes / self.peak_bytes


def downsampling_ratios(rows: Iterable[ProfileRow], convention: str = DEFAULT_CONVENTION) -> list[DownsamplingRatio]:
    """The ratio of every aggressive architecture among ``rows`` whose peak under ``convention`` was profiled, sorted
    by (image size, arch); a baseline missing from ``rows`` gives ``None`` bytes."""
    rows = [r for r in rows if r.peak(convention) is not None]
    lookup = {(r.model, r.image_size): r.peak(convention) for r in rows}
    out = []
    for row in rows:
        baselines = aggressive_baselines(row.model)
        if baselines is None:
            continue
        same, standard = baselines
        out.append(
            DownsamplingRatio(
                row.model,
                row.image_size,
                convention,
                int(row.peak(convention) or 0),
                same,
                lookup.get((same, row.image_size)),
                standard,
                lookup.get((standard, row.image_size)),
            )
        )
    unique = {(r.arch, r.image_size): r for r in out}  # entries of several tables can share an architecture
    return sorted(unique.values(), key=lambda r: (_size_key(r.image_size), r.arch))


def _size_key(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("x"))
