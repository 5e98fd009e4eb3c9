"""The verdict procedure (bench.results.verdict): floor, paired and unpaired tests, decisions, censoring."""

import math

import pytest
from scipy import stats

from bench.results.verdict import (
    ALPHA,
    MIN_N,
    Obs,
    combine,
    difference,
    floor_pct,
    inconclusive,
    no_data,
    one_sample,
    spread,
)


def obs(values, censored=()):
    return [Obs(i, float(v), i in censored) for i, v in enumerate(values)]


A = [71.0, 73.5, 70.2, 74.1, 72.3]
B = [69.0, 72.9, 67.7, 72.8, 70.0]


def test_floor_is_twenty_points_over_chance_or_halfway_to_100():
    assert floor_pct(10.0) == 30.0 and floor_pct(1.0) == 21.0
    assert floor_pct(50.0) == 70.0 and floor_pct(80.0) == 90.0


def test_paired_test_matches_scipy_and_stores_effect_and_ci():
    out = difference(obs(A), obs(B), op=">")
    diffs = [a - b for a, b in zip(A, B)]
    ref = stats.ttest_rel(A, B, alternative="greater")
    assert out.test == "paired t" and out.n == 5
    assert out.p_value == pytest.approx(ref.pvalue) and out.verdict == "reproduced"
    mean, se = sum(diffs) / 5, stats.sem(diffs)
    half = stats.t.ppf(0.975, 4) * se
    assert out.effect == pytest.approx(mean) and (out.ci_low, out.ci_high) == pytest.approx((mean - half, mean + half))
    assert out.ours == pytest.approx(sum(A) / 5) and out.baseline == pytest.approx(sum(B) / 5)


def test_unpaired_when_seeds_do_not_match_is_welch():
    b = [Obs(10 + i, v) for i, v in enumerate(B)]
    out = difference(obs(A), b, op=">")
    ref = stats.ttest_ind(A, B, equal_var=False, alternative="greater")
    assert out.test == "welch t" and out.p_value == pytest.approx(ref.pvalue)


def test_significantly_against_is_not_reproduced_and_the_rest_inconclusive():
    assert difference(obs(B), obs(A), op=">").verdict == "not reproduced"
    noisy = difference(obs([70, 75, 68, 74, 71]), obs([71, 72, 70, 73, 72]), op=">")
    assert noisy.verdict == "inconclusive" and noisy.reason.startswith("p=")
    assert noisy.ci_low < 0 < noisy.ci_high


def test_too_few_values_are_inconclusive_n():
    out = difference(obs(A[: MIN_N - 1]), obs(B[: MIN_N - 1]), op=">")
    assert out.verdict == "inconclusive" and out.reason == f"n={MIN_N - 1} < {MIN_N}" and out.p_value is None
    assert out.effect == pytest.approx(sum(A[:2]) / 2 - sum(B[:2]) / 2)


def test_exact_values_need_no_seeds():
    assert difference(obs([20.0]), obs([10.0]), op=">=", margin=2.0, ratio=True, exact=True).verdict == "reproduced"
    assert difference(obs([19.0]), obs([10.0]), op=">=", margin=2.0, ratio=True, exact=True).verdict == (
        "not reproduced"
    )
    assert difference(obs([20.0]), obs([10.0]), op=">=", margin=2.0, ratio=True).verdict == "inconclusive"


def test_non_inferiority_uses_the_tolerance():
    worse_by_half = [b - 0.5 + 0.1 * (i % 2) for i, b in enumerate(B)]
    assert difference(obs(worse_by_half), obs(B), op=">=", tol=1.0).verdict == "reproduced"
    assert difference(obs(worse_by_half), obs(B), op=">=", tol=0.0).verdict == "not reproduced"


def test_equivalence_is_two_one_sided_tests():
    same = [b + 0.05 * ((-1) ** i) for i, b in enumerate(B)]
    assert difference(obs(same), obs(B), op="~=", tol=1.0).verdict == "reproduced"
    far = [b + 5 + 0.05 * ((-1) ** i) for i, b in enumerate(B)]
    assert difference(obs(far), obs(B), op="~=", tol=1.0).verdict == "not reproduced"


def test_ratio_is_tested_on_logs_and_reported_as_a_ratio():
    num, den = [21.0, 19.5, 20.4, 20.9], [10.0, 10.1, 9.8, 10.2]
    out = difference(obs(num), obs(den), op=">=", margin=1.5, ratio=True)
    logs = [math.log(a / b) for a, b in zip(num, den)]
    assert out.verdict == "reproduced" and out.effect == pytest.approx(math.exp(sum(logs) / 4))
    assert out.ci_low < out.effect < out.ci_high
    assert difference(obs([0.0, 1, 2]), obs([1.0, 1, 1]), op=">", margin=1.0, ratio=True).reason == (
        "non-positive values"
    )


def test_censored_values_are_counted_not_dropped():
    ours = obs([100, 120, 500, 500], censored=(2, 3))  # two seeds never reached the target: the budget 500
    base = obs([300, 310, 305, 290])
    out = difference(ours, base, op="<")
    assert out.n == 4 and out.n_censored == 2 and out.verdict == "inconclusive"
    assert difference(obs([100, 120, 110, 105]), base, op="<").verdict == "reproduced"


def test_one_sample_and_spread():
    assert one_sample(obs([0.2, 0.25, 0.3]), op=">", bound=0.0).verdict == "reproduced"
    assert one_sample(obs([-0.2, -0.25, -0.3]), op=">", bound=0.0).verdict == "not reproduced"
    assert one_sample(obs([0.2]), op=">", bound=0.0).reason == "n=1 < 3"
    wide, tight = [50, 90, 20, 70, 40, 95], [70, 70.5, 69.8, 70.2, 70.1, 69.9]
    out = spread(wide, tight, op=">")
    assert out.verdict == "reproduced" and out.test == "F" and out.ci_low > 1
    assert out.p_value == pytest.approx(1 - stats.f.cdf(stats.tvar(wide) / stats.tvar(tight), 5, 5))
    assert spread(tight, wide, op=">").verdict == "not reproduced"


def test_combine_needs_every_part_and_corrects_the_failing_side():
    good = difference(obs(A), obs(B), op=">")
    bad = difference(obs(B), obs(A), op=">")
    assert combine({"x": good, "y": good}).verdict == "reproduced"
    assert combine({"x": good, "y": bad}).verdict == "not reproduced"
    assert combine({"x": good, "y": inconclusive("below floor")}).verdict == "inconclusive"
    assert combine({"x": good, "y": no_data("none")}).reason == "no data for y"
    assert combine({"x": no_data("a"), "y": no_data("b")}).verdict is None
    # Bonferroni on the failing side: a part barely against at ALPHA is not enough among many parts.
    barely = difference(obs([0.0, 1.0, 2.0, 0.5]), obs([1.0, 1.4, 3.3, 0.6]), op=">")
    assert barely.verdict == "not reproduced" and ALPHA / 4 < barely.p_against < ALPHA
    parts = {"p": barely, **{f"q{i}": inconclusive("n=1 < 3") for i in range(4)}}
    assert combine(parts).verdict == "inconclusive"


def test_bad_ops_are_refused():
    with pytest.raises(ValueError, match="valid ops"):
        difference(obs(A), obs(B), op="=>")
