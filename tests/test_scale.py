"""``bench run``: a grid through submitit's local and debug executors into shard databases.

The merged rows equal a serial ``run_cell`` run of the same cells (keys, statuses and
the accuracy and loss of every cell), each shard is one run, merging again adds
nothing, an invalid grid exits 2, a crashed task is reported with its stderr file,
Slurm parameters reach the sbatch file (through stand-in ``srun``/``sbatch``), local
GPU slots pin one task per GPU, and the GPU workflow has the steps CI relies on.
"""

from __future__ import annotations

import contextlib
import io
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from bench.cli import main
from bench.env import collect
from bench.execute import scale
from bench.execute.runner import run_cell
from bench.registry import METHODS
from bench.results.store import Store, merge

ROOT = Path(__file__).resolve().parent.parent

TASK = """{"source": "mnist5k", "input_size": 16, "width": 0.125, "train_limit": 128,
          "pretrain.train.epochs": 0.2}"""
TIERS = '{"smoke": TierPlan(config={"train.steps": 3, "train.batch_size": 32, "train.log_every": 3})}'

SUITE = f"""
from bench.execute.grid import Grid, TierPlan

GRID = Grid(
    suite="tiny",
    methods={{"full_ft": {{}}, "linear_probe": {{}}}},
    datasets=("uci-digits",),
    models=("resnet20",),
    seeds=(0, 1),
    task={TASK},
    tiers={TIERS},
)
"""

CRASH_SUITE = f'''
import os

from bench.execute.grid import Grid, TierPlan
from bench.registry import METHODS
from methods.baselines import FineTune


class Crash(FineTune):
    """full_ft that kills its own process, as an out-of-memory kill would."""

    def fit(self, task, rec):
        os._exit(3)


if "crash" not in METHODS.names():
    METHODS.register("crash", Crash)

GRID = Grid(
    suite="crashy",
    methods={{"full_ft": {{}}, "crash": {{}}}},
    datasets=("uci-digits",),
    models=("resnet20",),
    seeds=(0,),
    task={TASK},
    tiers={TIERS},
)
'''


def bench(*argv: object) -> tuple[int, str, str]:
    """Run the ``bench`` command in this process; (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def cells(db: Path) -> dict[str, tuple]:
    """cell_key -> (variant, seed, status, test_top1_pct, test_loss_nat)."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("""SELECT r.cell_key, r.variant, r.seed, r.status,
              (SELECT value FROM metrics m WHERE m.result_id = r.result_id AND m.name = 'test_top1_pct'),
              (SELECT value FROM metrics m WHERE m.result_id = r.result_id AND m.name = 'test_loss_nat')
            FROM results r""").fetchall()
    finally:
        con.close()
    return {r[0]: r[1:] for r in rows}


def runs(db: Path) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(
            "SELECT run_id, status, tag, (SELECT count(*) FROM results r WHERE r.run_id = u.run_id) "
            "FROM runs u ORDER BY run_id"
        ).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, bench_cache: str) -> Path:
    path = tmp_path_factory.mktemp("scale")
    (path / "tiny.py").write_text(SUITE)
    return path


@pytest.fixture(scope="module")
def serial(work: Path) -> Path:
    """The reference: run_cell over the same cells in this process, written with Store."""
    specs = scale.load_grid(work / "tiny.py").cells("smoke", device="cpu", threads=1)
    db = work / "serial.db"
    with Store(db) as store:
        run_id = store.start_run(collect(tier="smoke", device="cpu", threads=1))
        for spec in specs:
            store.write_result(run_id, run_cell(spec))
        store.finish_run(run_id)
    return db


def test_local_executor_matches_serial_run_and_merging_again_adds_nothing(work: Path, serial: Path):
    """``--executor local``: 4 cells, 2 per task, one thread per cell (as the reference)."""
    db, shards = work / "local.db", work / "shards-local"
    rc, out, err = bench(
        "run",
        work / "tiny.py",
        "--executor",
        "local",
        "--cells-per-task",
        2,
        "--cpus-per-task",
        1,
        "--device",
        "cpu",
        "--tag",
        "ci",
        "--db",
        db,
        "--shards",
        shards,
    )
    assert rc == 0, out + err
    expected = cells(serial)
    assert len(expected) == 4 and {v[2] for v in expected.values()} == {"ok"}
    assert cells(db) == expected  # same keys, statuses, accuracy and loss per cell
    assert "merged 2 shard(s)" in out and "4 new results" in out and "cells: 4 ok" in out
    shard_files = sorted(shards.glob("*.db"))
    assert len(shard_files) == 2 and not list(shards.glob(".*partial"))
    assert [(s, t, n) for _, s, t, n in runs(db)] == [("finished", "ci", 2)] * 2
    per_shard = [runs(s) for s in shard_files]  # each shard is one run of its own
    assert [len(r) for r in per_shard] == [1, 1] and sorted(r[0] for r in per_shard) == runs(db)
    con = sqlite3.connect(shard_files[0])
    assert con.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # no WAL on the shared folder
    con.close()
    assert set(merge(shard_files, db).values()) == {0}
    rc, out, _ = bench("merge", *shard_files, "-o", db)
    assert rc == 0 and "0 new runs, 0 new results, 0 new metrics, 0 new series" in out
    assert cells(db) == expected and len(runs(db)) == 2


def test_debug_executor_matches_serial_run(work: Path, serial: Path):
    db, shards = work / "debug.db", work / "shards-debug"
    rc, out, err = bench(
        "run",
        work / "tiny.py",
        "--executor",
        "debug",
        "--cells-per-task",
        3,
        "--cpus-per-task",
        1,
        "--device",
        "cpu",
        "--db",
        db,
        "--shards",
        shards,
    )
    assert rc == 0, out + err
    assert cells(db) == cells(serial)
    assert len(list(shards.glob("*.db"))) == 2 and [n for *_, n in runs(db)] in ([1, 3], [3, 1])


def test_crashed_task_is_reported_and_its_finished_cells_kept(work: Path):
    suite = work / "crashy.py"
    suite.write_text(CRASH_SUITE)
    db = work / "crash.db"
    try:
        rc, out, err = bench(
            "run",
            suite,
            "--executor",
            "local",
            "--cells-per-task",
            2,
            "--cpus-per-task",
            1,
            "--device",
            "cpu",
            "--db",
            db,
            "--shards",
            work / "shards-crash",
        )
    finally:
        METHODS.unregister("crash")
    assert rc == 1, out + err
    assert "task 0: CRASHED" in out and "the task process died without a result" in out
    stderr_line = next(line for line in out.splitlines() if line.strip().startswith("stderr:"))
    assert Path(stderr_line.split("stderr:", 1)[1].strip()).is_file()
    assert "missing: 1 cell(s) have no row (their task crashed): crash-uci-digits-resnet20-s0" in out
    assert [v[:3] for v in cells(db).values()] == [("full_ft", 0, "ok")]  # the cell before the crash survives
    assert [(s, n) for _, s, _, n in runs(db)] == [("failed", 1)]


def test_invalid_grid_exits_2_with_the_message(work: Path):
    bad = work / "bad.py"
    bad.write_text(SUITE.replace('"linear_probe"', '"linear_prob"'))
    rc, _, err = bench("run", bad, "--executor", "debug", "--db", work / "never.db")
    assert rc == 2 and "unknown method 'linear_prob'" in err and "Did you mean 'linear_probe'?" in err
    nogrid = work / "nogrid.py"
    nogrid.write_text("X = 1\n")
    rc, _, err = bench("run", nogrid, "--dry-run")
    assert rc == 2 and "defines no module-level GRID" in err
    rc, _, err = bench("run", work / "absent.py", "--dry-run")
    assert rc == 2 and "does not exist" in err
    rc, _, err = bench("run", work / "tiny.py", "--cells-per-task", 0, "--dry-run")
    assert rc == 2 and "--cells-per-task must be >= 1" in err
    rc, _, err = bench("run", work / "tiny.py", "--shards", work / "tiny.py")
    assert rc == 2 and "is a file, not a folder" in err
    assert not (work / "never.db").exists()


def test_dry_run_prints_the_tasks_and_submits_nothing(work: Path):
    shards = work / "shards-dry"
    rc, out, _ = bench(
        "run",
        work / "tiny.py",
        "--dry-run",
        "--executor",
        "slurm",
        "--cells-per-task",
        3,
        "--partition",
        "gpu",
        "--shards",
        shards,
    )
    assert rc == 0 and "4 cells in 2 task(s)" in out
    assert "slurm_partition='gpu'" in out and "gpus_per_node=1" in out and "timeout_min=60" in out
    # seed-major (bench.execute.grid): a task holds one seed's cells together
    assert "full_ft-uci-digits-resnet20-s0, linear_probe-uci-digits-resnet20-s0, full_ft-uci-digits-resnet20-s1" in out
    assert not shards.exists()


def test_slurm_parameters_reach_the_array_job(work: Path, monkeypatch: pytest.MonkeyPatch):
    """Stand-in ``srun``/``sbatch`` accept the array job, so the sbatch file can be read back."""
    fake = work / "fakebin"
    fake.mkdir(exist_ok=True)
    for name, body in (("srun", "exit 0"), ("sbatch", 'echo "Submitted batch job 4242"')):
        (fake / name).write_text(f"#!/bin/sh\n{body}\n")
        (fake / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:/usr/bin:/bin")
    shards = work / "shards-slurm"
    rc, out, err = bench(
        "run",
        work / "tiny.py",
        "--executor",
        "slurm",
        "--partition",
        "gpu",
        "--cpus-per-task",
        8,
        "--time-min",
        90,
        "--array-parallelism",
        3,
        "--slurm",
        "account=abc",
        "--shards",
        shards,
    )
    assert rc == 0, out + err
    assert "job ids 4242_0, 4242_1, 4242_2, 4242_3" in out
    assert f"bench merge {shards}/*.db -o results.db" in out
    sbatch = next((shards / "jobs").glob("*_submission.sh")).read_text()
    for line in (
        "--partition=gpu",
        "--gpus-per-node=1",
        "--cpus-per-task=8",
        "--time=90",
        "--array=0-3%3",
        "--account=abc",
        "--ntasks-per-node=1",
        "--job-name=bench-tiny",
    ):
        assert f"#SBATCH {line}\n" in sbatch
    monkeypatch.setenv("PATH", str(work / "empty"))
    rc, _, err = bench("run", work / "tiny.py", "--executor", "slurm", "--shards", work / "shards-none")
    assert rc == 2 and "srun" in err and "--executor local" in err


def test_local_gpu_slots_pin_one_task_per_gpu():
    plan = scale.executor_plan("local", n_tasks=5, gpus=[0, 1, 2, 3], gpus_per_task=2)
    assert plan.slots == [(0, 1), (2, 3)] and plan.parameters == {"timeout_min": 60}
    assert scale.executor_plan("local", n_tasks=5, gpus=[0, 1], array_parallelism=1).slots == [(0,)]
    assert scale.executor_plan("local", n_tasks=5, gpus=[0, 1], device="cpu").slots[0] is None
    with pytest.raises(Exception, match="--gpus-per-task 3 but only 2 GPU"):
        scale.executor_plan("local", n_tasks=1, gpus=[0, 1], gpus_per_task=3)
    cpu = scale.executor_plan("local", n_tasks=5, gpus=[], array_parallelism=2, cpus_per_task=1)
    assert cpu.slots == [None, None] and cpu.threads == 1


def test_run_local_never_runs_two_tasks_on_one_slot(tmp_path: Path):
    """A stand-in executor records which GPUs each task was given and how many ran at once."""
    running: list[object] = []
    seen: list[tuple[int, list[int]]] = []

    class Job:
        def __init__(self, task: scale.ShardTask) -> None:
            self.task, self.job_id, self.polls = task, f"j{task.index}", 0
            (tmp_path / self.job_id).touch()
            self.paths = SimpleNamespace(stderr=tmp_path / "none", result_pickle=tmp_path / self.job_id)

        def done(self) -> bool:
            self.polls += 1
            if self.polls < 2:
                return False
            if self in running:
                running.remove(self)
            return True

        def exception(self) -> None:
            return None

        def result(self) -> scale.ShardReport:
            return scale.ShardReport(self.task.index, "s.db", "r", "h", {})

    class Executor:
        def __init__(self) -> None:
            self.gpus: list[int] = []

        def update_parameters(self, visible_gpus: list[int], gpus_per_node: int) -> None:
            self.gpus = visible_gpus

        def submit(self, fn, task):
            assert fn is scale.run_shard
            job = Job(task)
            running.append(job)
            assert len(running) <= 2
            seen.append((task.index, self.gpus))
            return job

    plan = scale.executor_plan("local", n_tasks=5, gpus=[0, 1])
    tasks = [scale.ShardTask(i, (), str(tmp_path), f"t{i}.db") for i in range(5)]
    outcomes = scale.run_local(Executor(), plan, tasks, poll_s=0, on_event=lambda _: None)
    assert [o.task.index for o in outcomes] == [0, 1, 2, 3, 4] and not any(o.crashed for o in outcomes)
    assert seen[:2] == [(0, [0]), (1, [1])] and {tuple(g) for _, g in seen} == {(0,), (1,)}


def test_gpu_workflow_has_the_ci_steps():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "gpu-bench.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert "push" in triggers and "pull_request" in triggers
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == ["self-hosted", "gpu"]
    steps = job["steps"]
    uses = [s.get("uses", "") for s in steps]
    runs_ = "\n".join(s.get("run", "") for s in steps)
    assert uses[0].startswith("actions/checkout@")
    assert "make venv" in runs_ and "nvidia-smi -L | wc -l" in runs_
    suites = next(s["run"] for s in steps if "pytest suites" in s.get("run", ""))
    for flag in (
        '-n "$GPUS"',
        "--dist worksteal",
        "--bench-budget short",
        "--bench-mode accuracy",
        "--bench-tag",
        "--bench-db results.db",
    ):
        assert flag in suites
    gate = next(s for s in steps if "bench gate" in s.get("run", ""))
    assert "--candidate results.db:cells" in gate["run"] and "--json gate.json" in gate["run"]
    uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    upload = next(s for s in uploads if "results.db" in s["with"]["path"])
    assert upload["if"] == "always()"
    assert "gate.json" in upload["with"]["path"] and "gate.md" in upload["with"]["path"]
    assert any(s.get("uses", "").startswith("actions/cache@") for s in steps)
    # The GPU check runs before the suites, and its figures are uploaded whatever happened.
    check = next(i for i, s in enumerate(steps) if "make gpu-check" in s.get("run", ""))
    assert check < steps.index(next(s for s in steps if "pytest suites" in s.get("run", "")))
    assert any(s["if"] == "always()" and "gpu-check/" in s["with"]["path"] for s in uploads)
    assert "BENCH_CACHE_DIR" in job["env"] and "PIP_CACHE_DIR" in job["env"]


def test_resume_runs_only_the_cells_without_an_ok_row(work: Path, serial: Path):
    """bench run had no resume: a partly failed or interrupted sweep re-ran every cell."""
    import shutil

    db = work / "resume.db"
    shutil.copy(serial, db)
    common = ("--executor", "debug", "--cpus-per-task", 1, "--device", "cpu", "--db", db, "--resume")
    rc, out, err = bench("run", work / "tiny.py", *common, "--shards", work / "shards-resume-1")
    assert rc == 0 and "nothing to run" in out, out + err
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA foreign_keys=ON")
        victim = con.execute("SELECT cell_key FROM results ORDER BY cell_key LIMIT 1").fetchone()[0]
        con.execute("UPDATE results SET status = 'failed' WHERE cell_key = ?", [victim])
    before = len(runs(db))
    rc, out, err = bench("run", work / "tiny.py", *common, "--shards", work / "shards-resume-2")
    assert rc == 0, out + err
    assert "1 cells in 1 task(s)" in out
    assert len(runs(db)) == before + 1
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT status FROM latest_results WHERE cell_key = ?", [victim]).fetchone() == ("ok",)
