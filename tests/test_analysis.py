"""Rank correlations equal scipy's on fixed data; degenerate rankings are errors; milestones."""

import math

import pytest
from scipy import stats

from bench.results.analysis import (
    DegenerateRanking,
    bootstrap_ci,
    first_step_reaching,
    kendall_tau,
    rank_correlation,
    spearman_rho,
)

X = [0.91, 0.85, 0.88, 0.70, 0.93, 0.80, 0.75]
Y = [0.89, 0.80, 0.90, 0.65, 0.95, 0.78, 0.79]


def test_equal_to_scipy_on_fixed_data():
    tau, rho = rank_correlation(X, Y)
    assert tau == pytest.approx(stats.kendalltau(X, Y).statistic, abs=1e-12)
    assert rho == pytest.approx(stats.spearmanr(X, Y).statistic, abs=1e-12)
    assert tau == pytest.approx(17 / 21) and rho == pytest.approx(13 / 14)  # by hand: C=19, D=2; sum d^2 = 4


def test_perfect_and_reversed():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert spearman_rho([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0


def test_degenerate_inputs_raise():
    with pytest.raises(DegenerateRanking, match="constant"):
        kendall_tau([1, 2, 3], [5, 5, 5])
    with pytest.raises(DegenerateRanking, match="at least 3 items"):
        spearman_rho([1, 2], [1, 2])
    with pytest.raises(ValueError, match="equally long"):
        kendall_tau([1, 2, 3], [1, 2])


def test_bootstrap_ci_brackets_the_estimate_and_is_seeded():
    lo, hi = bootstrap_ci(X, Y, kendall_tau, resamples=400, seed=1)
    assert lo <= kendall_tau(X, Y) <= hi and -1 <= lo < hi <= 1
    assert (lo, hi) == bootstrap_ci(X, Y, kendall_tau, resamples=400, seed=1)


def test_first_step_reaching():
    curve = [(10, 50.0), (20, 84.9), (30, 85.0), (40, 90.0)]
    assert first_step_reaching(curve, 85.0) == 30
    assert first_step_reaching(list(reversed(curve)), 85.0) == 30
    assert first_step_reaching(curve, 95.0) is None


@pytest.mark.parametrize(
    ("curve", "reached", "steps"),
    [([(10, 40.0), (20, 86.0), (30, 90.0)], 1.0, 20.0), ([(10, 40.0), (20, 60.0)], 0.0, None)],
)
def test_iterations_to_target_is_censored_not_dropped(curve, reached, steps):
    """A missed target stores ``target_reached_steps`` as NaN (NULL in the store), the flag 0 and
    the budget it is censored at; a reached one stores the first evaluation step reaching it."""
    from bench.contract.recorder import Recorder
    from methods.baselines import record_target

    rec = Recorder("cpu")
    for step, value in curve:
        rec.point("train_test_top1_pct", step, value)
    record_target(rec, "train", 85.0)
    assert rec.metrics["target_reached_bool"] == reached
    assert rec.metrics["target_budget_steps"] == curve[-1][0]
    got = rec.metrics["target_reached_steps"]
    assert (math.isnan(got) and steps is None) or got == steps
