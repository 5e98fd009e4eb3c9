"""Statistics used by reports and gates, kept pure (numbers in, numbers out).

``seed_summary`` aggregates per-seed rows into mean, sample standard deviation (ddof=1;
0 with a single seed) and n; ``format_mean_std`` prints them as ``mean +- std (n)``.
"""
from __future__ import annotations

import math
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
