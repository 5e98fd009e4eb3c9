"""How a gate report is shown and kept: the markdown table ``bench gate`` prints, the JSON
report (``--json``) and the ``gate_decisions`` rows (``--db``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.gate.decision import Decision, GateReport
    from bench.gate.reference import Side


def _fmt(value: float | None, std: float | None, n: int) -> str:
    from bench.results.stats import format_mean_std

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if std is not None:
        return format_mean_std(value, std, n)
    return f"{value:.2f} ({n})"


def _delta(d: Decision) -> str:
    if d.delta is None:
        return "-"
    ratio = f" (x{d.ratio:.3f})" if d.ratio is not None and math.isfinite(d.ratio) else ""
    return f"{d.delta:+.2f}{ratio}"


def render_markdown(report: GateReport) -> str:
    """The table, the notes, and the one-line summary last (what ``bench gate`` prints)."""
    lines = ["| cell | metric | reference | candidate | delta | verdict | reason |", "|---|---|---:|---:|---:|---|---|"]
    for d in report.decisions:
        verdict = f"**{d.verdict}**" if report.failing(d) else d.verdict
        lines.append(
            f"| {d.cell} | {d.metric} | {_fmt(d.reference, d.reference_std, d.n_reference)} | "
            f"{_fmt(d.candidate, d.candidate_std, d.n_candidate)} | {_delta(d)} | {verdict} | "
            f"{d.reason.replace('|', '/')} |"
        )
    if report.notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in report.notes]
    lines += ["", report.summary()]
    return "\n".join(lines)


def _side(s: Side) -> dict[str, Any]:
    return {
        "selector": s.selector,
        "source": s.source,
        "kind": s.kind,
        "label": s.label,
        "run": {k: v for k, v in s.run.items() if k != "flags_json"},
        "rows": len(s.rows),
    }


def report_dict(report: GateReport) -> dict[str, Any]:
    """The machine-readable report (``--json``): summary, counts, sides, settings, notes, decisions."""
    return {
        "gate_id": report.gate_id,
        "created_at": report.created_at,
        "exit_code": report.exit_code,
        "passed": report.exit_code == 0,
        "summary": report.summary(),
        "counts": report.counts(),
        "baseline": _side(report.baseline),
        "candidate": _side(report.candidate),
        "settings": report.settings.as_dict(),
        "notes": report.notes,
        "decisions": [d.as_dict() for d in report.decisions],
    }


def decision_rows(report: GateReport) -> list[dict[str, Any]]:
    """``gate_decisions`` rows (columns in ``bench.results.schema``), one per decision."""
    from bench.contract.cell import short_hash
    from bench.gate.reference import KEY_FIELDS

    rows = []
    for d in report.decisions:
        data = d.as_dict()
        rows.append(
            {
                "decision_id": short_hash(report.gate_id, *d.key, d.metric),
                "gate_id": report.gate_id,
                "created_at": report.created_at,
                "baseline": report.baseline.label,
                "candidate": report.candidate.label,
                **{k: data[k] for k in KEY_FIELDS},
                "metric": d.metric,
                "reference": data["reference"],
                "candidate_value": data["candidate"],
                "delta": data["delta"],
                "n_reference": d.n_reference,
                "n_candidate": d.n_candidate,
                "p_value": data["p_value"],
                "p_adjusted": data["p_adjusted"],
                "verdict": d.verdict,
                "reason": d.reason,
            }
        )
    return rows
