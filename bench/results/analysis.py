"""Pure functions over measured values: rank correlations and curve milestones.

- ``rank_correlation(x, y)``: Kendall tau-b and Spearman rho (scipy) between two
  scorings of the same items, e.g. the accuracy of subnets with shared weights vs after
  stand-alone training. Constant input has no defined correlation: that is an error
  here, never a silent NaN.
- ``bootstrap_ci(x, y, stat, ...)``: a percentile bootstrap confidence interval of a
  rank statistic, resampling items (architectures) with a seeded generator.
- ``first_step_reaching(points, target)``: the first step at which a curve reaches a
  target (iterations-to-accuracy), or None.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

from bench.errors import DegenerateRanking


def _checked(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two equally long 1-D sequences, got shapes {a.shape} and {b.shape}")
    if len(a) < 3:
        raise DegenerateRanking(f"a rank correlation needs at least 3 items, got {len(a)}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        raise DegenerateRanking("one side is constant: every item scored the same, so no ranking exists")
    return a, b


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties handled as scipy's default)."""
    a, b = _checked(x, y)
    return float(stats.kendalltau(a, b).statistic)


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation."""
    a, b = _checked(x, y)
    return float(stats.spearmanr(a, b).statistic)


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(Kendall tau-b, Spearman rho) of two scorings of the same items."""
    return kendall_tau(x, y), spearman_rho(x, y)


def bootstrap_ci(
    x: Sequence[float],
    y: Sequence[float],
    stat: Callable[[Sequence[float], Sequence[float]], float],
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``stat(x, y)`` resampling items; degenerate resamples are skipped."""
    a, b = _checked(x, y)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        idx = rng.integers(0, len(a), len(a))
        try:
            values.append(stat(a[idx], b[idx]))
        except DegenerateRanking:
            continue
    if len(values) < resamples // 2:
        raise DegenerateRanking(f"only {len(values)} of {resamples} resamples had a defined correlation")
    lo, hi = np.percentile(values, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def first_step_reaching(points: Sequence[tuple], target: float) -> int | None:
    """The first step whose value is >= ``target`` in a (step, value) curve, or None."""
    for point in sorted(points, key=lambda p: p[0]):
        if point[1] is not None and not math.isnan(point[1]) and point[1] >= target:
            return int(point[0])
    return None
