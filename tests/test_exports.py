"""``bench export`` round-trips every format and ``bench.results.exports.load`` gives tidy frames.

The database is synthetic (Store + CellSpec/CellResult, no training): two runs, a cell
re-run in the second, a failed cell, a second suite, curves with positions, a value
that needs all 17 digits and an error text with a comma, quotes and a newline.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.contract.cell import CellResult, CellSpec
from bench.errors import UnknownName
from bench.results.exports import METRICS_COLUMNS, SERIES_COLUMNS, SUMMARY_COLUMNS, load
from bench.results.store import Store, read_frame

THIRD = 100 / 3  # 33.333333333333336: every digit must survive
ERROR = 'boom, "quoted"\nsecond line'
VIEWS = (
    "runs",
    "results",
    "metrics",
    "series",
    "results_wide",
    "latest_ids",
    "latest_results",
    "results_provenance",
    "seed_summary",
)


def result(
    variant: str,
    seed: int,
    started: str,
    *,
    suite: str = "s",
    status: str = "ok",
    metrics: dict | None = None,
    series: dict | None = None,
) -> CellResult:
    spec = CellSpec(
        suite=suite,
        method=variant,
        variant=variant,
        dataset="uci-digits",
        model="resnet20",
        seed=seed,
        config_json='{"k": 1}',
    )
    return CellResult(
        spec=spec,
        status=status,
        metrics=metrics or {},
        series=series or {},
        started_at=started,
        ended_at=started,
        wall_s=1.5,
        error=ERROR if status != "ok" else "",
        error_type="RuntimeError" if status != "ok" else "",
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "r.db"
    with Store(path) as store:
        a = store.start_run(
            {
                "tier": "smoke",
                "tag": "main",
                "git_sha": "abc123",
                "git_dirty": 0,
                "host": "n1",
                "started_at": "2026-01-01T00:00:00+00:00",
            }
        )
        store.write_result(
            a,
            result(
                "full_ft",
                0,
                "2026-01-01T00:00:01+00:00",
                metrics={"test_top1_pct": 90.0, "step_ms_median": 10.0},
                series={"train_loss_nat": [(0, 2.5), (10, 1.25)], "keep_prob": [(5, 0.5, 0), (5, 0.25, 1)]},
            ),
        )
        store.write_result(
            a,
            result("full_ft", 1, "2026-01-01T00:00:02+00:00", metrics={"test_top1_pct": 92.0, "step_ms_median": THIRD}),
        )
        store.write_result(a, result("scratch", 0, "2026-01-01T00:00:03+00:00", status="failed"))
        store.finish_run(a)
        b = store.start_run(
            {"tier": "smoke", "tag": "pr", "git_sha": "def456", "host": "n2", "started_at": "2026-01-02T00:00:00+00:00"}
        )
        store.write_result(
            b,
            result("full_ft", 0, "2026-01-02T00:00:01+00:00", metrics={"test_top1_pct": 94.0, "step_ms_median": 11.0}),
        )
        store.write_result(
            b, result("full_ft", 0, "2026-01-02T00:00:02+00:00", suite="other", metrics={"test_top1_pct": 50.0})
        )
        store.finish_run(b)
    return path


def raw(db: Path, view: str, where: str = "") -> tuple[list[str], list[tuple]]:
    con = sqlite3.connect(db)
    try:
        cursor = con.execute(f'SELECT * FROM "{view}"' + (f" WHERE {where}" if where else ""))
        return [d[0] for d in cursor.description], cursor.fetchall()
    finally:
        con.close()


def as_text(value: object) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


@pytest.mark.parametrize("view", VIEWS)
def test_csv_round_trips(db: Path, tmp_path: Path, view: str):
    out = tmp_path / f"{view}.csv"
    assert main(["export", "--db", str(db), "--view", view, "--format", "csv", "-o", str(out)]) == 0
    columns, rows = raw(db, view)
    back = pd.read_csv(out, dtype=str, keep_default_na=False)
    expected = pd.DataFrame([[as_text(v) for v in row] for row in rows], columns=columns, dtype=str)
    assert len(rows) > 0 and list(back.columns) == columns
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)


@pytest.mark.parametrize("view", VIEWS)
def test_json_round_trips(db: Path, tmp_path: Path, view: str):
    out = tmp_path / f"{view}.json"
    assert main(["export", "--db", str(db), "--view", view, "--format", "json", "-o", str(out)]) == 0
    columns, rows = raw(db, view)
    records = json.loads(out.read_text())
    assert records == [dict(zip(columns, row)) for row in rows]
    pd.testing.assert_frame_equal(
        pd.DataFrame.from_records(records, columns=columns), pd.DataFrame.from_records(rows, columns=columns)
    )


@pytest.mark.parametrize("view", VIEWS)
def test_parquet_round_trips(db: Path, tmp_path: Path, view: str):
    out = tmp_path / f"{view}.parquet"
    assert main(["export", "--db", str(db), "--view", view, "--format", "parquet", "-o", str(out)]) == 0
    back = pd.read_parquet(out)
    columns, rows = raw(db, view)
    assert list(back.columns) == columns and len(back) == len(rows)
    for i, column in enumerate(columns):
        got = [None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in back[column].tolist()]
        assert got == [row[i] for row in rows], column


def test_floats_keep_every_digit(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    where = "name = 'step_ms_median'"
    assert main(["export", "--db", str(db), "--view", "metrics", "--format", "csv", "--where", where]) == 0
    assert str(THIRD) in capsys.readouterr().out
    assert (
        main(
            [
                "export",
                "--db",
                str(db),
                "--view",
                "metrics",
                "--format",
                "parquet",
                "--where",
                where,
                "-o",
                str(tmp_path / "m.parquet"),
            ]
        )
        == 0
    )
    assert THIRD in pd.read_parquet(tmp_path / "m.parquet")["value"].tolist()


def test_stdout_filters_and_header(db: Path, capsys: pytest.CaptureFixture):
    assert main(["export", "--db", str(db), "--view", "results", "--format", "csv", "--suite", "other"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("result_id,run_id,cell_key,suite,method,variant") and len(lines) == 2
    assert (
        main(
            [
                "export",
                "--db",
                str(db),
                "--view",
                "results",
                "--format",
                "json",
                "--suite",
                "s",
                "--where",
                "status = 'ok' AND seed = 0",
            ]
        )
        == 0
    )
    records = json.loads(capsys.readouterr().out)
    assert [(r["suite"], r["variant"], r["seed"]) for r in records] == [("s", "full_ft", 0)] * 2


def test_bad_requests_exit_2_with_the_valid_choices(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main(["export", "--db", str(db), "--view", "nope", "--format", "csv"]) == 2
    err = capsys.readouterr().err
    assert (
        "unknown table or view 'nope'; valid names: claims, gate_decisions, latest_ids, latest_results, metrics, "
        "results, results_provenance, results_wide, runs, seed_summary, series" in err
    )
    assert main(["export", "--db", str(db), "--view", "runs", "--format", "csv", "--suite", "s"]) == 2
    assert "'runs' has no suite column; its columns: run_id, started_at" in capsys.readouterr().err
    assert main(["export", "--db", str(db), "--view", "results", "--format", "csv", "--where", "nope = 1"]) == 2
    assert "no such column: nope" in capsys.readouterr().err
    assert main(["export", "--db", str(db), "--view", "results", "--format", "parquet"]) == 2
    assert "-o FILE" in capsys.readouterr().err
    assert main(["export", "--db", str(tmp_path / "none.db"), "--view", "results", "--format", "csv"]) == 2
    assert "no database at" in capsys.readouterr().err


def test_load_frames(db: Path):
    res = load(db)
    assert res.runs["tag"].tolist() == ["main", "pr"] and len(res.results) == 5
    provenance = res.results.set_index("result_id")
    assert {"git_sha", "run_tag", "gpu_name", "host", "status", "cell_key"} <= set(res.results.columns)
    assert dict(zip(res.results["run_tag"], res.results["git_sha"])) == {"main": "abc123", "pr": "def456"}
    assert list(res.metrics.columns) == list(METRICS_COLUMNS) and len(res.metrics) == 7
    rerun = res.metrics[
        (res.metrics["run_id"] == res.runs["run_id"][1])
        & (res.metrics["suite"] == "s")
        & (res.metrics["metric"] == "test_top1_pct")
    ]
    assert rerun["value"].tolist() == [94.0] and rerun["variant"].tolist() == ["full_ft"]
    assert list(res.series.columns) == list(SERIES_COLUMNS)
    assert sorted(zip(res.series["name"], res.series["step"], res.series["position"], res.series["value"])) == [
        ("keep_prob", 5, 0, 0.5),
        ("keep_prob", 5, 1, 0.25),
        ("train_loss_nat", 0, 0, 2.5),
        ("train_loss_nat", 10, 0, 1.25),
    ]
    assert provenance.loc[res.series["result_id"].iloc[0], "run_tag"] == "main"


def test_wide_is_the_latest_row_per_cell(db: Path):
    wide = load(db).wide
    assert len(wide) == 4 and wide["cell_key"].is_unique
    cells = {(r.suite, r.variant, r.seed): r for r in wide.itertuples()}
    assert cells[("s", "full_ft", 0)].test_top1_pct == 94.0 and cells[("s", "full_ft", 0)].run_tag == "pr"
    assert cells[("s", "full_ft", 1)].step_ms_median == THIRD
    assert cells[("s", "scratch", 0)].status == "failed" and math.isnan(cells[("s", "scratch", 0)].test_top1_pct)
    assert cells[("other", "full_ft", 0)].test_top1_pct == 50.0


def test_summary_mean_std_n(db: Path):
    res = load(db)
    summary = res.summary(["test_top1_pct"])
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    rows = {(r.suite, r.variant): (r.mean, r.std, r.n) for r in summary.itertuples()}
    assert rows == {("other", "full_ft"): (50.0, 0.0, 1), ("s", "full_ft"): (93.0, pytest.approx(math.sqrt(2)), 2)}
    every = res.summary()
    assert sorted(set(every["metric"])) == ["step_ms_median", "test_top1_pct"]
    other_steps = every[(every["suite"] == "other") & (every["metric"] == "step_ms_median")]
    assert other_steps["n"].tolist() == [0]
    with pytest.raises(UnknownName, match="no metric.*'nope'.*available: step_ms_median, test_top1_pct"):
        res.summary(["nope"])


def test_load_one_suite(db: Path):
    res = load(db, suite="other")
    assert len(res.results) == 1 and res.runs["tag"].tolist() == ["pr"]
    assert set(res.metrics["suite"]) == {"other"} and res.series.empty and len(res.wide) == 1
    assert read_frame(db, "select count(*) as n from results")["n"].tolist() == [5]  # nothing written
