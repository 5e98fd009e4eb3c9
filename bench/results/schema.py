"""The results schema: numbered migrations, tables, indexes and views.

A migration never changes once released: databases created by it must keep matching
later ones, so every schema change is a new ``mNNN_*`` function. ``MIGRATION_NAMES``
lists them in order; ``bench.results.store.Store`` applies the pending ones when it opens a
database for writing.

- ``m001_initial``: ``runs``, ``results``, ``metrics``, ``series``; grid-key indexes;
  views ``results_wide`` and ``latest_results``.
- ``m002_tags_positions_claims_gates``: ``runs.tag`` (for "latest run on a tag"),
  ``series.position`` (curves indexed by step and position, e.g. a per-layer
  probability over controller updates), the ``claims`` table (paper figure vs ours,
  written by ``bench claims``), the ``gate_decisions`` table (written by ``bench
  gate``), and the views ``results_provenance`` and ``seed_summary``.
- ``m003_run_arithmetic``: ``runs.arith_json`` (``bench.env.arithmetic()`` of the run's
  cells: torch, device, threads, CPU ISA pins), which ``bench gate`` compares to tell a
  same-arithmetic rerun from a cross-arithmetic one.
- ``m004_latest_ids``: the view ``latest_ids`` (``result_id``, ``cell_key`` of the row that
  counts for each cell: its newest), the one definition of "latest row"; ``latest_results``,
  ``seed_summary`` and the Datasette queries select through it.
- ``m005_latest_informative``: ``latest_ids`` prefers the newest *informative* row: a ``skipped``
  row (the cell could not run here, e.g. ``--bench-device cuda`` without a GPU) never hides an
  earlier row that ran; a cell with only skipped rows shows its newest. One window function over
  the index ``results_cell_latest`` (cell_key, skipped, started_at, result_id: the window's own
  order, so no sort) instead of a correlated subquery per row: the latest-row views are linear.
- ``m006_run_pid``: ``runs.pid``, the process that writes the run, so a run left ``running`` by
  a process that died (SIGKILL, a crashed node) is found and marked ``interrupted``
  (``Store.reap_dead_runs``, at every writable open on the same host).
- ``m007_claim_statistics``: the ``claims`` table as the verdict procedure fills it
  (``bench.results.verdict``): verdicts ``reproduced`` / ``not reproduced`` / ``inconclusive``
  with ``reason``, ``effect``, ``ci_low``/``ci_high`` (95%), ``p_value``, ``test`` and
  ``n_censored``. Earlier rows are kept: ``not yet measured`` becomes ``inconclusive`` with the
  reason ``no data``.
- ``m008_counted_memory_column``: ``results_wide`` (and so ``latest_results``) gains the column
  ``counted_mem_mib``, the training memory the engine counts (parameters, gradients, optimiser
  state, saved activations): the memory figure of every row, CPU ones included.
- ``m009_latest_ids_per_cell``: ``latest_ids`` selects the same rows as m005's window (the
  reference definition, ``LATEST_IDS_V2_SQL``) by one seek per cell: the distinct cells from the
  ``cell_key`` index, then the first entry of each in ``results_cell_latest``. The window numbered
  every row, about 70 ms at 100k rows and once per query of a page (a page with 6 facets runs 8);
  the seeks take about 5 ms at 2,000 runs x 50 cells, and 0.20 s (the window 0.35 s) at 100k cells.
- ``m010_run_heartbeat``: ``runs.heartbeat_at``, stamped by the writer every minute while the run
  is open (``bench.execute.heartbeat``), so a ``running`` run written on another host whose writer
  is gone (its pid means nothing here) is found by its stale stamp and marked ``interrupted``
  (``Store.reap_dead_runs``).
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

MIGRATIONS = sqlite_utils.Migrations("archbench")
MIGRATIONS_TABLE = MIGRATIONS.migrations_table
MIGRATION_NAMES: list[str] = []  # in order; filled by ``_migration``

RUN_STATUSES = ("running", "finished", "interrupted", "failed")
# Metrics pivoted into columns of ``results_wide`` by m001, as released.
_M001_WIDE_METRICS = (
    "val_top1_pct",
    "test_top1_pct",
    "step_ms_median",
    "step_ms_p10",
    "step_ms_p90",
    "peak_mem_mib",
    "trainable_params",
    "total_params",
    "fit_s",
    "train_step_gflop",
)
# Metrics pivoted into columns of ``results_wide`` (NULL where a cell lacks them), from m008 on.
WIDE_METRICS = (*_M001_WIDE_METRICS, "counted_mem_mib")
# Merge order follows the foreign keys: parents before children.
TABLES = ("runs", "results", "metrics", "series")
RESULT_INDEXES = (
    "run_id",
    "cell_key",
    "suite",
    "method",
    "variant",
    "dataset",
    "model",
    "seed",
    "tier",
    "status",
    "started_at",
)


def _migration(fn: Callable[[sqlite_utils.Database], None]) -> Callable[[sqlite_utils.Database], None]:
    """Register ``fn`` as the next migration (transactional), remembering its name."""
    MIGRATION_NAMES.append(fn.__name__)
    return MIGRATIONS()(fn)


# m001 as written when it shipped: a migration never changes once released, because
# databases created by it must keep matching later ones (change the schema in m002...).
# The status lists are spelled out; a test checks them against ``RUN_STATUSES``/``STATUSES``.
_M001_TABLES = (
    """CREATE TABLE runs (
  run_id TEXT NOT NULL PRIMARY KEY,
  started_at TEXT NOT NULL,
  ended_at TEXT,
  status TEXT NOT NULL DEFAULT 'running'
    CHECK (status IN ('running', 'finished', 'interrupted', 'failed')),
  tier TEXT, mode TEXT, device TEXT, argv TEXT,
  git_sha TEXT, git_dirty INTEGER,
  bench_version TEXT, python TEXT, torch TEXT, cuda TEXT, cudnn TEXT,
  gpu_name TEXT, gpu_count INTEGER, driver TEXT,
  host TEXT, platform TEXT, cpu_count INTEGER, cpu_threads INTEGER,
  flags_json TEXT
)""",
    """CREATE TABLE results (
  result_id TEXT NOT NULL PRIMARY KEY,
  run_id TEXT NOT NULL REFERENCES runs(run_id),
  cell_key TEXT NOT NULL,
  suite TEXT NOT NULL, method TEXT NOT NULL, variant TEXT NOT NULL,
  dataset TEXT NOT NULL, model TEXT NOT NULL, seed INTEGER NOT NULL,
  tier TEXT NOT NULL, mode TEXT NOT NULL,
  config_json TEXT, task_json TEXT,
  status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'oom', 'diverged', 'skipped')),
  error_type TEXT, error TEXT,
  arch TEXT, device TEXT, worker TEXT,
  started_at TEXT, ended_at TEXT, wall_s REAL,
  info_json TEXT
)""",
    """CREATE TABLE metrics (
  result_id TEXT NOT NULL REFERENCES results(result_id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  value REAL,
  PRIMARY KEY (result_id, name)
)""",
    """CREATE TABLE series (
  result_id TEXT NOT NULL REFERENCES results(result_id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  step INTEGER NOT NULL,
  value REAL,
  PRIMARY KEY (result_id, name, step)
)""",
)


@_migration
def m001_initial(db: sqlite_utils.Database) -> None:
    """Tables (STRICT where SQLite supports it), grid-key indexes and the two views.

    Tables are DDL because sqlite-utils' ``create_table`` cannot declare CHECK
    constraints. Lookups of series by (result_id, name) and of metrics by result_id use
    the primary-key indexes, so they get none of their own.
    """
    strict = " STRICT" if db.supports_strict else ""
    for ddl in _M001_TABLES:
        db.execute(ddl + strict)
    for column in RESULT_INDEXES:
        db["results"].create_index([column], if_not_exists=True)
    db["metrics"].create_index(["name"], if_not_exists=True)
    _create_views(db)


def _create_wide_view(db: sqlite_utils.Database, metrics: tuple[str, ...]) -> None:
    """``results_wide``: every results row with ``metrics`` pivoted into columns."""
    pivots = ",\n".join(
        f"  (SELECT m.value FROM metrics m WHERE m.result_id = r.result_id AND m.name = '{name}') AS {name}"
        for name in metrics
    )
    db.create_view("results_wide", f"SELECT r.*,\n{pivots}\nFROM results r", replace=True)


def _create_views(db: sqlite_utils.Database) -> None:
    """``results_wide`` and ``latest_results`` (see the module docstring)."""
    _create_wide_view(db, _M001_WIDE_METRICS)
    db.create_view(
        "latest_results",
        """SELECT w.* FROM results_wide w
WHERE w.result_id = (
  SELECT r.result_id FROM results r WHERE r.cell_key = w.cell_key
  ORDER BY r.started_at DESC, r.result_id DESC LIMIT 1)""",
        replace=True,
    )


_M002_TABLES = (
    """CREATE TABLE series_new (
  result_id TEXT NOT NULL REFERENCES results(result_id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  step INTEGER NOT NULL,
  position INTEGER NOT NULL DEFAULT 0,
  value REAL,
  PRIMARY KEY (result_id, name, step, position)
)""",
    """CREATE TABLE claims (
  claim_id TEXT NOT NULL,
  tier TEXT NOT NULL,
  paper TEXT, method TEXT, baseline TEXT, source_ref TEXT, metric TEXT,
  paper_value TEXT, paper_baseline_value TEXT, unit TEXT, setting TEXT, check_text TEXT,
  ours_value REAL, ours_baseline_value REAL, ours_detail TEXT,
  verdict TEXT NOT NULL CHECK (verdict IN ('reproduced', 'not reproduced', 'not yet measured')),
  n_seeds INTEGER, evaluated_at TEXT,
  PRIMARY KEY (claim_id, tier)
)""",
    """CREATE TABLE gate_decisions (
  decision_id TEXT NOT NULL PRIMARY KEY,
  gate_id TEXT NOT NULL,
  created_at TEXT NOT NULL,
  baseline TEXT, candidate TEXT,
  suite TEXT, variant TEXT, dataset TEXT, model TEXT, tier TEXT, mode TEXT,
  metric TEXT NOT NULL,
  reference REAL, candidate_value REAL, delta REAL,
  n_reference INTEGER, n_candidate INTEGER,
  p_value REAL, p_adjusted REAL,
  verdict TEXT NOT NULL
    CHECK (verdict IN ('pass', 'regression', 'suspect', 'improved', 'missing', 'new', 'not gated')),
  reason TEXT
)""",
)

_SEED_SUMMARY_SELECT = """
SELECT l.suite, l.method, l.variant, l.dataset, l.model, l.tier, l.mode, m.name AS metric,
  count(m.value) AS n,
  avg(m.value) AS mean,
  CASE WHEN count(m.value) > 1 THEN sqrt(max(0.0,
    (sum(m.value * m.value) - sum(m.value) * sum(m.value) / count(m.value)) / (count(m.value) - 1)))
    ELSE 0.0 END AS std,
  min(m.value) AS min, max(m.value) AS max
FROM latest l JOIN metrics m ON m.result_id = l.result_id
GROUP BY l.suite, l.method, l.variant, l.dataset, l.model, l.tier, l.mode, m.name"""

# m002's seed_summary, kept as released (m004 redefines the view through latest_ids).
SEED_SUMMARY_SQL = (
    """WITH latest AS (
  SELECT r.* FROM results r
  WHERE r.status = 'ok' AND r.result_id = (
    SELECT r2.result_id FROM results r2 WHERE r2.cell_key = r.cell_key
    ORDER BY r2.started_at DESC, r2.result_id DESC LIMIT 1)
)"""
    + _SEED_SUMMARY_SELECT
)

PROVENANCE_SQL = """SELECT r.*, u.tag AS run_tag, u.status AS run_status, u.started_at AS run_started_at,
  u.git_sha, u.git_dirty, u.bench_version, u.python, u.torch, u.cuda, u.cudnn,
  u.gpu_name, u.gpu_count, u.driver, u.host, u.cpu_threads, u.flags_json
FROM results r JOIN runs u ON u.run_id = r.run_id"""


@_migration
def m002_tags_positions_claims_gates(db: sqlite_utils.Database) -> None:
    """Run tags, positional series, the claims and gate tables, two more views."""
    strict = " STRICT" if db.supports_strict else ""
    db.execute("ALTER TABLE runs ADD COLUMN tag TEXT")
    db["runs"].create_index(["tag"], if_not_exists=True)
    db["runs"].create_index(["started_at"], if_not_exists=True)
    for ddl in _M002_TABLES:
        db.execute(ddl + strict)
    db.execute(
        "INSERT INTO series_new (result_id, name, step, position, value) "
        "SELECT result_id, name, step, 0, value FROM series"
    )
    db.execute("DROP TABLE series")
    db.execute("ALTER TABLE series_new RENAME TO series")
    db["gate_decisions"].create_index(["gate_id"], if_not_exists=True)
    db["gate_decisions"].create_index(["verdict"], if_not_exists=True)
    db.create_view("results_provenance", PROVENANCE_SQL, replace=True)
    db.create_view("seed_summary", SEED_SUMMARY_SQL, replace=True)


@_migration
def m003_run_arithmetic(db: sqlite_utils.Database) -> None:
    """``runs.arith_json``: what decided the floating-point results of the run's cells."""
    db.execute("ALTER TABLE runs ADD COLUMN arith_json TEXT")


LATEST_IDS_SQL = """SELECT r.result_id, r.cell_key FROM results r
WHERE r.result_id = (
  SELECT r2.result_id FROM results r2 WHERE r2.cell_key = r.cell_key
  ORDER BY r2.started_at DESC, r2.result_id DESC LIMIT 1)"""
"""The row that counts for each cell: its newest (by start time, then result_id). The one place
"latest" is defined; every view and canned query that reads latest rows joins it."""


SEED_SUMMARY_V2_SQL = (
    """WITH latest AS (
  SELECT r.* FROM results r
  WHERE r.status = 'ok' AND r.result_id IN (SELECT result_id FROM latest_ids)
)"""
    + _SEED_SUMMARY_SELECT
)
"""``seed_summary`` from m004 on: m002's view with the latest rows taken from ``latest_ids``."""


@_migration
def m004_latest_ids(db: sqlite_utils.Database) -> None:
    """``latest_ids`` (see ``LATEST_IDS_SQL``); ``latest_results`` and ``seed_summary`` select
    through it, with the same rows as before."""
    db.create_view("latest_ids", LATEST_IDS_SQL, replace=True)
    db.create_view(
        "latest_results",
        "SELECT w.* FROM results_wide w WHERE w.result_id IN (SELECT result_id FROM latest_ids)",
        replace=True,
    )
    db.create_view("seed_summary", SEED_SUMMARY_V2_SQL, replace=True)


LATEST_IDS_V2_SQL = """SELECT result_id, cell_key FROM (
  SELECT r.result_id, r.cell_key, row_number() OVER (
    PARTITION BY r.cell_key
    ORDER BY r.status = 'skipped', r.started_at DESC, r.result_id DESC) AS pick
  FROM results r)
WHERE pick = 1"""
"""The row that counts for each cell from m005 on: its newest row that is not ``skipped`` (by
start time, then result_id); only where every row of the cell is skipped, its newest skipped
row. A skipped row says the cell could not run here, not how it did."""


@_migration
def m005_latest_informative(db: sqlite_utils.Database) -> None:
    """``latest_ids`` prefers informative rows and is one window pass (see the module docstring).

    The views that select through ``latest_ids`` (``latest_results``, ``seed_summary``) and the
    Datasette queries follow without being redefined."""
    db.execute(
        "CREATE INDEX IF NOT EXISTS results_cell_latest"
        " ON results (cell_key, (status = 'skipped'), started_at DESC, result_id DESC)"
    )
    db.create_view("latest_ids", LATEST_IDS_V2_SQL, replace=True)


@_migration
def m006_run_pid(db: sqlite_utils.Database) -> None:
    """``runs.pid``: the writer's process id, for finding runs whose writer died."""
    db.execute("ALTER TABLE runs ADD COLUMN pid INTEGER")


_M007_CLAIMS = """CREATE TABLE claims_new (
  claim_id TEXT NOT NULL,
  tier TEXT NOT NULL,
  paper TEXT, method TEXT, baseline TEXT, source_ref TEXT, metric TEXT,
  paper_value TEXT, paper_baseline_value TEXT, unit TEXT, setting TEXT, check_text TEXT,
  ours_value REAL, ours_baseline_value REAL, ours_detail TEXT,
  verdict TEXT NOT NULL CHECK (verdict IN ('reproduced', 'not reproduced', 'inconclusive')),
  reason TEXT,
  effect REAL, ci_low REAL, ci_high REAL, p_value REAL, test TEXT,
  n_seeds INTEGER, n_censored INTEGER, evaluated_at TEXT,
  PRIMARY KEY (claim_id, tier)
)"""


@_migration
def m007_claim_statistics(db: sqlite_utils.Database) -> None:
    """The claims table with the verdict procedure's statistics; old verdicts kept, mapped."""
    strict = " STRICT" if db.supports_strict else ""
    db.execute(_M007_CLAIMS + strict)
    db.execute(
        "INSERT INTO claims_new (claim_id, tier, paper, method, baseline, source_ref, metric, paper_value, "
        "paper_baseline_value, unit, setting, check_text, ours_value, ours_baseline_value, ours_detail, verdict, "
        "reason, n_seeds, evaluated_at) "
        "SELECT claim_id, tier, paper, method, baseline, source_ref, metric, paper_value, paper_baseline_value, "
        "unit, setting, check_text, ours_value, ours_baseline_value, ours_detail, "
        "CASE verdict WHEN 'not yet measured' THEN 'inconclusive' ELSE verdict END, "
        "CASE verdict WHEN 'not yet measured' THEN 'no data' END, n_seeds, evaluated_at FROM claims"
    )
    db.execute("DROP TABLE claims")
    db.execute("ALTER TABLE claims_new RENAME TO claims")


@_migration
def m008_counted_memory_column(db: sqlite_utils.Database) -> None:
    """``results_wide`` gains ``counted_mem_mib`` (``latest_results`` selects ``w.*`` from it, so it
    follows): the training memory the engine counts, the memory figure of CPU rows."""
    _create_wide_view(db, WIDE_METRICS)


LATEST_IDS_V3_SQL = """SELECT (
  SELECT r.result_id FROM results r WHERE r.cell_key = k.cell_key
  ORDER BY r.status = 'skipped', r.started_at DESC, r.result_id DESC LIMIT 1) AS result_id, k.cell_key
FROM (SELECT DISTINCT cell_key FROM results) k"""
"""The row that counts for each cell from m009 on: ``LATEST_IDS_V2_SQL``'s rule (the newest row
that is not skipped; the newest skipped one only where all are), as one seek per cell on
``results_cell_latest``, whose order is the ORDER BY here, instead of a window over every row."""


@_migration
def m009_latest_ids_per_cell(db: sqlite_utils.Database) -> None:
    """``latest_ids`` as one index seek per cell (see the module docstring); same rows and columns."""
    db.create_view("latest_ids", LATEST_IDS_V3_SQL, replace=True)


@_migration
def m010_run_heartbeat(db: sqlite_utils.Database) -> None:
    """``runs.heartbeat_at``: the writer's last sign of life (UTC ISO 8601, like ``started_at``)."""
    db.execute("ALTER TABLE runs ADD COLUMN heartbeat_at TEXT")
