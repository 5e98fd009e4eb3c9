"""Statistics used by reports and gates, kept pure (numbers in, numbers out).

``seed_summary`` aggregates per-seed rows into mean, sample standard deviation (ddof=1;
0 with a single seed) and n; ``format_mean_std`` prints them as ``mean +- std (n)``.

Gate statistics (``bench gate``; higher is better, "drop" = reference minus candidate):

- ``gate_threshold(ref_std, abs_tol, k) = max(abs_tol, k * ref_std)``; ``over_threshold``
  is ``drop > gate_threshold``; ``mean_drop(ref, cand) = mean(ref) - mean(cand)``.
- ``paired_one_sided_p`` (paired t on seed pairs) and ``welch_one_sided_p`` (unpaired):
  one-sided p for "the candidate is lower"; scipy's value, never NaN.
- ``bh_adjust``: Benjamini-Hochberg adjusted p-values (``false_discovery_control``).
- ``median``, ``ratio_of_medians(ref, cand) = median(cand) / median(ref)`` (step time),
  ``memory_regressed(ref, cand, pct, mib)``: more than ``pct`` % AND ``mib`` MiB larger.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import pandas as pd


def mean_std_n(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample std (ddof=1; 0.0 for one value) and count of the finite values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(vals) / n
    if n == 1:
        return mean, 0.0, 1
    var = sum((v - mean) ** 2 for v in vals) / (n - 1)
    return mean, math.sqrt(var), n


def format_mean_std(mean: float, std: float, n: int, digits: int = 2) -> str:
    if n == 0 or math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f} +- {std:.{digits}f} ({n})"


def seed_summary(frame: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per ``keys`` group with ``<metric>_mean``, ``<metric>_std`` and ``<metric>_n`` columns."""
    rows = []
    for group, sub in frame.groupby(list(keys), sort=True, dropna=False):
        group = group if isinstance(group, tuple) else (group,)
        row = dict(zip(keys, group))
        for metric in metrics:
            values = sub[metric].tolist() if metric in sub else []
            row[f"{metric}_mean"], row[f"{metric}_std"], row[f"{metric}_n"] = mean_std_n(values)
        rows.append(row)
    return pd.DataFrame(rows)


# --- gate statistics (used by ``bench.gate.rules``) -------------------------------------------
#
# The accuracy gate follows the asv / MLPerf pattern: a practical threshold AND, where
# both sides have enough seeds, a one-sided significance test after Benjamini-Hochberg.
# "ref" is the reference sample, "cand" the candidate; higher values are better.


def _finite_floats(values: Sequence[float]) -> list[float]:
    """The finite values as floats (None, NaN and infinities dropped)."""
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def gate_threshold(ref_std: float, abs_tol: float, k: float) -> float:
    """The largest drop still tolerated: ``max(abs_tol, k * ref_std)``.

    A NaN ``ref_std`` (no reference spread known) counts as 0, so the threshold is
    never NaN and a drop can never slip through a NaN comparison.
    """
    spread = 0.0 if ref_std is None or math.isnan(ref_std) else float(ref_std)
    return max(float(abs_tol), float(k) * spread)


def over_threshold(drop: float, ref_std: float, abs_tol: float, k: float) -> bool:
    """True when ``drop`` (reference mean minus candidate mean) exceeds ``gate_threshold``."""
    return float(drop) > gate_threshold(ref_std, abs_tol, k)


def mean_drop(ref: Sequence[float], cand: Sequence[float]) -> float:
    """``mean(ref) - mean(cand)`` over the finite values: positive when the candidate is lower."""
    r, c = _finite_floats(ref), _finite_floats(cand)
    if not r or not c:
        return math.nan
    return sum(r) / len(r) - sum(c) / len(c)


def _degenerate_p(mean_diff: float) -> float:
    """p for a sample with no spread: 0 when it points at "candidate lower", else 1."""
    return 0.0 if mean_diff > 0 else 1.0


def paired_one_sided_p(ref: Sequence[float], cand: Sequence[float]) -> float:
    """One-sided paired t-test p-value for H1 "the candidate is lower than the reference".

    ``ref[i]`` and ``cand[i]`` are the same seed. Equals
    ``scipy.stats.ttest_rel(ref, cand, alternative="greater").pvalue``, except where
    the differences have no spread (scipy returns NaN or warns): then 0.0 when every
    seed dropped by the same positive amount and 1.0 otherwise. Never NaN.
    """
    from scipy import stats as sps

    if len(ref) != len(cand):
        raise ValueError(f"paired test needs equal lengths, got {len(ref)} and {len(cand)}")
    diffs = [float(r) - float(c) for r, c in zip(ref, cand)]
    if len(diffs) < 2:
        raise ValueError("paired test needs at least 2 pairs")
    if max(diffs) == min(diffs):
        return _degenerate_p(diffs[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(sps.ttest_rel(ref, cand, alternative="greater").pvalue)
    return _degenerate_p(sum(diffs) / len(diffs)) if math.isnan(p) else p


def welch_one_sided_p(ref: Sequence[float], cand: Sequence[float]) -> float:
    """One-sided Welch t-test p-value for H1 "the candidate mean is lower" (unpaired seeds).

    Equals ``scipy.stats.ttest_ind(ref, cand, equal_var=False, alternative="greater")
    .pvalue``, except where neither side has any spread: then 0.0 when the candidate
    is lower and 1.0 otherwise. Never NaN.
    """
    from scipy import stats as sps

    r, c = [float(v) for v in ref], [float(v) for v in cand]
    if len(r) < 2 or len(c) < 2:
        raise ValueError("Welch's test needs at least 2 values per side")
    if max(r) == min(r) and max(c) == min(c):
        return _degenerate_p(r[0] - c[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(sps.ttest_ind(r, c, equal_var=False, alternative="greater").pvalue)
    return _degenerate_p(sum(r) / len(r) - sum(c) / len(c)) if math.isnan(p) else p


def bh_adjust(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values in input order (``scipy.stats.false_discovery_control``).

    A cell is significant at false-discovery rate ``alpha`` when its adjusted p < alpha.
    An empty input gives an empty list; a NaN input raises (a NaN must never pass).
    """
    from scipy import stats as sps

    ps = [float(p) for p in p_values]
    if not ps:
        return []
    if any(math.isnan(p) or p < 0 or p > 1 for p in ps):
        raise ValueError(f"p-values must lie in [0, 1], got {ps}")
    return [float(p) for p in sps.false_discovery_control(ps, method="bh")]


def median(values: Sequence[float]) -> float:
    """Median of the finite values (mean of the middle two for an even count); NaN when none."""
    vals = sorted(_finite_floats(values))
    n = len(vals)
    if n == 0:
        return math.nan
    mid = n // 2
    return vals[mid] if n % 2 else (vals[mid - 1] + vals[mid]) / 2


def ratio_of_medians(ref: Sequence[float], cand: Sequence[float]) -> float:
    """``median(cand) / median(ref)``: above 1 when the candidate is slower or larger.

    NaN when either side has no finite value or the reference median is not positive
    (a ratio to zero means nothing); callers must treat NaN as "not gated".
    """
    r, c = median(ref), median(cand)
    if math.isnan(r) or math.isnan(c) or r <= 0:
        return math.nan
    return c / r


def memory_regressed(ref_mib: float, cand_mib: float, pct: float = 2.0, mib: float = 32.0) -> bool:
    """True when the candidate exceeds the reference by more than ``pct`` % AND more than ``mib`` MiB."""
    excess = float(cand_mib) - float(ref_mib)
    return excess > abs(float(ref_mib)) * pct / 100.0 and excess > mib
