"""The results store: schema, the writer's guarantees, views, merging, read-only use."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import sqlite_utils

from bench.contract.cell import STATUSES, CellResult, CellSpec, short_hash
from bench.env import utc_now
from bench.errors import InvalidConfig
from bench.results import store as store_mod
from bench.results.store import (
    MIGRATIONS,
    RUN_STATUSES,
    NotABenchDatabase,
    SchemaMismatch,
    Store,
    StoreError,
    merge,
    read_frame,
    write_transaction,
)

RUNS_COLUMNS = [
    "run_id",
    "started_at",
    "ended_at",
    "status",
    "tier",
    "mode",
    "device",
    "argv",
    "git_sha",
    "git_dirty",
    "bench_version",
    "python",
    "torch",
    "cuda",
    "cudnn",
    "gpu_name",
    "gpu_count",
    "driver",
    "host",
    "platform",
    "cpu_count",
    "cpu_threads",
    "flags_json",
    "tag",
    "arith_json",
    "pid",
    "heartbeat_at",
]
RESULTS_COLUMNS = [
    "result_id",
    "run_id",
    "cell_key",
    "suite",
    "method",
    "variant",
    "dataset",
    "model",
    "seed",
    "tier",
    "mode",
    "config_json",
    "task_json",
    "status",
    "error_type",
    "error",
    "arch",
    "device",
    "worker",
    "started_at",
    "ended_at",
    "wall_s",
    "info_json",
]
WIDE_COLUMNS = RESULTS_COLUMNS + [
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
    "counted_mem_mib",
]


def spec(seed: int = 0, *, method: str = "last_k", tier: str = "smoke") -> CellSpec:
    return CellSpec(
        suite="finetune",
        method=method,
        dataset="uci-digits",
        model="resnet18",
        seed=seed,
        tier=tier,
        config_json='{"k": 2}',
    )


def result(
    cell: CellSpec | None = None,
    status: str = "ok",
    *,
    metrics=None,
    series=None,
    started_at: str = "2026-01-01T00:00:00.000000+00:00",
) -> CellResult:
    return CellResult(
        spec=cell or spec(),
        status=status,
        metrics={"test_top1_pct": 91.5, "fit_s": 2.0} if metrics is None else metrics,
        series={"train_loss_nat": [(0, 2.3), (1, 1.1)]} if series is None else series,
        arch="resnet18[k3]",
        info={"stopped": "converged"},
        device="cpu",
        worker="gw0",
        started_at=started_at,
        ended_at="2026-01-01T00:00:05.000000+00:00",
        wall_s=5.0,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "results.db"


@pytest.fixture
def store(db_path: Path):
    with Store(db_path) as s:
        yield s


@pytest.fixture
def run_id(store: Store) -> str:
    return store.start_run({"tier": "smoke", "host": "testhost", "argv": ["pytest", "-q"]})


def rows(db_path: Path, sql: str, params=()) -> list[tuple]:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def count(store: Store, table: str) -> int:
    return store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_fresh_database_has_the_expected_schema(store: Store):
    db = store.db
    assert set(db.table_names()) == {
        "runs",
        "results",
        "metrics",
        "series",
        "claims",
        "gate_decisions",
        "_sqlite_migrations",
    }
    assert [c.name for c in db["runs"].columns] == RUNS_COLUMNS
    assert [c.name for c in db["results"].columns] == RESULTS_COLUMNS
    assert [c.name for c in db["metrics"].columns] == ["result_id", "name", "value"]
    assert [c.name for c in db["series"].columns] == ["result_id", "name", "step", "position", "value"]
    assert db["metrics"].pks == ["result_id", "name"]
    assert db["series"].pks == ["result_id", "name", "step", "position"]
    assert all(db[t].strict for t in ("runs", "results", "metrics", "series", "claims", "gate_decisions"))
    assert db["claims"].pks == ["claim_id", "tier"]
    assert {tuple(i.columns) for i in db["results"].indexes if not i.name.startswith("sqlite_")} == {
        (c,)
        for c in (
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
    } | {("cell_key", None, "started_at", "result_id")}  # m005's expression index (the window's order)
    assert [tuple(i.columns) for i in db["metrics"].indexes if i.name == "idx_metrics_name"] == [("name",)]
    assert set(db.view_names()) == {
        "results_wide",
        "latest_ids",
        "latest_results",
        "results_provenance",
        "seed_summary",
    }
    assert [c.name for c in db["results_wide"].columns] == WIDE_COLUMNS
    assert [c.name for c in db["latest_results"].columns] == WIDE_COLUMNS
    assert db.execute("SELECT migration_set, name FROM _sqlite_migrations").fetchall() == [
        ("archbench", "m001_initial"),
        ("archbench", "m002_tags_positions_claims_gates"),
        ("archbench", "m003_run_arithmetic"),
        ("archbench", "m004_latest_ids"),
        ("archbench", "m005_latest_informative"),
        ("archbench", "m006_run_pid"),
        ("archbench", "m007_claim_statistics"),
        ("archbench", "m008_counted_memory_column"),
        ("archbench", "m009_latest_ids_per_cell"),
        ("archbench", "m010_run_heartbeat"),
    ]
    not_null = {c.name for c in db["results"].columns if c.notnull}
    assert {"result_id", "run_id", "cell_key", "status", "seed"} <= not_null
    fks = {
        (fk.table, fk.column, fk.other_table, fk.on_delete)
        for t in ("results", "metrics", "series")
        for fk in db[t].foreign_keys
    }
    assert fks == {
        ("results", "run_id", "runs", "NO ACTION"),
        ("metrics", "result_id", "results", "CASCADE"),
        ("series", "result_id", "results", "CASCADE"),
    }


def test_series_lookup_by_result_and_name_uses_the_primary_key_index(store: Store):
    plan = store.db.execute(
        "EXPLAIN QUERY PLAN SELECT step, value FROM series WHERE result_id = ? AND name = ?", ["a", "b"]
    ).fetchall()
    assert "sqlite_autoindex_series_1" in " ".join(str(row[-1]) for row in plan)  # (rebuilt by m002)


def test_applying_migrations_again_changes_nothing(db_path: Path):
    Store(db_path).close()
    before = rows(db_path, "SELECT type, name, sql FROM sqlite_master ORDER BY name")
    with Store(db_path) as s:
        assert MIGRATIONS.pending(s.db) == []
        MIGRATIONS.apply(s.db)
    assert rows(db_path, "SELECT type, name, sql FROM sqlite_master ORDER BY name") == before
    assert rows(db_path, "SELECT name FROM _sqlite_migrations") == [
        ("m001_initial",),
        ("m002_tags_positions_claims_gates",),
        ("m003_run_arithmetic",),
        ("m004_latest_ids",),
        ("m005_latest_informative",),
        ("m006_run_pid",),
        ("m007_claim_statistics",),
        ("m008_counted_memory_column",),
        ("m009_latest_ids_per_cell",),
        ("m010_run_heartbeat",),
    ]


def test_wal_mode_and_foreign_keys_are_on(store: Store, db_path: Path):
    assert store.db.journal_mode == "wal"
    assert rows(db_path, "PRAGMA journal_mode") == [("wal",)]  # persisted in the file
    assert store.db.execute("PRAGMA foreign_keys").fetchone() == (1,)


def test_result_with_unknown_run_id_is_rejected(store: Store):
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        store.write_result("no-such-run", result())
    assert (count(store, "results"), count(store, "metrics"), count(store, "series")) == (0, 0, 0)


def test_start_and_finish_run(store: Store, run_id: str):
    row = store.db["runs"].get(run_id)
    assert len(run_id) == 32 and int(run_id, 16) >= 0
    assert (row["status"], row["tier"], row["host"], row["argv"], row["ended_at"]) == (
        "running",
        "smoke",
        "testhost",
        '["pytest", "-q"]',
        None,
    )
    assert row["started_at"].endswith("+00:00")
    store.finish_run(run_id, "interrupted")
    row = store.db["runs"].get(run_id)
    assert row["status"] == "interrupted" and row["ended_at"] >= row["started_at"]


def test_start_run_keeps_a_given_start_and_rejects_unknown_keys(store: Store):
    rid = store.start_run({"started_at": "2020-01-01T00:00:00+00:00", "gpu_count": 2})
    assert store.db["runs"].get(rid)["started_at"] == "2020-01-01T00:00:00+00:00"
    with pytest.raises(InvalidConfig, match=r"unknown runs column\(s\) \['gpu'\]; valid: .*gpu_name"):
        store.start_run({"gpu": "A100"})
    assert count(store, "runs") == 1


def test_finish_run_rejects_bad_status_and_unknown_run(store: Store, run_id: str):
    with pytest.raises(ValueError, match="run status must be one of"):
        store.finish_run(run_id, "done")
    with pytest.raises(StoreError, match="no run with run_id 'nope'"):
        store.finish_run("nope")
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
        store.db.execute("UPDATE runs SET status = 'done'")
    assert store.db["runs"].get(run_id)["status"] == "running"


def test_write_result_writes_row_metrics_and_series(store: Store, run_id: str):
    res = result()
    rid = store.write_result(run_id, res)
    assert rid == short_hash(run_id, res.spec.cell_key)
    row = store.db["results"].get(rid)
    assert {
        k: row[k]
        for k in (
            "run_id",
            "cell_key",
            "suite",
            "method",
            "variant",
            "dataset",
            "model",
            "seed",
            "tier",
            "mode",
            "config_json",
            "status",
            "arch",
            "device",
            "worker",
            "started_at",
            "ended_at",
            "wall_s",
            "info_json",
        )
    } == {
        "run_id": run_id,
        "cell_key": res.spec.cell_key,
        "suite": "finetune",
        "method": "last_k",
        "variant": "",
        "dataset": "uci-digits",
        "model": "resnet18",
        "seed": 0,
        "tier": "smoke",
        "mode": "accuracy",
        "config_json": '{"k": 2}',
        "status": "ok",
        "arch": "resnet18[k3]",
        "device": "cpu",
        "worker": "gw0",
        "started_at": "2026-01-01T00:00:00.000000+00:00",
        "ended_at": "2026-01-01T00:00:05.000000+00:00",
        "wall_s": 5.0,
        "info_json": '{"stopped": "converged"}',
    }
    assert store.db.execute("SELECT name, value FROM metrics ORDER BY name").fetchall() == [
        ("fit_s", 2.0),
        ("test_top1_pct", 91.5),
    ]
    assert store.db.execute("SELECT name, step, value FROM series ORDER BY step").fetchall() == [
        ("train_loss_nat", 0, 2.3),
        ("train_loss_nat", 1, 1.1),
    ]


def test_missing_start_time_becomes_the_write_time(store: Store, run_id: str):
    before = utc_now()
    rid = store.write_result(run_id, result(started_at=""))
    assert before <= store.db["results"].get(rid)["started_at"] <= utc_now()


def test_rewriting_a_cell_in_the_same_run_replaces_it(store: Store, run_id: str):
    store.write_result(
        run_id,
        result(
            metrics={"test_top1_pct": 50.0, "fit_s": 1.0}, series={"train_loss_nat": [(0, 3.0), (1, 2.0), (2, 1.0)]}
        ),
    )
    rid = store.write_result(
        run_id, result(status="failed", metrics={"test_top1_pct": 60.0}, series={"train_loss_nat": [(0, 9.0)]})
    )
    assert count(store, "results") == 1
    assert store.db["results"].get(rid)["status"] == "failed"
    assert store.db.execute("SELECT name, value FROM metrics").fetchall() == [("test_top1_pct", 60.0)]
    assert store.db.execute("SELECT step, value FROM series").fetchall() == [(0, 9.0)]


def test_same_cell_in_two_runs_gives_two_rows(store: Store, run_id: str):
    other = store.start_run({})
    ids = {store.write_result(run_id, result()), store.write_result(other, result())}
    assert len(ids) == 2
    assert store.db.execute("SELECT count(DISTINCT cell_key), count(*) FROM results").fetchone() == (1, 2)
    assert count(store, "metrics") == 4


def test_non_finite_values_are_stored_as_null(store: Store, run_id: str):
    rid = store.write_result(
        run_id,
        result(
            metrics={"test_top1_pct": math.nan, "fit_s": math.inf, "peak_mem_mib": 12.5},
            series={"train_loss_nat": [(0, 1.0), (1, math.nan)]},
        ),
    )
    assert dict(store.db.execute("SELECT name, value FROM metrics").fetchall()) == {
        "test_top1_pct": None,
        "fit_s": None,
        "peak_mem_mib": 12.5,
    }
    assert store.db.execute("SELECT step, value FROM series ORDER BY step").fetchall() == [(0, 1.0), (1, None)]
    wide = store.db.execute("SELECT test_top1_pct, fit_s, peak_mem_mib FROM results_wide WHERE result_id = ?", [rid])
    assert wide.fetchone() == (None, None, 12.5)


def test_metric_name_without_unit_is_rejected_before_writing(store: Store, run_id: str):
    rid = store.write_result(run_id, result())
    with pytest.raises(ValueError, match="metric name 'accuracy' has no unit token"):
        store.write_result(run_id, result(metrics={"test_top1_pct": 1.0, "accuracy": 0.5}))
    with pytest.raises(ValueError, match="metric name 'loss' has no unit token"):
        store.write_result(run_id, result(series={"loss": [(0, 1.0)]}))
    assert count(store, "results") == 1  # the earlier row is untouched
    assert dict(store.db.execute("SELECT name, value FROM metrics").fetchall()) == {"test_top1_pct": 91.5, "fit_s": 2.0}
    assert store.db["results"].get(rid)["status"] == "ok"


def test_status_is_checked_by_cell_result_and_by_the_table(store: Store, run_id: str):
    with pytest.raises(ValueError, match="status must be one of"):
        result(status="crashed")
    bad = result()
    bad.status = "crashed"  # bypasses CellResult's own check
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
        store.write_result(run_id, bad)
    assert (count(store, "results"), count(store, "metrics")) == (0, 0)


def test_every_declared_status_is_accepted(store: Store, run_id: str):
    for seed, status in enumerate(STATUSES):
        store.write_result(run_id, result(spec(seed), status))
    assert sorted(r[0] for r in store.db.execute("SELECT status FROM results")) == sorted(STATUSES)
    for status in RUN_STATUSES:
        store.finish_run(run_id, status)
        assert store.db["runs"].get(run_id)["status"] == status


def test_store_creates_missing_parent_folders(tmp_path: Path):
    with Store(tmp_path / "out" / "nested" / "results.db") as s:
        assert "results" in s.db.table_names()


def test_deleting_a_result_cascades_to_metrics_and_series(store: Store, run_id: str):
    rid = store.write_result(run_id, result())
    store.db.execute("DELETE FROM results WHERE result_id = ?", [rid])
    assert (count(store, "metrics"), count(store, "series")) == (0, 0)


def test_ok_cell_keys_returns_only_ok_cells(store: Store, run_id: str):
    ok, failed, oom = spec(0), spec(1), spec(2)
    short_ok = spec(3, tier="short")
    store.write_result(run_id, result(ok))
    store.write_result(run_id, result(failed, "failed"))
    store.write_result(run_id, result(oom, "oom"))
    store.write_result(run_id, result(short_ok))
    later = store.start_run({})
    store.write_result(later, result(failed, "failed"))
    assert store.ok_cell_keys() == {ok.cell_key, short_ok.cell_key}
    assert store.ok_cell_keys(tier="smoke") == {ok.cell_key}
    assert store.ok_cell_keys(tier="paper") == set()


def test_results_wide_and_latest_results(store: Store, run_id: str):
    later = store.start_run({})
    cell, other = spec(0), spec(1)
    store.write_result(
        run_id,
        result(
            cell, metrics={"test_top1_pct": 80.0, "step_ms_p90": 3.5}, started_at="2026-01-01T00:00:00.000000+00:00"
        ),
    )
    newest = store.write_result(
        later, result(cell, "failed", metrics={"val_top1_pct": 70.0}, started_at="2026-01-02T00:00:00.000000+00:00")
    )
    store.write_result(run_id, result(other, metrics={"trainable_params": 1000.0}))
    wide = {r["result_id"]: r for r in store.db.query("SELECT * FROM results_wide")}
    first = wide[short_hash(run_id, cell.cell_key)]
    assert (first["test_top1_pct"], first["step_ms_p90"], first["val_top1_pct"]) == (80.0, 3.5, None)
    assert wide[newest]["val_top1_pct"] == 70.0 and wide[newest]["test_top1_pct"] is None
    latest = {r["cell_key"]: r for r in store.db.query("SELECT * FROM latest_results")}
    assert set(latest) == {cell.cell_key, other.cell_key}
    assert latest[cell.cell_key]["result_id"] == newest
    assert latest[cell.cell_key]["status"] == "failed"
    assert latest[other.cell_key]["trainable_params"] == 1000.0


def test_latest_results_breaks_start_time_ties_by_result_id(store: Store, run_id: str):
    later = store.start_run({})
    ids = [store.write_result(r, result()) for r in (run_id, later)]  # same started_at
    assert [r["result_id"] for r in store.db.query("SELECT * FROM latest_results")] == [max(ids)]


def test_m004_views_select_the_rows_m002_and_m001_selected(store: Store, run_id: str):
    """latest_results and seed_summary now join latest_ids; on cells that were ok then failed,
    failed then ok, and tied in start time, they return what the released definitions did."""
    from bench.results.schema import SEED_SUMMARY_SQL

    later = store.start_run({})
    day = "2026-01-0{}T00:00:00.000000+00:00"
    store.write_result(run_id, result(spec(0), metrics={"test_top1_pct": 80.0}, started_at=day.format(1)))
    store.write_result(later, result(spec(0), "failed", metrics={}, started_at=day.format(2)))
    store.write_result(run_id, result(spec(1), "failed", metrics={}, started_at=day.format(1)))
    store.write_result(later, result(spec(1), metrics={"test_top1_pct": 70.0}, started_at=day.format(2)))
    for seed in (2, 3):
        for run, acc in ((run_id, 60.0), (later, 65.0)):  # same start time: the larger result_id wins
            store.write_result(run, result(spec(seed), metrics={"test_top1_pct": acc + seed}, started_at=day.format(3)))
    old_latest = """SELECT w.* FROM results_wide w WHERE w.result_id = (
      SELECT r.result_id FROM results r WHERE r.cell_key = w.cell_key
      ORDER BY r.started_at DESC, r.result_id DESC LIMIT 1)"""
    order = " ORDER BY 1, 2, 3, 4, 5, 6, 7, 8"
    assert rows(store.path, "SELECT * FROM latest_results ORDER BY result_id") == rows(
        store.path, f"SELECT * FROM ({old_latest}) ORDER BY result_id"
    )
    assert len(rows(store.path, "SELECT * FROM latest_results")) == 4
    assert rows(store.path, "SELECT * FROM seed_summary" + order) == rows(
        store.path, f"SELECT * FROM ({SEED_SUMMARY_SQL})" + order
    )
    assert rows(store.path, "SELECT n FROM seed_summary WHERE metric = 'test_top1_pct'") == [(3,)]


def test_a_skipped_row_never_hides_a_row_that_ran(store: Store, run_id: str):
    """Probe: --bench-device cuda on a CPU machine wrote 48 skipped rows after 48 ok ones, and the
    ok cells vanished from latest_results, seed_summary and bench report."""
    later = store.start_run({})
    day = "2026-01-0{}T00:00:00.000000+00:00"
    store.write_result(run_id, result(spec(0), metrics={"test_top1_pct": 80.0}, started_at=day.format(1)))
    store.write_result(later, result(spec(0), "skipped", metrics={}, started_at=day.format(2)))
    store.write_result(run_id, result(spec(1), "failed", metrics={}, started_at=day.format(1)))
    store.write_result(later, result(spec(1), "skipped", metrics={}, started_at=day.format(2)))
    store.write_result(later, result(spec(2), "skipped", metrics={}, started_at=day.format(2)))  # only skipped
    latest = dict(rows(store.path, "SELECT seed, status FROM latest_results"))
    assert latest == {0: "ok", 1: "failed", 2: "skipped"}
    assert rows(store.path, "SELECT n, mean FROM seed_summary WHERE metric = 'test_top1_pct'") == [(1, 80.0)]
    # a newer row that ran does replace an older one, whatever its status
    store.write_result(later, result(spec(0), "failed", metrics={}, started_at=day.format(3)))
    assert dict(rows(store.path, "SELECT seed, status FROM latest_results"))[0] == "failed"


def test_latest_ids_is_one_index_seek_per_cell(store: Store):
    """Probe 5: the latest-row views ran a correlated subquery per row (quadratic at 100k rows); m005's
    window numbered every row once per query (0.07 s at 100k rows, 8 times on a faceted page). From
    m009: one pass over the cell_key index for the distinct cells, then one seek each, no sort."""
    plan = [str(r[-1]) for r in store.db.execute("EXPLAIN QUERY PLAN SELECT * FROM latest_ids").fetchall()]
    assert "SCAN results USING COVERING INDEX idx_results_cell_key" in plan
    assert "SEARCH r USING INDEX results_cell_latest (cell_key=?)" in plan
    assert not [step for step in plan if "TEMP B-TREE" in step.upper()]


def test_latest_ids_selects_the_rows_of_the_m005_window(store: Store, run_id: str):
    """m009 changes how latest_ids finds each cell's row, not which row: on newer-wins, skipped
    after ok, only skipped, start-time ties and a row without a start time it returns exactly the
    rows of m005's window definition (``LATEST_IDS_V2_SQL``), and the views over it follow."""
    from bench.results.schema import LATEST_IDS_V2_SQL, SEED_SUMMARY_V2_SQL

    later = store.start_run({})
    day = "2026-01-0{}T00:00:00.000000+00:00"
    cases = {  # seed: (status and start day in run_id, the same in later)
        0: (("ok", 1), ("ok", 2)),
        1: (("ok", 1), ("skipped", 2)),
        2: (("skipped", 1), ("skipped", 2)),
        3: (("ok", 3), ("ok", 3)),  # tie: the larger result_id
        4: (("failed", 2), ("ok", 1)),
        5: (("skipped", 3), ("failed", 1)),
    }
    for seed, runs in cases.items():
        for run, (status, d) in zip((run_id, later), runs, strict=True):
            metrics = {"test_top1_pct": 60.0 + seed + d, "fit_s": 1.0 + d} if status == "ok" else {}
            store.write_result(run, result(spec(seed), status, metrics=metrics, started_at=day.format(d)))
    first = store.write_result(run_id, result(spec(6), "failed", metrics={}, started_at=day.format(1)))
    store.write_result(later, result(spec(6), metrics={"test_top1_pct": 70.0}, started_at=day.format(2)))
    with write_transaction(store.db):  # a row without a start time (an old shard's) sorts as the oldest
        store.db.execute("UPDATE results SET started_at = NULL WHERE seed = 6 AND result_id != ?", [first])
    window = rows(store.path, f"SELECT * FROM ({LATEST_IDS_V2_SQL}) ORDER BY cell_key")
    assert rows(store.path, "SELECT * FROM latest_ids ORDER BY cell_key") == window
    assert len(window) == 7
    assert dict(rows(store.path, "SELECT seed, status FROM latest_results")) == {
        0: "ok",
        1: "ok",
        2: "skipped",
        3: "ok",
        4: "failed",
        5: "failed",
        6: "failed",
    }
    order = " ORDER BY 1, 2, 3, 4, 5, 6, 7, 8"
    reference = SEED_SUMMARY_V2_SQL.replace("FROM latest_ids", f"FROM ({LATEST_IDS_V2_SQL})")
    assert rows(store.path, "SELECT * FROM seed_summary" + order) == rows(
        store.path, f"SELECT * FROM ({reference})" + order
    )


def make_shard(path: Path, seeds: list[int], host: str) -> str:
    with Store(path) as s:
        rid = s.start_run({"host": host})
        for seed in seeds:
            s.write_result(rid, result(spec(seed)))
        s.finish_run(rid)
    return rid


def table_rows(path: Path) -> dict[str, set[tuple]]:
    return {t: set(rows(path, f"SELECT * FROM {t}")) for t in store_mod.TABLES}


def test_merge_is_the_union_and_idempotent(tmp_path: Path):
    a, b, out = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "out.db"
    make_shard(a, [0, 1], "node-a")
    make_shard(b, [1, 2, 3], "node-b")
    counts = merge([a, b], out)
    assert counts == {"runs": 2, "results": 5, "metrics": 10, "series": 10}
    merged, shard_a, shard_b = table_rows(out), table_rows(a), table_rows(b)
    assert merged == {t: shard_a[t] | shard_b[t] for t in merged}
    assert merge([a, b, a], out) == {"runs": 0, "results": 0, "metrics": 0, "series": 0}
    assert table_rows(out) == merged
    with Store(out, readonly=True) as s:
        assert len(s.ok_cell_keys()) == 4  # seed 1 ran on both nodes: one cell_key


def test_merge_rejects_files_that_are_not_bench_databases(tmp_path: Path):
    plain, text, out = tmp_path / "plain.db", tmp_path / "notes.txt", tmp_path / "out.db"
    conn = sqlite3.connect(plain)
    conn.execute("CREATE TABLE results (x)")
    conn.close()
    text.write_text("hello, not sqlite at all" * 10)
    with pytest.raises(NotABenchDatabase, match=r"plain\.db' is not an archbench results database"):
        merge([plain], out)
    with pytest.raises(ValueError, match=r"notes\.txt' is not an SQLite database"):
        merge([text], out)
    with pytest.raises(FileNotFoundError, match=r"missing\.db' does not exist"):
        merge([tmp_path / "missing.db"], out)
    assert not out.exists()  # sources are checked before anything is created


def test_merge_rejects_a_shard_from_newer_code(tmp_path: Path):
    shard, out = tmp_path / "new.db", tmp_path / "out.db"
    make_shard(shard, [0], "node")
    conn = sqlite3.connect(shard)
    conn.execute(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES ('archbench', 'm999_future', 'x')"
    )
    conn.commit()
    conn.close()
    with pytest.raises(SchemaMismatch, match=r"new\.db' has migrations \['m999_future'\]"):
        merge([shard], out)
    with pytest.raises(SchemaMismatch, match="written by a newer archbench"):
        Store(shard)


def test_read_only_store_cannot_write(db_path: Path):
    make_shard(db_path, [0], "node")
    with Store(db_path, readonly=True) as s:
        assert len(s.ok_cell_keys()) == 1
        with pytest.raises(StoreError, match="opened read-only"):
            s.start_run({})
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            s.db.execute("DELETE FROM metrics")
    assert rows(db_path, "SELECT count(*) FROM metrics") == [(2,)]


def test_read_only_store_needs_an_existing_current_schema(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Store(tmp_path / "absent.db", readonly=True)
    assert not (tmp_path / "absent.db").exists()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(SchemaMismatch, match=r"has no archbench schema; open it once with Store"):
        Store(empty, readonly=True)


def test_read_frame_returns_a_dataframe(db_path: Path):
    make_shard(db_path, [0, 1], "node")
    frame = read_frame(db_path, "SELECT seed, test_top1_pct FROM results_wide WHERE seed >= ? ORDER BY seed", (0,))
    assert isinstance(frame, pd.DataFrame)
    assert frame.to_dict("records") == [{"seed": 0, "test_top1_pct": 91.5}, {"seed": 1, "test_top1_pct": 91.5}]


def test_m002_upgrades_an_m001_database_in_place(db_path: Path):
    """A database created before m002 keeps its series (position 0) and gains the new objects."""
    from bench.results import schema

    db = sqlite_utils.Database(db_path)  # an m001-only file, as the first release wrote it
    schema.MIGRATIONS.apply(db, stop_before="m002_tags_positions_claims_gates")
    db.execute("INSERT INTO runs (run_id, started_at) VALUES ('r', '2026-01-01')")
    db.execute(
        "INSERT INTO results (result_id, run_id, cell_key, suite, method, variant, dataset, model, seed,"
        " tier, mode, status) VALUES ('x', 'r', 'k', 's', 'm', 'm', 'd', 'mo', 0, 'smoke', 'accuracy', 'ok')"
    )
    db.execute("INSERT INTO series (result_id, name, step, value) VALUES ('x', 'a_pct', 1, 2.0)")
    db.conn.commit()
    db.close()
    with Store(db_path) as s:
        assert s.db.execute("SELECT result_id, name, step, position, value FROM series").fetchall() == [
            ("x", "a_pct", 1, 0, 2.0)
        ]
        assert "tag" in s.db["runs"].columns_dict and s.db["claims"].exists()


def test_positional_series_are_stored_with_their_position(store: Store, run_id: str):
    res = result()
    res.series = {"layer_p5x5_prob": [(1, 0.5, 0), (1, 0.6, 1), (2, 0.7, 0), (2, 0.9, 1)], "x_loss_nat": [(3, 1.0)]}
    store.write_result(run_id, res)
    got = store.db.execute("SELECT name, step, position, value FROM series ORDER BY name, step, position").fetchall()
    assert got == [
        ("layer_p5x5_prob", 1, 0, 0.5),
        ("layer_p5x5_prob", 1, 1, 0.6),
        ("layer_p5x5_prob", 2, 0, 0.7),
        ("layer_p5x5_prob", 2, 1, 0.9),
        ("x_loss_nat", 3, 0, 1.0),
    ]


def test_seed_summary_and_provenance_views(store: Store):
    run = store.start_run({"tier": "smoke", "git_sha": "abc", "tag": "main"})
    for seed, acc in ((0, 90.0), (1, 92.0), (2, 97.0)):
        store.write_result(run, result(spec(seed), metrics={"test_top1_pct": acc}))
    rows_ = store.db.execute(
        "SELECT n, mean, std, min, max FROM seed_summary WHERE metric = 'test_top1_pct'"
    ).fetchall()
    assert len(rows_) == 1
    n, mean, std, lo, hi = rows_[0]
    assert (n, lo, hi) == (3, 90.0, 97.0) and mean == pytest.approx(93.0) and std == pytest.approx(3.605551, rel=1e-6)
    prov = store.db.execute("SELECT DISTINCT git_sha, run_tag FROM results_provenance").fetchall()
    assert prov == [("abc", "main")]


def test_m007_keeps_earlier_claim_verdicts_mapping_not_yet_measured(tmp_path: Path):
    """A database from before the verdict procedure keeps its claims rows, in the new vocabulary."""
    import sqlite_utils

    from bench.results.schema import MIGRATION_NAMES, MIGRATIONS

    path = tmp_path / "old.db"
    MIGRATIONS.apply(sqlite_utils.Database(path), stop_before="m007_claim_statistics")
    con = sqlite3.connect(path)
    con.executemany(
        "INSERT INTO claims (claim_id, tier, verdict, ours_value, n_seeds) VALUES (?, ?, ?, ?, ?)",
        [("a", "smoke", "reproduced", 1.5, 3), ("b", "any", "not yet measured", None, 0)],
    )
    con.commit()
    con.close()
    with Store(path) as store:
        assert "m007_claim_statistics" in MIGRATION_NAMES
        got = store.db.execute(
            "SELECT claim_id, verdict, reason, ours_value, n_seeds FROM claims ORDER BY 1"
        ).fetchall()
    assert got == [("a", "reproduced", None, 1.5, 3), ("b", "inconclusive", "no data", None, 0)]
    with pytest.raises(sqlite3.IntegrityError):
        sqlite3.connect(path).execute(
            "INSERT INTO claims (claim_id, tier, verdict) VALUES ('c', 'x', 'not yet measured')"
        )
