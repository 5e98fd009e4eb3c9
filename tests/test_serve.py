"""``bench serve``: metadata, canned queries and dashboards, in-process through Datasette's client.

The fixture database is written with ``bench.results.store.Store`` (claims and gate decisions with
sqlite-utils): run A (tag ``main``) has 2 suites x 2 variants x 2 datasets x 3 seeds ok plus
an ``oom`` cell; run B (tag ``cand``) re-runs suite ``baselines`` 2 points more accurate,
0.8x the step time and 0.75x the memory, plus a ``failed`` cell. Cells carry learning
curves; two cells carry a positional series (5 controller updates x 4 layers).
``build_fixture_db`` is shared with ``tests/test_browser.py``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import sqlite_utils
import yaml
from datasette.app import Datasette
from datasette_dashboards import replace_opts_in_query

from bench import cli
from bench.contract.cell import CellResult, CellSpec
from bench.contract.units import unit_of
from bench.results.schema import MIGRATION_NAMES, MIGRATIONS
from bench.results.store import Store
from bench.serve import app as serve

DB = "results"
SUITE_MODEL = {"baselines": "resnet20", "search": "resnet18"}
VARIANTS = {"full_ft": "full_ft", "last_k:k1": "last_k"}  # label -> method
DATASETS = ("uci-digits", "lfw-faces")
SEEDS = (0, 1, 2)
RUN_A, RUN_B = "2026-01-01", "2026-01-02"
HEAT = ("search", "last_k:k1", "uci-digits", "resnet18")  # cells (seeds 0, 1) with the positional series
HEAT_STEPS, HEAT_POSITIONS = range(5), range(4)


def acc(suite: str, variant: str, dataset: str, seed: int, run: str) -> float:
    return (
        {"full_ft": 90.0, "last_k:k1": 85.0}[variant]
        + {"uci-digits": 5.0, "lfw-faces": 0.0}[dataset]
        + seed
        + (suite == "search") * 1.0
        + (run == RUN_B) * 2.0
    )


def step_ms(variant: str, seed: int, run: str) -> float:
    return ({"full_ft": 12.0, "last_k:k1": 6.0}[variant] + 0.5 * seed) * (0.8 if run == RUN_B else 1.0)


def mem_mib(variant: str, dataset: str, run: str) -> float:
    return ({"full_ft": 64.0, "last_k:k1": 16.0}[variant] + (dataset == "lfw-faces") * 8.0) * (
        0.75 if run == RUN_B else 1.0
    )


def heat_value(step: int, position: int, seed: int) -> float:
    return 0.5 + 0.1 * position - 0.02 * step + 0.01 * seed


def loss(variant: str, step: int, seed: int, run: str) -> float:
    return (2.0 if variant == "full_ft" else 1.5) / (1 + step / 10) + 0.01 * seed + (run == RUN_A) * 0.5


@dataclass(frozen=True)
class FixtureDB:
    path: Path
    run_a: str
    run_b: str


def _spec(suite: str, variant: str, dataset: str, seed: int) -> CellSpec:
    method = VARIANTS[variant]
    return CellSpec(
        suite=suite,
        method=method,
        variant=variant,
        dataset=dataset,
        model=SUITE_MODEL[suite],
        seed=seed,
        tier="smoke",
        config_json=json.dumps({"k": 1} if method == "last_k" else {}),
        device="cpu",
    )


def _ok(spec: CellSpec, run: str, minute: int) -> CellResult:
    v, d, s = spec.variant, spec.dataset, spec.seed
    metrics = {
        "test_top1_pct": acc(spec.suite, v, d, s, run),
        "val_top1_pct": acc(spec.suite, v, d, s, run) - 1,
        "step_ms_median": step_ms(v, s, run),
        "counted_mem_mib": mem_mib(v, d, run),
        "fit_s": 3.5,
        "trainable_params": 1000.0,
        "total_params": 5000.0,
    }
    series: dict[str, list[tuple]] = {
        "train_loss_nat": [(t, loss(v, t, s, run)) for t in (0, 10, 20)],
        "train_val_top1_pct": [(t, 50.0 + t) for t in (10, 20)],
    }
    if (spec.suite, v, d, spec.model) == HEAT and s in (0, 1):
        metrics.update({"proxy_rank_tau": 0.6, "proxy_rank_rho": 0.75} if s == 0 else {})
        series["kernel5_prob"] = [(t, heat_value(t, p, s), p) for t in HEAT_STEPS for p in HEAT_POSITIONS]
    return CellResult(
        spec=spec,
        status="ok",
        metrics=metrics,
        series=series,
        arch="resnet20-std",
        device="cpu",
        worker="gw0",
        started_at=f"{run}T00:{minute:02d}:00.000000+00:00",
        ended_at=f"{run}T00:{minute:02d}:30.000000+00:00",
        wall_s=30.0,
    )


def build_fixture_db(path: str | Path) -> FixtureDB:
    """Write the realistic database described in the module docstring to ``path``."""
    path = Path(path)
    with Store(path) as store:
        run_a = store.start_run(
            {
                "started_at": f"{RUN_A}T00:00:00.000000+00:00",
                "tier": "smoke",
                "mode": "accuracy",
                "device": "cpu",
                "tag": "main",
                "host": "ci-a",
            }
        )
        minute = 0
        for suite in SUITE_MODEL:
            for variant in VARIANTS:
                for dataset in DATASETS:
                    for seed in SEEDS:
                        minute += 1
                        store.write_result(run_a, _ok(_spec(suite, variant, dataset, seed), RUN_A, minute))
        store.write_result(
            run_a,
            CellResult(
                spec=_spec("search", "full_ft", "lfw-faces", 9),
                status="oom",
                error_type="OutOfMemoryError",
                error="CUDA out of memory at batch 128 (bench/engine/train.py:200)",
                started_at=f"{RUN_A}T00:59:00.000000+00:00",
            ),
        )
        store.finish_run(run_a)
        run_b = store.start_run(
            {
                "started_at": f"{RUN_B}T00:00:00.000000+00:00",
                "tier": "smoke",
                "mode": "accuracy",
                "device": "cuda",
                "tag": "cand",
                "host": "ci-b",
                "gpu_name": "NVIDIA H100",
            }
        )
        minute = 0
        for variant in VARIANTS:
            for dataset in DATASETS:
                for seed in SEEDS:
                    minute += 1
                    store.write_result(run_b, _ok(_spec("baselines", variant, dataset, seed), RUN_B, minute))
        store.write_result(
            run_b,
            CellResult(
                spec=_spec("baselines", "full_ft", "uci-digits", 3),
                status="failed",
                error_type="RuntimeError",
                error="boom (methods/full_ft.py:12)",
                started_at=f"{RUN_B}T00:59:00.000000+00:00",
            ),
        )
        store.finish_run(run_b)
        store.db["claims"].insert(
            {
                "claim_id": "ts-r18-small-final",
                "tier": "smoke",
                "paper": "000_c76f86a90fd00e2a.txt",
                "method": "two_stage",
                "baseline": "last_k",
                "source_ref": "Sec. 4.2, Fig. 3a",
                "metric": "test_top1_pct",
                "paper_value": "87.4",
                "paper_baseline_value": "86.4",
                "unit": "%",
                "setting": "ResNet-18, small scope",
                "check_text": "two_stage > last_k at equal budget",
                "ours_value": 91.0,
                "ours_baseline_value": 90.0,
                "ours_detail": "3 seeds per group",
                "verdict": "reproduced",
                "n_seeds": 3,
                "evaluated_at": f"{RUN_B}T01:00:00+00:00",
            }
        )
        store.db["gate_decisions"].insert(
            {
                "decision_id": "d1",
                "gate_id": "g1",
                "created_at": f"{RUN_B}T02:00:00+00:00",
                "baseline": "main",
                "candidate": "cand",
                "suite": "baselines",
                "variant": "full_ft",
                "dataset": "lfw-faces",
                "model": "resnet20",
                "tier": "smoke",
                "mode": "accuracy",
                "metric": "test_top1_pct",
                "reference": 91.0,
                "candidate_value": 93.0,
                "delta": 2.0,
                "n_reference": 3,
                "n_candidate": 3,
                "p_value": 0.1,
                "p_adjusted": 0.2,
                "verdict": "improved",
                "reason": "mean up 2.0 points",
            }
        )
    return FixtureDB(path, run_a, run_b)


@pytest.fixture(scope="module")
def fixture_db(tmp_path_factory: pytest.TempPathFactory) -> FixtureDB:
    return build_fixture_db(tmp_path_factory.mktemp("serve") / f"{DB}.db")


@pytest_asyncio.fixture
async def ds(fixture_db: FixtureDB) -> AsyncIterator[Datasette]:
    app = serve.make_datasette(fixture_db.path)
    yield app
    for database in app.databases.values():
        database.close()


async def get_json(ds: Datasette, path: str, params: dict[str, Any] | None = None, status: int = 200) -> Any:
    """GET ``path`` with ``params`` (always ``_shape=array`` unless given) and return the JSON."""
    query = urllib.parse.urlencode({"_shape": "array", **(params or {})})
    response = await ds.client.get(f"{path}?{query}")
    assert response.status_code == status, response.text[:500]
    return response.json()


def dashboards() -> dict[str, Any]:
    return serve.build_metadata(DB)["plugins"]["datasette-dashboards"]


async def chart_rows(ds: Datasette, slug: str, chart: str, filters: dict[str, str]) -> list[dict[str, Any]]:
    """Rows of a dashboard chart's SQL with its ``[[ ]]`` blocks filled as datasette-dashboards does."""
    sql = replace_opts_in_query(dashboards()[slug]["charts"][chart]["query"], filters)
    return await get_json(ds, f"/{DB}.json", {"sql": sql, **filters})


def schema(path: Path) -> dict[str, list[str]]:
    """Columns of every table and view of ``path``."""
    db = sqlite_utils.Database(path)
    names = db.table_names() + db.view_names()
    out = {name: [c.name for c in db[name].columns] for name in names}
    db.close()
    return out


# -- metadata -----------------------------------------------------------------------------


def test_every_column_of_a_fresh_database_is_described(tmp_path: Path) -> None:
    with Store(tmp_path / "fresh.db"):
        pass
    columns = schema(tmp_path / "fresh.db")
    tables = serve.build_metadata(DB)["databases"][DB]["tables"]
    assert tables["_sqlite_migrations"]["hidden"] is True
    missing = [
        f"{t}.{c}"
        for t, cols in columns.items()
        if t != "_sqlite_migrations"
        for c in cols
        if not (tables.get(t, {}).get("columns") or {}).get(c)
    ]
    assert not missing, f"add descriptions to bench/datasette/metadata.yaml for: {missing}"
    undescribed = [t for t in columns if t != "_sqlite_migrations" and not tables.get(t, {}).get("description")]
    assert not undescribed, f"tables/views without a description: {undescribed}"
    stale = [f"{t}.{c}" for t, meta in tables.items() for c in meta.get("columns", {}) if c not in columns.get(t, [])]
    assert not stale, f"metadata.yaml describes columns the schema lacks: {stale}"


def test_units_on_every_column_with_a_physical_unit(tmp_path: Path) -> None:
    with Store(tmp_path / "fresh.db"):
        pass
    pint_unit = {"s": "s", "ms": "ms", "mib": "MiB", "pct": "percent"}  # bench.contract.units token -> Pint
    tables = serve.build_metadata(DB)["databases"][DB]["tables"]
    expected = {
        (t, c): pint_unit[unit_of(c)]
        for t, cols in schema(tmp_path / "fresh.db").items()
        for c in cols
        if unit_of(c) in pint_unit
    }
    got = {(t, c): tables[t].get("units", {}).get(c) for t, c in expected}
    assert got == expected
    assert expected[("results", "wall_s")] == "s" and expected[("latest_results", "step_ms_p90")] == "ms"
    assert expected[("results_wide", "peak_mem_mib")] == "MiB" and len(expected) == 1 + 2 * 9 + 1


def test_build_metadata_rekeys_database_and_dashboards() -> None:
    meta = serve.build_metadata("shard_7")
    assert list(meta["databases"]) == ["shard_7"]
    dbs = {
        part["db"]
        for d in meta["plugins"]["datasette-dashboards"].values()
        for part in (*d["charts"].values(), *d.get("filters", {}).values())
        if "db" in part
    }
    assert dbs == {"shard_7"}
    assert serve.database_name("/x/shard_7.db") == "shard_7"
    assert serve.database_name("/x/my results.v2.db") == "my_results_v2"
    # the shipped file is untouched and still keyed by `results` for plain `datasette -m`
    assert list(serve.load_metadata()["databases"]) == ["results"]


def test_metadata_has_no_writable_canned_query() -> None:
    queries = serve.build_metadata(DB)["databases"][DB]["queries"]
    assert set(queries) == {"leaderboard", "compare_runs", "rank_correlations", "failed_cells", "claims"}
    assert not [name for name, q in queries.items() if q.get("write")]


# -- tables, views, facets ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_every_table_and_view_serves_all_its_rows(ds: Datasette, fixture_db: FixtureDB) -> None:
    conn = sqlite3.connect(fixture_db.path)
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name != '_sqlite_migrations'"
        )
    ]
    assert set(names) == {
        "runs",
        "results",
        "metrics",
        "series",
        "claims",
        "gate_decisions",
        "results_wide",
        "latest_ids",
        "latest_results",
        "results_provenance",
        "seed_summary",
    }
    for name in names:
        count = conn.execute(f"SELECT count(*) FROM [{name}]").fetchone()[0]
        rows = await get_json(ds, f"/{DB}/{name}.json", {"_size": "max"})
        assert len(rows) == count > 0, name
        page = await ds.client.get(f"/{DB}/{name}")
        assert page.status_code == 200, name
    conn.close()
    assert len(await get_json(ds, f"/{DB}/latest_results.json", {"_size": "max"})) == 26  # 24 + oom + failed


@pytest.mark.asyncio
async def test_pages_show_descriptions_units_and_hide_migrations(ds: Datasette) -> None:
    index = await get_json(ds, f"/{DB}.json", {"_shape": "objects"})
    hidden = {t["name"] for t in index["tables"] if t["hidden"]}
    assert "_sqlite_migrations" in hidden and "results" not in hidden
    page = (await ds.client.get(f"/{DB}/results_wide?_sort=result_id")).text
    assert "results with the common metrics as columns" in page
    assert "3.5&nbsp;s" in page  # fit_s rendered with its unit
    assert "archbench results" in (await ds.client.get("/")).text


@pytest.mark.asyncio
async def test_facets_and_newest_first(ds: Datasette) -> None:
    data = await get_json(ds, f"/{DB}/results.json", {"_facet": "method", "_shape": "objects"})
    methods = {r["value"]: r["count"] for r in data["facet_results"]["method"]["results"]}
    assert methods == {"full_ft": 6 * 3 + 2, "last_k": 6 * 3}  # A: 12 + oom; B: 6 + failed; per method
    status = {r["value"]: r["count"] for r in data["facet_results"]["status"]["results"]}
    assert status == {"ok": 36, "oom": 1, "failed": 1}
    assert {"suite", "variant", "dataset", "model", "tier"} <= set(data["facet_results"])
    rows = await get_json(ds, f"/{DB}/results.json")
    started = [r["started_at"] for r in rows]
    assert started == sorted(started, reverse=True) and started[0].startswith(RUN_B + "T00:59")
    runs = await get_json(ds, f"/{DB}/runs.json", {"_facet": "gpu_name", "_shape": "objects"})
    assert [r["value"] for r in runs["facet_results"]["gpu_name"]["results"]] == ["NVIDIA H100"]


@pytest.mark.asyncio
async def test_served_live_not_immutable(tmp_path: Path) -> None:
    """Rows written while Datasette runs (WAL) are visible: the file is not opened immutable."""
    path = tmp_path / f"{DB}.db"
    fixture = build_fixture_db(path)
    app = serve.make_datasette(path)
    assert app.databases[DB].is_mutable
    before = len(await get_json(app, f"/{DB}/runs.json"))
    with Store(path) as store:
        store.start_run({"tier": "smoke", "tag": "late"})
    runs = await get_json(app, f"/{DB}/runs.json")
    assert len(runs) == before + 1 and runs[0]["tag"] == "late" and fixture.run_a in {r["run_id"] for r in runs}
    for database in app.databases.values():
        database.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO claims (claim_id, tier, verdict) VALUES ('x', 'smoke', 'reproduced')",
        "WITH v AS (SELECT 1) INSERT INTO claims (claim_id, tier, verdict) VALUES ('x', 'smoke', 'reproduced')",
        "UPDATE results SET status = 'failed'",
        "DELETE FROM metrics",
        "DROP TABLE series",
        "PRAGMA journal_mode = DELETE",
    ],
)
async def test_sql_that_writes_is_refused(ds: Datasette, fixture_db: FixtureDB, sql: str) -> None:
    def counts() -> dict[str, int]:
        conn = sqlite3.connect(fixture_db.path)
        out = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("claims", "results", "metrics", "series")
        }
        out["failed"] = conn.execute("SELECT count(*) FROM results WHERE status = 'failed'").fetchone()[0]
        conn.close()
        return out

    before = counts()
    response = await ds.client.get(f"/{DB}.json?" + urllib.parse.urlencode({"sql": sql, "_shape": "array"}))
    assert response.status_code == 400, response.text[:300]
    assert "readonly" in response.text or "must be a SELECT" in response.text or "PRAGMA" in response.text
    assert counts() == before


# -- canned queries -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_leaderboard(ds: Datasette) -> None:
    rows = await get_json(ds, f"/{DB}/leaderboard.json", {"suite": "baselines"})
    got = {(r["variant"], r["dataset"]): r for r in rows}
    assert list(got) == [
        ("full_ft", "lfw-faces"),
        ("last_k:k1", "lfw-faces"),  # best first per dataset
        ("full_ft", "uci-digits"),
        ("last_k:k1", "uci-digits"),
    ]
    top = got[("full_ft", "uci-digits")]
    assert (top["rank"], top["n"], top["not_ok"], top["method"], top["model"]) == (1, 3, 1, "full_ft", "resnet20")
    assert top["test_top1_pct_mean"] == pytest.approx(98.0)  # run B: 90 + 5 + mean(0, 1, 2) + 2
    assert top["test_top1_pct_std"] == pytest.approx(1.0)
    assert top["step_ms_median_mean"] == pytest.approx(0.8 * 12.5)
    assert top["counted_mem_mib_mean"] == pytest.approx(48.0)
    low = got[("last_k:k1", "lfw-faces")]
    assert (low["rank"], low["test_top1_pct_mean"], low["not_ok"]) == (2, pytest.approx(88.0), 0)
    everything = await get_json(ds, f"/{DB}/leaderboard.json", {"suite": ""})
    assert len(everything) == 8  # 4 groups per suite
    assert [(r["suite"], r["variant"], r["dataset"], r["n"]) for r in everything if r["not_ok"]] == [
        ("baselines", "full_ft", "uci-digits", 3),
        ("search", "full_ft", "lfw-faces", 3),
    ]
    assert (await ds.client.get(f"/{DB}/leaderboard?suite=baselines")).status_code == 200


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["id", "prefix", "tag"])
async def test_compare_runs(ds: Datasette, fixture_db: FixtureDB, how: str) -> None:
    pick = {"id": lambda r: r, "prefix": lambda r: r[:8], "tag": None}[how]
    base, cand = (pick(fixture_db.run_a), pick(fixture_db.run_b)) if pick else ("main", "cand")
    rows = await get_json(ds, f"/{DB}/compare_runs.json", {"base_run": base, "cand_run": cand})
    assert len(rows) == 24 + 1 + 1  # every cell of A (24 ok + oom), plus B's new failed cell
    paired = [r for r in rows if r["base_status"] == "ok" and r["cand_status"] == "ok"]
    assert len(paired) == 12
    for r in paired:
        assert r["delta_test_top1_pct"] == pytest.approx(2.0)
        assert r["step_ms_ratio"] == pytest.approx(0.8)
        assert r["counted_mem_ratio"] == pytest.approx(0.75)
    new = [r for r in rows if r["base_status"] is None]
    assert [(r["variant"], r["seed"], r["cand_status"]) for r in new] == [("full_ft", 3, "failed")]
    assert len([r for r in rows if r["cand_status"] is None]) == 13  # search suite, not re-run in B


@pytest.mark.asyncio
async def test_compare_runs_without_params_is_empty(ds: Datasette) -> None:
    assert await get_json(ds, f"/{DB}/compare_runs.json") == []


@pytest.mark.asyncio
async def test_rank_correlations(ds: Datasette) -> None:
    rows = await get_json(ds, f"/{DB}/rank_correlations.json")
    assert [(r["metric"], r["statistic"], r["value"], r["variant"], r["seed"], r["suite"]) for r in rows] == [
        ("proxy_rank_rho", "Spearman rho", 0.75, "last_k:k1", 0, "search"),
        ("proxy_rank_tau", "Kendall tau", 0.6, "last_k:k1", 0, "search"),
    ]
    assert all(r["cell_key"] for r in rows)


@pytest.mark.asyncio
async def test_failed_cells_newest_first(ds: Datasette) -> None:
    rows = await get_json(ds, f"/{DB}/failed_cells.json")
    assert [(r["status"], r["error_type"], r["suite"], r["ok_since"]) for r in rows] == [
        ("failed", "RuntimeError", "baselines", 0),
        ("oom", "OutOfMemoryError", "search", 0),
    ]
    assert rows[0]["error"] == "boom (methods/full_ft.py:12)"


@pytest.mark.asyncio
async def test_claims_query(ds: Datasette) -> None:
    rows = await get_json(ds, f"/{DB}/claims.json")
    assert [(r["claim_id"], r["paper_value"], r["ours_value"], r["verdict"]) for r in rows] == [
        ("ts-r18-small-final", "87.4", 91.0, "reproduced")
    ]


@pytest.mark.asyncio
async def test_every_canned_query_page_renders(ds: Datasette) -> None:
    for name in serve.build_metadata(DB)["databases"][DB]["queries"]:
        response = await ds.client.get(f"/{DB}/{name}?suite=baselines&base_run=main&cand_run=cand")
        assert response.status_code == 200, name


# -- dashboards -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_dashboard_pages(ds: Datasette) -> None:
    boards = dashboards()
    assert set(boards) == {"accuracy-vs-step-time", "learning-curves", "peak-memory", "series-heatmap"}
    listing = await ds.client.get("/-/dashboards")
    assert listing.status_code == 200
    for slug, board in boards.items():
        assert board["title"] in listing.text
        page = await ds.client.get(f"/-/dashboards/{slug}", follow_redirects=True)
        assert page.status_code == 200, slug
        assert '<option value="uci-digits"' in page.text  # filter options come from SQL
        for chart_slug, chart in board["charts"].items():
            response = await ds.client.get(f"/-/dashboards/{slug}/{chart_slug}")
            assert response.status_code == 200, (slug, chart_slug)
            assert chart["title"] in response.text


@pytest.mark.asyncio
async def test_default_filter_redirects_to_train_loss(ds: Datasette) -> None:
    response = await ds.client.get("/-/dashboards/learning-curves")
    assert response.status_code == 302
    assert response.headers["location"].endswith("?series_name=train_loss_nat")
    page = await ds.client.get("/-/dashboards/learning-curves?series_name=train_loss_nat")
    assert '<option value="train_val_top1_pct"' in page.text and 'value="kernel5_prob"' not in page.text


@pytest.mark.asyncio
async def test_filter_options(ds: Datasette) -> None:
    async def options(slug: str, key: str) -> list[Any]:
        rows = await get_json(ds, f"/{DB}.json", {"sql": dashboards()[slug]["filters"][key]["query"]})
        return [next(iter(r.values())) for r in rows]

    assert await options("accuracy-vs-step-time", "dataset") == ["lfw-faces", "uci-digits"]
    assert await options("learning-curves", "series_name") == ["train_loss_nat", "train_val_top1_pct"]
    assert await options("series-heatmap", "series_name") == ["kernel5_prob"]
    assert await options("series-heatmap", "seed") == ["0", "1", "2", "3", "9"]


@pytest.mark.asyncio
async def test_scatter_one_point_per_variant_and_model(ds: Datasette) -> None:
    rows = await chart_rows(ds, "accuracy-vs-step-time", "scatter", {"dataset": "uci-digits", "tier": "smoke"})
    got = {(r["suite"], r["variant"], r["model"]): r for r in rows}
    assert set(got) == {(s, v, SUITE_MODEL[s]) for s in SUITE_MODEL for v in VARIANTS}
    point = got[("baselines", "full_ft", "resnet20")]  # latest rows: run B
    assert point["test_top1_pct"] == pytest.approx(98.0)
    assert point["step_ms_median"] == pytest.approx(0.8 * 12.5)
    assert point["seeds"] == 3
    point = got[("search", "last_k:k1", "resnet18")]  # only run A
    assert point["test_top1_pct"] == pytest.approx(85 + 5 + 1 + 1)
    assert point["step_ms_median"] == pytest.approx(6.5)
    # without a tier, the newest row's tier; without a dataset, one point per dataset too
    assert len(await chart_rows(ds, "accuracy-vs-step-time", "scatter", {})) == 8
    assert await chart_rows(ds, "accuracy-vs-step-time", "scatter", {"tier": "paper"}) == []


@pytest.mark.asyncio
async def test_learning_curves(ds: Datasette) -> None:
    filters = {"series_name": "train_loss_nat", "suite": "baselines", "dataset": "uci-digits"}
    rows = await chart_rows(ds, "learning-curves", "curves", filters)
    assert len(rows) == 2 * 3 * 3  # variants x seeds x steps (the failed seed-3 cell has no curve)
    assert {r["variant"] for r in rows} == set(VARIANTS)
    for r in rows:
        assert r["value"] == pytest.approx(loss(r["variant"], r["step"], r["seed"], RUN_B))  # newest rows only
    accuracy = await chart_rows(ds, "learning-curves", "curves", {**filters, "series_name": "train_val_top1_pct"})
    assert {(r["step"], r["value"]) for r in accuracy} == {(10, 60.0), (20, 70.0)}
    default = await chart_rows(ds, "learning-curves", "curves", {})
    assert {r["name"] for r in default} == {"train_loss_nat"} and len(default) == 24 * 3  # latest ok cells


@pytest.mark.asyncio
async def test_peak_memory_bars(ds: Datasette) -> None:
    rows = await chart_rows(ds, "peak-memory", "memory", {"suite": "baselines", "tier": "smoke"})
    got = {(r["variant"], r["model"]): (r["counted_mem_mib"], r["cells"]) for r in rows}
    assert got == {
        ("full_ft", "resnet20"): (pytest.approx(0.75 * 68.0), 6),
        ("last_k:k1", "resnet20"): (pytest.approx(0.75 * 20.0), 6),
    }
    rows = await chart_rows(ds, "peak-memory", "memory", {"dataset": "lfw-faces", "suite": "search"})
    assert {(r["variant"], r["model"]): r["counted_mem_mib"] for r in rows} == {
        ("full_ft", "resnet18"): pytest.approx(72.0),
        ("last_k:k1", "resnet18"): pytest.approx(24.0),
    }


@pytest.mark.asyncio
async def test_heatmap(ds: Datasette) -> None:
    one = await chart_rows(ds, "series-heatmap", "heatmap", {"series_name": "kernel5_prob", "seed": "1"})
    assert len(one) == len(HEAT_STEPS) * len(HEAT_POSITIONS)
    assert [(r["step"], r["position"]) for r in one] == [(t, p) for t in HEAT_STEPS for p in HEAT_POSITIONS]
    for r in one:
        assert (r["value"], r["cells"]) == (pytest.approx(heat_value(r["step"], r["position"], 1)), 1)
    mean = await chart_rows(ds, "series-heatmap", "heatmap", {"variant": "last_k:k1", "dataset": "uci-digits"})
    for r in mean:  # no series chosen: the first positional series; no seed: mean over seeds 0 and 1
        assert r["series"] == "kernel5_prob" and r["cells"] == 2
        assert r["value"] == pytest.approx(
            (heat_value(r["step"], r["position"], 0) + heat_value(r["step"], r["position"], 1)) / 2
        )
    assert await chart_rows(ds, "series-heatmap", "heatmap", {"model": "resnet20"}) == []


@pytest.mark.asyncio
async def test_chart_data_as_the_browser_fetches_it(ds: Datasette) -> None:
    """dashboards.js fetches ``<db>.json?sql=<query>&<filters>&_shape=objects`` and reads ``rows``."""
    chart = dashboards()["accuracy-vs-step-time"]["charts"]["scatter"]
    sql = replace_opts_in_query(chart["query"], {"dataset": "lfw-faces"})
    data = await get_json(ds, f"/{chart['db']}.json", {"sql": sql, "dataset": "lfw-faces", "_shape": "objects"})
    assert len(data["rows"]) == 4 and not data["truncated"]
    assert {"test_top1_pct", "step_ms_median", "variant", "model"} <= set(data["rows"][0])


@pytest.mark.asyncio
async def test_file_name_that_urls_escape_is_served_under_a_plain_name(tmp_path: Path) -> None:
    """datasette-dashboards puts the database name into its data URLs unescaped."""
    build_fixture_db(tmp_path / "shard 0.v2.db")
    app = serve.make_datasette(tmp_path / "shard 0.v2.db")
    try:
        assert [n for n in app.databases if n != "_internal"] == ["shard_0_v2"]
        chart = serve.build_metadata("shard_0_v2")["plugins"]["datasette-dashboards"]["peak-memory"]["charts"]
        assert chart["memory"]["db"] == "shard_0_v2"
        rows = await get_json(app, "/shard_0_v2.json", {"sql": replace_opts_in_query(chart["memory"]["query"], {})})
        assert len(rows) == 4  # 2 variants x 2 models
        assert len(await get_json(app, "/shard_0_v2/leaderboard.json", {"suite": "baselines"})) == 4
        assert (await app.client.get("/-/dashboards/peak-memory")).status_code == 200
    finally:
        for database in app.databases.values():
            database.close()


# -- the command ----------------------------------------------------------------------------


def test_cli_missing_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", str(tmp_path / "nope.db")]) == 2
    err = capsys.readouterr().err
    assert "no database at" in err and "make bench" in err


def test_cli_not_an_archbench_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "text.db").write_text("not sqlite at all " * 100)
    assert cli.main(["serve", str(tmp_path / "text.db")]) == 2
    assert "not an SQLite database" in capsys.readouterr().err
    sqlite_utils.Database(tmp_path / "other.db")["t"].insert({"a": 1})
    assert cli.main(["serve", str(tmp_path / "other.db")]) == 2
    assert "not an archbench results database" in capsys.readouterr().err


def test_cli_get_and_metadata_out(fixture_db: FixtureDB, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "meta.yaml"
    code = cli.main(
        [
            "serve",
            str(fixture_db.path),
            "--metadata-out",
            str(out),
            "--get",
            f"/{DB}/leaderboard.json?suite=baselines&_shape=array",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert len(json.loads(captured.out)) == 4
    assert yaml.safe_load(out.read_text()) == serve.build_metadata(DB)
    assert cli.main(["serve", str(fixture_db.path), "--get", f"/{DB}/no_such_table.json"]) == 1
    capsys.readouterr()


def test_cli_defaults() -> None:
    args = cli.dispatch.build_parser().parse_args(["serve"])
    assert (args.db, args.host, args.port, args.metadata_out, args.func.__module__) == (
        "results.db",
        "127.0.0.1",
        8001,
        None,
        "bench.cli.serve",
    )


def test_cli_busy_port(fixture_db: FixtureDB, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert cli.main(["serve", str(fixture_db.path), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_cli_old_schema_warns_then_migrates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "old.db"
    MIGRATIONS.apply(sqlite_utils.Database(path), stop_before=MIGRATION_NAMES[1:])
    assert cli.main(["serve", str(path), "--get", "/old/runs.json?_shape=array"]) == 0
    err = capsys.readouterr().err
    assert "lacks schema migrations" in err and MIGRATION_NAMES[1] in err and "--migrate" in err
    assert cli.main(["serve", str(path), "--get", "/old/claims.json?_shape=array"]) == 1
    capsys.readouterr()
    assert cli.main(["serve", str(path), "--migrate", "--get", "/old/claims.json?_shape=array"]) == 0
    assert "applied migrations" in capsys.readouterr().err
    assert serve.check_database(path).pending == []


def test_serve_prints_url_answers_and_stops_on_ctrl_c(fixture_db: FixtureDB) -> None:
    """The real command in a subprocess: prints its URL, serves the JSON API, SIGINT exits 0."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli.dispatch", "serve", str(fixture_db.path), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/{DB}/leaderboard.json?suite=baselines&_shape=array"
    rows = None
    try:
        deadline = time.monotonic() + 90
        while rows is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    rows = json.loads(response.read())
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert rows is not None and len(rows) == 4, out
    assert proc.returncode == 0, out
    assert f"at http://127.0.0.1:{port}/" in out and "/-/dashboards" in out and "bench serve: stopped" in out


# -- hardening (issue "Nothing lost", probe 9) ------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # sqlite3 prints the refusal
async def test_fts3_tokenizer_is_disabled(ds: Datasette) -> None:
    """fts3_tokenizer('simple') returned a native pointer through the SQL page."""
    response = await ds.client.get(f"/{DB}.json", params={"sql": "select fts3_tokenizer('simple') as p"})
    assert response.status_code == 400
    assert "user-defined function raised exception" in response.json()["error"]  # ours, not SQLite's


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.168.1.4", False),
        ("::", False),
        ("example.org", False),
    ],
)
def test_non_loopback_hosts_are_told_apart(host: str, local: bool) -> None:
    assert serve.is_loopback(host) is local


def test_serving_on_a_non_loopback_host_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    db = build_fixture_db(tmp_path / "results.db").path
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)  # do not actually listen
    lines: list[str] = []
    serve.serve(db, host="0.0.0.0", port=free_port(), echo=lines.append)
    assert lines[0].startswith("warning: --host 0.0.0.0 serves the database to every machine")
    lines.clear()
    serve.serve(db, host="127.0.0.1", port=free_port(), echo=lines.append)
    assert not any("warning" in line for line in lines)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.asyncio
@pytest.mark.parametrize("path", [f"/{DB}/runs", f"/{DB}/latest_results", f"/{DB}", "/-/dashboards"])
async def test_every_write_method_is_refused_with_405(ds: Datasette, path: str) -> None:
    """A POST to a table page was an HTTP 500 (an assertion inside Datasette)."""
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = await ds.client.request(method, path)
        assert response.status_code == 405, (method, path, response.status_code)
        assert "read-only" in response.text
    assert (await ds.client.get(f"/{DB}/runs.json")).status_code == 200


SLOW_SQL = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"  # never ends


@pytest.mark.asyncio
async def test_a_row_page_stays_fast_while_six_queries_run_to_their_time_limit(
    ds: Datasette, fixture_db: FixtureDB
) -> None:
    """Six concurrent 5-second queries stalled a one-row page to 9.5 s: Datasette's 3 SQL threads
    were all busy and the page's queries waited behind them (2 s each here, by ``_timelimit``; with
    3 threads the page took about 3.7 s). With ``num_sql_threads`` 12 the page finds a free thread."""
    limit_s = 2.0
    row_page = f"/{DB}/runs/{fixture_db.run_a}"
    assert (await ds.client.get(row_page)).status_code == 200  # warm: connections, metadata, templates

    async def slow() -> tuple[float, int]:
        t0 = time.perf_counter()
        response = await ds.client.get(f"/{DB}.json", params={"sql": SLOW_SQL, "_timelimit": int(limit_s * 1000)})
        return time.perf_counter() - t0, response.status_code

    async def page() -> tuple[float, int]:
        await asyncio.sleep(0.3)  # the slow queries hold their threads by now
        t0 = time.perf_counter()
        response = await ds.client.get(row_page)
        return time.perf_counter() - t0, response.status_code

    *slow_ones, (page_s, page_status) = await asyncio.gather(*(slow() for _ in range(6)), page())
    assert [status for _, status in slow_ones] == [400] * 6  # each ran to its limit and was stopped
    assert min(seconds for seconds, _ in slow_ones) >= limit_s * 0.9
    assert page_status == 200
    assert page_s < limit_s * 0.75, f"the row page took {page_s:.2f} s behind six slow queries"
