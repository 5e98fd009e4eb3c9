"""``bench run``: a suite's grid as a submitit array job of shard databases, then one merge.

    bench run SUITE.py [--executor local|slurm|debug] [--bench-budget smoke|short|paper]
                       [--seeds 0,1,2] [--device auto] [--mode accuracy] [--tag NAME]
                       [--db results.db] [--shards DIR] [--cells-per-task 1]
                       [--partition P] [--gpus-per-task 1] [--cpus-per-task N] [--time-min 60]
                       [--array-parallelism N] [--slurm KEY=VALUE ...] [--data-root DIR]
                       [--download] [--wait] [--dry-run]

The suite file is imported by path and its module-level ``GRID`` expanded at the tier
exactly as pytest collection does (an invalid grid exits 2 with the message). Cells go
``--cells-per-task`` at a time into array tasks; each task writes its own shard
database on node-local disk and publishes it atomically into ``--shards`` (default
``bench-shards/<UTC timestamp>/``); see ``bench.execute.scale``. With ``--executor local`` or
``debug`` (or ``slurm --wait``) the command waits, reports every task (a crashed task
with its stderr file), merges the shards into ``--db`` and prints what it merged;
otherwise it prints the job ids and the ``bench merge`` command to run later.

Exit status: 0 when every task finished and every cell is ok or skipped; 1 when a task
crashed, a cell has no row, or a cell failed (failed, oom, diverged); 2 on bad input;
130 when interrupted (running local jobs are cancelled).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.contract.cell import TIERS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a suite's grid as an array job (local, slurm or debug) into shard databases",
        description="Run a suite's grid with submitit, one shard database per task, then merge.",
    )
    p.add_argument("suite", help="suite file defining a module-level GRID (e.g. suites/test_baselines.py)")
    p.add_argument(
        "--executor",
        default="local",
        choices=("local", "slurm", "debug"),
        help="local: subprocesses on this machine; slurm: an array job; debug: in this process",
    )
    p.add_argument(
        "--bench-budget", "--budget", dest="budget", default="smoke", choices=TIERS, help="budget tier (default: smoke)"
    )
    p.add_argument("--seeds", default=None, help="seeds instead of the suite's: '0,1,2' or '0-4'")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument(
        "--mode",
        default="accuracy",
        choices=("accuracy", "speed"),
        help="accuracy: deterministic kernels; speed: cudnn.benchmark (for timing gates)",
    )
    p.add_argument("--tag", default=None, help="label stored on every shard's run (e.g. main, nightly)")
    p.add_argument("--db", default="results.db", help="database the shards are merged into (default: results.db)")
    p.add_argument("--shards", default=None, help="folder for the shard databases (default: bench-shards/<UTC time>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="run only the cells without an ok row in --db (after an interrupted or partly failed run)",
    )
    p.add_argument("--cells-per-task", type=int, default=1, help="cells run one after another by each task")
    p.add_argument("--partition", default=None, help="Slurm partition")
    p.add_argument("--gpus-per-task", type=int, default=1, help="GPUs per task (default 1; 0 for CPU tasks)")
    p.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per task; also torch threads per cell")
    p.add_argument("--time-min", type=int, default=60, help="time limit of one task in minutes (default 60)")
    p.add_argument(
        "--array-parallelism",
        type=int,
        default=None,
        help="tasks running at once (Slurm array throttle; local: default one per GPU or per core)",
    )
    p.add_argument(
        "--slurm",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra submitit Slurm parameter, e.g. --slurm account=abc --slurm qos=high",
    )
    p.add_argument("--data-root", default=None, help="folder holding torchvision datasets")
    p.add_argument("--download", action="store_true", help="allow downloading datasets and weights")
    p.add_argument("--wait", action="store_true", help="slurm: wait for the jobs, then merge (local/debug always wait)")
    p.add_argument("--dry-run", action="store_true", help="print the tasks and executor parameters; submit nothing")
    p.set_defaults(func=run)


def _slurm_extra(pairs: list[str]) -> dict[str, Any]:
    from bench.errors import InvalidConfig

    extra: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidConfig(f"--slurm expects KEY=VALUE, got {pair!r}")
        extra[key.strip()] = int(value) if value.strip().isdigit() else value
    return extra


def _default_shards() -> Path:
    base = Path("bench-shards") / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def run(args: argparse.Namespace) -> int:
    from bench.execute import scale
    from bench.execute.grid import parse_seeds

    grid = scale.load_grid(args.suite)
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None  # '' is an error, not the defaults
    shard_dir = Path(args.shards) if args.shards else _default_shards()
    if shard_dir.exists() and not shard_dir.is_dir():
        from bench.errors import InvalidConfig

        raise InvalidConfig(f"--shards {str(shard_dir)!r} is a file, not a folder")
    # Validate the grid before sizing the executor (which may look for GPUs).
    done = _ok_cells(args.db) if args.resume else set()
    n_cells = len(
        [
            s
            for s in grid.cells(
                args.budget,
                seeds=seeds,
                device=args.device,
                mode=args.mode,
                data_root=args.data_root,
                download=args.download,
            )
            if s.cell_key not in done
        ]
    )
    if args.resume:
        print(f"bench run: --resume: {len(done)} cell(s) already ok in {args.db} are not run again")
        if n_cells == 0:
            print("bench run: nothing to run")
            return 0
    n_tasks = -(-n_cells // max(1, args.cells_per_task))
    plan = scale.executor_plan(
        args.executor,
        n_tasks=n_tasks,
        device=args.device,
        partition=args.partition,
        gpus_per_task=args.gpus_per_task,
        cpus_per_task=args.cpus_per_task,
        time_min=args.time_min,
        array_parallelism=args.array_parallelism,
        name=f"bench-{grid.suite}",
        slurm_extra=_slurm_extra(args.slurm),
    )
    specs = grid.cells(
        args.budget,
        seeds=seeds,
        device=args.device,
        mode=args.mode,
        data_root=args.data_root,
        download=args.download,
        threads=plan.threads,
    )
    specs = [s for s in specs if s.cell_key not in done]
    tasks = scale.plan_tasks(
        specs,
        cells_per_task=args.cells_per_task,
        shard_dir=shard_dir.resolve(),
        suite_path=args.suite,
        tag=args.tag,
        argv=sys.argv,
    )
    print(_headline(grid.suite, args, plan, len(specs), len(tasks)))
    if args.dry_run:
        _print_plan(plan, tasks, shard_dir)
        return 0
    shard_dir.mkdir(parents=True, exist_ok=True)
    print(f"shards: {shard_dir}")
    executor = scale.make_executor(plan, shard_dir / "jobs")
    try:
        if plan.kind == "local":
            outcomes = scale.run_local(executor, plan, tasks, on_done=_print_outcome)
        else:
            jobs = scale.submit(executor, plan, tasks)
            if plan.kind == "slurm" and not args.wait:
                return _print_later(jobs, shard_dir, args.db)
            outcomes = scale.wait(jobs, kind=plan.kind, on_done=_print_outcome)
    except KeyboardInterrupt:
        print(
            f"bench run: interrupted; finished cells are in {shard_dir}; fold them with:\n"
            f"    bench merge {shlex.quote(str(shard_dir))}/*.db -o {shlex.quote(args.db)}",
            file=sys.stderr,
        )
        return 130
    return _fold_and_report(tasks, outcomes, args.db)


def _ok_cells(db: str) -> set[str]:
    """cell_keys with an ok row in ``db`` (none when it does not exist yet)."""
    from bench.results.store import Store

    if not Path(db).exists():
        return set()
    with Store(db, readonly=True) as store:
        return store.ok_cell_keys()


def _headline(suite: str, args: argparse.Namespace, plan: Any, n_cells: int, n_tasks: int) -> str:
    if plan.kind == "local":
        gpu = plan.slots and plan.slots[0] is not None
        how = f"{len(plan.slots)} at a time, " + ("one GPU slot each" if gpu else f"{plan.threads} thread(s) per cell")
    elif plan.kind == "slurm":
        how = "one array job"
    else:
        how = "in this process"
    return (
        f"bench run: suite '{suite}' at tier {args.budget}: {n_cells} cells in {n_tasks} task(s) "
        f"({args.cells_per_task} per task), executor {plan.kind} ({how})"
    )


def _print_plan(plan: Any, tasks: list, shard_dir: Path) -> None:
    print(f"dry run: nothing submitted; shards would go to {shard_dir}")
    if plan.parameters:
        print("executor parameters: " + ", ".join(f"{k}={v!r}" for k, v in sorted(plan.parameters.items())))
    if plan.kind == "local":
        print("local slots: " + ", ".join("cpu" if s is None else "gpu " + ",".join(map(str, s)) for s in plan.slots))
    for task in tasks:
        print(f"task {task.index} -> {task.shard_name}: " + ", ".join(s.test_id for s in task.specs))


def _print_outcome(outcome: Any) -> None:
    if outcome.crashed:
        lines = outcome.error.splitlines()
        error = "\n".join(lines[:1] + (["    ..."] if len(lines) > 13 else []) + lines[1:][-12:])
        print(f"task {outcome.task.index}: CRASHED (job {outcome.job_id}): {error}")
        print(f"    stderr: {outcome.stderr or '(none written)'}")
        return
    counts = Counter(outcome.report.statuses.values())
    print(
        f"task {outcome.task.index}: done on {outcome.report.host}: "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + f" -> {outcome.report.shard}"
    )


def _print_later(jobs: list, shard_dir: Path, db: str) -> int:
    ids = [str(job.job_id) for _, job in jobs]
    print(f"submitted {len(ids)} task(s): job ids {', '.join(ids)}")
    print(f"each task writes one shard into {shard_dir}; when the jobs have finished, fold them with:")
    print(f"    bench merge {shlex.quote(str(shard_dir))}/*.db -o {shlex.quote(db)}")
    return 0


def _fold_and_report(tasks: list, outcomes: list, db: str) -> int:
    from bench.execute import scale

    crashed = [o for o in outcomes if o.crashed]
    shards, counts = scale.fold(tasks, db, crashed)
    if shards:
        print(f"merged {len(shards)} shard(s) into {db}: " + ", ".join(f"{n} new {t}" for t, n in counts.items()))
    else:
        print(f"no shard was written; nothing merged into {db}")
    statuses = scale.shard_statuses(shards)
    expected = [s for t in tasks for s in t.specs]
    missing = [s.test_id for s in expected if s.cell_key not in statuses]
    counted = Counter(statuses.values())
    print("cells: " + (", ".join(f"{n} {s}" for s, n in sorted(counted.items())) or "none written"))
    if missing:
        print(f"missing: {len(missing)} cell(s) have no row (their task crashed): {', '.join(missing)}")
    if crashed:
        print(
            f"{len(crashed)} task(s) crashed: "
            + ", ".join(str(o.task.index) for o in crashed)
            + "; their finished cells were merged, their runs are marked failed"
        )
    bad = sum(counted[s] for s in scale.NOT_OK)
    return 1 if crashed or missing or bad else 0
