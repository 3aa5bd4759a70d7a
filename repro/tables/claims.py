"""The abstracts' claims, evaluated from our results where they can be, each with its computation written out.

A claim cell (``metric: claim``) names its computation in ``claim:``; :data:`CLAIMS` maps names to functions
``fn(results, cell) -> ClaimResult``. Entries take part through their ``claim_role`` in ``pipelines/*.yaml``
(e.g. ``{claim: sap_imagenet, variant: '2222121', method: nlp}``), so what a claim averages over is visible in one
place. A memory claim is judged under the cell's ``convention`` (its computation shows every convention).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from repro.records.entries import ClaimRole, Entry
from repro.records.profile import DEFAULT_CONVENTION, PROFILED_CONVENTIONS
from repro.records.reported import PaperTable, ReportedCell
from repro.records.verdict import CellVerdict
from repro.tables.results import Results
from repro.utils.registry import Registry


@dataclass(frozen=True)
class ClaimResult:
    value: float | None
    comparable: bool
    computation: str
    reason: str | None = None


ClaimFn = Callable[[Results, ReportedCell], ClaimResult]
SAP_METHOD = "nlp"  # the self-attentive pool (and its variants nlp_*)
CLAIMS: Registry[ClaimFn] = Registry("claim")


def _role_entries(results: Results, claim: str) -> list[tuple[Entry, ClaimRole]]:
    return [(e, r) for e in results.entries.values() for r in e.claim_roles if r.claim == claim]


def _accuracy(results: Results, entry_id: str) -> tuple[float | None, str | None]:
    record = results.metrics.get(entry_id)
    if record is None:
        return None, None
    return record.value("accuracy", "best"), "full" if record.is_comparable else record.profile


def _is_sap(method: str) -> bool:
    return method == SAP_METHOD or method.startswith(SAP_METHOD + "_")


def _gains_by_variant(results: Results, claim: str) -> tuple[dict[str, float], list[str], list[str], set[str]]:
    """Per variant: best SAP accuracy minus best accuracy of the other pools (best-epoch accuracy, %)."""
    by_variant: dict[str, dict[str, float]] = {}
    missing: list[str] = []
    profiles: set[str] = set()
    for entry, role in _role_entries(results, claim):
        acc, profile = _accuracy(results, entry.id)
        if acc is None:
            missing.append(entry.id)
            continue
        profiles.add(profile or "?")
        by_variant.setdefault(str(role.variant), {})[str(role.method)] = acc
    gains: dict[str, float] = {}
    lines: list[str] = []
    for variant, accs in sorted(by_variant.items()):
        sap = {m: a for m, a in accs.items() if _is_sap(m)}
        other = {m: a for m, a in accs.items() if not _is_sap(m)}
        if not sap or not other:
            continue
        ms, mo = max(sap, key=sap.get), max(other, key=other.get)
        gains[variant] = sap[ms] - other[mo]
        lines.append(f"{variant}: {ms} {sap[ms]:.2f} - {mo} {other[mo]:.2f} = {gains[variant]:+.2f} pp")
    return gains, lines, missing, profiles


def _not_run(what: str, missing: list[str]) -> ClaimResult:
    return ClaimResult(
        None, False, what, f"not run: {len(missing)} entries without results ({', '.join(missing[:4])}...)"
    )


@CLAIMS.register("sap_imagenet_avg_gain")
def sap_imagenet_avg_gain(results: Results, cell: ReportedCell) -> ClaimResult:
    """Mean over MobileNetV2 variants of (best SAP top-1 - best other pool top-1), ImageNet."""
    what = "mean over variants of (best SAP acc - best other pool acc)"
    gains, lines, missing, profiles = _gains_by_variant(results, "sap_imagenet")
    if missing or not gains:
        return _not_run(what, missing)
    value = sum(gains.values()) / len(gains)
    return ClaimResult(value, profiles == {"full"}, "; ".join(lines) + f"; mean = {value:+.2f} pp")


@CLAIMS.register("sap_iso_memory_gain")
def sap_iso_memory_gain(results: Results, cell: ReportedCell) -> ClaimResult:
    """Largest gain of SAP over the best other pool among configurations with the same down-sampling schedule."""
    what = "max over iso-memory variants of (best SAP acc - best other pool acc)"
    gains, lines, missing, profiles = _gains_by_variant(results, "sap_imagenet")
    if missing or not gains:
        return _not_run(what, missing)
    best = max(gains, key=gains.get)
    text = "; ".join(lines) + (
        f"; max = {gains[best]:+.2f} pp at {best} (iso-memory read as: the same down-sampling schedule; the pools' "
        "own weight nets may differ in memory, see results/profile.csv)"
    )
    return ClaimResult(gains[best], profiles == {"full"}, text)


def _memory_pairs(results: Results, convention: str) -> list[tuple[float, str, str, int, int]]:
    pairs = []
    for entry, role in _role_entries(results, "sap_memory"):
        base = results.profile.get(role.baseline or "")
        row = results.profile.get(entry.id)
        m_base = None if base is None else base.peak(convention)
        m_var = None if row is None else row.peak(convention)
        if m_base and m_var:
            pairs.append((m_base / m_var, entry.id, role.baseline or "", m_base, m_var))
    return pairs


@CLAIMS.register("sap_memory_reduction")
def sap_memory_reduction(results: Results, cell: ReportedCell) -> ClaimResult:
    """Largest ratio of peak memory (fp32) of the standard-stride baseline to an aggressive SAP variant, under the
    cell's convention; the computation lists the largest ratio under every convention."""
    convention = cell.convention or DEFAULT_CONVENTION
    best = {c: max(_memory_pairs(results, c), default=None) for c in PROFILED_CONVENTIONS}
    if best.get(convention) is None:
        return ClaimResult(
            None,
            True,
            "max over SAP variants of peak(baseline) / peak(variant)",
            f"not run: no profiled (variant, baseline) pair under {convention}",
        )
    ratio, var, base, mb, mv = best[convention]
    text = (
        f"{convention}: {base} {mb / 2**20:.3f} MB / {var} {mv / 2**20:.3f} MB = {ratio:.2f}x "
        f"(max over {len(_memory_pairs(results, convention))} SAP variants, fp32); every convention: "
        + ", ".join(f"{c} {b[0]:.2f}x" for c, b in best.items() if b is not None)
    )
    return ClaimResult(ratio, True, text)


@CLAIMS.register("condensation_bandwidth_saving")
def condensation_bandwidth_saving(results: Results, cell: ReportedCell) -> ClaimResult:
    """1 - feature-map bytes written with virtual maps / without (cross-channel pooling before storing)."""
    return ClaimResult(
        None,
        True,
        "1 - bytes(with CCP) / bytes(without)",
        "not run: the profile has no feature-map traffic column (bytes written per inference)",
    )


def _not_computable(reason: str) -> ClaimFn:
    def fn(results: Results, cell: ReportedCell) -> ClaimResult:
        return ClaimResult(None, True, "—", f"not run: {reason}")

    return fn


CLAIMS.add("condensation_hardware_memory", _not_computable("hardware memory cost is not modelled by this suite"))
CLAIMS.add("condensation_hardware_gates", _not_computable("hardware gate count is not modelled by this suite"))


def _tpr_gain(results: Results, claim: str, networks: str) -> ClaimResult:
    """TPR at 0.1 false positives per image of Condensation-Net minus Tiny-YOLOv2's (pp), over the pair of entries
    with ``claim_role: {claim: <claim>, method: plain | ccp}``."""
    what = "TPR@0.1 FPPI (ccp) - TPR@0.1 FPPI (plain), in pp"
    tpr: dict[str, float] = {}
    missing: list[str] = []
    profiles: set[str] = set()
    for entry, role in _role_entries(results, claim):
        record = results.metrics.get(entry.id)
        value = None if record is None else record.value("map", "tpr_at_fpr")
        if value is None:
            missing.append(entry.id)
            continue
        tpr[str(role.method)] = 100.0 * value
        profiles.add("full" if record.is_comparable else record.profile)
    if missing:
        return _not_run(what, missing)
    if set(tpr) != {"plain", "ccp"}:
        return ClaimResult(None, False, what, f"not run: needs one {claim!r} entry of each method, plain and ccp")
    gain = tpr["ccp"] - tpr["plain"]
    text = f"ccp {tpr['ccp']:.2f} % - plain {tpr['plain']:.2f} % = {gain:+.2f} pp ({networks} networks)"
    return ClaimResult(gain, profiles == {"full"}, text)


@CLAIMS.register("condensation_face_detection_gain")
def condensation_face_detection_gain(results: Results, cell: ReportedCell) -> ClaimResult:
    """The full-precision pair (``claim_role.claim: condensation``)."""
    return _tpr_gain(results, "condensation", "full-precision")


@CLAIMS.register("condensation_face_detection_gain_int8")
def condensation_face_detection_gain_int8(results: Results, cell: ReportedCell) -> ClaimResult:
    """The pair trained with int8 fake quantisation (``claim_role.claim: condensation_int8``)."""
    return _tpr_gain(results, "condensation_int8", "int8 fake-quantised")


def join_claim(table: PaperTable, cell: ReportedCell, results: Results) -> CellVerdict:
    if cell.claim not in CLAIMS:
        reason = f"unknown claim {cell.claim!r}; known: {', '.join(CLAIMS.names())}"
        return CellVerdict.of(table.key, cell, None, comparable=False, reason=reason)
    res = CLAIMS.get(cell.claim)(results, cell)
    return CellVerdict.of(
        table.key,
        cell,
        res.value,
        comparable=res.comparable,
        source_profile="profile" if res.comparable else "smoke",
        reason=res.reason,
        computation=res.computation,
    )
