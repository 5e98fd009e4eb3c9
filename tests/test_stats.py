"""Gate statistics to exact values: threshold rule, one-sided tests, BH, medians, memory rule."""

import math

import pytest
from scipy import stats as sps

from bench.results.stats import (
    bh_adjust,
    gate_threshold,
    mean_drop,
    mean_std_n,
    median,
    memory_regressed,
    over_threshold,
    paired_one_sided_p,
    ratio_of_medians,
    welch_one_sided_p,
)

REF = [90.0, 91.0, 92.0, 93.0, 94.0]
CAND = [88.0, 90.0, 90.5, 92.0, 91.0]


def test_mean_std_n_unchanged():
    assert mean_std_n([90.0, 92.0, 94.0]) == (92.0, 2.0, 3)
    assert mean_std_n([5.0, float("nan"), None]) == (5.0, 0.0, 1)


@pytest.mark.parametrize(
    "std, abs_tol, k, expected",
    [
        (0.5, 1.0, 2.0, 1.0),  # abs_tol wins
        (0.75, 1.0, 2.0, 1.5),  # k x std wins
        (3.0, 1.0, 0.0, 1.0),  # k = 0: the absolute tolerance only
        (float("nan"), 1.5, 2.0, 1.5),  # unknown spread never makes a NaN threshold
    ],
)
def test_gate_threshold(std, abs_tol, k, expected):
    assert gate_threshold(std, abs_tol, k) == expected


def test_over_threshold_is_strict():
    assert not over_threshold(1.5, 0.75, 1.0, 2.0)  # drop == threshold passes
    assert over_threshold(1.5000001, 0.75, 1.0, 2.0)
    assert not over_threshold(-5.0, 0.0, 1.0, 2.0)  # an improvement is never over


def test_mean_drop():
    assert mean_drop([90.0, 92.0], [85.0, 87.0]) == 5.0
    assert mean_drop([90.0], [91.0]) == -1.0
    assert math.isnan(mean_drop([], [1.0]))


def test_paired_p_by_hand_and_scipy():
    # differences 2, 1, 1.5, 1, 3: mean 1.7, sd sqrt(0.7), t = 1.7 / (sqrt(0.7) / sqrt(5)), df 4
    t = 1.7 / (math.sqrt(0.7) / math.sqrt(5))
    assert t == pytest.approx(4.543441112511215, rel=1e-12)
    p = paired_one_sided_p(REF, CAND)
    assert p == pytest.approx(sps.t.sf(t, 4), rel=1e-10)
    assert p == pytest.approx(0.00523483464480761, rel=1e-10)
    assert p == sps.ttest_rel(REF, CAND, alternative="greater").pvalue
    # the other direction: the candidate higher is no evidence of a drop
    assert paired_one_sided_p(CAND, REF) == pytest.approx(1 - p, rel=1e-10)


def test_welch_p_matches_scipy():
    p = welch_one_sided_p(REF, CAND)
    assert p == pytest.approx(0.05888652027639678, rel=1e-10)
    assert p == sps.ttest_ind(REF, CAND, equal_var=False, alternative="greater").pvalue


@pytest.mark.parametrize(
    "ref, cand, expected",
    [
        ([90.0, 91.0, 92.0, 93.0, 94.0], [89.0, 90.0, 91.0, 92.0, 93.0], 0.0),  # every seed dropped by exactly 1
        ([90.0, 91.0, 92.0, 93.0, 94.0], [90.0, 91.0, 92.0, 93.0, 94.0], 1.0),  # identical: no evidence
        ([90.0, 91.0, 92.0, 93.0, 94.0], [91.0, 92.0, 93.0, 94.0, 95.0], 1.0),  # every seed gained 1
    ],
)
def test_paired_p_degenerate_is_never_nan(ref, cand, expected):
    assert paired_one_sided_p(ref, cand) == expected


def test_welch_degenerate_and_errors():
    assert welch_one_sided_p([5.0] * 5, [4.0] * 5) == 0.0
    assert welch_one_sided_p([5.0] * 5, [5.0] * 5) == 1.0
    with pytest.raises(ValueError, match="equal lengths"):
        paired_one_sided_p([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least 2"):
        welch_one_sided_p([1.0], [1.0, 2.0])


def test_bh_adjust_by_hand():
    # sorted 0.01, 0.03, 0.04, 0.2 -> p*m/rank 0.04, 0.06, 0.0533, 0.2 -> running min from the top
    adjusted = bh_adjust([0.01, 0.04, 0.03, 0.2])
    assert adjusted == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2], rel=1e-12)
    assert adjusted == pytest.approx(list(sps.false_discovery_control([0.01, 0.04, 0.03, 0.2])), rel=1e-12)
    assert bh_adjust([]) == []
    assert bh_adjust([0.03]) == [0.03]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bh_adjust([0.01, float("nan")])


def test_median_and_ratio_of_medians():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert math.isnan(median([]))
    assert ratio_of_medians([10.0, 12.0, 11.0], [12.0, 13.0, 14.0]) == 13.0 / 11.0
    assert ratio_of_medians([10.0, 10.0], [11.0, 11.0]) == pytest.approx(1.1, rel=1e-15)
    assert math.isnan(ratio_of_medians([0.0, 0.0], [1.0, 1.0]))  # ratio to zero means nothing
    assert math.isnan(ratio_of_medians([], [1.0]))


@pytest.mark.parametrize(
    "ref, cand, expected",
    [
        (1000.0, 1033.0, True),  # +33 MiB: over 32 MiB and over 2% (20 MiB)
        (1000.0, 1032.0, False),  # +32 MiB: not over 32 MiB
        (2000.0, 2040.0, False),  # +40 MiB: over 32 MiB, but exactly 2%, not over
        (2000.0, 2041.0, True),
        (100.0, 130.0, False),  # +30%: over 2% but under 32 MiB
        (0.0, 33.0, True),
        (1000.0, 900.0, False),
    ],
)
def test_memory_rule_both_thresholds(ref, cand, expected):
    assert memory_regressed(ref, cand, pct=2.0, mib=32.0) is expected
