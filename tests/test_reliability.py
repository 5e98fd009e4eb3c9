"""Nothing lost, nothing silently accepted: each probe of a hostile user, in small form.

Two writers on one database, planted and corrupted cache files, and the other ways a result
could be lost or a bad input accepted. Each test names the probe it reproduces.
"""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

from bench.cache import cached
from bench.contract.cell import CellResult, CellSpec
from bench.contract.split import Split
from bench.results.store import Store

ROOT = Path(__file__).resolve().parent.parent


def _result(seed: int) -> CellResult:
    spec = CellSpec(suite="s", method="full_ft", variant="full_ft", dataset="uci-digits", model="resnet20", seed=seed)
    return CellResult(spec=spec, status="ok", metrics={"test_top1_pct": 50.0 + seed})


def _writer(path: Path, barrier: threading.Barrier, errors: list[BaseException], worker: int) -> None:
    try:
        barrier.wait()
        with Store(path) as store:  # both open a fresh file at once: migrations race
            run = store.start_run({"host": f"w{worker}"})
            for seed in range(3):
                store.write_result(run, _result(10 * worker + seed))
            store.write_claims([])
            store.finish_run(run)
    except BaseException as err:  # noqa: BLE001 - collected and asserted below
        errors.append(err)


def test_two_writers_on_a_fresh_database_never_crash(tmp_path: Path) -> None:
    """Probe 1: two openers of a fresh DB crashed in 40/40 trials ("database is locked",
    "table runs already exists"). With BEGIN IMMEDIATE the second writer waits its turn."""
    for trial in range(20):
        path = tmp_path / f"t{trial}.db"
        barrier, errors = threading.Barrier(2), []
        threads = [threading.Thread(target=_writer, args=(path, barrier, errors, w)) for w in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [], f"trial {trial}: {errors!r}"
        with Store(path, readonly=True) as store:
            assert store.db.execute("SELECT count(*), count(DISTINCT status) FROM runs").fetchone() == (2, 1)
            assert store.db.execute("SELECT count(*) FROM results").fetchone() == (6,)


# -- probe 7 and 10: planted and corrupted cache files ---------------------------------------------


class _Payload:
    ran = False

    def __reduce__(self):  # what a planted pickle does: run code when loaded
        return (_mark_ran, ())


def _mark_ran() -> str:
    _Payload.ran = True
    return "pwned"


def test_a_planted_pickle_in_the_cache_is_refused_and_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "trnas-reference" / "x.pt"
    path.parent.mkdir()
    torch.save({"acc": _Payload()}, path)  # a file that runs code under weights_only=False
    with pytest.warns(RuntimeWarning, match=r"x\.pt is unreadable .*computing it again"):
        value, hit = cached(path, lambda: {"acc": [1.0, 2.0]})
    assert not _Payload.ran
    assert (value, hit) == ({"acc": [1.0, 2.0]}, False)
    assert cached(path, lambda: {"acc": []}) == ({"acc": [1.0, 2.0]}, True)  # the rebuilt file


def test_a_corrupted_cache_file_is_named_and_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "sources" / "resnet20.pt"
    path.parent.mkdir()
    torch.save({"state": torch.ones(3)}, path)
    path.write_bytes(path.read_bytes()[:40])  # truncated: a zip error that used to name no file
    with pytest.warns(RuntimeWarning, match=str(path.name)):
        value, hit = cached(path, lambda: {"state": torch.zeros(2)})
    assert not hit and torch.equal(value["state"], torch.zeros(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again, hit = cached(path, lambda: {"state": torch.ones(1)})
    assert hit and torch.equal(again["state"], torch.zeros(2))


def test_nothing_loads_torch_files_with_weights_only_false() -> None:
    """Probe 7: a planted file in $BENCH_CACHE_DIR/trnas-* ran its payload (weights_only=False)."""
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for folder in ("bench", "methods", "suites", "benchmarks")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "weights_only=False" in line.replace(" ", "")
    ]
    assert offenders == []


# -- probe 4: a blow-up on the last step ------------------------------------------------------------


def test_a_blow_up_on_the_last_step_is_diverged_not_ok() -> None:
    """steps = 1 at lr 1e30 used to give an ok row with test_top1_pct 10 and test_loss_nat NULL:
    the only training loss is checked before its update. Evaluation scores are checked too."""
    from bench.execute.runner import run_cell
    from tests.conftest import tiny_spec

    result = run_cell(tiny_spec("scratch", config={"train.steps": 1, "train.lr": 1e30, "train.log_every": 1}))
    assert result.status == "diverged", (result.status, result.error, result.metrics.get("test_loss_nat"))
    assert "non-finite loss" in result.error and "after training" in result.error


# -- probe 3: bad input is refused where it is given --------------------------------------------------


def test_a_stage_whose_batch_exceeds_its_split_fails_and_records_nothing_false() -> None:
    """A stage the grid cannot size (an inner split, a model built only at run time) is refused by
    the engine: a failed row naming the split's size, never an ok row recording a batch it never ran."""
    from bench import engine
    from bench.contract.recorder import Recorder
    from bench.errors import InvalidConfig
    from bench.models.net import build_model

    x, y = torch.randn(20, 3, 8, 8), torch.arange(20) % 10
    split = Split("train", x, y, 10, 8)
    net = build_model("resnet20", num_classes=10, width=0.25)
    with pytest.raises(
        InvalidConfig, match=r"batch_size=64 but the split it trains on holds 20 images; valid batch sizes: 1..20"
    ):
        engine.fit(net, split, engine.TrainConfig(batch_size=64, steps=2), Recorder(torch.device("cpu")), stage="proxy")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lr": float("inf")}, "lr must be a finite number"),
        ({"momentum": float("nan")}, "momentum must be a finite number"),
        ({"momentum": 1.5}, r"momentum must be in \[0, 1\)"),
        ({"weight_decay": -1.0}, "weight_decay must be >= 0"),
        ({"epochs": float("inf")}, "epochs must be a finite number"),
    ],
)
def test_train_config_refuses_non_finite_and_negative_values(overrides, message) -> None:
    from bench.contract.settings import TrainConfig
    from bench.errors import InvalidConfig

    with pytest.raises(InvalidConfig, match=message):
        TrainConfig(**overrides)


def test_task_settings_refuse_an_infinite_width() -> None:
    from bench.contract.settings import TaskSettings
    from bench.errors import InvalidConfig

    with pytest.raises(InvalidConfig, match="width must be a finite number > 0"):
        TaskSettings(width=float("inf"))


@pytest.mark.parametrize("text", ["", "5-1", "0,,1", "1,1", "a", "-1"])
def test_seed_lists_that_mean_nothing_are_refused(text: str) -> None:
    from bench.errors import InvalidGrid
    from bench.execute.grid import parse_seeds

    with pytest.raises(InvalidGrid, match="--bench-seeds"):
        parse_seeds(text)
    assert parse_seeds("0-2,5") == [0, 1, 2, 5]


@pytest.mark.parametrize(
    "digit", ["\u00b2", "\u0663", "\uff13"]
)  # superscript two, Arabic-Indic three, fullwidth three
def test_etnas_encodings_take_ascii_digits_only(digit: str) -> None:
    """Probe 3: str.isdigit let superscripts through to int() (uncaught ValueError) and accepted
    other scripts' digits as non-canonical encodings."""
    from methods.nasoa.encoding import EncodingError, parse

    valid = "02031-a02_64_111-2111-211-211"
    parse(valid)
    for i, ch in enumerate(valid):
        if ch.isascii() and ch.isdigit():
            with pytest.raises(EncodingError):
                parse(valid[:i] + digit + valid[i + 1 :])


# -- probe 6: merges that kept stale state or half-merged a damaged set -------------------------------


def _shard(path: Path, status: str, acc: float, ended: str) -> str:
    with Store(path) as store:
        run = store.start_run({"host": "node"})
        spec = _result(0).spec
        store.write_result(run, CellResult(spec=spec, status="ok", metrics={"test_top1_pct": acc}, ended_at=ended))
        if status != "running":
            store.finish_run(run, status)
    return run


def test_merging_a_shard_again_after_its_task_finished_updates_run_and_rows(tmp_path: Path) -> None:
    """INSERT OR IGNORE kept a run 'running' forever when its shard was merged before the task ended."""
    import shutil

    from bench.results.store import merge

    shard, early, out = tmp_path / "shard.db", tmp_path / "early.db", tmp_path / "out.db"
    run = _shard(shard, "running", 40.0, "2026-01-01T00:00:01+00:00")
    shutil.copy(shard, early)  # what a merge during the task saw
    with Store(shard) as store:  # the task goes on: re-writes its cell, then finishes
        store.write_result(
            run,
            CellResult(
                spec=_result(0).spec, status="ok", metrics={"test_top1_pct": 90.0}, ended_at="2026-01-01T00:00:09+00:00"
            ),
        )
        store.finish_run(run, "finished")
    merge([early], out)
    counts = merge([shard], out)
    assert counts["runs"] == 1 and counts["results"] == 1 and counts["metrics"] == 1
    with Store(out, readonly=True) as store:
        assert store.db.execute("SELECT status FROM runs").fetchall() == [("finished",)]
        assert store.db.execute("SELECT value FROM metrics WHERE name = 'test_top1_pct'").fetchall() == [(90.0,)]
    assert merge([shard], out) == {"runs": 0, "results": 0, "metrics": 0, "series": 0}  # idempotent
    merge([early], out)  # an older copy merged late changes nothing back
    with Store(out, readonly=True) as store:
        assert store.db.execute("SELECT status FROM runs").fetchall() == [("finished",)]
        assert store.db.execute("SELECT value FROM metrics WHERE name = 'test_top1_pct'").fetchall() == [(90.0,)]


def test_a_damaged_shard_stops_the_merge_before_any_source_is_merged(tmp_path: Path) -> None:
    """A damaged page was a raw DatabaseError after earlier sources were already committed."""
    from bench.errors import StoreError
    from bench.results.store import merge

    good, bad, out = tmp_path / "good.db", tmp_path / "bad.db", tmp_path / "out.db"
    _shard(good, "finished", 50.0, "2026-01-01T00:00:01+00:00")
    _shard(bad, "finished", 60.0, "2026-01-01T00:00:01+00:00")
    with Store(bad) as store:
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(bad.read_bytes())
    page = 4096
    for offset in range(2 * page + 8, 3 * page - 8):  # scribble over a b-tree page
        data[offset] = 0xA5
    bad.write_bytes(bytes(data))
    with pytest.raises((StoreError,)) as err:
        merge([good, bad], out)
    assert "bad.db" in str(err.value)
    assert not out.exists() or Store(out, readonly=True).db.execute("SELECT count(*) FROM runs").fetchone() == (0,)


# -- probe 8: runs left 'running' by a writer that died ------------------------------------------------


def test_a_run_whose_writer_died_is_marked_interrupted(tmp_path: Path) -> None:
    """SIGTERM and SIGKILL left runs 'running' forever; the next writable open reaps them."""
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # exited: no process has this pid now (reuse within the test is vanishingly rare)
    path = tmp_path / "r.db"
    with Store(path) as store:
        killed = store.start_run({"host": socket.gethostname(), "pid": dead_pid})
        alive = store.start_run({"host": socket.gethostname(), "pid": __import__("os").getpid()})
        elsewhere = store.start_run({"host": "another-node", "pid": dead_pid})
        legacy = store.start_run({"host": socket.gethostname()})  # written before runs had a pid
    with Store(path) as store:
        status = dict(store.db.execute("SELECT run_id, status FROM runs").fetchall())
        ended = dict(store.db.execute("SELECT run_id, ended_at FROM runs").fetchall())
    assert status == {killed: "interrupted", alive: "running", elsewhere: "running", legacy: "running"}
    assert ended[killed] is not None


def test_open_run_records_the_writers_pid(tmp_path: Path) -> None:
    import os

    from bench.execute.run import open_run

    with Store(tmp_path / "r.db") as store:
        run = open_run(store, argv=["pytest"], tier="smoke", mode="accuracy", device="cpu", threads=1, tag=None)
        assert store.db.execute("SELECT pid FROM runs WHERE run_id = ?", [run]).fetchone() == (os.getpid(),)


def test_a_run_from_another_host_with_a_stale_heartbeat_is_marked_interrupted(tmp_path: Path) -> None:
    """Another host's pid means nothing here; its heartbeat does: 15 missed minutes and it is reaped."""
    from datetime import datetime, timedelta, timezone

    def ago(seconds: float) -> str:
        return (datetime.now(timezone.utc) - timedelta(seconds=seconds)).isoformat(timespec="microseconds")

    path = tmp_path / "r.db"
    with Store(path) as store:
        lost = store.start_run({"host": "node-a", "pid": 1, "heartbeat_at": ago(Store.STALE_S + 60)})
        beating = store.start_run({"host": "node-b", "pid": 1, "heartbeat_at": ago(Store.STALE_S - 300)})
        fresh = store.start_run({"host": "node-c", "pid": 1})  # stamped at its start
        legacy = store.start_run({"host": "node-d", "pid": 1})
        store.db.execute("UPDATE runs SET heartbeat_at = NULL WHERE run_id = ?", [legacy])  # before m010
        store.db.conn.commit()
    with Store(path) as store:
        status = dict(store.db.execute("SELECT run_id, status FROM runs").fetchall())
        assert store.reap_dead_runs(stale_after_s=0.0) == [beating, fresh]  # a stricter reaper takes the rest
    assert status == {lost: "interrupted", beating: "running", fresh: "running", legacy: "running"}


def test_the_heartbeat_stamps_its_run_until_stopped(tmp_path: Path) -> None:
    from bench.execute.heartbeat import Heartbeat

    path = tmp_path / "r.db"
    with Store(path) as store:
        run = store.start_run({"host": "h"})
        started = store.db.execute("SELECT heartbeat_at FROM runs").fetchone()[0]
        published: list[int] = []
        with Heartbeat(path, run, every_s=0.05, on_beat=lambda conn: published.append(1)) as beat:
            deadline = time.monotonic() + 10
            while beat.beats < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
        assert beat.beats >= 2 and len(published) == beat.beats
        stamped = store.db.execute("SELECT heartbeat_at FROM runs").fetchone()[0]
        assert stamped > started
        after = beat.beats
        time.sleep(0.2)
        assert beat.beats == after  # stopped
        store.finish_run(run)
        assert store.beat(run) is False  # a finished run is never stamped again


def test_merging_a_finished_shard_restores_a_run_reaped_while_it_ran(tmp_path: Path) -> None:
    """A shard merged mid-task, its run reaped as stale, then merged again once finished: finished."""
    from bench.results.store import merge

    shard, out = tmp_path / "shard.db", tmp_path / "out.db"
    with Store(shard) as store:
        run = store.start_run({"host": "node-a"})
    merge([shard], out)
    with Store(out) as store:
        store.db.execute("UPDATE runs SET heartbeat_at = '2000-01-01T00:00:00+00:00'")
        store.db.conn.commit()
    with Store(out) as store:
        assert store.db.execute("SELECT status FROM runs").fetchone() == ("interrupted",)
    with Store(shard) as store:
        store.finish_run(run)
    merge([shard], out)
    with Store(out) as store:
        assert store.db.execute("SELECT status FROM runs").fetchone() == ("finished",)
