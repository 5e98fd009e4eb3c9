"""One cluster task: the cells it runs into its own shard database, published atomically.

A ``ShardTask`` (plain data that pickles) names its cells and its shard. ``run_shard``, the
submitit entry point, runs them on the node into a scratch database on node-local disk, and
after every cell ``publish`` copies a consistent snapshot onto the shared shard path, so a
killed task keeps every finished cell. ``bench.execute.scale`` plans the tasks, submits them
and folds the shards.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from bench.cache import atomic_write
from bench.contract.cell import CellResult, CellSpec, short_hash
from bench.errors import BenchError, InvalidGrid
from bench.execute.heartbeat import Heartbeat

__all__ = ["ShardReport", "ShardTask", "load_suite", "local_scratch_dir", "publish", "run_shard"]


@dataclass(frozen=True)
class ShardTask:
    """One array task: the cells it runs and where its shard goes (plain data, pickles)."""

    index: int
    specs: tuple[CellSpec, ...]
    shard_dir: str
    shard_name: str
    suite_path: str | None = None
    tag: str | None = None
    argv: tuple[str, ...] = ()

    @property
    def shard_path(self) -> Path:
        return Path(self.shard_dir) / self.shard_name


@dataclass(frozen=True)
class ShardReport:
    """What a task returns: its shard, run and the status of every cell it wrote."""

    index: int
    shard: str
    run_id: str
    host: str
    statuses: dict[str, str]  # cell_key -> status


def load_suite(path: str | Path) -> ModuleType:
    """Import a suite file by path (once per process); its folder goes on ``sys.path`` as pytest does."""
    path = Path(path).resolve()
    if not path.is_file():
        raise InvalidGrid(f"suite file {str(path)!r} does not exist")
    name = f"bench_suite_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{short_hash(str(path), n=8)}"
    if name in sys.modules:
        return sys.modules[name]
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidGrid(f"cannot import suite file {str(path)!r}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BenchError:
        del sys.modules[name]
        raise
    except Exception as err:
        del sys.modules[name]
        raise InvalidGrid(f"cannot import suite file {str(path)!r}: {type(err).__name__}: {err}") from err
    return module


def local_scratch_dir() -> Path:
    """Node-local scratch: ``$SLURM_TMPDIR``, else ``$TMPDIR``, else the system temp folder."""
    return Path(os.environ.get("SLURM_TMPDIR") or tempfile.gettempdir())


def publish(conn: sqlite3.Connection, dest: Path) -> None:
    """Atomically replace ``dest`` by a consistent, WAL-free copy of the database of ``conn``."""
    from bench.results.store import snapshot_into

    scratch = Path(tempfile.mkdtemp(prefix="bench-publish-", dir=local_scratch_dir()))
    try:
        snapshot = scratch / dest.name
        snapshot_into(conn, snapshot)
        atomic_write(dest, lambda tmp: shutil.copyfile(snapshot, tmp))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _locked(lock: threading.Lock, fn: Callable[..., None], *args: object) -> None:
    with lock:
        fn(*args)


def _run_one(spec: CellSpec) -> CellResult:
    """``run_cell``; an error that escapes it (bad input on this node) becomes a failed row."""
    from bench.env import utc_now
    from bench.execute.runner import run_cell

    try:
        return run_cell(spec)
    except Exception as err:  # noqa: BLE001 - the other cells of the task go on
        now = utc_now()
        return CellResult(
            spec=spec,
            status="failed",
            error_type=type(err).__name__,
            error=f"{err} (raised before the cell ran)",
            started_at=now,
            ended_at=now,
        )


def run_shard(task: ShardTask) -> ShardReport:
    """Run a task's cells into its own shard (see the module docstring); the submitit entry point."""
    if task.suite_path:
        load_suite(task.suite_path)  # methods the suite registers
    from bench.execute.run import open_run
    from bench.results.store import Store

    first = task.specs[0]
    scratch = Path(tempfile.mkdtemp(prefix="bench-shard-", dir=local_scratch_dir()))
    store = Store(scratch / task.shard_name)
    run_id, status, statuses = None, "failed", {}
    heartbeat: Heartbeat | None = None
    publishing = threading.Lock()
    try:
        run_id = open_run(
            store,
            argv=task.argv,
            tier=first.tier,
            mode=first.mode,
            device=first.device,
            threads=first.threads,
            tag=task.tag,
        )
        publish(store.db.conn, task.shard_path)
        heartbeat = Heartbeat(
            store.path, run_id, on_beat=lambda conn: _locked(publishing, publish, conn, task.shard_path)
        ).start()
        for n, spec in enumerate(task.specs, 1):
            t0 = time.perf_counter()
            result = _run_one(spec)
            with publishing:  # a beat's publish never lands after this newer one
                store.write_result(run_id, result)
                publish(store.db.conn, task.shard_path)
            statuses[spec.cell_key] = result.status
            print(
                f"[task {task.index}] cell {n}/{len(task.specs)} {spec.test_id}: {result.status} "
                f"({time.perf_counter() - t0:.1f} s)",
                flush=True,
            )
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        if run_id is not None:
            store.finish_run(run_id, status)
            publish(store.db.conn, task.shard_path)
        store.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return ShardReport(
        index=task.index, shard=str(task.shard_path), run_id=run_id, host=socket.gethostname(), statuses=statuses
    )
