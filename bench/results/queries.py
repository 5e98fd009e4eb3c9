"""The read side of the results database: every query the harness runs, in one module.

SQL text lives in three modules only: ``schema`` (tables, views, migrations), ``store`` (the
writer) and this one (the readers: reports, exports, the gate's sides, shard statuses).
Functions take a ``sqlite3.Connection`` (or a path, for the pandas readers) opened by the
caller, normally through ``Store(path, readonly=True)``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "cell_statuses",
    "check_sqlite",
    "columns_of",
    "export_tables",
    "latest_frames",
    "relations",
    "result_records",
    "runs_by_id",
    "runs_with_results",
    "select_relation",
]

_RESULT_COLUMNS = (
    "result_id",
    "run_id",
    "suite",
    "method",
    "variant",
    "dataset",
    "model",
    "tier",
    "mode",
    "seed",
    "status",
    "error_type",
    "error",
    "config_json",
    "task_json",
    "started_at",
)


def _dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def check_sqlite(conn: sqlite3.Connection) -> None:
    """Raise ``sqlite3.DatabaseError`` unless ``conn`` holds an SQLite database."""
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()


# --- runs and rows (the gate's sides) ----------------------------------------------------------


def runs_with_results(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Runs that have at least one result row, newest first."""
    return _dicts(
        conn.execute(
            "SELECT * FROM runs u WHERE EXISTS (SELECT 1 FROM results r WHERE r.run_id = u.run_id)"
            " ORDER BY u.started_at DESC, u.run_id DESC"
        )
    )


def runs_by_id(conn: sqlite3.Connection, run_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The ``runs`` rows of ``run_ids``, newest first."""
    marks = ",".join("?" * len(run_ids))
    return _dicts(
        conn.execute(
            f"SELECT * FROM runs WHERE run_id IN ({marks}) ORDER BY started_at DESC, run_id DESC", list(run_ids)
        )
    )


def result_records(
    conn: sqlite3.Connection, *, run_id: str | None = None, exclude_skipped: bool = False, latest_only: bool = False
) -> tuple[list[dict[str, Any]], list[tuple[str, str, float | None]]]:
    """(rows, metrics): result rows oldest first and their ``(result_id, name, value)`` metrics,
    of one run (``run_id``) or of every run, optionally without ``skipped`` rows, and optionally
    only the row that counts for each cell (``latest_ids``)."""
    clauses, params = [], []
    if run_id is not None:
        clauses.append("r.run_id = ?")
        params.append(run_id)
    if exclude_skipped:
        clauses.append("r.status != 'skipped'")
    if latest_only:
        clauses.append("r.result_id IN (SELECT result_id FROM latest_ids)")
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    columns = ", ".join(f"r.{c}" for c in _RESULT_COLUMNS)
    rows = _dicts(conn.execute(f"SELECT {columns} FROM results r{where} ORDER BY r.started_at, r.result_id", params))
    metrics = conn.execute(
        f"SELECT m.result_id, m.name, m.value FROM metrics m JOIN results r ON r.result_id = m.result_id{where}",
        params,
    ).fetchall()
    return rows, metrics


def cell_statuses(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """``(cell_key, status)`` of every result row."""
    return conn.execute("SELECT cell_key, status FROM results").fetchall()


# --- reports -----------------------------------------------------------------------------------


def latest_frames(db_path: str | Path, suite: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows, metrics): ``latest_results`` (one suite's, or all) and the long metrics of those rows."""
    from bench.results.store import read_frame

    rows = read_frame(
        db_path, "SELECT * FROM latest_results" + (" WHERE suite = ?" if suite else ""), (suite,) if suite else ()
    )
    metrics = read_frame(
        db_path,
        "SELECT m.result_id, m.name, m.value FROM metrics m JOIN latest_ids l ON l.result_id = m.result_id"
        + (" JOIN results r ON r.result_id = m.result_id WHERE r.suite = ?" if suite else ""),
        (suite,) if suite else (),
    )
    return rows, metrics


# --- exports -----------------------------------------------------------------------------------


def relations(conn: sqlite3.Connection) -> list[str]:
    """Tables and views a user may export (SQLite's and the migrations' own tables excluded)."""
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
        "AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY name"
    )
    return [r[0] for r in rows.fetchall()]


def columns_of(conn: sqlite3.Connection, name: str) -> list[str]:
    """Column names of the table or view ``name`` (one of ``relations``)."""
    return [r[1] for r in conn.execute(f'PRAGMA table_info("{name}")').fetchall()]


def select_relation(
    conn: sqlite3.Connection, name: str, *, suite: str | None = None, where: str | None = None
) -> tuple[list[str], list[tuple]]:
    """Column names and rows of ``name`` (one of ``relations``), optionally of one suite and
    filtered by a user's SQL condition ``where`` (``sqlite3.Error`` when it does not parse)."""
    clauses, params = [], []
    if suite is not None:
        clauses.append("suite = ?")
        params.append(suite)
    if where:
        clauses.append(f"({where})")
    sql = f'SELECT * FROM "{name}"' + (" WHERE " + " AND ".join(clauses) if clauses else "")
    cursor = conn.execute(sql, params)
    return [d[0] for d in cursor.description], cursor.fetchall()


def export_tables(
    conn: sqlite3.Connection, keys: Sequence[str], suite: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(results, runs, metrics, series) as DataFrames, oldest first; metrics and series carry the
    result columns ``keys``; ``suite`` keeps that suite's rows and their runs."""
    import pandas as pd

    cols = ", ".join(f"r.{k}" for k in keys)
    where, params = (" WHERE r.suite = ?", [suite]) if suite is not None else ("", [])
    results = pd.read_sql_query(
        f"SELECT * FROM results_provenance r{where} ORDER BY r.started_at, r.result_id", conn, params=params
    )
    runs = pd.read_sql_query(
        "SELECT * FROM runs"
        + (f" WHERE run_id IN (SELECT run_id FROM results r{where})" if suite is not None else "")
        + " ORDER BY started_at, run_id",
        conn,
        params=params,
    )
    metrics = pd.read_sql_query(
        f"SELECT {cols}, m.name AS metric, m.value FROM metrics m JOIN results r "
        f"ON r.result_id = m.result_id{where} ORDER BY r.started_at, r.result_id, m.name",
        conn,
        params=params,
    )
    series = pd.read_sql_query(
        f"SELECT {cols}, s.name, s.step, s.position, s.value FROM series s JOIN results r "
        f"ON r.result_id = s.result_id{where} "
        "ORDER BY r.started_at, r.result_id, s.name, s.step, s.position",
        conn,
        params=params,
    )
    return results, runs, metrics, series
