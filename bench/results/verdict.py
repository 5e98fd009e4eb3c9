"""The one verdict procedure every claim check goes through (pure: numbers in, a judgement out).

A claim verdict is ``reproduced``, ``not reproduced`` or ``inconclusive`` with the reason. The
procedure (README.md, "Claims and verdicts"):

1. **Floor.** Every compared cell whose metric is an accuracy must clear ``floor_pct(chance)``:
   ``FLOOR_POINTS`` (20) points above chance, or halfway from chance to 100 when that is lower.
   A cell below it makes the comparison ``inconclusive: below floor`` (two methods at chance
   differ by noise). ``bench.results.claims`` applies it per cell group.
2. **Test.** Seed-paired where both sides have the same seeds (a one-sided paired t on the
   differences), Welch's unpaired t otherwise, at ``ALPHA`` = 0.05. Fewer than ``MIN_N`` (3)
   values on a side gives ``inconclusive: n``. Values that are exact (counts that do not vary
   with the seed, e.g. parameter or saved-activation bytes) are compared as they are.
3. **Decision.** ``reproduced`` when the one-sided test in the claim's direction rejects at
   ``ALPHA``; ``not reproduced`` when the one-sided test in the opposite direction does;
   otherwise ``inconclusive`` (the data cannot tell). Stored with every verdict: the effect
   (mean difference, or geometric-mean ratio for ratios), its two-sided 95% CI, n, the number
   of censored values, the test and both p-values. The 95% CI is the usual two-sided interval;
   the decision is the one-sided test at 0.05 the claims ask for, so a verdict whose p lies
   between 0.025 and 0.05 has a 95% CI that touches the bound.
4. **Claim kinds** (``op``): ``>``/``<`` superiority against ``bound`` (``margin``, default 0);
   ``>=``/``<=`` non-inferiority, the bound moved by a tolerance ``tol`` toward the other side
   (``ours >= base`` holds when ``ours > base - tol`` is significant); ``~=`` equivalence (two
   one-sided tests against ``bound +- tol``).
5. **Several comparisons** (every dataset, every budget, every scope) are combined by
   ``combine``: an intersection-union test, so ``reproduced`` needs every part reproduced (no
   correction is needed for that), and ``not reproduced`` needs one part significantly against
   after a Bonferroni correction over the parts (``k * min p_against < ALPHA``), so more parts do
   not make a false "not reproduced" likelier.
6. **Censoring.** A value that is a bound, not a measurement (a run that never reached the
   target counts as reaching it at its budget) is kept and counted in ``n_censored``, never
   dropped; the substitution is conservative for the side that was censored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

ALPHA = 0.05
MIN_N = 3
FLOOR_POINTS = 20.0
VERDICTS = ("reproduced", "not reproduced", "inconclusive")
OPS = (">", ">=", "<", "<=", "~=")


def floor_pct(chance_pct: float) -> float:
    """The accuracy a compared cell must exceed: 20 points above chance, or halfway to 100 if lower."""
    return min(chance_pct + FLOOR_POINTS, (chance_pct + 100.0) / 2.0)


@dataclass(frozen=True)
class Outcome:
    """What the procedure found for one claim (or one part of it).

    ``verdict`` is None only when there was nothing to compare ("no data"); ``reason`` says why
    an ``inconclusive`` is one. ``effect`` and ``ci_low``/``ci_high`` are in the compared
    metric's unit (a difference), or a plain ratio for ratio checks. ``ours``/``baseline`` are the
    two sides' means, for display.
    """

    verdict: str | None
    reason: str = ""
    effect: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 0
    n_censored: int = 0
    p_value: float | None = None
    p_against: float | None = None
    test: str = ""
    ours: float | None = None
    baseline: float | None = None
    detail: str = ""

    @property
    def label(self) -> str:
        """``verdict`` with its reason: ``inconclusive (n=1 < 3)``."""
        if self.verdict is None:
            return "inconclusive (no data)"
        return f"{self.verdict} ({self.reason})" if self.reason and self.verdict == "inconclusive" else self.verdict


def no_data(why: str) -> Outcome:
    """Nothing to compare: the claim is not measured here (reported as ``inconclusive: no data``)."""
    return Outcome(None, reason="no data", detail=why)


def inconclusive(reason: str, detail: str = "", **fields: object) -> Outcome:
    """An ``inconclusive`` outcome with its reason (``below floor``, ``n=2 < 3``, ...)."""
    return Outcome("inconclusive", reason=reason, detail=detail or reason, **fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Obs:
    """One value of one side: the key it pairs on (e.g. the seed), the value, and whether it is censored."""

    key: object
    value: float
    censored: bool = False


def _identity(v: float) -> float:
    return v


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _var(xs: Sequence[float]) -> float:
    m = _mean(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else 0.0


def _bounds(op: str, margin: float, tol: float) -> tuple[float, float]:
    """The claim's bound(s) on the effect: (lower, upper) the effect must exceed / stay under."""
    if op == ">":
        return margin, math.inf
    if op == ">=":
        return margin - tol, math.inf
    if op == "<":
        return -math.inf, margin
    if op == "<=":
        return -math.inf, margin + tol
    if op == "~=":
        return margin - tol, margin + tol
    raise ValueError(f"op {op!r}: valid ops: {', '.join(OPS)}")


def _decide(p_for: float | None, p_against: float | None) -> str:
    if p_for is not None and p_for < ALPHA:
        return "reproduced"
    if p_against is not None and p_against < ALPHA:
        return "not reproduced"
    return "inconclusive"


def _t_p(effect: float, bound: float, se: float, df: float, greater: bool) -> float:
    """One-sided p of H1 ``effect > bound`` (``greater``) or ``effect < bound`` under a t(df)."""
    from scipy import stats

    if not math.isfinite(bound):
        return 0.0 if (bound < 0) == greater else 1.0
    if se == 0.0:
        if effect == bound:
            return 1.0
        return 0.0 if (effect > bound) == greater else 1.0
    t = (effect - bound) / se
    return float(stats.t.sf(t, df) if greater else stats.t.cdf(t, df))


def _test(effect: float, se: float, df: float, op: str, margin: float, tol: float) -> tuple[float, float]:
    """(p for the claim, p against it) for an estimate with standard error ``se``."""
    low, high = _bounds(op, margin, tol)
    if op in (">", ">="):
        return _t_p(effect, low, se, df, True), _t_p(effect, low, se, df, False)
    if op in ("<", "<="):
        return _t_p(effect, high, se, df, False), _t_p(effect, high, se, df, True)
    # equivalence: both one-sided tests must reject; against it, either side significantly outside
    p_for = max(_t_p(effect, low, se, df, True), _t_p(effect, high, se, df, False))
    p_against = min(_t_p(effect, low, se, df, False), _t_p(effect, high, se, df, True))
    return p_for, min(1.0, 2 * p_against)


def _exact_holds(effect: float, op: str, margin: float, tol: float) -> bool:
    """The claim on an exact effect: equality (to rounding) satisfies ``>=``/``<=``/``~=``, not ``>``/``<``."""
    low, high = _bounds(op, margin, tol)
    near = lambda b: math.isfinite(b) and math.isclose(effect, b, rel_tol=1e-9, abs_tol=1e-12)  # noqa: E731
    if op == ">":
        return effect > low and not near(low)
    if op == "<":
        return effect < high and not near(high)
    return (effect >= low or near(low)) and (effect <= high or near(high))


def _ci(effect: float, se: float, df: float) -> tuple[float, float]:
    from scipy import stats

    if se == 0.0 or not math.isfinite(df):
        return effect, effect
    half = float(stats.t.ppf(0.975, df)) * se
    return effect - half, effect + half


def _transform(obs: Sequence[Obs], log: bool) -> list[Obs] | str:
    if not log:
        return list(obs)
    bad = [o.value for o in obs if not o.value > 0]
    if bad:
        return f"a ratio needs positive values, got {bad[0]:g}"
    return [replace(o, value=math.log(o.value)) for o in obs]


def difference(
    ours: Sequence[Obs],
    baseline: Sequence[Obs],
    *,
    op: str,
    margin: float = 0.0,
    tol: float = 0.0,
    exact: bool = False,
    ratio: bool = False,
) -> Outcome:
    """Judge ``ours - baseline`` (or, with ``ratio``, ``ours / baseline``) against the claim ``op``.

    Pairs on ``Obs.key`` when the two sides share at least ``MIN_N`` keys (or, for ``exact``
    values, any); otherwise compares the two samples unpaired (Welch). With ``ratio`` the test
    runs on logarithms (``margin`` is then the ratio bound, e.g. 2.0 for "at least 2x"; ``tol`` a
    factor), and effect and CI are reported as ratios. ``exact`` values are compared directly
    when they do not vary across keys; when they do vary, they are treated as a sample.
    """
    _bounds(op, margin, tol)
    if not ours or not baseline:
        return no_data("one side has no values")
    a_obs, b_obs = _transform(ours, ratio), _transform(baseline, ratio)
    if isinstance(a_obs, str) or isinstance(b_obs, str):
        return inconclusive("non-positive values", str(a_obs if isinstance(a_obs, str) else b_obs))
    bound_margin = math.log(margin) if ratio else margin
    bound_tol = math.log(1.0 + tol) if ratio else tol
    if ratio and not margin > 0:
        raise ValueError(f"a ratio bound must be > 0, got {margin}")
    censored = sum(o.censored for o in list(ours) + list(baseline))
    a_by, b_by = {o.key: o.value for o in a_obs}, {o.key: o.value for o in b_obs}
    shared = [k for k in a_by if k in b_by]
    a_vals, b_vals = [o.value for o in a_obs], [o.value for o in b_obs]
    constant = max(a_vals) == min(a_vals) and max(b_vals) == min(b_vals)
    # Back from the test's scale (log for ratios) to the reported one: effect, CI and means alike.
    back = math.exp if ratio else _identity
    if exact and constant:
        effect, se, df, n, test = a_vals[0] - b_vals[0], 0.0, math.inf, min(len(a_vals), len(b_vals)), "exact"
    elif len(shared) >= MIN_N:
        diffs = [a_by[k] - b_by[k] for k in shared]
        n = len(diffs)
        effect, se, df, test = _mean(diffs), math.sqrt(_var(diffs) / n), n - 1.0, "paired t"
    elif len(a_vals) >= MIN_N and len(b_vals) >= MIN_N:
        va, vb, na, nb = _var(a_vals), _var(b_vals), len(a_vals), len(b_vals)
        effect, se = _mean(a_vals) - _mean(b_vals), math.sqrt(va / na + vb / nb)
        df = (va / na + vb / nb) ** 2 / max(1e-300, (va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
        n, test = min(na, nb), "welch t"
    else:
        n = len(shared) if shared else min(len(a_vals), len(b_vals))
        return inconclusive(
            f"n={n} < {MIN_N}",
            f"{n} {'paired ' if shared else ''}value(s); the test needs {MIN_N}",
            n=n,
            n_censored=censored,
            effect=back(_mean(a_vals) - _mean(b_vals)),
            ours=back(_mean(a_vals)),
            baseline=back(_mean(b_vals)),
        )
    if test == "exact":
        holds = _exact_holds(effect, op, bound_margin, bound_tol)
        p_for, p_against = (0.0, 1.0) if holds else (1.0, 0.0)
    else:
        p_for, p_against = _test(effect, se, df, op, bound_margin, bound_tol)
    lo, hi = _ci(effect, se, df)
    verdict = _decide(p_for, p_against)
    return Outcome(
        verdict,
        reason="" if verdict != "inconclusive" else f"p={p_for:.3g} (needs < {ALPHA})",
        effect=back(effect),
        ci_low=back(lo),
        ci_high=back(hi),
        n=n,
        n_censored=censored,
        p_value=p_for,
        p_against=p_against,
        test=test,
        ours=back(_mean(a_vals)),
        baseline=back(_mean(b_vals)),
    )


def one_sample(values: Sequence[Obs], *, op: str, bound: float, exact: bool = False) -> Outcome:
    """Judge the mean of ``values`` against a fixed ``bound`` (one-sample t)."""
    _bounds(op, bound, 0.0)
    if not values:
        return no_data("no values")
    vals = [o.value for o in values]
    censored = sum(o.censored for o in values)
    n, mean = len(vals), _mean(vals)
    if (exact and max(vals) == min(vals)) or (n >= MIN_N and _var(vals) == 0.0):
        se, df, test = 0.0, math.inf, "exact"
    elif n >= MIN_N:
        se, df, test = math.sqrt(_var(vals) / n), n - 1.0, "one-sample t"
    else:
        return inconclusive(
            f"n={n} < {MIN_N}",
            f"{n} value(s); the test needs {MIN_N}",
            n=n,
            n_censored=censored,
            effect=mean,
            ours=mean,
        )
    p_for, p_against = _test(mean, se, df, op, bound, 0.0)
    lo, hi = _ci(mean, se, df)
    verdict = _decide(p_for, p_against)
    return Outcome(
        verdict,
        reason="" if verdict != "inconclusive" else f"p={p_for:.3g} (needs < {ALPHA})",
        effect=mean,
        ci_low=lo,
        ci_high=hi,
        n=n,
        n_censored=censored,
        p_value=p_for,
        p_against=p_against,
        test=test,
        ours=mean,
        baseline=bound,
    )


def spread(ours: Sequence[float], baseline: Sequence[float], *, op: str) -> Outcome:
    """Judge ``std(ours) op std(baseline)`` (``<`` or ``>``) with the F-test of the variance ratio.

    The effect is the ratio of standard deviations, its CI from the F distribution. The F-test
    assumes normal values; at n = 5 per side it detects only a large difference (a ratio of ~3).
    """
    from scipy import stats

    if op not in ("<", ">"):
        raise ValueError(f"spread op must be '<' or '>', got {op!r}")
    if not ours or not baseline:
        return no_data("one side has no values")
    na, nb = len(ours), len(baseline)
    if na < MIN_N or nb < MIN_N:
        return inconclusive(f"n={min(na, nb)} < {MIN_N}", n=min(na, nb))
    va, vb = _var(ours), _var(baseline)
    if vb == 0.0 or va == 0.0:
        ratio = 0.0 if va == 0.0 and vb > 0 else math.inf if vb == 0.0 and va > 0 else 1.0
        verdict = "reproduced" if (ratio < 1) == (op == "<") and ratio != 1.0 else "inconclusive"
        return Outcome(
            verdict,
            "" if verdict != "inconclusive" else "no spread on either side",
            ratio,
            ratio,
            ratio,
            min(na, nb),
            test="exact",
        )
    f = va / vb
    below = float(stats.f.cdf(f, na - 1, nb - 1))
    p_for, p_against = (below, 1.0 - below) if op == "<" else (1.0 - below, below)
    lo = math.sqrt(f / float(stats.f.ppf(0.975, na - 1, nb - 1)))
    hi = math.sqrt(f / float(stats.f.ppf(0.025, na - 1, nb - 1)))
    verdict = _decide(p_for, p_against)
    return Outcome(
        verdict,
        reason="" if verdict != "inconclusive" else f"p={p_for:.3g} (needs < {ALPHA})",
        effect=math.sqrt(f),
        ci_low=lo,
        ci_high=hi,
        n=min(na, nb),
        p_value=p_for,
        p_against=p_against,
        test="F",
        ours=math.sqrt(va),
        baseline=math.sqrt(vb),
    )


def combine(parts: Mapping[str, Outcome]) -> Outcome:
    """Every part must hold: the intersection-union test over ``parts`` (see the module docstring).

    A part without data cannot hold, so with one the whole is at best ``inconclusive (no data for
    ...)`` (it can still be ``not reproduced`` by another part); with no part measured the result
    is "no data". ``Each`` builds only the parts the rows hold, so there a missing part means a
    comparison that was not run. The effect and CI reported are the deciding part's: the failing part for "not
    reproduced", the weakest (largest p) part otherwise.
    """
    measured = {name: o for name, o in parts.items() if o.verdict is not None}
    missing = [name for name, o in parts.items() if o.verdict is None]
    if not measured:
        return no_data("; ".join(f"{n}: {parts[n].detail}" for n in missing) or "nothing to compare")
    k = len(measured)
    p_for: float | None = (
        max(o.p_value for o in measured.values() if o.p_value is not None)
        if all(o.p_value is not None for o in measured.values()) and not missing
        else None
    )
    againsts = [o.p_against for o in measured.values() if o.p_against is not None]
    p_against = min(1.0, k * min(againsts)) if againsts else None
    verdict = _decide(p_for, p_against)
    if verdict == "not reproduced":
        key = min((n for n in measured if measured[n].p_against is not None), key=lambda n: measured[n].p_against or 0)
    else:
        open_parts = [n for n in measured if measured[n].verdict != "reproduced"]
        key = open_parts[0] if open_parts else max(measured, key=lambda n: measured[n].p_value or 0.0)
    decider = measured[key]
    reasons = [f"{n}: {o.reason}" for n, o in measured.items() if o.verdict == "inconclusive" and o.reason]
    if missing:  # a part without data cannot be shown to hold, so neither can the whole
        reasons.insert(0, "no data for " + ", ".join(missing))
    reason = "" if verdict != "inconclusive" else (reasons[0] if len(reasons) == 1 else "; ".join(reasons[:3]))
    if verdict == "inconclusive" and not reason:
        reason = f"p={p_for:.3g} over {k} parts" if p_for is not None else "parts disagree"
    detail = "; ".join(f"{n}: {summary(o)}" for n, o in measured.items())
    if missing:
        detail += "; no data for " + ", ".join(missing)
    return Outcome(
        verdict,
        reason=reason,
        effect=decider.effect,
        ci_low=decider.ci_low,
        ci_high=decider.ci_high,
        n=min(o.n for o in measured.values()),
        n_censored=sum(o.n_censored for o in measured.values()),
        p_value=p_for,
        p_against=p_against,
        test=decider.test + (f" (x{k}, intersection-union)" if k > 1 else ""),
        ours=decider.ours,
        baseline=decider.baseline,
        detail=detail,
    )


def summary(o: Outcome) -> str:
    """One line: sides, effect, CI, n, verdict (what a part contributes to a combined detail)."""
    if o.verdict is None:
        return f"no data ({o.detail})"
    parts = []
    if o.ours is not None and o.baseline is not None:
        parts.append(f"{o.ours:.4g} vs {o.baseline:.4g}")
    if o.effect is not None:
        ci = f" [{o.ci_low:.3g}, {o.ci_high:.3g}]" if o.ci_low is not None and o.ci_high is not None else ""
        parts.append(f"effect {o.effect:.3g}{ci}")
    parts.append(f"n={o.n}" + (f", {o.n_censored} censored" if o.n_censored else ""))
    if o.detail and o.detail != o.reason and o.test == "":
        parts.append(o.detail)
    return ", ".join(parts) + f" -> {o.label}"
