"""Claims: the papers' headline numbers beside ours, with a verdict.

A ``Claim`` is data: the paper's figure (``paper_value``, ``paper_baseline_value``),
its unit, the table or figure it comes from (``where``), the setting, the statement of
what must hold (``check_text``) and the tier it applies to (``None``: every tier we
have data for). The papers' claims ship as ``methods/paper_claims.json``; each method
module attaches the *executable* check of its claims with ``register_check(id, check)``.
A claim without a check, or without data at a tier, is "not yet measured".

Checks read the latest ``ok`` row of every cell (seed means per cell group):

- ``Compare(ours, baseline, op=">=", margin=0, every=("dataset", "model"))``: the mean
  of ``ours`` against the mean of ``baseline`` in every group of ``every`` where both
  have data (e.g. "two_stage >= last_k at every scope" is ``every=("variant_scope",)``
  via per-scope selections, or one Compare per scope);
- ``Ratio(numerator, denominator, at_least)``: ratio of means (e.g. memory saving);
- ``Threshold(ours, op, value)``: an absolute figure;
- ``Custom(fn)``: anything else, ``fn(frame) -> Outcome``.

A ``Select`` names the rows (variant or method, optional suite/dataset/model) and the
metric. ``evaluate(db)`` returns one ``ClaimRow`` per claim and tier; ``bench claims``
prints them and writes them to the ``claims`` table that Datasette shows.
"""

from __future__ import annotations

import json
import math
import operator
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.registry import Registry

VERDICTS = ("reproduced", "not reproduced", "not yet measured")
OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


@dataclass(frozen=True)
class Select:
    """Rows of one method entry (``variant`` label, or ``method`` name) and the metric to read."""

    metric: str
    variant: str | None = None
    method: str | None = None
    suite: str | None = None
    dataset: str | None = None
    model: str | None = None

    def rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The ``ok`` rows this selection names that carry its metric."""
        if self.metric not in frame:
            return frame.iloc[0:0]
        mask = frame["status"] == "ok"
        for key in ("variant", "method", "suite", "dataset", "model"):
            want = getattr(self, key)
            if want is not None:
                mask &= frame[key] == want
        return frame[mask & frame[self.metric].notna()]

    def describe(self) -> str:
        who = self.variant or self.method or "?"
        where = ", ".join(f"{k}={getattr(self, k)}" for k in ("suite", "dataset", "model") if getattr(self, k))
        return f"{who}.{self.metric}" + (f" ({where})" if where else "")


@dataclass(frozen=True)
class Outcome:
    """What a check found: our value, the baseline's, whether the claim holds, and details."""

    holds: bool | None
    ours: float | None = None
    baseline: float | None = None
    n_seeds: int = 0
    detail: str = ""


def _group_means(rows: pd.DataFrame, metric: str, by: Sequence[str]) -> pd.DataFrame:
    keys = list(by)
    if not keys:
        return pd.DataFrame({"mean": [rows[metric].mean()], "n": [len(rows)]})
    return rows.groupby(keys)[metric].agg(mean="mean", n="count").reset_index()


@dataclass(frozen=True)
class Compare:
    """``mean(ours) op mean(baseline) + margin`` in every group of ``every`` with both sides."""

    ours: Select
    baseline: Select
    op: str = ">="
    margin: float = 0.0
    every: tuple[str, ...] = ("dataset", "model")

    def __call__(self, frame: pd.DataFrame) -> Outcome:
        ours, base = self.ours.rows(frame), self.baseline.rows(frame)
        if ours.empty or base.empty:
            return Outcome(
                None, detail="no rows for " + (self.ours.describe() if ours.empty else self.baseline.describe())
            )
        a = _group_means(ours, self.ours.metric, self.every)
        b = _group_means(base, self.baseline.metric, self.every)
        both = (
            a.merge(b, on=list(self.every), suffixes=("_ours", "_base"))
            if self.every
            else pd.concat([a.add_suffix("_ours"), b.add_suffix("_base")], axis=1)
        )
        if both.empty:
            return Outcome(None, detail=f"no group of {', '.join(self.every)} has both sides")
        test = OPS[self.op]
        holds = [test(o, m + self.margin) for o, m in zip(both["mean_ours"], both["mean_base"])]
        groups = [", ".join(str(r[k]) for k in self.every) or "all" for _, r in both.iterrows()]
        detail = "; ".join(
            f"{g}: {o:.4g} vs {m:.4g} {'ok' if h else 'FAILS'}"
            for g, o, m, h in zip(groups, both["mean_ours"], both["mean_base"], holds)
        )
        return Outcome(
            all(holds),
            float(both["mean_ours"].mean()),
            float(both["mean_base"].mean()),
            int(both["n_ours"].min()),
            detail,
        )


@dataclass(frozen=True)
class Ratio:
    """``mean(numerator) / mean(denominator) >= at_least`` (e.g. memory of original / transfer)."""

    numerator: Select
    denominator: Select
    at_least: float

    def __call__(self, frame: pd.DataFrame) -> Outcome:
        num, den = self.numerator.rows(frame), self.denominator.rows(frame)
        if num.empty or den.empty:
            return Outcome(
                None, detail="no rows for " + (self.numerator.describe() if num.empty else self.denominator.describe())
            )
        a, b = float(num[self.numerator.metric].mean()), float(den[self.denominator.metric].mean())
        ratio = a / b if b else math.inf
        return Outcome(
            ratio >= self.at_least,
            ratio,
            None,
            int(min(len(num), len(den))),
            f"{a:.4g} / {b:.4g} = {ratio:.3f} (needs >= {self.at_least:g})",
        )


@dataclass(frozen=True)
class Threshold:
    """``mean(ours) op value``."""

    ours: Select
    op: str
    value: float

    def __call__(self, frame: pd.DataFrame) -> Outcome:
        rows = self.ours.rows(frame)
        if rows.empty:
            return Outcome(None, detail=f"no rows for {self.ours.describe()}")
        mean = float(rows[self.ours.metric].mean())
        return Outcome(OPS[self.op](mean, self.value), mean, None, len(rows), f"{mean:.4g} {self.op} {self.value:g}")


@dataclass(frozen=True)
class Custom:
    """Any check that the kinds above cannot say: ``fn(frame) -> Outcome``."""

    fn: Callable[[pd.DataFrame], Outcome]
    description: str = ""

    def __call__(self, frame: pd.DataFrame) -> Outcome:
        return self.fn(frame)


Check = Compare | Ratio | Threshold | Custom


@dataclass(frozen=True)
class Claim:
    """A paper's headline figure and what must hold for ours to count as reproducing it."""

    id: str
    paper: str
    method: str
    metric: str
    where: str = ""
    baseline: str | None = None
    paper_value: Any = None
    paper_baseline_value: Any = None
    unit: str = ""
    setting: str = ""
    check_text: str = ""
    tier: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Claim:
        """A claim from the ``paper_claims.json`` layout (``value``, ``baseline_value``, ``check``)."""
        known = {
            "id",
            "paper",
            "method",
            "metric",
            "where",
            "baseline",
            "value",
            "baseline_value",
            "unit",
            "setting",
            "check",
            "tier",
        }
        return cls(
            id=data["id"],
            paper=data["paper"],
            method=data["method"],
            metric=data["metric"],
            where=data.get("where", ""),
            baseline=data.get("baseline"),
            paper_value=data.get("value"),
            paper_baseline_value=data.get("baseline_value"),
            unit=data.get("unit", ""),
            setting=data.get("setting", ""),
            check_text=data.get("check", ""),
            tier=data.get("tier"),
            extra={k: v for k, v in data.items() if k not in known},
        )


@dataclass(frozen=True)
class ClaimRow:
    """One verdict: a claim at a tier (the ``claims`` table row)."""

    claim: Claim
    tier: str
    verdict: str
    outcome: Outcome

    def as_row(self, evaluated_at: str) -> dict[str, Any]:
        c, o = self.claim, self.outcome
        return {
            "claim_id": c.id,
            "tier": self.tier,
            "paper": c.paper,
            "method": c.method,
            "baseline": c.baseline,
            "source_ref": c.where,
            "metric": c.metric,
            "paper_value": _json(c.paper_value),
            "paper_baseline_value": _json(c.paper_baseline_value),
            "unit": c.unit,
            "setting": c.setting,
            "check_text": c.check_text,
            "ours_value": _finite(o.ours),
            "ours_baseline_value": _finite(o.baseline),
            "ours_detail": o.detail,
            "verdict": self.verdict,
            "n_seeds": o.n_seeds,
            "evaluated_at": evaluated_at,
        }


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


CLAIMS: Registry = Registry("claim", loaders=("methods",), entry_point_group="archbench.claims")
CHECKS: dict[str, Check] = {}


def register_claims(claims: Iterable[Claim]) -> None:
    """Register paper claims (data); duplicate ids are refused."""
    for claim in claims:
        CLAIMS.register(claim.id, claim)


def load_claims_file(path: str | Path) -> list[Claim]:
    """Claims from a JSON file shaped like ``methods/paper_claims.json``."""
    data = json.loads(Path(path).read_text())
    return [Claim.from_dict(item) for item in data["claims"]]


def register_check(claim_id: str, check: Check) -> None:
    """Attach the executable check of claim ``claim_id`` (declared by the method that owns it)."""
    if claim_id in CHECKS:
        raise ValueError(f"claim '{claim_id}' already has a check")
    CHECKS[claim_id] = check


def evaluate(
    frame: pd.DataFrame, claims: Iterable[Claim] | None = None, checks: Mapping[str, Check] | None = None
) -> list[ClaimRow]:
    """Verdicts of ``claims`` (default: all registered) on the latest rows in ``frame``.

    ``frame`` has one row per cell (``bench.results.report.load_latest``). A claim is evaluated
    at every tier present in the frame (or only at its own ``tier``); with no check or
    no rows it is "not yet measured" at the claim's tier (or "any").
    """
    claims = list(claims) if claims is not None else [CLAIMS.get(n) for n in CLAIMS.names()]
    checks = CHECKS if checks is None else checks
    tiers = sorted(frame["tier"].dropna().unique()) if not frame.empty else []
    out = []
    for claim in claims:
        check = checks.get(claim.id)
        wanted = [claim.tier] if claim.tier else tiers
        measured = False
        errors: list[str] = []
        for tier in wanted:
            rows = frame[frame["tier"] == tier] if not frame.empty else frame
            if check is None or rows.empty:
                continue
            try:
                outcome = check(rows)
            except Exception as exc:  # noqa: BLE001 - a broken check must not take the run (or the other claims) down
                errors.append(f"{claim.id}@{tier}: {type(exc).__name__}: {exc}")
                warnings.warn(
                    f"claim check {claim.id} failed at tier {tier}: {type(exc).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            if outcome.holds is None:
                continue
            measured = True
            out.append(ClaimRow(claim, tier, "reproduced" if outcome.holds else "not reproduced", outcome))
        if not measured:
            why = (
                "no check declared yet (the method is not implemented)"
                if check is None
                else "check raised " + "; ".join(errors)
                if errors
                else "no matching results"
            )
            out.append(ClaimRow(claim, claim.tier or "any", "not yet measured", Outcome(None, detail=why)))
    return out


def render(rows: Sequence[ClaimRow]) -> str:
    """A plain-text table: claim, paper vs ours, verdict, tier."""
    table = pd.DataFrame(
        [
            {
                "claim": r.claim.id,
                "where": r.claim.where,
                "metric": r.claim.metric,
                "paper": _short(r.claim.paper_value, r.claim.paper_baseline_value),
                "ours": _short(r.outcome.ours, r.outcome.baseline),
                "verdict": r.verdict,
                "tier": r.tier,
            }
            for r in rows
        ]
    )
    if table.empty:
        return "no claims registered"
    counts = table["verdict"].value_counts().to_dict()
    head = ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS)
    with pd.option_context("display.max_rows", None, "display.width", 250):
        return f"{len(table)} claim verdicts: {head}\n\n" + table.to_string(index=False)


def _short(value: Any, baseline: Any) -> str:
    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return json.dumps(v) if not isinstance(v, str) else v

    text = fmt(value) if baseline is None else f"{fmt(value)} vs {fmt(baseline)}"
    return text if len(text) <= 40 else text[:37] + "..."  # the table keeps the full values
