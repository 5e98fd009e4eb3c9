"""The results store: one SQLite file, its schema, the one writer, and shard merging.

Usage::

    with Store("results.db") as store:
        run_id = store.start_run(env.collect(tier="smoke"))
        store.write_result(run_id, result)          # one row per cell, replaced on re-run
        store.finish_run(run_id)
    merge(["shard-a.db", "shard-b.db"], "results.db")  # idempotent fold of cluster shards
    frame = read_frame("results.db", "select * from latest_results")

Tables (schema by numbered migrations of the ``archbench`` set, recorded in
``_sqlite_migrations``):

- ``runs``: one row per invocation, with its provenance (``bench.env.collect``).
- ``results``: one row per cell and run; ``result_id = short_hash(run_id, cell_key)``.
- ``metrics``: ``(result_id, name, value)``, long format because methods report
  different metrics; every name carries its unit (``bench.contract.units``). Non-finite -> NULL.
- ``series``: ``(result_id, name, step, value)``: curves and search telemetry.
- views ``results_wide`` (results plus the common metrics as columns) and
  ``latest_results`` (the newest row of each cell).

Exactly one process writes a file (the xdist controller, or a cluster job its own
shard); foreign keys are enforced on every connection and the file is in WAL mode so
readers (Datasette, reports) never block the writer.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_utils

from bench.contract.cell import CellResult, short_hash
from bench.contract.units import check_metric_name
from bench.env import utc_now
from bench.errors import InvalidConfig, NotABenchDatabase, SchemaMismatch, StoreError
from bench.results.schema import MIGRATION_NAMES, MIGRATIONS, MIGRATIONS_TABLE, RUN_STATUSES, TABLES, WIDE_METRICS

__all__ = [
    "MIGRATIONS",
    "MIGRATION_NAMES",
    "RUN_STATUSES",
    "TABLES",
    "WIDE_METRICS",
    "NotABenchDatabase",
    "SchemaMismatch",
    "Store",
    "StoreError",
    "merge",
    "read_frame",
]

if TYPE_CHECKING:
    import pandas as pd


def _connect(path: Path, readonly: bool) -> sqlite_utils.Database:
    """A sqlite-utils Database on a 60 s busy timeout with foreign keys enforced."""
    if readonly:
        if not path.exists():
            raise FileNotFoundError(f"results database {str(path)!r} does not exist")
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=60)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=60)
    conn.execute("PRAGMA foreign_keys=ON")
    ensure_sqrt(conn)
    return sqlite_utils.Database(conn)


def ensure_sqrt(conn: sqlite3.Connection) -> None:
    """Register ``sqrt`` where SQLite was built without math functions (``seed_summary`` uses it).

    Every connection to a results database needs it: the store's own and Datasette's (``bench serve``)."""
    try:
        conn.execute("SELECT sqrt(4.0)")
    except sqlite3.OperationalError:
        conn.create_function("sqrt", 1, lambda x: None if x is None or x < 0 else math.sqrt(x), deterministic=True)


def _enable_wal(conn: sqlite3.Connection, timeout_s: float = 60.0) -> None:
    """Put the database in WAL mode, waiting for a concurrent opener instead of failing.

    Changing the journal mode needs an exclusive lock, and SQLite answers SQLITE_BUSY there
    without calling the busy handler, so two processes opening a fresh file at once could crash
    one of them (1 in ~20 trials). Retried with backoff up to the connection's 60 s; the first
    opener's change is seen by the second, which then has nothing to do."""
    import time

    deadline, pause = time.monotonic() + timeout_s, 0.005
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=wal")
            return
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.25)


@contextmanager
def write_transaction(db: sqlite_utils.Database) -> Iterator[None]:
    """One write transaction that takes the write lock first (``BEGIN IMMEDIATE``).

    SQLite's default ``BEGIN`` defers the lock: a transaction that reads (sqlite-utils reads the
    schema before an insert) and then writes must upgrade, and in WAL mode that upgrade fails
    at once with SQLITE_BUSY when another writer committed meanwhile; the busy timeout never
    applies. ``BEGIN IMMEDIATE`` waits for the lock (up to the connection's 60 s timeout) before
    reading anything, so concurrent writers queue instead of crashing. Nested use becomes a
    savepoint of the enclosing transaction.
    """
    conn = db.conn
    if conn.in_transaction:
        with db.atomic():
            yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.execute("COMMIT")


def _process_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this machine (signal 0 probes without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def migration_state(db: sqlite_utils.Database) -> tuple[list[str], list[str], list[str]]:
    """(applied, pending, unknown): migrations applied to ``db``, known ones not applied, and
    applied ones this code lacks. The one place that works this out (store and ``bench serve``)."""
    applied = [m.name for m in MIGRATIONS.applied(db)]
    pending = [n for n in MIGRATION_NAMES if n not in applied]
    return applied, pending, [n for n in applied if n not in MIGRATION_NAMES]


class Store:
    """The one writer of a results database (see the module docstring).

    Opening applies pending migrations; ``readonly=True`` opens with ``mode=ro`` and
    requires an up-to-date schema instead. ``db`` is the ``sqlite_utils.Database``.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.db = _connect(self.path, readonly)
        try:
            self._prepare()
        except BaseException:
            self.db.close()
            raise

    def _prepare(self) -> None:
        _, pending, unknown = migration_state(self.db)
        if unknown:
            raise SchemaMismatch(
                f"{str(self.path)!r} has migrations {unknown} that this code does not know;"
                " it was written by a newer archbench: upgrade before using it"
            )
        if self.readonly:
            if pending:
                state = (
                    "has no archbench schema" if len(pending) == len(MIGRATION_NAMES) else f"lacks migrations {pending}"
                )
                raise SchemaMismatch(
                    f"{str(self.path)!r} {state}; open it once with Store(path) (writable)"
                    " to create or migrate the schema"
                )
            return
        _enable_wal(self.db.conn)
        if pending:
            with write_transaction(self.db):  # a second opener waits here, then finds them applied
                MIGRATIONS.apply(self.db)
        self.reap_dead_runs()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_writable(self) -> None:
        if self.readonly:
            raise StoreError(f"store {str(self.path)!r} was opened read-only")

    def start_run(self, info: dict[str, Any]) -> str:
        """Insert a ``runs`` row (status ``running``) and return its new uuid4 run_id.

        ``info`` holds runs columns (``bench.env.collect()`` gives them all);
        ``started_at`` defaults to now; ``argv``/``flags_json`` may be given unencoded.
        """
        self._require_writable()
        valid = [c for c in self.db["runs"].columns_dict if c not in ("run_id", "status")]
        unknown = sorted(set(info) - set(valid))
        if unknown:
            raise InvalidConfig(f"unknown runs column(s) {unknown}; valid: {', '.join(valid)}")
        row = {k: _encode_json(v) if k in ("argv", "flags_json", "arith_json") else v for k, v in info.items()}
        row["run_id"] = uuid.uuid4().hex
        row.setdefault("started_at", utc_now())
        row.setdefault("heartbeat_at", row["started_at"])
        with write_transaction(self.db):
            self.db["runs"].insert(row)
        return row["run_id"]

    def beat(self, run_id: str) -> bool:
        """Stamp ``run_id``'s ``heartbeat_at`` now, if it is still ``running``; whether it was.

        Called every ``bench.execute.heartbeat.HEARTBEAT_S`` by the run's writer, so a run
        whose writer is gone is found by its stale stamp from any host (``reap_dead_runs``)."""
        self._require_writable()
        with write_transaction(self.db):
            return (
                self.db.execute(
                    "UPDATE runs SET heartbeat_at = ? WHERE run_id = ? AND status = 'running'", [utc_now(), run_id]
                ).rowcount
                == 1
            )

    def finish_run(self, run_id: str, status: str = "finished") -> None:
        """Mark a run ended now with ``status`` (finished, interrupted or failed)."""
        self._require_writable()
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {RUN_STATUSES}, got {status!r}")
        with write_transaction(self.db):
            cursor = self.db.execute(
                "UPDATE runs SET ended_at = ?, status = ? WHERE run_id = ?",
                [utc_now(), status, run_id],
            )
            if cursor.rowcount != 1:
                raise StoreError(f"no run with run_id {run_id!r} in {str(self.path)!r}")

    def fail_running(self, run_ids: Sequence[str]) -> int:
        """Mark those of ``run_ids`` not finished as ``failed`` (a crashed shard's runs: ``running``,
        or ``interrupted`` once their dead writer was reaped), ended now unless they already have
        an end; the number of runs changed."""
        self._require_writable()
        changed = 0
        with write_transaction(self.db):
            for run_id in run_ids:
                changed += self.db.execute(
                    "UPDATE runs SET status = 'failed', ended_at = coalesce(ended_at, ?) "
                    "WHERE run_id = ? AND status IN ('running', 'interrupted')",
                    [utc_now(), run_id],
                ).rowcount
        return changed

    # A live writer stamps its run every HEARTBEAT_S (60 s); 15 missed beats mean it is gone.
    STALE_S = 900.0

    def reap_dead_runs(self, *, stale_after_s: float | None = None) -> list[str]:
        """Mark ``interrupted`` the runs still ``running`` whose writer is gone; their run_ids.

        Two signs, checked at every writable open (the next suite, merge or gate):

        - same host as this process, and no process with the run's pid (SIGKILL, an OOM kill);
          a reused pid keeps a dead run ``running``, the safe side;
        - another host, and a ``heartbeat_at`` older than ``stale_after_s`` (default
          ``STALE_S``, 15 minutes: 15 missed beats of ``bench.execute.heartbeat``); a run with
          no stamp (written before m010) is left as it is.

        A run's writer finishes it on every exit pytest sees, so these catch only what it cannot:
        a killed process or a lost node. A writer that was merely cut off and comes back finds
        its run ``interrupted`` and keeps writing rows to it; merging its shard later restores the
        shard's final status (``merge``)."""
        from datetime import datetime, timedelta, timezone

        host = socket.gethostname()
        stale = self.STALE_S if stale_after_s is None else float(stale_after_s)
        cutoff = (datetime.now(timezone.utc) - timedelta(seconds=stale)).isoformat(timespec="microseconds")
        candidates = self.db.execute(
            "SELECT run_id, pid FROM runs WHERE status = 'running' AND pid IS NOT NULL AND host = ?", [host]
        ).fetchall()
        dead = [run_id for run_id, pid in candidates if not _process_alive(int(pid))]
        dead += [
            r[0]
            for r in self.db.execute(
                "SELECT run_id FROM runs WHERE status = 'running' AND host IS NOT ? "
                "AND heartbeat_at IS NOT NULL AND heartbeat_at < ?",
                [host, cutoff],
            ).fetchall()
        ]
        if dead:
            with write_transaction(self.db):
                for run_id in dead:
                    self.db.execute(
                        "UPDATE runs SET status = 'interrupted', ended_at = coalesce(ended_at, ?)"
                        " WHERE run_id = ? AND status = 'running'",
                        [utc_now(), run_id],
                    )
        return dead

    def write_gate_decisions(self, rows: Sequence[dict[str, Any]]) -> int:
        """Append ``bench gate`` decisions to ``gate_decisions`` in one transaction; how many."""
        self._require_writable()
        with write_transaction(self.db):
            self.db["gate_decisions"].insert_all(rows)
        return len(rows)

    def run_ids(self) -> list[str]:
        """Every run_id in the database, oldest first."""
        return [r[0] for r in self.db.execute("SELECT run_id FROM runs ORDER BY started_at, run_id").fetchall()]

    def result_commits(self) -> list[tuple[str, bool]]:
        """``(git_sha, dirty)`` of every run that wrote a result: the code the rows were measured with."""
        rows = self.db.execute(
            "SELECT DISTINCT git_sha, git_dirty FROM runs WHERE run_id IN (SELECT DISTINCT run_id FROM results)"
        ).fetchall()
        return sorted((sha, bool(dirty)) for sha, dirty in rows if sha)

    def write_result(self, run_id: str, result: CellResult) -> str:
        """Write one cell's row, metrics and series in one transaction; return result_id.

        Re-writing the same cell in the same run replaces the row and all its metrics
        and series. Names are checked before anything is written.
        """
        self._require_writable()
        row = _result_row(run_id, result)
        rid = row["result_id"]
        metrics = [{"result_id": rid, "name": n, "value": _finite(v)} for n, v in _checked(result.metrics).items()]
        series = [
            {
                "result_id": rid,
                "name": n,
                "step": int(pt[0]),
                "value": _finite(pt[1]),
                "position": int(pt[2]) if len(pt) > 2 else 0,
            }
            for n, pts in _checked(result.series).items()
            for pt in pts
        ]
        with write_transaction(self.db):
            self.db.execute("DELETE FROM metrics WHERE result_id = ?", [rid])
            self.db.execute("DELETE FROM series WHERE result_id = ?", [rid])
            self.db["results"].upsert(row, pk="result_id")
            self.db["metrics"].insert_all(metrics)
            self.db["series"].insert_all(series)
        return rid

    def write_claims(self, rows: Sequence[dict[str, Any]]) -> int:
        """Replace the verdicts of the claims in ``rows`` (``bench.results.claims.ClaimRow.as_row``).

        Every earlier row of those claims goes, at every tier: a claim now measured at ``smoke``
        must not keep its earlier ``any`` (no data) row, nor a tier whose cells were since removed.
        """
        self._require_writable()
        rows = list(rows)
        ids = sorted({r["claim_id"] for r in rows})
        with write_transaction(self.db):
            for claim_id in ids:
                self.db.execute("DELETE FROM claims WHERE claim_id = ?", [claim_id])
            self.db["claims"].insert_all(rows, pk=("claim_id", "tier"))
        return len(rows)

    def ok_cell_keys(self, *, tier: str | None = None) -> set[str]:
        """cell_keys with an ``ok`` row in any run (optionally of one tier): resume skips them."""
        sql = "SELECT DISTINCT cell_key FROM results WHERE status = 'ok'"
        params: list[str] = []
        if tier is not None:
            sql += " AND tier = ?"
            params.append(tier)
        return {row[0] for row in self.db.execute(sql, params).fetchall()}


def _checked(named: dict[str, Any]) -> dict[str, Any]:
    """``named`` unchanged after checking every name carries a unit token."""
    for name in named:
        check_metric_name(name)
    return named


def _finite(value: float) -> float | None:
    """``value`` as a float, or None (stored as NULL) when NaN or infinite."""
    value = float(value)
    return value if math.isfinite(value) else None


def _json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None, so SQLite's JSON functions parse it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _encode_json(value: Any) -> Any:
    """Strings pass through (already JSON); anything else becomes canonical JSON text."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(_json_safe(value), sort_keys=True, default=str)


def _result_row(run_id: str, result: CellResult) -> dict[str, Any]:
    """The ``results`` row of a CellResult; an empty start time becomes the write time."""
    spec = result.spec
    return {
        "result_id": short_hash(run_id, spec.cell_key),
        "run_id": run_id,
        "cell_key": spec.cell_key,
        "suite": spec.suite,
        "method": spec.method,
        "variant": spec.variant,
        "dataset": spec.dataset,
        "model": spec.model,
        "seed": spec.seed,
        "tier": spec.tier,
        "mode": spec.mode,
        "config_json": spec.config_json,
        "task_json": spec.task_json,
        "status": result.status,
        "error_type": result.error_type,
        "error": result.error,
        "arch": result.arch,
        "device": result.device or spec.device,
        "worker": result.worker,
        "started_at": result.started_at or utc_now(),
        "ended_at": result.ended_at or None,
        "wall_s": _finite(result.wall_s),
        "info_json": _encode_json(result.info),
    }


@contextmanager
def _attached(db: sqlite_utils.Database, path: Path) -> Iterator[str]:
    """Attach ``path`` as schema ``src`` for the duration of the block."""
    db.execute("ATTACH DATABASE ? AS src", [str(path)])
    try:
        yield "src"
    finally:
        db.execute("DETACH DATABASE src")


def _check_source(path: Path) -> None:
    """Raise unless ``path`` is a bench database whose schema this code can read."""
    if not path.is_file():
        raise FileNotFoundError(f"shard database {str(path)!r} does not exist")
    try:
        with _connect(path, readonly=True) as db:
            tables = set(db.table_names())
            applied = {m.name for m in MIGRATIONS.applied(db)}
            _, _, unknown = migration_state(db)
            problems = [r[0] for r in db.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        raise NotABenchDatabase(f"{str(path)!r} is not an SQLite database (or is unreadable): {exc}") from exc
    if problems != ["ok"]:
        raise StoreError(
            f"{str(path)!r} is damaged (SQLite quick_check: {'; '.join(problems[:3])}); nothing was merged."
            " Re-run the task that wrote it, or drop it from the merge"
        )
    missing = [t for t in (MIGRATIONS_TABLE, *TABLES) if t not in tables]
    if missing or not applied:
        raise NotABenchDatabase(
            f"{str(path)!r} is not an archbench results database"
            f" (missing tables {missing or 'none'}, archbench migrations {sorted(applied)})"
        )
    if unknown:
        raise SchemaMismatch(
            f"{str(path)!r} has migrations {unknown} that this code does not know; merge it with a newer archbench"
        )


def _columns(db: sqlite_utils.Database, schema: str, table: str) -> list[str]:
    return [r[1] for r in db.execute(f'PRAGMA "{schema}".table_info("{table}")').fetchall()]


def _merge_one(db: sqlite_utils.Database, path: Path) -> dict[str, int]:
    """Fold one shard into ``db`` in one transaction (the rule in ``merge``); rows written per table."""
    counts: dict[str, int] = dict.fromkeys(TABLES, 0)
    with _attached(db, path) as src, write_transaction(db):
        # A run still 'running' here, or 'interrupted' (reaped here while its shard went on),
        # takes the shard's ending: the shard's writer is the run's only one.
        beat = ", heartbeat_at = s.heartbeat_at" if "heartbeat_at" in _columns(db, src, "runs") else ""
        counts["runs"] += db.execute(
            f"UPDATE main.runs SET status = s.status, ended_at = s.ended_at{beat}"
            f" FROM {src}.runs s WHERE main.runs.run_id = s.run_id"
            " AND main.runs.status IN ('running', 'interrupted') AND s.status != 'running'"
            " AND (main.runs.status != s.status OR main.runs.ended_at IS NOT s.ended_at)"
        ).rowcount
        # A result the shard re-wrote since (later ended_at) replaces ours, with its metrics and series.
        db.execute(
            f"DELETE FROM main.results WHERE result_id IN (SELECT s.result_id FROM {src}.results s"
            " JOIN main.results m ON m.result_id = s.result_id"
            " WHERE coalesce(s.ended_at, '') > coalesce(m.ended_at, ''))"
        )
        for table in TABLES:
            source_cols = set(_columns(db, src, table))
            # Target order; a column an older shard lacks is left NULL.
            cols = ", ".join(f'"{c}"' for c in _columns(db, "main", table) if c in source_cols)
            cursor = db.execute(f'INSERT OR IGNORE INTO main."{table}" ({cols}) SELECT {cols} FROM {src}."{table}"')
            counts[table] += cursor.rowcount
    return counts


def merge(sources: Sequence[str | Path], out: str | Path) -> dict[str, int]:
    """Fold shard databases into ``out`` (created if missing); return rows written per table.

    The rule: a row ``out`` lacks is copied; a run ``out`` still has as ``running`` (or as
    ``interrupted``, reaped while its shard went on) takes the shard's status and end when the
    shard's is final (a shard merged before its task finished, then again after); a result the
    shard holds with a later ``ended_at`` (re-written in the same run) replaces ours with its
    metrics and series; everything else in ``out`` is kept, so
    merging a shard twice writes nothing. Every source is checked first (schema, and SQLite's
    ``quick_check`` for damaged pages): a bad one stops the merge before any source is merged,
    and each source is merged in its own transaction.
    """
    paths = [Path(s) for s in sources]
    out_path = Path(out)
    for path in paths:
        _check_source(path)
        if out_path.exists() and path.resolve() == out_path.resolve():
            raise ValueError(f"cannot merge {str(path)!r} into itself")
    totals = dict.fromkeys(TABLES, 0)
    with Store(out_path) as store:
        for path in paths:
            for table, n in _merge_one(store.db, path).items():
                totals[table] += n
    return totals


def snapshot_into(conn: sqlite3.Connection, path: str | Path) -> None:
    """Write a consistent, WAL-free copy of the database of ``conn`` to the new file ``path``."""
    conn.execute("VACUUM INTO ?", [str(path)])


def read_frame(db_path: str | Path, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> pd.DataFrame:
    """Run a query on a read-only connection and return the rows as a DataFrame."""
    import pandas as pd  # imported here: only reports need it, and it is slow to import

    with _connect(Path(db_path), readonly=True) as db:
        return pd.read_sql_query(sql, db.conn, params=params)
