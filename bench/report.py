"""``bench report``: seed-aggregated tables from a results database.

Reads the latest row of every cell (``latest_results``), keeps ``ok`` rows for the
statistics and counts the others, and prints mean +- std (n) per
suite / method entry / dataset / model / tier for the headline metrics.
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


def render(db: str | Path, suite: str | None = None, metrics: Sequence[str] = DEFAULT_METRICS) -> str:
    """The report as text (what ``bench report`` prints)."""
    frame = load_latest(db, suite)
    if frame.empty:
        return f"no results in {db}" + (f" for suite '{suite}'" if suite else "")
    counts = frame["status"].value_counts().to_dict()
    head = (f"{len(frame)} cells in {db} (latest row per cell): "
            + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    table = summary_table(frame, metrics)
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 250):
        return head + "\nvalues: mean +- std (n seeds)\n\n" + table.to_string(index=False)
