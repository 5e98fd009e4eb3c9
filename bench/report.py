"""``bench report``: seed-aggregated tables from a results database.

Reads the latest row of every cell (``latest_results``), keeps ``ok`` rows for the
statistics and counts the others, and prints mean +- std (n) per
suite / method entry / dataset / model / tier for the headline metrics. Two other
layouts, as the papers print their tables: ``by_variant`` puts the method entries side by
side (one row per suite / dataset / model / tier), and ``per_seed`` lists every seed's
value beside the mean, so a collapsed seed (a 10% run) is visible.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from bench.stats import format_mean_std, seed_summary
from bench.store import read_frame

KEYS = ("suite", "variant", "dataset", "model", "tier")
DEFAULT_METRICS = ("test_top1_pct", "val_top1_pct", "step_ms_median", "peak_mem_mib", "fit_s")


def load_latest(db: str | Path, suite: str | None = None) -> pd.DataFrame:
    """Latest row per cell with every metric as a column (long metrics pivoted wide)."""
    sql = "select * from latest_results" + (" where suite = ?" if suite else "")
    rows = read_frame(db, sql, (suite,) if suite else ())
    if rows.empty:
        return rows
    metrics = read_frame(db, "select m.result_id, m.name, m.value from metrics m "
                             "join latest_results r on r.result_id = m.result_id")
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
            out[metric] = [format_mean_std(m, s, int(n)) for m, s, n in
                           zip(summary[f"{metric}_mean"], summary[f"{metric}_std"], summary[f"{metric}_n"])]
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
    summary["cell"] = [format_mean_std(m, s, int(n)) for m, s, n in
                       zip(summary[f"{metric}_mean"], summary[f"{metric}_std"], summary[f"{metric}_n"])]
    wide = summary.pivot_table(index=rows, columns="variant", values="cell", aggfunc="first").fillna("-")
    wide.columns.name = None
    return wide.reset_index().sort_values(rows).reset_index(drop=True)


def per_seed_table(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per cell group: every seed's value of ``metric`` (``failed`` etc. where not ok), then the mean."""
    if metric not in frame:
        return pd.DataFrame(columns=list(KEYS))
    shown = frame.assign(value=[f"{v:.2f}" if st == "ok" and pd.notna(v) else st
                                for v, st in zip(frame[metric], frame["status"])])
    wide = shown.pivot_table(index=list(KEYS), columns="seed", values="value", aggfunc="first").fillna("-")
    wide.columns = [f"seed {c}" for c in wide.columns]
    ok = frame[frame["status"] == "ok"]
    summary = seed_summary(ok, KEYS, [metric]).set_index(list(KEYS)) if not ok.empty else None
    if summary is not None:
        m, sd, n = (summary[f"{metric}_{x}"] for x in ("mean", "std", "n"))
        wide["mean +- std (n)"] = [format_mean_std(m[k], sd[k], int(n[k])) if k in summary.index else "-"
                                   for k in wide.index]
    return wide.reset_index().sort_values(list(KEYS)).reset_index(drop=True)


LAYOUTS = ("summary", "by-variant", "per-seed")


def render(db: str | Path, suite: str | None = None, metrics: Sequence[str] = DEFAULT_METRICS,
           layout: str = "summary") -> str:
    """The report as text (what ``bench report`` prints); ``layout`` is one of ``LAYOUTS``."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout '{layout}'; valid: {', '.join(LAYOUTS)}")
    frame = load_latest(db, suite)
    if frame.empty:
        return f"no results in {db}" + (f" for suite '{suite}'" if suite else "")
    counts = frame["status"].value_counts().to_dict()
    head = (f"{len(frame)} cells in {db} (latest row per cell): "
            + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if layout == "summary":
        table, what = summary_table(frame, metrics), "values: mean +- std (n seeds)"
    elif layout == "by-variant":
        table, what = by_variant_table(frame, metrics[0]), f"{metrics[0]}: mean +- std (n seeds) per method entry"
    else:
        table, what = per_seed_table(frame, metrics[0]), f"{metrics[0]} per seed"
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 250):
        return head + f"\n{what}\n\n" + table.to_string(index=False)
