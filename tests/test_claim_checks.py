"""Every registered claim check, on synthetic rows that make it pass, fail and come out inconclusive.

The rows are built from the check itself: its comparisons (the leaves of ``AllOf``/``Each``/
``FirstOf``) name the rows and metrics they read and what must hold between them, so one solver
writes seed rows where every comparison holds by a clear margin (``reproduced``), then flips the
first comparison (``not reproduced``), then keeps two seeds only (``inconclusive (n)``). A check
whose text and code disagree (a comparison that cannot be satisfied, a Select no row can match)
fails here.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest

import methods  # noqa: F401 - registers every check
from bench.results.claims import CHECKS, AllOf, Compare, Each, FirstOf, Ratio, Select, Spread, Threshold
from methods.two_stage.claims import search_saving

SEEDS = range(6)
# What ``Each`` checks expand over: the labels and columns the suites write.
LABELS = pd.DataFrame(
    [
        *(
            {"variant": f"nasoa:{s}-t{k}", "model": "etnas_a"}
            for s in ("gen", "bohb", "fixed_mlp", "oa_regnet")
            for k in (0, 1)
        ),
        {"variant": "trnas_rank:tr_5_5_w0", "model": "nb201"},  # Fig. 7's axis was run
        {"variant": "trnas_rank:tr_5_5_w5", "model": "nb201"},
        {"variant": "original", "model": "resnet20_cells"},
    ]
).assign(t3_adaptive_all_mae=1.0, t3_fixed3_all_mae=1.0, t3_fixed6_all_mae=1.0)
LABELS = LABELS.assign(t3_adaptive_80_100_mae=1.0, t3_fixed3_80_100_mae=1.0)
# A derived value, written as the raw columns it is derived from.
RAW = {
    "search_saved_frac": lambda v: {
        "search_s": 100.0,
        "search_reward_stop_s": 50.0,
        "search_action_stop_s": 50.0 * (1 - v),
    }
}


def leaves(check: Any) -> list[Any]:
    if isinstance(check, (Compare, Ratio, Spread, Threshold)):
        return [check]
    if isinstance(check, AllOf):
        return [leaf for _, part in check.parts for leaf in leaves(part)]
    if isinstance(check, Each):
        return [leaf for _, part in check.expand(LABELS) for leaf in leaves(part)]
    if isinstance(check, FirstOf):
        return leaves(check.checks[0])
    raise TypeError(f"unknown check kind {type(check).__name__}")


def identity(sel: Select) -> tuple:
    """The row a selection reads: (variant, method, model, dataset, mode)."""
    variant = sel.variant or (sel.variant_prefix + "t0" if sel.variant_prefix else None) or sel.method
    method = sel.method or str(variant).split(":")[0]
    return (variant, method, sel.model or "m", sel.dataset or "uci-digits", sel.mode or "accuracy")


def scale(metric: str) -> tuple[float, float]:
    """(base value, clear effect) per metric kind: accuracy, rank correlation, anything else."""
    if metric.endswith("_pct"):
        return 80.0, 8.0
    if metric.endswith(("_tau", "_rho")):
        return 0.5, 0.2
    if metric.endswith("_frac"):
        return 0.0, 0.3
    return 10.0, 3.0


def sides(leaf: Any) -> tuple[Select, Select | None]:
    if isinstance(leaf, Ratio):
        return leaf.numerator, leaf.denominator
    if isinstance(leaf, Threshold):
        return leaf.ours, None
    return leaf.ours, leaf.baseline


def target(leaf: Any, b: float, effect: float, flip: bool) -> float:
    """The value of the leaf's first side that makes it hold (or, flipped, clearly fail) given the other's."""
    sign = -1.0 if flip else 1.0
    if isinstance(leaf, Ratio):
        factor = 1.6 if leaf.op in (">", ">=") else 1 / 1.6
        return b * leaf.bound * (factor if not flip else 1 / factor)
    if isinstance(leaf, Threshold):
        return leaf.value + sign * effect * (1 if leaf.op in (">", ">=") else -1)
    if leaf.op == "~=":
        return b + leaf.margin + (0.0 if not flip else 3 * (leaf.tol or 1.0) + effect)
    up = 1 if leaf.op in (">", ">=") else -1
    return b + leaf.margin + sign * up * effect


def solve(check: Any, flip: bool) -> tuple[dict[tuple, float], dict[tuple, float]]:
    """Seed-mean values per (row, metric) satisfying every leaf, and the noise amplitude of each."""
    values: dict[tuple, float] = {}
    noise: dict[tuple, float] = {}
    for i, leaf in enumerate(leaves(check)):
        a_sel, b_sel = sides(leaf)
        a = (identity(a_sel), a_sel.metric)
        base, effect = scale(a_sel.metric)
        if isinstance(leaf, Spread):
            b = (identity(b_sel), b_sel.metric)
            wide, narrow = (a, b) if (leaf.op == ">") != (flip and i == 0) else (b, a)
            noise[wide] = effect * 2
            noise.setdefault(narrow, effect * 0.01)
            values.setdefault(a, base)
            values.setdefault(b, base)
            continue
        if b_sel is None:
            values[a] = target(leaf, 0.0, effect, flip and i == 0)
            continue
        b = (identity(b_sel), b_sel.metric)
        flipped = flip and i == 0
        if a in values and b not in values and not flipped:
            # a chain (small > medium > large): the first side is fixed, so place the second from it
            values[b] = (
                values[a] / target(leaf, 1.0, effect, False)
                if isinstance(leaf, Ratio)
                else values[a] - target(leaf, 0.0, effect, False)
            )
            continue
        values.setdefault(b, base)
        if a in values and not flipped:
            continue
        values[a] = target(leaf, values[b], effect, flipped)
    return values, noise


def wiggle(key: tuple, seed: int) -> float:
    return math.sin(1.7 * seed + (hash(key) % 1000) / 97.0)


def build(check: Any, flip: bool = False, seeds: range = SEEDS) -> pd.DataFrame:
    values, noise = solve(check, flip)
    rows: dict[tuple, dict[str, Any]] = {}
    for (ident, metric), mean in values.items():
        _, effect = scale(metric)
        for seed in seeds:
            row = rows.setdefault(
                (ident, seed),
                {
                    "suite": "s",
                    "variant": ident[0],
                    "method": ident[1],
                    "model": ident[2],
                    "dataset": ident[3],
                    "mode": ident[4],
                    "seed": seed,
                    "tier": "smoke",
                    "status": "ok",
                    "chance_pct": 10.0,
                    "proxy_best_reference_top1_pct": 90.0,
                },
            )
            amp = noise.get((ident, metric), effect * 0.02)
            value = mean + amp * wiggle((ident, metric), seed)
            if metric in RAW:
                row.update(RAW[metric](value))
            row[metric] = value
    return pd.DataFrame(list(rows.values()))


@pytest.mark.parametrize("claim_id", sorted(CHECKS))
def test_check_passes_fails_and_is_inconclusive(claim_id: str) -> None:
    check = CHECKS[claim_id]
    passing = check(build(check))
    assert passing.verdict == "reproduced", passing
    assert passing.effect is not None and passing.n >= 3
    failing = check(build(check, flip=True))
    assert failing.verdict == "not reproduced", failing
    few = check(build(check, seeds=range(2)))
    assert few.verdict in ("inconclusive", "reproduced"), few
    if few.verdict == "inconclusive":
        assert "n=2 < 3" in few.reason, few.reason
    else:  # exact quantities (counted bytes) need no seeds
        assert few.test.startswith("exact"), few


def test_every_claim_has_a_check() -> None:
    from bench.results.claims import CLAIMS

    assert set(CHECKS) == set(CLAIMS.names())


def test_the_early_stop_saving_is_censored_where_a_stop_never_fired() -> None:
    assert search_saving({"search_s": 100, "search_action_stop_s": 20, "search_reward_stop_s": 40}) == (0.5, False)
    never_acted = search_saving({"search_s": 100, "search_reward_stop_s": 40})
    assert never_acted == (pytest.approx(-1.5), True)  # ran to the budget: a negative, censored saving
    assert search_saving({"search_s": 100, "search_action_stop_s": 20}) == (0.8, True)
    assert search_saving({"search_s": 100}) == (0.0, True)
    assert search_saving({"search_action_stop_s": 20}) is None  # no search time: nothing to judge
