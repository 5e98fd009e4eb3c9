"""Scaling out: a suite's grid as a submitit array job, one shard database per task.

``bench run SUITE.py`` (see ``bench.cli.run``) is the many-machines path of the design;
one machine with many GPUs uses pytest-xdist instead (``pytest suites -n NGPUS``).
Both call the same ``bench.execute.runner.run_cell``, so a cell gives the same row either way::

    grid = load_grid("suites/test_baselines.py")
    plan = executor_plan("slurm", n_tasks=12, partition="gpu", gpus_per_task=1, time_min=120)
    specs = grid.cells("short", device="auto", threads=plan.threads)
    tasks = plan_tasks(specs, cells_per_task=4, shard_dir="/shared/shards", suite_path=...)
    executor = make_executor(plan, "/shared/shards/jobs")    # pickles and logs
    jobs = submit(executor, plan, tasks)                     # executor.map_array(run_shard, tasks)
    outcomes = wait(jobs, kind="slurm")                      # one TaskOutcome per task
    shards, counts = fold(tasks, "results.db", [o for o in outcomes if o.crashed])

**One writer per file, never SQLite over NFS.** Each task (``run_shard``, a
module-level function so it pickles) opens its own ``Store`` on node-local disk
(``$SLURM_TMPDIR``, else ``$TMPDIR``, else the system temp folder), starts its own
``runs`` row (provenance from ``bench.env.collect`` on the node that ran it, with the
tier, mode and ``--tag``), runs its cells one after another and, after each cell,
publishes a consistent copy: ``VACUUM INTO`` a local file (rollback journal, no WAL),
copy it into the shard folder under a dot-name, then ``os.replace`` it onto
``<suite>-<submission>-<task>.db``. Readers never see a partial file, a task killed
mid-way leaves every cell it finished, and the shared file system only ever receives
whole files. The submitting process is the only writer of ``--db``: ``fold`` merges the
shards with ``bench.results.store.merge`` (``INSERT OR IGNORE``: merging again adds nothing)
and marks the run of a crashed task ``failed``.

**Executors.** ``local``: submitit's ``LocalExecutor``, each task a subprocess; with GPUs
every task gets its own ``visible_gpus`` slot (``gpus_per_task`` GPUs) and tasks start as
slots free up; on CPU ``array_parallelism`` tasks run at once (default: cores /
``cpus_per_task``). ``slurm``: ``AutoExecutor(cluster="slurm")`` with ``timeout_min``,
``gpus_per_node``, ``cpus_per_task``, ``slurm_partition`` and ``slurm_array_parallelism``,
all tasks in one array job through ``map_array``. ``debug``: submitit's ``DebugExecutor``,
tasks run in this process one after another (``map_array`` too). The worker imports the
suite file before running cells, as a pytest worker would, so methods a suite
registers exist there too.
"""

from __future__ import annotations

import os
import re
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.contract.cell import CellSpec
from bench.errors import InvalidConfig, InvalidGrid
from bench.execute.gpus import visible_gpu_ids
from bench.execute.grid import Grid
from bench.execute.shard import ShardReport, ShardTask, load_suite, run_shard

EXECUTORS = ("local", "slurm", "debug")
NOT_OK = ("failed", "oom", "diverged")


@dataclass(frozen=True)
class TaskOutcome:
    """A finished task: its report, or why it crashed and where its stderr is."""

    task: ShardTask
    job_id: str
    report: ShardReport | None = None
    error: str = ""
    stderr: str = ""

    @property
    def crashed(self) -> bool:
        return self.report is None


@dataclass
class ExecutorPlan:
    """Which executor, its submitit parameters, the local slots and the threads per cell."""

    kind: str
    parameters: dict[str, Any] = field(default_factory=dict)
    slots: list[tuple[int, ...] | None] = field(default_factory=list)
    threads: int = 0


# ----------------------------------------------------------------------------- suites


def load_grid(path: str | Path) -> Grid:
    """The module-level ``GRID`` of a suite file; ``InvalidGrid`` when there is none."""
    grid = getattr(load_suite(path), "GRID", None)
    if not isinstance(grid, Grid):
        raise InvalidGrid(
            f"suite file {str(path)!r} defines no module-level GRID = bench.execute.grid.Grid(...)"
            + ("" if grid is None else f" (GRID is a {type(grid).__name__})")
        )
    return grid


def plan_tasks(
    specs: Sequence[CellSpec],
    *,
    cells_per_task: int,
    shard_dir: str | Path,
    suite_path: str | Path | None = None,
    tag: str | None = None,
    argv: Sequence[str] = (),
    submission: str | None = None,
) -> list[ShardTask]:
    """Consecutive cells in groups of ``cells_per_task``, one shard name per task."""
    if cells_per_task < 1:
        raise InvalidConfig(f"--cells-per-task must be >= 1, got {cells_per_task}")
    if not specs:
        raise InvalidGrid("the grid expands to no cells")
    submission = submission or uuid.uuid4().hex[:8]
    suite = re.sub(r"[^0-9A-Za-z_.-]", "_", specs[0].suite)
    return [
        ShardTask(
            index=i,
            specs=tuple(specs[start : start + cells_per_task]),
            shard_dir=str(shard_dir),
            shard_name=f"{suite}-{submission}-{i:04d}.db",
            suite_path=None if suite_path is None else str(Path(suite_path).resolve()),
            tag=tag,
            argv=tuple(argv),
        )
        for i, start in enumerate(range(0, len(specs), cells_per_task))
    ]


# ----------------------------------------------------------------------------- executors


def executor_plan(
    kind: str,
    *,
    n_tasks: int,
    device: str = "auto",
    partition: str | None = None,
    gpus_per_task: int = 1,
    cpus_per_task: int | None = None,
    time_min: int = 60,
    array_parallelism: int | None = None,
    name: str = "bench",
    slurm_extra: dict[str, Any] | None = None,
    gpus: Sequence[int] | None = None,
) -> ExecutorPlan:
    """Submitit parameters, local slots and threads per cell for ``kind`` (see the module docstring)."""
    if kind not in EXECUTORS:
        raise InvalidConfig(f"unknown executor '{kind}'; valid executors: {', '.join(EXECUTORS)}")
    if gpus_per_task < 0:
        raise InvalidConfig(f"--gpus-per-task must be >= 0, got {gpus_per_task}")
    for flag, value in (
        ("--time-min", time_min),
        ("--cpus-per-task", cpus_per_task),
        ("--array-parallelism", array_parallelism),
    ):
        if value is not None and value < 1:
            raise InvalidConfig(f"{flag} must be >= 1, got {value}")
    if kind == "debug":
        return ExecutorPlan("debug", {}, [None], cpus_per_task or 0)
    if kind == "slurm":
        params: dict[str, Any] = {"name": name, "timeout_min": time_min, "nodes": 1, "tasks_per_node": 1}
        optional = {
            "gpus_per_node": gpus_per_task or None,
            "cpus_per_task": cpus_per_task,
            "slurm_partition": partition,
            "slurm_array_parallelism": array_parallelism,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        params.update({f"slurm_{k}": v for k, v in (slurm_extra or {}).items()})
        return ExecutorPlan("slurm", params, [], cpus_per_task or 0)
    if device == "cpu" or not gpus_per_task:
        gpu_ids: list[int] = []
    else:
        gpu_ids = list(gpus) if gpus is not None else visible_gpu_ids()
    if gpu_ids and gpus_per_task:
        slots: list[tuple[int, ...] | None] = [
            tuple(gpu_ids[i : i + gpus_per_task]) for i in range(0, len(gpu_ids) - gpus_per_task + 1, gpus_per_task)
        ]
        if not slots:
            raise InvalidConfig(f"--gpus-per-task {gpus_per_task} but only {len(gpu_ids)} GPU(s) are visible")
        slots = slots[: array_parallelism or len(slots)]
    else:
        parallel = array_parallelism or max(1, (os.cpu_count() or 1) // (cpus_per_task or 1))
        slots = [None] * max(1, min(parallel, n_tasks))
    threads = cpus_per_task or max(1, (os.cpu_count() or 1) // len(slots))  # no oversubscribed cores
    return ExecutorPlan("local", {"timeout_min": time_min}, slots, threads)


def make_executor(plan: ExecutorPlan, folder: str | Path) -> Any:
    """The submitit executor of ``plan``, writing its pickles and logs under ``folder``."""
    import submitit

    folder = str(folder)
    if plan.kind == "debug":
        return submitit.DebugExecutor(folder)
    if plan.kind == "local":
        executor = submitit.LocalExecutor(folder)
        executor.update_parameters(**plan.parameters)
        return executor
    try:
        executor = submitit.AutoExecutor(folder, cluster="slurm")
    except RuntimeError as err:
        raise InvalidConfig(f"--executor slurm: {err} (use --executor local on a single machine)") from err
    try:
        executor.update_parameters(**plan.parameters)
    except (NameError, ValueError) as err:
        raise InvalidConfig(f"invalid Slurm parameters: {err}") from err
    return executor


def submit(
    executor: Any, plan: ExecutorPlan, tasks: Sequence[ShardTask], on_event: Callable[[str], None] = print
) -> list[tuple[ShardTask, Any]]:
    """Submit every task as one array (``map_array``); for ``local`` use ``run_local`` instead."""
    jobs = executor.map_array(run_shard, list(tasks))
    for task, job in zip(tasks, jobs):
        if plan.kind != "debug":
            on_event(f"task {task.index}: submitted as job {job.job_id} ({len(task.specs)} cells)")
    return list(zip(tasks, jobs))


def outcome(task: ShardTask, job: Any, *, local: bool) -> TaskOutcome:
    """The outcome of a finished job; a local job that left no result pickle crashed (no 15 s wait)."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    job_id = str(job.job_id)
    stderr = str(job.paths.stderr) if Path(job.paths.stderr).exists() else ""
    if local and not job.paths.result_pickle.exists():
        tail = _tail(job.paths.stderr)
        return TaskOutcome(task, job_id, error=f"the task process died without a result{tail}", stderr=stderr)
    error = job.exception()  # a debug job runs here, in this process (never through pdb)
    if error is None:
        return TaskOutcome(task, job_id, report=job.result(), stderr=stderr)
    if isinstance(error, (FailedJobError, UncompletedJobError)):
        text = str(error)
    else:
        text = "".join(traceback.format_exception(error))
    return TaskOutcome(task, job_id, error=text.strip(), stderr=stderr)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return (":\n    " + "\n    ".join(text)) if text else ""


def wait(
    jobs: Sequence[tuple[ShardTask, Any]],
    *,
    kind: str,
    poll_s: float = 5.0,
    on_done: Callable[[TaskOutcome], None] | None = None,
) -> list[TaskOutcome]:
    """Wait for submitted jobs, reporting each outcome as it arrives; outcomes in task order.

    Debug jobs run one after another in this process as their outcome is asked for.
    """
    pending, outcomes = list(jobs), []
    while pending:
        finished = pending if kind == "debug" else [(t, j) for t, j in pending if j.done()]
        for task, job in list(finished):
            pending.remove((task, job))
            outcomes.append(outcome(task, job, local=kind == "local"))
            if on_done:
                on_done(outcomes[-1])
        if pending and not finished:
            time.sleep(poll_s)
    return sorted(outcomes, key=lambda o: o.task.index)


def run_local(
    executor: Any,
    plan: ExecutorPlan,
    tasks: Sequence[ShardTask],
    *,
    poll_s: float = 0.5,
    on_event: Callable[[str], None] = print,
    on_done: Callable[[TaskOutcome], None] | None = None,
) -> list[TaskOutcome]:
    """Run tasks with the LocalExecutor, at most one per slot, each GPU slot pinned through ``visible_gpus``."""
    pending, free = list(tasks), list(plan.slots)
    running: list[Any] = []
    outcomes: list[TaskOutcome] = []
    try:
        while pending or running:
            while pending and free:
                slot, task = free.pop(0), pending.pop(0)
                if slot is not None:
                    executor.update_parameters(visible_gpus=list(slot), gpus_per_node=len(slot))
                job = executor.submit(run_shard, task)
                running.append((task, job, slot))
                where = f" on GPU {','.join(map(str, slot))}" if slot is not None else ""
                on_event(f"task {task.index}: started as local job {job.job_id}{where} ({len(task.specs)} cells)")
            done = [r for r in running if r[1].done()]
            for task, job, slot in done:
                running.remove((task, job, slot))
                free.append(slot)
                outcomes.append(outcome(task, job, local=True))
                if on_done:
                    on_done(outcomes[-1])
            if not done:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        for _, job, _ in running:
            job.cancel(check=False)
        raise
    return sorted(outcomes, key=lambda o: o.task.index)


# ----------------------------------------------------------------------------- merging


def task_shards(tasks: Sequence[ShardTask]) -> list[Path]:
    """The shard files these tasks left (a task that crashed early may have none)."""
    return [t.shard_path for t in tasks if t.shard_path.is_file()]


def fold(
    tasks: Sequence[ShardTask], db: str | Path, crashed: Sequence[TaskOutcome] = ()
) -> tuple[list[Path], dict[str, int]]:
    """Merge the tasks' shards into ``db`` (one writer); runs of crashed tasks become ``failed``."""
    from bench.results.store import Store, merge

    shards = task_shards(tasks)
    counts = merge(shards, db) if shards else {}
    crashed_runs = []
    for outcome in crashed:
        if outcome.task.shard_path.is_file():
            with Store(outcome.task.shard_path, readonly=True) as shard:
                crashed_runs.extend(shard.run_ids())
    if crashed_runs:
        with Store(db) as store:
            store.fail_running(crashed_runs)
    return shards, counts


def shard_statuses(shards: Sequence[Path]) -> dict[str, str]:
    """cell_key -> status over the given shard files."""
    from bench.results.queries import cell_statuses
    from bench.results.store import Store

    statuses: dict[str, str] = {}
    for shard in shards:
        with Store(shard, readonly=True) as store:
            statuses.update(cell_statuses(store.db.conn))
    return statuses
