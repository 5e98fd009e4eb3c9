"""The claims table as a document: one markdown table per paper (``bench claims --format md``).

``bench.results.claims.render`` is the terminal view; this is the one a reader of the project
sees (``suites/reference/evidence.md``, written by ``make evidence``). Per paper: each claim with
the paper's figure, ours as the effect with its 95% CI and the number of paired seeds (censored
outcomes counted beside it), the verdict, the reason when inconclusive, the tier the verdict was
issued at, and the command that reproduces it. The header says which commit and database the
verdicts come from and how many are of each kind, so the document cannot be read without them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from bench.results.claims import ClaimRow, tally

__all__ = ["render_markdown"]

COLUMNS = ("claim", "where", "paper", "ours [95% CI]", "n", "verdict", "reason", "tier", "command")


def render_markdown(
    rows: Sequence[ClaimRow], *, commit: str | None = None, db: str | None = None, tier: str | None = None
) -> str:
    """Markdown: a header with provenance and the tally, then a section and a table per paper.

    ``tier`` is the tier the verdicts were asked for (``bench claims --tier``): the title says it,
    and a claim with no data there gets that tier's command."""
    lines = [f"# Claims at the {tier} tier" if tier else "# Claims", ""]
    source = ", from ".join(
        part for part in (f"commit `{commit}`" if commit else "", f"database `{db}`" if db else "") if part
    )
    if source:
        lines += [f"Verdicts of `bench claims` at {source}.", ""]
    lines += [
        f"**{len(rows)} claim verdicts: {tally(rows)}.** A verdict is `reproduced` or `not reproduced` only "
        "when the compared cells clear the chance floor and, where cells pair by seed, a paired test over the "
        "seeds decides; otherwise it is `inconclusive` with its reason.",
        "",
    ]
    papers: dict[str, list[ClaimRow]] = {}
    for row in rows:
        papers.setdefault(row.claim.paper, []).append(row)
    for paper in sorted(papers):
        group = papers[paper]
        name = group[0].claim.paper_title or paper
        lines += [f"## {_cell(name)}", "", f"`{paper}`: {tally(group)}.", ""]
        lines.append("| " + " | ".join(COLUMNS) + " |")
        lines.append("|" + "---|" * len(COLUMNS))
        for row in sorted(group, key=lambda r: (r.claim.id, r.tier)):
            lines.append("| " + " | ".join(_cell(v) for v in _row(row, tier)) + " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _row(row: ClaimRow, tier: str | None) -> list[str]:
    c, o = row.claim, row.outcome
    verdict = row.verdict
    n = "-" if o.n is None else str(o.n)
    if o.n_censored:
        n += f" ({o.n_censored} censored)"
    return [
        f"`{c.id}`",
        c.where,
        _value(c.paper_value, c.paper_baseline_value) + (f" {c.unit}" if c.unit else ""),
        _ours(o.effect, o.ci_low, o.ci_high, o.ours, o.baseline),
        n,
        f"**{verdict}**" if verdict != "inconclusive" else verdict,
        row.reason or "",
        row.tier,
        _command(c.suite, tier if row.tier == "any" and tier else row.tier),
    ]


def _ours(effect: float | None, lo: float | None, hi: float | None, ours: Any, baseline: Any) -> str:
    parts = []
    if effect is not None and math.isfinite(effect):
        ci = f" [{_num(lo)}, {_num(hi)}]" if lo is not None and hi is not None else ""
        parts.append(f"effect {_num(effect)}{ci}")
    if ours is not None or baseline is not None:
        parts.append(_value(ours, baseline))
    return "; ".join(parts) or "-"


def _value(value: Any, baseline: Any) -> str:
    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return _num(v)
        return v if isinstance(v, str) else json.dumps(v)

    return fmt(value) if baseline is None else f"{fmt(value)} vs {fmt(baseline)}"


def _num(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.4g}"


def _command(suite: str, tier: str) -> str:
    if not suite:
        return ""
    budget = f" --bench-budget {tier}" if tier not in ("any", "smoke") else ""
    return f"`pytest {suite}{budget}`"


def _cell(text: str) -> str:
    """A table cell: pipes escaped, newlines flattened."""
    return str(text).replace("|", "\\|").replace("\n", " ")
