"""``bench report``: seed-aggregated tables from a results database.

Reads the latest row of every cell (``latest_results``), keeps ``ok`` rows for the
statistics and counts the others, and prints mean +- std (n) per
suite / method entry / dataset / model / tier / mode (``GROUP_KEYS``) for the headline metrics. Two other
layouts, as the papers print their tables: ``by_variant`` puts the method entries side by
side (one row per suite / dataset / model / tier), and ``per_seed`` lists every seed's
value beside the mean, so a collapsed seed (a 10% run) is visible. ``matrix`` lays out a
family of metrics named by a pattern with ``{row}`` and ``{col}`` placeholders, e.g.
NASOA's Table 3 ``t3_{row}_{col}_mae`` (predictor x stream segment), per cell group.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from bench.contract.cell import GROUP_KEYS
from bench.results.queries import latest_frames
from bench.results.stats import format_mean_std, seed_summary

KEYS = GROUP_KEYS
DEFAULT_METRICS = ("test_top1_pct", "val_top1_pct", "step_ms_median", "counted_mem_mib", "peak_mem_mib", "fit_s")


def load_latest(db: str | Path, suite: str | None = None) -> pd.DataFrame:
    """Latest row per cell with every metric as a column (long metrics pivoted wide)."""
    rows, metrics = latest_frames(db, suite)
    if rows.empty:
        return rows
    wide = metrics.pivot_table(index="result_id", columns="name", values="value", aggfunc="first")
    base = rows.drop(columns=[c for c in rows.columns if c in wide.columns])
    return base.merge(wide, left_on="result_id", right_index=True, how="left")


def summary_table(frame: pd.DataFrame, metrics: Sequence[str] = DEFAULT_METRICS) -> pd.DataFrame:
    """Printable table: one row per cell group, ``mean +- std (n)`` per metric, failures counted."""
    ok = frame[frame["status"] == "ok"]
    summary = seed_summary(ok, KEYS, metrics) if not ok.empty else pd.DataFrame(columns=list(KEYS))
    out = summary[list(KEYS)].copy() if not summary.empty else pd.DataFrame(columns=list(KEYS))
    for metric in metrics:
        if f"{metric}_mean" in summary:
            out[metric] = [
                format_mean_std(m, s, int(n))
                for m, s, n in zip(summary[f"{metric}_mean"], summary[f"{metric}_std"], summary[f"{metric}_n"])
            ]
    bad = frame[frame["status"] != "ok"].groupby(list(KEYS)).size().rename("not_ok").reset_index()
    if not bad.empty:
        out = out.merge(bad, on=list(KEYS), how="outer").fillna({"not_ok": 0})
        out["not_ok"] = out["not_ok"].astype(int)
    return out.sort_values(list(KEYS)).reset_index(drop=True)


def by_variant_table(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per suite / dataset / model / tier, one ``mean +- std (n)`` column per method entry."""
    rows = [k for k in KEYS if k != "variant"]
    ok = frame[(frame["status"] == "ok")]
    if ok.empty or metric not in ok:
        return pd.DataFrame(columns=rows)
    summary = seed_summary(ok, KEYS, [metric])
    summary["cell"] = [
        format_mean_std(m, s, int(n))
        for m, s, n in zip(summary[f"{metric}_mean"], summary[f"{metric}_std"], summary[f"{metric}_n"])
    ]
    wide = summary.pivot_table(index=rows, columns="variant", values="cell", aggfunc="first").fillna("-")
    wide.columns.name = None
    return wide.reset_index().sort_values(rows).reset_index(drop=True)


def per_seed_table(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per cell group: every seed's value of ``metric`` (``failed`` etc. where not ok), then the mean."""
    if metric not in frame:
        return pd.DataFrame(columns=list(KEYS))
    shown = frame.assign(
        value=[f"{v:.2f}" if st == "ok" and pd.notna(v) else st for v, st in zip(frame[metric], frame["status"])]
    )
    wide = shown.pivot_table(index=list(KEYS), columns="seed", values="value", aggfunc="first").fillna("-")
    wide.columns = [f"seed {c}" for c in wide.columns]
    ok = frame[frame["status"] == "ok"]
    summary = seed_summary(ok, KEYS, [metric]).set_index(list(KEYS)) if not ok.empty else None
    if summary is not None:
        m, sd, n = (summary[f"{metric}_{x}"] for x in ("mean", "std", "n"))
        wide["mean +- std (n)"] = [
            format_mean_std(m[k], sd[k], int(n[k])) if k in summary.index else "-" for k in wide.index
        ]
    return wide.reset_index().sort_values(list(KEYS)).reset_index(drop=True)


def matrix_table(frame: pd.DataFrame, pattern: str) -> pd.DataFrame:
    """One row per cell group and ``{row}`` value, one column per ``{col}`` value, of the metrics
    that ``pattern`` names (``mean +- std (n)`` over seeds)."""
    if pattern.count("{row}") != 1 or pattern.count("{col}") != 1:
        raise ValueError(f"a matrix pattern needs one {{row}} and one {{col}}, got '{pattern}'")
    regex = re.compile(
        "^" + re.escape(pattern).replace(r"\{row\}", "(?P<row>.+?)").replace(r"\{col\}", "(?P<col>.+?)") + "$"
    )
    found = [(name, m["row"], m["col"]) for name in frame.columns if isinstance(name, str) and (m := regex.match(name))]
    ok = frame[frame["status"] == "ok"]
    if not found or ok.empty:
        return pd.DataFrame(columns=[*KEYS, "row"])
    summary = seed_summary(ok, KEYS, [name for name, _, _ in found])
    rows = []
    for _, group in summary.iterrows():
        for row in dict.fromkeys(r for _, r, _ in found):
            cells = {
                col: format_mean_std(group[f"{name}_mean"], group[f"{name}_std"], int(group[f"{name}_n"]))
                for name, r, col in found
                if r == row and pd.notna(group[f"{name}_mean"])
            }
            if cells:
                rows.append({**{k: group[k] for k in KEYS}, "row": row, **cells})
    cols = list(dict.fromkeys(c for _, _, c in found))
    out = pd.DataFrame(rows, columns=[*KEYS, "row", *cols]).fillna("-")
    return out.sort_values([*KEYS]).reset_index(drop=True) if not out.empty else out


LAYOUTS = ("summary", "by-variant", "per-seed", "matrix")


def render(
    db: str | Path,
    suite: str | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    layout: str = "summary",
    pattern: str = "",
    variant: str | None = None,
) -> str:
    """The report as text (what ``bench report`` prints); ``layout`` is one of ``LAYOUTS``
    (``matrix`` reads ``pattern``); ``variant`` keeps method entries starting with it."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout '{layout}'; valid: {', '.join(LAYOUTS)}")
    frame = load_latest(db, suite)
    if variant and not frame.empty:
        frame = frame[frame["variant"].str.startswith(variant)]
    if frame.empty:
        return (
            f"no results in {db}"
            + (f" for suite '{suite}'" if suite else "")
            + (f" with a method entry starting '{variant}'" if variant else "")
        )
    counts = frame["status"].value_counts().to_dict()
    head = f"{len(frame)} cells in {db} (latest row per cell): " + ", ".join(
        f"{n} {s}" for s, n in sorted(counts.items())
    )
    if layout == "summary":
        table, what = summary_table(frame, metrics), "values: mean +- std (n seeds)"
    elif layout == "by-variant":
        table, what = by_variant_table(frame, metrics[0]), f"{metrics[0]}: mean +- std (n seeds) per method entry"
    elif layout == "per-seed":
        table, what = per_seed_table(frame, metrics[0]), f"{metrics[0]} per seed"
    else:
        table, what = matrix_table(frame, pattern), f"{pattern}: mean +- std (n seeds)"
        if table.empty:
            what += f" (no metric matches '{pattern}')"
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 250):
        return head + f"\n{what}\n\n" + table.to_string(index=False)
