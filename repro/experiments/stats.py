"""Paired comparison of two methods over the same seeds: is the difference larger than the seed spread?

Seed ``s`` of method A and seed ``s`` of method B share the data, the batch order and the seed of the
initialisation, so the per-seed differences are paired. The test is the two-sided paired t-test
(``scipy.stats.ttest_rel``); with ``n`` seeds it has ``n - 1`` degrees of freedom. The sign test is reported beside
it (with 3 seeds its smallest two-sided p-value is 0.25, so it can never reject at 5 %).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["ALPHA", "mean_std", "paired_comparison"]

ALPHA = 0.05


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``None`` for a single value)."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else None


def paired_comparison(a: Mapping[str, float], b: Mapping[str, float], *, alpha: float = ALPHA) -> dict[str, Any]:
    """Compare per-seed accuracies ``a`` and ``b`` (mappings seed -> accuracy) on their common seeds.

    Returns the mean and standard deviation of ``a - b``, the paired t statistic and p-value, the sign-test p-value
    and ``significant`` (t-test p < ``alpha``). Identical differences on every seed (zero spread) count as
    significant when the mean difference is not zero (``t`` is then ``None``).
    """
    from scipy import stats

    seeds = sorted(set(a) & set(b), key=str)
    diffs = np.asarray([a[s] - b[s] for s in seeds], dtype=float)
    result: dict[str, Any] = {"seeds": [str(s) for s in seeds], "n": len(seeds)}
    if len(seeds) < 2:
        return {
            **result,
            "mean_difference": float(diffs.mean()) if len(diffs) else None,
            "std_difference": None,
            "t": None,
            "p_value": None,
            "sign_p_value": None,
            "significant": None,
        }
    mean, std = float(diffs.mean()), float(diffs.std(ddof=1))
    if std == 0.0:  # the t statistic is undefined (infinite when mean != 0)
        t, p = None, (0.0 if mean else 1.0)
    else:
        test = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
        t, p = float(test.statistic), float(test.pvalue)  # type: ignore[assignment]
    nonzero = diffs[diffs != 0]
    sign_p = float(stats.binomtest(int((nonzero > 0).sum()), len(nonzero)).pvalue) if len(nonzero) else 1.0
    return {
        **result,
        "mean_difference": mean,
        "std_difference": std,
        "t": t,
        "p_value": p,
        "sign_p_value": sign_p,
        "significant": p < alpha,
    }
