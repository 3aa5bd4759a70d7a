"""The abstracts' claims, evaluated from our results where they can be, each with its computation written out.

A claim cell (``metric: claim``) names its computation in ``claim:``; :data:`CLAIMS` maps names to functions
``fn(results) -> ClaimResult``. Entries take part through their ``claim_role`` field in ``pipelines/*.yaml``
(a mapping or a list of them, e.g. ``{claim: sap_imagenet, variant: 2222121, method: nlp}``), so what a claim
averages over is visible in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from repro.tables.join import JoinedCell, Results
from repro.tables.schema import PaperTable, ReportedCell
from repro.tables.verdict import decide

SAP_METHOD = "nlp"  # the self-attentive pool (and its variants nlp_*)


@dataclass(frozen=True)
class ClaimResult:
    value: float | None
    comparable: bool
    computation: str
    reason: str | None = None
    sources: tuple[str, ...] = ()


def _role_entries(results: Results, claim: str) -> list[tuple[Any, dict[str, Any]]]:
    out = []
    for entry in (results.entries or {}).values():
        roles = entry.raw.get("claim_role") or []
        for role in [roles] if isinstance(roles, dict) else roles:
            if role.get("claim") == claim:
                out.append((entry, role))
    return out


def _accuracy(results: Results, entry_id: str) -> tuple[float | None, str | None]:
    rec = results.metrics.get(entry_id)
    if rec is None or rec.get("status") != "ok":
        return None, None
    return float(rec["accuracy"]["best"]), rec.get("profile")


def _is_sap(method: str) -> bool:
    return method == SAP_METHOD or method.startswith(SAP_METHOD + "_")


def _gains_by_variant(results: Results, claim: str) -> tuple[dict[str, float], list[str], list[str], set[str]]:
    """Per variant: best SAP accuracy minus best accuracy of the other pools (best-epoch accuracy, %)."""
    by_variant: dict[str, dict[str, float]] = {}
    missing: list[str] = []
    lines: list[str] = []
    profiles: set[str] = set()
    for entry, role in _role_entries(results, claim):
        acc, profile = _accuracy(results, entry.id)
        if acc is None:
            missing.append(entry.id)
            continue
        profiles.add(profile or "?")
        by_variant.setdefault(str(role["variant"]), {})[str(role["method"])] = acc
    gains: dict[str, float] = {}
    for variant, accs in sorted(by_variant.items()):
        sap = {m: a for m, a in accs.items() if _is_sap(m)}
        other = {m: a for m, a in accs.items() if not _is_sap(m)}
        if not sap or not other:
            continue
        ms, mo = max(sap, key=sap.get), max(other, key=other.get)
        gains[variant] = sap[ms] - other[mo]
        lines.append(f"{variant}: {ms} {sap[ms]:.2f} - {mo} {other[mo]:.2f} = {gains[variant]:+.2f} pp")
    return gains, lines, missing, profiles


def sap_imagenet_avg_gain(results: Results) -> ClaimResult:
    """Mean over MobileNetV2 variants of (best SAP top-1 - best other pool top-1), ImageNet."""
    gains, lines, missing, profiles = _gains_by_variant(results, "sap_imagenet")
    if missing or not gains:
        return ClaimResult(
            None,
            False,
            "mean over variants of (best SAP acc - best other pool acc)",
            f"not run: {len(missing)} entries without results ({', '.join(missing[:4])}...)",
        )
    value = sum(gains.values()) / len(gains)
    text = "; ".join(lines) + f"; mean = {value:+.2f} pp"
    return ClaimResult(value, profiles == {"full"}, text)


def sap_iso_memory_gain(results: Results) -> ClaimResult:
    """Largest gain of SAP over the best other pool among configurations with the same down-sampling schedule."""
    gains, lines, missing, profiles = _gains_by_variant(results, "sap_imagenet")
    if missing or not gains:
        return ClaimResult(
            None,
            False,
            "max over iso-memory variants of (best SAP acc - best other pool acc)",
            f"not run: {len(missing)} entries without results ({', '.join(missing[:4])}...)",
        )
    best = max(gains, key=gains.get)
    text = "; ".join(lines) + (
        f"; max = {gains[best]:+.2f} pp at {best} (iso-memory read as: the same down-sampling schedule; the pools' "
        "own weight nets may differ in memory, see results/profile.csv)"
    )
    return ClaimResult(gains[best], profiles == {"full"}, text)


def _memory(results: Results, entry_id: str) -> float | None:
    row = results.profile.get(entry_id) or {}
    for name in ("peak_memory_layerwise_bytes", "peak_layerwise_bytes", "layerwise_bytes", "peak_memory_bytes"):
        if isinstance(row.get(name), (int, float)):
            return float(row[name])
    return None


def sap_memory_reduction(results: Results) -> ClaimResult:
    """Largest ratio of peak memory (layerwise, fp32) of a standard-stride baseline to an aggressive SAP variant."""
    pairs = []
    missing = []
    for entry, role in _role_entries(results, "sap_memory"):
        base = role.get("baseline")
        if not base:
            continue
        m_base, m_var = _memory(results, base), _memory(results, entry.id)
        if m_base is None or m_var is None:
            missing.append(entry.id if m_var is None else base)
            continue
        pairs.append((m_base / m_var, entry.id, base, m_base, m_var))
    if not pairs:
        return ClaimResult(
            None,
            True,
            "max over SAP variants of peak(baseline) / peak(variant)",
            "not run: no profiled (variant, baseline) pair" + (f"; missing {missing[:4]}" if missing else ""),
        )
    ratio, var, base, mb, mv = max(pairs)
    text = (
        f"max over {len(pairs)} SAP variants of peak(baseline)/peak(variant), layerwise fp32: "
        f"{base} {mb / 2**20:.3f} MB / {var} {mv / 2**20:.3f} MB = {ratio:.1f}x"
    )
    return ClaimResult(ratio, True, text, sources=(var, base))


def condensation_bandwidth_saving(results: Results) -> ClaimResult:
    """1 - feature-map bytes written with virtual maps / without (cross-channel pooling before storing)."""
    with_ccp = [e for e, r in _role_entries(results, "condensation") if r.get("method") == "ccp"]
    without = [e for e, r in _role_entries(results, "condensation") if r.get("method") == "plain"]
    cols = ("feature_map_bytes", "activation_bytes_written", "io_sum_total_bytes")
    if not with_ccp or not without:
        return ClaimResult(None, True, "1 - bytes(with CCP) / bytes(without)", "not run: entries missing")
    rows = [results.profile.get(with_ccp[0].id) or {}, results.profile.get(without[0].id) or {}]
    for col in cols:
        if all(isinstance(r.get(col), (int, float)) for r in rows) and rows[1][col]:
            value = 100.0 * (1.0 - rows[0][col] / rows[1][col])
            text = (
                f"1 - {col}({with_ccp[0].id}) / {col}({without[0].id}) = 1 - {rows[0][col]:.0f} / "
                f"{rows[1][col]:.0f} = {value:.1f} %"
            )
            return ClaimResult(value, True, text)
    return ClaimResult(
        None,
        True,
        "1 - bytes(with CCP) / bytes(without)",
        f"not run: the profile has none of the feature-map traffic columns {cols}",
    )


def not_computable(reason: str) -> Callable[[Results], ClaimResult]:
    def fn(results: Results) -> ClaimResult:
        return ClaimResult(None, True, "—", f"not run: {reason}")

    return fn


CLAIMS: dict[str, Callable[[Results], ClaimResult]] = {
    "sap_imagenet_avg_gain": sap_imagenet_avg_gain,
    "sap_iso_memory_gain": sap_iso_memory_gain,
    "sap_memory_reduction": sap_memory_reduction,
    "condensation_bandwidth_saving": condensation_bandwidth_saving,
    "condensation_hardware_memory": not_computable("hardware memory cost is not modelled by this suite"),
    "condensation_hardware_gates": not_computable("hardware gate count is not modelled by this suite"),
    "condensation_face_detection_gain": not_computable(
        "face-detection training (Tiny-YOLOv2 vs Condensation-Net, TPR at FPR 0.1) is not part of this pipeline yet"
    ),
}


def join_claim(table: PaperTable, cell: ReportedCell, results: Results) -> JoinedCell:
    fn = CLAIMS.get(cell.claim or "")
    if fn is None:
        return JoinedCell(
            table.key,
            cell,
            None,
            decide(cell, None, comparable=False),
            None,
            None,
            f"unknown claim {cell.claim!r}; known: {sorted(CLAIMS)}",
        )
    res = fn(results)
    verdict = decide(cell, res.value, comparable=res.comparable)
    profile = None if res.value is None else ("profile" if res.comparable else "smoke")
    return JoinedCell(table.key, cell, res.value, verdict, profile, None, res.reason, res.computation)
