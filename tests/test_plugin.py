"""The pytest plugin end to end, in subprocesses (pytester): rows land in the database,
``-n 2`` writes the same cells as a serial run, resume skips finished cells, an
interrupted suite keeps its finished rows, bad grids fail at collection, and
``--benchmark-json`` carries the metrics."""

from __future__ import annotations

import json
import sqlite3

import pytest

from bench.results.claims import CLAIMS

pytest_plugins = ["pytester"]

SUITE = """
from bench.execute.grid import Grid, TierPlan

GRID = Grid(
    suite="tiny",
    methods={"full_ft": {}, "linear_probe": {}},
    datasets=("uci-digits",),
    models=("resnet20",),
    seeds=(0, 1),
    task={"source": "mnist5k", "input_size": 16, "width": 0.125, "train_limit": 128,
          "pretrain.train.epochs": 0.2},
    tiers={"smoke": TierPlan(config={"train.steps": 3, "train.batch_size": 32, "train.log_every": 3})},
)


def test_cell(bench_cell):
    result = bench_cell.run()
    assert result.ok, result.error
"""

CONFTEST = '''
import os
from dataclasses import dataclass

from bench.contract.interface import Fitted
from bench.registry import METHODS
from methods.baselines import FineTune


class StopAtSeed(FineTune):
    """full_ft, except that it raises KeyboardInterrupt at the seed named by an env variable."""

    def fit(self, task, rec):
        if str(task.seed) == os.environ.get("STOP_AT_SEED"):
            raise KeyboardInterrupt
        return super().fit(task, rec)


StopAtSeed.name = "stop_at_seed"
METHODS.register("stop_at_seed", StopAtSeed)
'''


def rows(db) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute("select cell_key, variant, seed, status from results order by variant, seed").fetchall()
    finally:
        con.close()


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch):
    for var in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(var, raising=False)  # the subprocess is its own session, not an xdist worker
    pytester.makepyfile(test_tiny=SUITE)
    pytester.makeconftest(CONFTEST)
    return pytester


def test_serial_and_parallel_write_the_same_cells(suite: pytest.Pytester):
    serial = suite.runpytest_subprocess("-p", "no:cacheprovider", "--bench-db", "serial.db", "-q")
    serial.assert_outcomes(passed=4)
    n = len(CLAIMS.names())  # every registered claim is judged, and with no matching cells each reads "no data"
    serial.stdout.fnmatch_lines(
        [
            "*4 cells written to serial.db*4 ok*",
            f"claims: 0 reproduced, 0 not reproduced, {n} inconclusive ({n} no data)*",
        ]
    )
    assert sqlite3.connect(suite.path / "serial.db").execute("select count(*) from claims").fetchone() == (n,)
    assert {w for (w,) in sqlite3.connect(suite.path / "serial.db").execute("select worker from results")} == {""}
    parallel = suite.runpytest_subprocess("-p", "no:cacheprovider", "--bench-db", "par.db", "-n", "2", "-q")
    parallel.assert_outcomes(passed=4)
    a, b = rows(suite.path / "serial.db"), rows(suite.path / "par.db")
    assert len(a) == 4 and a == b and all(r[3] == "ok" for r in a)
    con = sqlite3.connect(suite.path / "par.db")
    workers = {w for (w,) in con.execute("select worker from results")}
    runs = con.execute("select count(*), max(status), max(tier) from runs").fetchone()
    metrics = con.execute("select count(distinct result_id) from metrics where name='test_top1_pct'").fetchone()
    assert workers == {"gw0", "gw1"} and runs == (1, "finished", "smoke") and metrics == (4,)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_gpu_skips_cells_and_records_why(suite: pytest.Pytester):
    result = suite.runpytest_subprocess(
        "-p", "no:cacheprovider", "--bench-db", "s.db", "--bench-device", "cuda", "-q", "-rs"
    )
    result.assert_outcomes(skipped=4)
    result.stdout.fnmatch_lines(["*CUDA is not available here*"])
    assert {r[3] for r in rows(suite.path / "s.db")} == {"skipped"} and len(rows(suite.path / "s.db")) == 4


def test_ids_are_readable(suite: pytest.Pytester):
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q")
    result.stdout.fnmatch_lines(
        ["*test_cell?full_ft-uci-digits-resnet20-s0?*", "*test_cell?linear_probe-uci-digits-resnet20-s1?*"]
    )


def test_interrupt_keeps_rows_and_resume_finishes(suite: pytest.Pytester, monkeypatch):
    suite.makepyfile(
        test_tiny=SUITE.replace('"linear_probe": {}', '"stop_at_seed": {}').replace("seeds=(0, 1)", "seeds=(0, 1, 2)")
    )
    monkeypatch.setenv("STOP_AT_SEED", "1")
    first = suite.runpytest_subprocess("-p", "no:cacheprovider", "--bench-db", "r.db", "-q")
    assert first.ret == pytest.ExitCode.INTERRUPTED
    done = rows(suite.path / "r.db")
    # cells run seed-major (bench.execute.grid): full_ft/0, stop/0, full_ft/1, then stop/1 interrupts
    assert [(v, s) for _, v, s, _ in done] == [("full_ft", 0), ("full_ft", 1), ("stop_at_seed", 0)]
    con = sqlite3.connect(suite.path / "r.db")
    assert con.execute("select status from runs").fetchone() == ("interrupted",)
    con.close()
    monkeypatch.delenv("STOP_AT_SEED")
    second = suite.runpytest_subprocess("-p", "no:cacheprovider", "--bench-db", "r.db", "--bench-resume", "-q")
    second.assert_outcomes(passed=3, skipped=3)
    after = rows(suite.path / "r.db")
    assert len(after) == 6 and len({r[0] for r in after}) == 6 and all(r[3] == "ok" for r in after)
    third = suite.runpytest_subprocess("-p", "no:cacheprovider", "--bench-db", "r.db", "--bench-resume", "-q")
    third.assert_outcomes(skipped=6)
    assert len(rows(suite.path / "r.db")) == 6


def test_bad_grid_fails_at_collection(suite: pytest.Pytester):
    suite.makepyfile(test_tiny=SUITE.replace('"full_ft": {}', '"full_ft": {"train.lrr": 1}'))
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "--bench-db", "bad.db")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        ["*InvalidGrid*unknown config key(s) train.lrr for TrainConfig; valid keys: train.optimizer, train.lr,*"]
    )
    assert not (suite.path / "bad.db").exists()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            '"full_ft": {"train.batch_size": 100000}',
            "*InvalidGrid*'full_ft': train.batch_size=100000 but the train split on uci-digits with resnet20 holds 128"
            " images*valid batch sizes: 1..128*",
        ),
        ('"last_k": {"k": 1000}', "*InvalidGrid*'last_k': last_k: k=1000 but resnet20 has 9 blocks; valid k: 0..9*"),
    ],
)
def test_a_batch_or_k_the_cell_cannot_hold_fails_at_collection(suite: pytest.Pytester, entry, message):
    """Probe 3: batch 100000 trained on one batch of the whole split and wrote an ok row recording
    100000; k = 1000 became a failed row at run time. Both are refused before anything runs."""
    suite.makepyfile(test_tiny=SUITE.replace('"full_ft": {}', entry))
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "--bench-db", "bad.db")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([message])
    assert not (suite.path / "bad.db").exists()


def test_seeds_option_and_benchmark_json(suite: pytest.Pytester):
    result = suite.runpytest_subprocess(
        "-p", "no:cacheprovider", "--bench-db", "b.db", "--bench-seeds", "5", "--benchmark-json", "bm.json", "-q"
    )
    result.assert_outcomes(passed=2)
    assert {r[2] for r in rows(suite.path / "b.db")} == {5}
    data = json.loads((suite.path / "bm.json").read_text())
    extra = data["benchmarks"][0]["extra_info"]
    assert extra["status"] == "ok" and 0 <= extra["test_top1_pct"] <= 100 and extra["step_ms_median"] > 0


def test_datasets_option_filters_cells_at_collection(suite: pytest.Pytester):
    suite.makepyfile(test_tiny=SUITE.replace('datasets=("uci-digits",)', 'datasets=("uci-digits", "lfw-faces")'))
    result = suite.runpytest_subprocess(
        "-p", "no:cacheprovider", "--bench-datasets", "lfw-faces", "--collect-only", "-q"
    )
    result.stdout.fnmatch_lines(["*full_ft-lfw-faces-resnet20-s0*"])
    assert "uci-digits" not in result.stdout.str()
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "--bench-datasets", "cifar10", "--collect-only")
    result.stdout.fnmatch_lines(["*InvalidGrid*runs no dataset cifar10; its datasets: uci-digits, lfw-faces*"])


def test_gpu_for_worker_round_robin():
    from bench.execute.plugin import gpu_for_worker

    assert [gpu_for_worker(f"gw{i}", ["2", "5"]) for i in range(4)] == ["2", "5", "2", "5"]
    assert gpu_for_worker("gw0", []) is None and gpu_for_worker("master", ["0"]) is None


def test_visible_gpus_from_env(monkeypatch):
    from bench.execute.plugin import visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 4")
    assert visible_gpus() == ["3", "4"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpus() == []


PINNING = """
import os


def test_pinned():
    worker = os.environ["PYTEST_XDIST_WORKER"]
    with open(f"pin-{worker}.txt", "w") as fh:
        fh.write(os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
"""


def test_xdist_workers_pinned_to_fake_gpus(pytester: pytest.Pytester, monkeypatch):
    for var in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7,9")
    pytester.makepyfile(test_pin=PINNING)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--dist", "each")
    result.assert_outcomes(passed=2)
    seen = {p.stem: p.read_text() for p in pytester.path.glob("pin-*.txt")}
    assert seen == {"pin-gw0": "7", "pin-gw1": "9"}


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--bench-seeds", "", "*InvalidGrid*--bench-seeds: cannot parse ''*"),
        ("--bench-seeds", "5-1,0", "*InvalidGrid*range '5-1' runs backwards*"),
        ("--bench-datasets", ",", "*InvalidGrid*--bench-datasets names no dataset*runs uci-digits*"),
        ("--bench-device", "gpu", "*InvalidGrid*--bench-device 'gpu': valid forms: auto, cpu, cuda, cuda:N*"),
    ],
)
def test_bad_options_fail_at_collection_and_write_nothing(suite: pytest.Pytester, option, value, message):
    """Probe 3: these ran the defaults, only seed 0, zero cells (exit 0), or raised with no row."""
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "--bench-db", "bad.db", option, value)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([message])
    assert not (suite.path / "bad.db").exists()
