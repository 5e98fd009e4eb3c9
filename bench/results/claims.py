"""Claims: the papers' headline numbers beside ours, with a verdict from the one procedure.

A ``Claim`` is data: the paper's figure (``paper_value``, ``paper_baseline_value``),
its unit, the table or figure it comes from (``where``), the setting, the statement of
what must hold (``check_text``) and the tier it applies to (``None``: every tier we
have data for). The papers' claims ship as ``methods/paper_claims.json``; each method
module attaches the *executable* check of its claims with ``register_check(id, check)``.

Every check is built from the kinds below, and every kind ends in ``bench.results.verdict``
(the floor, the paired or unpaired test, the decision, censoring; read its docstring), so a
verdict is ``reproduced``, ``not reproduced`` or ``inconclusive`` with its reason, and carries
the effect, its 95% CI, n and the number of censored values:

- ``Compare(ours, baseline, op, margin, tol, every)``: ``ours - baseline`` in every group of
  ``every`` (default dataset and model) that has both sides, paired by seed;
- ``Ratio(numerator, denominator, op, bound, every)``: ``numerator / baseline`` (memory saving,
  step-time ratio), tested on logarithms;
- ``Threshold(ours, op, value, every)``: a mean against a fixed value;
- ``Spread(ours, baseline, op, every)``: standard deviations (F-test);
- ``AllOf(parts)`` / ``Each(expand)``: several comparisons that must all hold (a fixed list, or
  one built from what the rows hold: every budget, every depth);
- ``FirstOf(*checks)``: the first that has data (a CUDA measure where a tier has it, else CPU's).

A ``Select`` names the rows (variant, variant prefix or method, optional suite/dataset/model,
mode) and the metric, or a ``derive`` function computing it from a row; ``censor_at`` names the
budget a missing value is censored at. Rows that are not ``ok`` are never dropped silently: a
``diverged`` cell counts at chance on an accuracy metric and makes any other comparison
inconclusive, as a ``failed`` or ``oom`` cell does; ``skipped`` cells did not run. ``evaluate``
adds the ``chance_pct`` column (100 / classes, from the dataset registry) that the floor reads.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from bench.contract.units import unit_of
from bench.registry import Registry
from bench.results.verdict import (
    VERDICTS,
    Obs,
    Outcome,
    combine,
    difference,
    floor_pct,
    inconclusive,
    no_data,
    one_sample,
    spread,
)

__all__ = [
    "VERDICTS",
    "AllOf",
    "Claim",
    "ClaimRow",
    "Compare",
    "Each",
    "FirstOf",
    "Outcome",
    "Ratio",
    "Select",
    "Spread",
    "Threshold",
    "evaluate",
    "inconclusive",
    "register_check",
    "register_claims",
    "render",
]

DEFAULT_TOL_BY_UNIT = {"pct": 1.0, "tau": 0.05, "rho": 0.05}
"""The non-inferiority tolerance of ``>=``/``<=`` claims by unit (the gate's practical tolerances)."""

NOT_RUN = ("skipped",)
Derive = Callable[[Mapping[str, Any]], "tuple[float, bool] | None"]


def is_accuracy(metric: str) -> bool:
    """Accuracy metrics (``*_top1_pct``) are the ones a chance floor applies to."""
    return metric.endswith("top1_pct")


@dataclass(frozen=True)
class Select:
    """Rows of one method entry and the value each contributes.

    ``variant`` (exact label), ``variant_prefix`` (e.g. ``"nasoa:gen-"``) or ``method`` picks the
    entry; ``suite``/``dataset``/``model``/``mode`` narrow it (``mode="speed"`` for timing claims:
    accuracy mode turns cuDNN autotuning off). The value is ``metric``, or ``derive(row) ->
    (value, censored)`` when given (``metric`` then names the derived quantity). With
    ``censor_at``, an ``ok`` row without the metric counts at ``row[censor_at]``, flagged censored.
    ``floor_on`` names the accuracy metric the chance floor reads (default: ``metric`` itself when
    it is an accuracy; no floor otherwise).
    """

    metric: str
    variant: str | None = None
    method: str | None = None
    suite: str | None = None
    dataset: str | None = None
    model: str | None = None
    variant_prefix: str | None = None
    mode: str | None = None
    censor_at: str | None = None
    derive: Derive | None = None
    floor_on: str | None = None

    @property
    def floor_metric(self) -> str | None:
        return self.floor_on or (self.metric if is_accuracy(self.metric) else None)

    def matching(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Every row this selection names, whatever its status (skipped rows excepted)."""
        if frame.empty:
            return frame
        mask = ~frame["status"].isin(NOT_RUN)
        for key in ("variant", "method", "suite", "dataset", "model", "mode"):
            want = getattr(self, key)
            if want is not None:
                mask &= frame[key] == want if key in frame else False
        if self.variant_prefix is not None:
            mask &= frame["variant"].astype(str).str.startswith(self.variant_prefix)
        return frame[mask]

    def rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The ``ok`` rows this selection names that carry its value (or a censoring budget)."""
        rows = self.matching(frame)
        rows = rows[rows["status"] == "ok"] if not rows.empty else rows
        if self.derive is not None or rows.empty:
            return rows
        have = rows[self.metric].notna() if self.metric in rows else pd.Series(False, index=rows.index)
        if self.censor_at is not None and self.censor_at in rows:
            have |= rows[self.censor_at].notna()
        return rows[have]

    def value(self, row: Mapping[str, Any]) -> tuple[float, bool] | None:
        """``(value, censored)`` of one row, or None when the row has neither value nor budget."""
        if self.derive is not None:
            return self.derive(row)
        v = row.get(self.metric)
        if v is not None and not _isnan(v):
            return float(v), False
        budget = row.get(self.censor_at) if self.censor_at else None
        if budget is not None and not _isnan(budget):
            return float(budget), True
        return None

    def describe(self) -> str:
        who = self.variant or (self.variant_prefix and self.variant_prefix + "*") or self.method or "?"
        where = ", ".join(f"{k}={getattr(self, k)}" for k in ("suite", "dataset", "model", "mode") if getattr(self, k))
        return f"{who}.{self.metric}" + (f" ({where})" if where else "")

    def why_empty(self, frame: pd.DataFrame) -> str:
        """Why there is nothing to read (a speed-mode claim on accuracy-mode rows says so)."""
        if self.mode is not None and "mode" in frame:
            other = Select(**{**self.__dict__, "mode": None}).matching(frame)
            if not other.empty:
                return (
                    f"no {self.mode}-mode rows for {self.describe()} (only "
                    f"{', '.join(sorted(set(other['mode'])))}); timing claims read {self.mode}-mode "
                    f"rows only: run with --bench-mode {self.mode}"
                )
        return f"no rows for {self.describe()}"


def _isnan(v: Any) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return True


class Check(Protocol):
    """What ``register_check`` takes: a frame of latest rows in, an ``Outcome`` out."""

    def __call__(self, frame: pd.DataFrame) -> Outcome: ...


def _label(key: Any) -> str:
    if isinstance(key, tuple):
        return ", ".join(str(k) for k in key) or "all"
    return str(key)


def _side(select: Select, rows: pd.DataFrame) -> tuple[list[Obs], str | None]:
    """The observations of one side (one per seed) or the reason they cannot be compared."""
    bad = rows[~rows["status"].isin(("ok", "diverged"))]
    if not bad.empty:
        counts = bad["status"].value_counts().to_dict()
        return [], f"{select.describe()}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + " cell(s)"
    diverged = rows[rows["status"] == "diverged"]
    if not diverged.empty and not is_accuracy(select.metric):
        return [], f"{select.describe()}: {len(diverged)} diverged cell(s) (no value to count)"
    per_seed: dict[Any, list[tuple[float, bool]]] = {}
    for row in rows.to_dict("records"):
        if row["status"] == "diverged":
            got: tuple[float, bool] | None = (float(row.get("chance_pct", math.nan)), False)
        else:
            got = select.value(row)
        if got is not None and not math.isnan(got[0]):
            per_seed.setdefault(row.get("seed"), []).append(got)
    obs = [Obs(seed, sum(v for v, _ in vals) / len(vals), any(c for _, c in vals)) for seed, vals in per_seed.items()]
    return obs, None


def _below_floor(select: Select, rows: pd.DataFrame) -> str | None:
    """The first compared cell (entry x dataset x model, seed mean) under its chance floor."""
    metric = select.floor_metric
    if metric is None or rows.empty or "chance_pct" not in rows:
        return None
    values = rows.assign(
        _floor_value=[
            float(r["chance_pct"]) if r["status"] == "diverged" else r.get(metric, math.nan)
            for r in rows.to_dict("records")
        ]
    )
    for (variant, dataset, model), cell in values.groupby(["variant", "dataset", "model"], dropna=False):
        chance = float(cell["chance_pct"].iloc[0])
        mean = pd.to_numeric(cell["_floor_value"], errors="coerce").mean()
        if math.isnan(chance) or math.isnan(mean):
            continue
        floor = floor_pct(chance)
        if mean < floor:
            return (
                f"below floor: {variant} on {dataset}/{model} {metric} {mean:.1f} < {floor:.1f} (chance {chance:.1f})"
            )
    return None


def _groups(frame: pd.DataFrame, every: Sequence[str]) -> list[tuple[Any, pd.DataFrame]]:
    if not every:
        return [((), frame)]
    return [(k if isinstance(k, tuple) else (k,), g) for k, g in frame.groupby(list(every), dropna=False, sort=True)]


def _two_sided(
    a_sel: Select,
    b_sel: Select,
    frame: pd.DataFrame,
    every: Sequence[str],
    judge: Callable[[list[Obs], list[Obs]], Outcome],
) -> Outcome:
    """Group both sides by ``every``, apply status rules and the floor, judge each group, combine."""
    a_all, b_all = a_sel.matching(frame), b_sel.matching(frame)
    if a_sel.rows(frame).empty or b_sel.rows(frame).empty:
        empty = a_sel if a_sel.rows(frame).empty else b_sel
        return no_data(empty.why_empty(frame))
    b_groups = dict(_groups(b_all, every))
    parts: dict[str, Outcome] = {}
    for key, a_rows in _groups(a_all, every):
        if key not in b_groups:
            continue
        b_rows = b_groups[key]
        name = _label(key)
        (a_obs, a_bad), (b_obs, b_bad) = _side(a_sel, a_rows), _side(b_sel, b_rows)
        floor = _below_floor(a_sel, a_rows) or _below_floor(b_sel, b_rows)
        if a_bad or b_bad:
            parts[name] = inconclusive("cells not ok", a_bad or b_bad or "")
        elif floor:
            parts[name] = inconclusive("below floor", floor)
        elif not a_obs or not b_obs:
            parts[name] = no_data("no values")
        else:
            parts[name] = judge(a_obs, b_obs)
    if not parts:
        return no_data(f"no group of {', '.join(every)} has both {a_sel.describe()} and {b_sel.describe()}")
    return combine(parts) if len(parts) > 1 else next(iter(parts.values()))


def _tol(metric: str, tol: float | None) -> float:
    return DEFAULT_TOL_BY_UNIT.get(unit_of(metric) or "", 0.0) if tol is None else float(tol)


@dataclass(frozen=True)
class Compare:
    """``ours - baseline`` against ``op`` in every group of ``every`` that has both sides.

    ``>``/``<``: superiority (the difference beyond ``margin``); ``>=``/``<=``: non-inferiority
    within ``tol`` (default by unit: 1 point for ``pct``, 0.05 for ``tau``/``rho``, 0 otherwise);
    ``~=``: equivalence within ``tol``. Paired by seed within a group.
    """

    ours: Select
    baseline: Select
    op: str = ">="
    margin: float = 0.0
    every: tuple[str, ...] = ("dataset", "model")
    tol: float | None = None
    exact: bool = False

    def __call__(self, frame: pd.DataFrame) -> Outcome:
        tol = _tol(self.ours.metric, self.tol)
        return _two_sided(
            self.ours,
            self.baseline,
            frame,
            self.every,
            lambda a, b: difference(a, b, op=self.op, margin=self.margin, tol=tol, exact=self.exact),
        )


@dataclass(frozen=True)
class Ratio:
    """``numerator / denominator`` against ``op bound`` (e.g. memory original / transfer >= 2), per group."""

    numerator: Select
    denominator: Select
    bound: float
    op: str = ">="
    every: tuple[str, ...] = ()
    exact: bool = False

    def __call__(self, frame: pd.DataFrame) -> Outcome:
        return _two_sided(
            self.numerator,
            self.denominator,
            frame,
            self.every,
            lambda a, b: difference(a, b, op=self.op, margin=self.bound, exact=self.exact, ratio=True),
        )


@dataclass(frozen=True)
class Threshold:
    """``mean(ours) op value`` (one-sample test), in every group of ``every``."""

    ours: Select
    op: str
    value: float
    every: tuple[str, ...] = ()

    def __call__(self, frame: pd.DataFrame) -> Outcome:
        rows = self.ours.matching(frame)
        if self.ours.rows(frame).empty:
            return no_data(self.ours.why_empty(frame))
        parts: dict[str, Outcome] = {}
        for key, group in _groups(rows, self.every):
            obs, bad = _side(self.ours, group)
            floor = _below_floor(self.ours, group)
            if bad:
                parts[_label(key)] = inconclusive("cells not ok", bad)
            elif floor:
                parts[_label(key)] = inconclusive("below floor", floor)
            else:
                parts[_label(key)] = one_sample(obs, op=self.op, bound=self.value)
        return combine(parts) if len(parts) > 1 else next(iter(parts.values()))


@dataclass(frozen=True)
class Spread:
    """``std(ours) op std(baseline)`` per group (F-test of the variance ratio)."""

    ours: Select
    baseline: Select
    op: str = "<"
    every: tuple[str, ...] = ("dataset", "model")

    def __call__(self, frame: pd.DataFrame) -> Outcome:
        return _two_sided(
            self.ours,
            self.baseline,
            frame,
            self.every,
            lambda a, b: spread([o.value for o in a], [o.value for o in b], op=self.op),
        )


@dataclass(frozen=True)
class AllOf:
    """Every named part holds (``verdict.combine``: intersection-union, Bonferroni against)."""

    parts: tuple[tuple[str, Check], ...]

    def __call__(self, frame: pd.DataFrame) -> Outcome:
        return combine({name: check(frame) for name, check in self.parts})


@dataclass(frozen=True)
class Each:
    """``AllOf`` over the parts ``expand(frame)`` names: every budget, depth or dataset the rows hold."""

    expand: Callable[[pd.DataFrame], Sequence[tuple[str, Check]]]
    description: str = ""

    def __call__(self, frame: pd.DataFrame) -> Outcome:
        parts = list(self.expand(frame))
        if not parts:
            return no_data(f"nothing to compare ({self.description})" if self.description else "nothing to compare")
        return AllOf(tuple(parts))(frame)


@dataclass(frozen=True)
class FirstOf:
    """The first of ``checks`` that has data (e.g. the CUDA allocator's peak, else CPU's counted bytes)."""

    checks: tuple[Check, ...]

    def __call__(self, frame: pd.DataFrame) -> Outcome:
        details = []
        for check in self.checks:
            out = check(frame)
            if out.verdict is not None:
                return out
            details.append(out.detail)
        return no_data("; ".join(details))


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
    paper_title: str = ""  # from the file's "papers" map: what a reader of the claims table calls the paper
    suite: str = ""  # the suite file whose cells the check reads (the command that reproduces the verdict)

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
            "suite",
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
            suite=data.get("suite", ""),
        )


@dataclass(frozen=True)
class ClaimRow:
    """One verdict: a claim at a tier (the ``claims`` table row)."""

    claim: Claim
    tier: str
    outcome: Outcome

    @property
    def verdict(self) -> str:
        """``reproduced``, ``not reproduced`` or ``inconclusive`` (no data is inconclusive too)."""
        return self.outcome.verdict or "inconclusive"

    @property
    def reason(self) -> str:
        return self.outcome.reason if self.verdict == "inconclusive" else ""

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
            "reason": self.reason,
            "effect": _finite(o.effect),
            "ci_low": _finite(o.ci_low),
            "ci_high": _finite(o.ci_high),
            "p_value": _finite(o.p_value),
            "test": o.test,
            "n_seeds": o.n,
            "n_censored": o.n_censored,
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
    """Claims from a JSON file shaped like ``methods/paper_claims.json``.

    Its optional ``papers`` map (``{paper file: {"title", "suite"}}``) names each paper and the suite
    that measures its claims; every claim of that paper carries both (a claim's own ``suite`` wins)."""
    data = json.loads(Path(path).read_text())
    papers = data.get("papers", {})
    out = []
    for item in data["claims"]:
        claim = Claim.from_dict(item)
        about = papers.get(claim.paper, {})
        out.append(replace(claim, paper_title=about.get("title", ""), suite=claim.suite or about.get("suite", "")))
    return out


def register_check(claim_id: str, check: Check) -> None:
    """Attach the executable check of claim ``claim_id`` (declared by the method that owns it).

    The claim must be registered first (``UnknownName`` names the close matches otherwise), so a
    misspelt id cannot leave a check that never runs; a second check for one claim is refused.
    """
    CLAIMS.get(claim_id)
    if claim_id in CHECKS:
        raise ValueError(f"claim '{claim_id}' already has a check")
    CHECKS[claim_id] = check


def chance_pct(dataset: str) -> float:
    """Chance top-1 accuracy (100 / classes) of a registered dataset; NaN for an unknown one."""
    from bench.contract import units
    from bench.data.registry import dataset_info
    from bench.errors import UnknownName

    try:
        return units.chance_pct(dataset_info(dataset).num_classes)
    except UnknownName:
        return math.nan


def with_chance(frame: pd.DataFrame, chance: Callable[[str], float] = chance_pct) -> pd.DataFrame:
    """``frame`` with a ``chance_pct`` column (kept when present), the floor's input."""
    if frame.empty or "chance_pct" in frame:
        return frame
    by_dataset = {d: chance(str(d)) for d in frame["dataset"].dropna().unique()}
    return frame.assign(chance_pct=frame["dataset"].map(by_dataset))


def evaluate(
    frame: pd.DataFrame, claims: Iterable[Claim] | None = None, checks: Mapping[str, Check] | None = None
) -> list[ClaimRow]:
    """Verdicts of ``claims`` (default: all registered) on the latest rows in ``frame``.

    ``frame`` has one row per cell (``bench.results.report.load_latest``). A claim is evaluated
    at every tier present in the frame (or only at its own ``tier``) where it finds data; with
    none anywhere it reads ``inconclusive (no data)`` at the claim's tier (or "any"), with what
    was missing in the detail.
    """
    claims = list(claims) if claims is not None else [CLAIMS.get(n) for n in CLAIMS.names()]
    checks = CHECKS if checks is None else checks
    frame = with_chance(frame)
    tiers = sorted(frame["tier"].dropna().unique()) if not frame.empty else []
    out = []
    for claim in claims:
        check = checks.get(claim.id)
        wanted = [claim.tier] if claim.tier else tiers
        measured = False
        errors: list[str] = []
        missing: list[str] = []
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
            if outcome.verdict is None:
                missing.append(f"{tier}: {outcome.detail}")
                continue
            measured = True
            out.append(ClaimRow(claim, tier, outcome))
        if not measured:
            why = (
                "no check declared yet (the method is not implemented)"
                if check is None
                else "check raised " + "; ".join(errors)
                if errors
                else "; ".join(missing) or "no matching results"
            )
            reason = "check raised" if errors else "no data"
            out.append(ClaimRow(claim, claim.tier or "any", Outcome("inconclusive", reason=reason, detail=why)))
    return out


def tally(rows: Sequence[ClaimRow]) -> str:
    """``3 reproduced, 1 not reproduced, 22 inconclusive (14 no data, 6 n, 2 below floor)``."""
    counts = {v: sum(r.verdict == v for r in rows) for v in VERDICTS}
    reasons: dict[str, int] = {}
    for r in rows:
        if r.verdict == "inconclusive":
            key = _reason_kind(r.reason)
            reasons[key] = reasons.get(key, 0) + 1
    why = ", ".join(f"{n} {k}" for k, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    head = ", ".join(f"{counts[v]} {v}" for v in VERDICTS)
    return head + (f" ({why})" if why else "")


def _reason_kind(reason: str) -> str:
    """The kind of an inconclusive reason: ``n``, ``below floor``, ``no data``, ``p``, ..."""
    if reason.startswith("n="):
        return "n"
    if reason.startswith("p="):
        return "not significant"
    head = reason.split(":")[-1].strip() if ":" in reason else reason
    if head.startswith("n="):
        return "n"
    if head.startswith("p="):
        return "not significant"
    return head or "unspecified"


def render(rows: Sequence[ClaimRow]) -> str:
    """A plain-text table: claim, verdict and reason, effect with its 95% CI, n, paper vs ours, tier."""
    table = pd.DataFrame(
        [
            {
                "claim": r.claim.id,
                "verdict": r.outcome.label if r.outcome.verdict else f"inconclusive ({r.reason})",
                "effect [95% CI]": _effect(r.outcome),
                "n": r.outcome.n,
                "paper": _short(r.claim.paper_value, r.claim.paper_baseline_value),
                "ours": _short(r.outcome.ours, r.outcome.baseline),
                "tier": r.tier,
            }
            for r in rows
        ]
    )
    if table.empty:
        return "no claims registered"
    table["verdict"] = [v if len(v) <= 60 else v[:57] + "..." for v in table["verdict"]]
    with pd.option_context("display.max_rows", None, "display.width", 250, "display.max_colwidth", 60):
        return f"{len(table)} claim verdicts: {tally(rows)}\n\n" + table.to_string(index=False)


def _effect(o: Outcome) -> str:
    if o.effect is None or not math.isfinite(o.effect):
        return "-"
    if o.ci_low is None or o.ci_high is None:
        return f"{o.effect:.3g}"
    return f"{o.effect:.3g} [{o.ci_low:.3g}, {o.ci_high:.3g}]"


def _short(value: Any, baseline: Any) -> str:
    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return json.dumps(v) if not isinstance(v, str) else v

    text = fmt(value) if baseline is None else f"{fmt(value)} vs {fmt(baseline)}"
    return text if len(text) <= 40 else text[:37] + "..."  # the table keeps the full values
