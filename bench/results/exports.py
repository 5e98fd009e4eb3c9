"""Results out of SQLite: files for other tools (``export``) and tidy pandas frames (``load``).

``bench export`` writes any table or view as CSV (with a header), Parquet (pyarrow) or
JSON (a list of records)::

    bench export --view latest_results --format csv -o latest.csv
    bench export --view metrics --format parquet -o metrics.parquet --where "name = 'test_top1_pct'"
    bench export --view seed_summary --format json --suite baselines      # to stdout

Values leave exactly as stored: text stays text (``config_json`` is JSON text), NULL
becomes an empty CSV field, a Parquet null or a JSON ``null``; floats keep every digit.

``load(db)`` reads a results database into a ``Results`` of tidy DataFrames::

    import bench
    res = bench.load("results.db")
    res.wide.query("status == 'ok'")[["variant", "dataset", "seed", "test_top1_pct"]]
    res.summary(["test_top1_pct", "step_ms_median"])      # mean, std, n per group

- ``runs``: the ``runs`` table, one row per run (pytest session or shard task).
- ``results``: one row per cell and run (``results`` joined with its run's provenance:
  ``run_tag``, ``run_status``, ``run_started_at``, ``git_sha``, ``git_dirty``,
  ``bench_version``, ``python``, ``torch``, ``cuda``, ``cudnn``, ``gpu_name``,
  ``gpu_count``, ``driver``, ``host``, ``cpu_threads``, ``flags_json``).
- ``metrics``: long, one row per metric value: ``result_id``, ``run_id``, the cell keys
  (``cell_key``, ``suite``, ``method``, ``variant``, ``dataset``, ``model``, ``seed``,
  ``tier``, ``mode``), ``status``, ``metric``, ``value``.
- ``series``: long, one row per curve point: ``result_id``, ``run_id``, the cell keys,
  ``status``, ``name``, ``step``, ``position``, ``value``.
- ``wide``: the latest row of every cell (newest ``started_at``, as the
  ``latest_results`` view picks it) from ``results``, with every metric as a column.
- ``summary(metrics=None)``: over the ``ok`` rows of ``wide``, one row per
  ``suite``/``variant``/``dataset``/``model``/``tier``/``mode`` and metric with ``mean``,
  ``std`` (sample, ddof=1; 0 for one seed) and ``n``; all metrics when none are named.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pandas as pd

from bench.contract.cell import GROUP_KEYS
from bench.errors import ExportError, UnknownName
from bench.results.queries import columns_of, export_tables, relations, select_relation

FORMATS = ("csv", "parquet", "json")
CELL_KEYS = ("cell_key", "suite", "method", "variant", "dataset", "model", "seed", "tier", "mode")
SUMMARY_KEYS = GROUP_KEYS
METRICS_COLUMNS = ("result_id", "run_id", *CELL_KEYS, "status", "metric", "value")
SERIES_COLUMNS = ("result_id", "run_id", *CELL_KEYS, "status", "name", "step", "position", "value")
SUMMARY_COLUMNS = (*SUMMARY_KEYS, "metric", "mean", "std", "n")


# ----------------------------------------------------------------------------- export


def query(
    db: str | Path, view: str, *, where: str | None = None, suite: str | None = None
) -> tuple[list[str], list[tuple]]:
    """Column names and rows of ``view`` (any table or view), optionally filtered."""
    import sqlite3

    from bench.results.store import Store

    if not Path(db).exists():
        raise ExportError(f"no database at {db}; run a suite first (make bench)")
    with Store(db, readonly=True) as store:
        conn = store.db.conn
        valid = relations(conn)
        if view not in valid:
            raise UnknownName(f"unknown table or view '{view}'; valid names: {', '.join(valid)}")
        columns = columns_of(conn, view)
        if suite is not None and "suite" not in columns:
            raise ExportError(f"--suite: '{view}' has no suite column; its columns: {', '.join(columns)}")
        try:
            return select_relation(conn, view, suite=suite, where=where)
        except sqlite3.Error as err:
            raise ExportError(f"--where {where!r} on '{view}': {err}; its columns: {', '.join(columns)}") from err


def write_csv(columns: Sequence[str], rows: Sequence[tuple], out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(["" if v is None else v for v in row] for row in rows)


def write_json(columns: Sequence[str], rows: Sequence[tuple], out: IO[str]) -> None:
    records = [{c: _json_value(v) for c, v in zip(columns, row)} for row in rows]
    json.dump(records, out, indent=1, allow_nan=False)
    out.write("\n")


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.hex()
    return value


def write_parquet(columns: Sequence[str], rows: Sequence[tuple], path: str | Path) -> None:
    """Each column typed from its values (int64, double, string, ...), mixed columns as text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = []
    for i, _ in enumerate(columns):
        values = [row[i] for row in rows]
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays.append(pa.array([None if v is None else str(v) for v in values], type=pa.string()))
    pq.write_table(pa.Table.from_arrays(arrays, names=list(columns)), str(path))


def export(
    db: str | Path,
    view: str,
    fmt: str,
    out: str | Path | None = None,
    *,
    where: str | None = None,
    suite: str | None = None,
    stdout: IO[str] | None = None,
) -> int:
    """Write ``view`` of ``db`` as ``fmt`` to ``out`` (stdout when None; not for parquet); return the row count."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format '{fmt}'; valid formats: {', '.join(FORMATS)}")
    if fmt == "parquet" and out is None:
        raise ExportError("parquet is binary: give an output file with -o FILE")
    columns, rows = query(db, view, where=where, suite=suite)
    if fmt == "parquet":
        assert out is not None  # refused above
        write_parquet(columns, rows, out)
        return len(rows)
    writer = write_csv if fmt == "csv" else write_json
    if out is None:
        import sys

        writer(columns, rows, stdout or sys.stdout)
    else:
        buffer = io.StringIO()
        writer(columns, rows, buffer)
        Path(out).write_text(buffer.getvalue(), encoding="utf-8", newline="")
    return len(rows)


# ----------------------------------------------------------------------------- load


@dataclass(frozen=True, eq=False)
class Results:
    """Tidy frames of one results database; see the module docstring for every column."""

    runs: pd.DataFrame
    results: pd.DataFrame
    metrics: pd.DataFrame
    series: pd.DataFrame
    wide: pd.DataFrame

    def summary(self, metrics: Sequence[str] | None = None) -> pd.DataFrame:
        """mean, std (ddof=1) and n per suite/variant/dataset/model/tier/mode and metric, latest ok rows."""
        from bench.results.stats import mean_std_n

        available = sorted(set(self.metrics["metric"]))
        names = list(metrics) if metrics is not None else available
        unknown = [m for m in names if m not in available]
        if unknown:
            raise UnknownName(f"no metric(s) {unknown} in these results; available: {', '.join(available)}")
        ok = self.wide[self.wide["status"] == "ok"] if not self.wide.empty else self.wide
        rows = []
        for group, sub in ok.groupby(list(SUMMARY_KEYS), sort=True, dropna=False):
            for metric in names:
                values = sub[metric].tolist() if metric in sub else []
                mean, std, n = mean_std_n(values)
                rows.append({**dict(zip(SUMMARY_KEYS, group)), "metric": metric, "mean": mean, "std": std, "n": n})
        return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def load(db: str | Path, *, suite: str | None = None) -> Results:
    """Read ``db`` (read-only) into ``Results``; ``suite`` keeps that suite's rows (and their runs)."""
    from bench.results.store import Store

    if not Path(db).exists():
        raise FileNotFoundError(f"results database {str(db)!r} does not exist")
    with Store(db, readonly=True) as store:
        results, runs, metrics, series = export_tables(
            store.db.conn, ("result_id", "run_id", *CELL_KEYS, "status"), suite
        )
    return Results(runs=runs, results=results, metrics=metrics, series=series, wide=_wide(results, metrics))


def _wide(results: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Latest row per cell (max started_at, then result_id) with every metric pivoted into a column."""
    if results.empty:
        return results.copy()
    latest = results.sort_values(["started_at", "result_id"], kind="stable").groupby("cell_key", sort=False).tail(1)
    mine = metrics[metrics["result_id"].isin(latest["result_id"])]
    if mine.empty:
        return latest.reset_index(drop=True)
    wide = mine.pivot_table(index="result_id", columns="metric", values="value", aggfunc="first", dropna=False)
    wide.columns.name = None
    base = latest.drop(columns=[c for c in latest.columns if c in wide.columns])
    out = base.merge(wide, left_on="result_id", right_index=True, how="left")
    return out.sort_values(["suite", "variant", "dataset", "model", "seed", "tier", "mode"], kind="stable").reset_index(
        drop=True
    )


__all__ = ["CELL_KEYS", "FORMATS", "SUMMARY_KEYS", "ExportError", "Results", "export", "load", "query", "relations"]
