"""The ``bench`` command: report aggregates seeds, merge folds shards idempotently, list names registries."""

import sqlite3

from bench.cli import main
from bench.contract.cell import CellResult, CellSpec
from bench.results.store import Store


def result(seed: int, acc: float, variant: str = "full_ft", status: str = "ok", mode: str = "accuracy") -> CellResult:
    spec = CellSpec(
        suite="s", method=variant, variant=variant, dataset="uci-digits", model="resnet20", seed=seed, mode=mode
    )
    metrics = {"test_top1_pct": acc, "val_top1_pct": acc - 1, "step_ms_median": 10.0 + seed} if status == "ok" else {}
    return CellResult(spec=spec, status=status, metrics=metrics, error="boom" if status != "ok" else "")


def write(db, results, run_info=None):
    with Store(db) as store:
        run = store.start_run(run_info or {"tier": "smoke"})
        for r in results:
            store.write_result(run, r)
        store.finish_run(run)


def test_report_mean_std_n(tmp_path, capsys):
    db = tmp_path / "r.db"
    write(
        db,
        [
            result(0, 90.0),
            result(1, 92.0),
            result(2, 94.0),
            result(0, 50.0, "scratch"),
            result(1, 0, "scratch", status="failed"),
        ],
    )
    assert main(["report", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "5 cells in" in out and "1 failed, 4 ok" in out
    line = next(l for l in out.splitlines() if "full_ft" in l)
    assert "92.00 +- 2.00 (3)" in line and "91.00 +- 2.00 (3)" in line and "11.00 +- 1.00 (3)" in line
    scratch = next(l for l in out.splitlines() if "scratch" in l)
    assert "50.00 +- 0.00 (1)" in scratch and scratch.rstrip().endswith("1")


def test_report_keeps_accuracy_and_speed_mode_apart(tmp_path, capsys):
    """One cell run in both modes is two groups, never one mean over both."""
    db = tmp_path / "r.db"
    write(db, [result(0, 90.0), result(1, 92.0), result(0, 40.0, mode="speed"), result(1, 42.0, mode="speed")])
    assert main(["report", "--db", str(db), "--metric", "test_top1_pct"]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if "full_ft" in l]
    assert len(lines) == 2
    assert any("accuracy" in l and "91.00 +- 1.41 (2)" in l for l in lines)
    assert any("speed" in l and "41.00 +- 1.41 (2)" in l for l in lines)


def test_report_uses_latest_row_per_cell(tmp_path, capsys):
    db = tmp_path / "r.db"
    write(db, [result(0, 10.0)])
    write(db, [result(0, 80.0)])
    main(["report", "--db", str(db), "--metric", "test_top1_pct"])
    out = capsys.readouterr().out
    assert "1 cells in" in out and "80.00 +- 0.00 (1)" in out


def test_report_missing_db(tmp_path, capsys):
    assert main(["report", "--db", str(tmp_path / "nope.db")]) == 2
    assert "no database at" in capsys.readouterr().err


def test_merge_idempotent(tmp_path, capsys):
    a, b, out = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "out.db"
    write(a, [result(0, 90.0), result(1, 91.0)])
    write(b, [result(2, 92.0)])
    assert main(["merge", str(a), str(b), "-o", str(out)]) == 0
    assert "3 new results" in capsys.readouterr().out
    assert main(["merge", str(a), str(b), "-o", str(out)]) == 0
    assert "0 new results" in capsys.readouterr().out
    con = sqlite3.connect(out)
    assert con.execute("select count(*), count(distinct run_id) from results").fetchone() == (3, 2)
    assert con.execute("select count(*) from metrics").fetchone() == (9,)


def test_merge_rejects_missing_and_foreign_files(tmp_path, capsys):
    assert main(["merge", str(tmp_path / "none.db"), "-o", str(tmp_path / "o.db")]) == 2
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("create table t (x)")
    assert main(["merge", str(other), "-o", str(tmp_path / "o.db")]) == 2
    assert "other.db" in capsys.readouterr().err


def test_list(capsys):
    assert main(["list", "methods"]) == 0
    from bench.registry import METHODS

    out = capsys.readouterr().out.strip()
    assert out == "methods: " + ", ".join(METHODS.names()) and "last_k, linear_probe" in out
    main(["list"])
    out = capsys.readouterr().out
    from bench.registry import MODELS

    assert "models: " + ", ".join(MODELS.names()) in out and "resnet18, resnet20" in out and "mnist5k" in out


def test_console_script_installed():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "bench"
    assert script.exists(), f"console script missing at {script}: reinstall with pip install -e ."
    out = subprocess.run([str(script), "list", "methods"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("methods: ") and "full_ft, last_k, linear_probe" in out


def test_report_layouts_by_variant_and_per_seed(tmp_path, capsys):
    """--by-variant puts method entries side by side; --per-seed shows every seed and failures."""
    from bench.results.report import render

    db = tmp_path / "r.db"
    write(
        db,
        [
            result(0, 90.0, "a"),
            result(1, 92.0, "a"),
            result(2, 10.0, "a"),
            result(0, 80.0, "b"),
            result(1, 82.0, "b"),
            result(2, 0, "b", status="failed"),
        ],
    )
    wide = render(db, layout="by-variant", metrics=["test_top1_pct"]).splitlines()
    assert wide[4].split()[-8:] == ["64.00", "+-", "46.78", "(3)", "81.00", "+-", "1.41", "(2)"]
    seeds = render(db, layout="per-seed", metrics=["test_top1_pct"]).splitlines()
    assert seeds[4].split()[6:9] == ["90.00", "92.00", "10.00"]  # after the 6 group keys
    assert seeds[5].split()[6:9] == ["80.00", "82.00", "failed"]
    assert main(["report", "--db", str(db), "--per-seed"]) == 0 and "seed 2" in capsys.readouterr().out


def test_report_matrix_lays_out_a_metric_family(tmp_path, capsys):
    """--matrix 't3_{row}_{col}_mae' gives NASOA's Table 3 layout: predictors x stream segments."""
    import dataclasses

    def with_t3(seed: int, variant: str, scale: float) -> CellResult:
        r = result(seed, 50.0, variant)
        t3 = {
            f"t3_{p}_{seg}_mae": scale * (i + 1) + j + seed
            for i, p in enumerate(("adaptive", "fixed10"))
            for j, seg in enumerate(("all", "20_40", "80_100"))
        }
        return dataclasses.replace(r, metrics={**r.metrics, **t3, "t3_adaptive_all_mse": 1.0})

    db = tmp_path / "r.db"
    write(db, [with_t3(0, "nasoa:gen-t0", 10.0), with_t3(1, "nasoa:gen-t0", 10.0), with_t3(0, "nasoa:rs-t0", 5.0)])
    assert main(["report", "--db", str(db), "--variant", "nasoa:gen", "--matrix", "t3_{row}_{col}_mae"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "1 cells in" not in lines[0] and lines[0].startswith("2 cells in")
    assert lines[3].split()[6:] == ["row", "20_40", "80_100", "all"]
    # adaptive: seeds 0 and 1 give all 10/11, 20_40 11/12, 80_100 12/13; fixed10 all 20/21, ...
    assert lines[4].split()[6:] == [
        "adaptive",
        "11.50",
        "+-",
        "0.71",
        "(2)",
        "12.50",
        "+-",
        "0.71",
        "(2)",
        "10.50",
        "+-",
        "0.71",
        "(2)",
    ]
    assert lines[5].split()[6:8] == ["fixed10", "21.50"] and len(lines) == 6
    assert main(["report", "--db", str(db), "--matrix", "t3_{row}_mae"]) == 2
    assert "needs one {row} and one {col}" in capsys.readouterr().err
