"""pytest plugin: ``--bench-*`` options, grid parametrisation, and the single database writer.

A suite module defines ``GRID = Grid(...)`` and a test taking the ``bench_cell`` fixture::

    def test_cell(bench_cell):
        result = bench_cell.run()
        assert result.ok, result.error

``pytest_generate_tests`` expands ``GRID`` at the chosen tier into one test per cell
with a readable id (``last_k-uci-digits-resnet18-s0``); an invalid grid is a collection
error. ``bench_cell.run()`` calls ``run_cell`` and attaches the result to the test
report. The process that owns the session (the xdist controller, or the only process)
writes each report's result to SQLite as it arrives, so an interrupted suite keeps
every finished row; workers never open the database for writing. With
``--bench-resume`` cells that already have an ``ok`` row are skipped.

Under xdist each worker is pinned to one GPU through ``CUDA_VISIBLE_DEVICES`` before
CUDA starts (round-robin over the controller's visible GPUs). Where the
pytest-benchmark fixture is active (it disables itself under xdist), the cell also runs
through ``benchmark.pedantic`` with its metrics in ``extra_info``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.contract.cell import CellResult, CellSpec
from bench.execute.gpus import gpu_for_worker, visible_gpus
from bench.execute.grid import TIERS, Grid, parse_seeds

RESULT_PROPERTY = "bench_result"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bench", "architecture-aware fine-tuning benchmark harness")
    group.addoption("--bench-db", default="results.db", help="SQLite file the results go to (default: results.db)")
    group.addoption("--bench-budget", default="smoke", choices=TIERS, help="budget tier of the suites (default: smoke)")
    group.addoption("--bench-device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    group.addoption("--bench-seeds", default=None, help="seeds to run instead of the suite's: '0,1,2' or '0-4'")
    group.addoption(
        "--bench-datasets",
        default=None,
        help="run only these of the tier's datasets: 'cifar10' or 'cifar10,tiny-imagenet'",
    )
    group.addoption("--bench-data-root", default=None, help="folder holding torchvision datasets")
    group.addoption("--bench-download", action="store_true", help="allow downloading datasets and weights")
    group.addoption("--bench-resume", action="store_true", help="skip cells that already have an ok row in --bench-db")
    group.addoption(
        "--bench-mode",
        default="accuracy",
        choices=("accuracy", "speed"),
        help="accuracy: deterministic kernels; speed: cudnn.benchmark (for timing gates)",
    )
    group.addoption(
        "--bench-tag",
        default=None,
        help="label stored on the run (e.g. main, nightly); bench gate can select 'tag:NAME'",
    )
    group.addoption(
        "--bench-threads", type=int, default=None, help="torch CPU threads per process (default: cores / xdist workers)"
    )


class ResultWriter:
    """The session's single database writer, registered only in the controlling process.

    It opens the store and starts a ``runs`` row when the first result arrives (so a
    pytest session without bench cells never creates a database) and writes each
    result in its own transaction as its report arrives.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.db_path = Path(config.getoption("bench_db"))
        self.store: Any = None
        self.run_id: str | None = None
        self.heartbeat: Any = None
        self.statuses: dict[str, int] = {}
        self.claims: list = []

    def write(self, result: CellResult) -> None:
        if self.store is None:
            from bench.execute.run import open_run
            from bench.results.store import Store

            opt = self.config.getoption
            self.store = Store(self.db_path)
            self.run_id = open_run(
                self.store,
                argv=sys.argv,
                tier=opt("bench_budget"),
                mode=opt("bench_mode"),
                device=opt("bench_device"),
                threads=result.spec.threads,
                tag=opt("bench_tag"),
                arith_json=result.info.get("arithmetic"),
            )
            from bench.execute.heartbeat import Heartbeat

            self.heartbeat = Heartbeat(self.db_path, self.run_id).start()
        self.store.write_result(self.run_id, result)
        self.statuses[result.status] = self.statuses.get(result.status, 0) + 1

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == RESULT_PROPERTY:
                self.write(CellResult.from_json(value))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.store is not None:
            interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
            self.store.finish_run(self.run_id, "interrupted" if interrupted else "finished")
            self.store.close()
            if not interrupted:
                from bench.cli.claims import evaluate_db

                self.claims = evaluate_db(self.db_path)  # keep the claims table current

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.statuses:
            return
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()))
        terminalreporter.write_sep("-", "bench")
        terminalreporter.write_line(
            f"{sum(self.statuses.values())} cells written to {self.db_path} (run {self.run_id}): {counts}"
        )
        if self.claims:
            from bench.results.claims import tally

            terminalreporter.write_line(f"claims: {tally(self.claims)} (bench claims --db {self.db_path})")
        terminalreporter.write_line(f"summary: bench report --db {self.db_path}")


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs CUDA; skipped cleanly without it")
    if _is_worker(config):
        gpu = gpu_for_worker(config.workerinput.get("workerid", ""), config.workerinput.get("bench_gpus", []))
        if gpu is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    else:
        config.pluginmanager.register(ResultWriter(config), "bench-writer")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller hook: hand every worker the GPU list before it starts CUDA."""
    if node.config.getoption("bench_device") in ("auto", "cuda"):
        node.workerinput["bench_gpus"] = visible_gpus()


def _threads(config: pytest.Config) -> int:
    explicit = config.getoption("bench_threads")
    if explicit is not None:
        return explicit
    workers = int(config.workerinput.get("workercount", 1)) if _is_worker(config) else 1
    return max(1, (os.cpu_count() or 1) // workers) if workers > 1 else 0


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bench_spec" not in metafunc.fixturenames:
        return
    grid = getattr(metafunc.module, "GRID", None)
    if not isinstance(grid, Grid):
        raise pytest.UsageError(
            f"{metafunc.module.__name__}: a test using bench_cell needs a module-level "
            "GRID = bench.execute.grid.Grid(...)"
        )
    opt = metafunc.config.getoption
    seeds = parse_seeds(opt("bench_seeds")) if opt("bench_seeds") is not None else None  # "" is an error
    datasets = opt("bench_datasets")
    only = [d.strip() for d in datasets.split(",") if d.strip()] if datasets is not None else None
    specs = grid.cells(
        opt("bench_budget"),
        seeds=seeds,
        device=opt("bench_device"),
        mode=opt("bench_mode"),
        data_root=opt("bench_data_root"),
        download=opt("bench_download"),
        threads=_threads(metafunc.config),
        only_datasets=only,
    )
    metafunc.parametrize("bench_spec", specs, ids=[s.test_id for s in specs])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("bench_resume"):
        return
    db = Path(config.getoption("bench_db"))
    if not db.exists():
        return
    from bench.results.store import Store

    with Store(db, readonly=True) as store:
        done = store.ok_cell_keys()
    for item in items:
        spec = getattr(item, "callspec", None) and item.callspec.params.get("bench_spec")
        if isinstance(spec, CellSpec) and spec.cell_key in done:
            item.add_marker(pytest.mark.skip(reason=f"resume: already ok in {db}"))


class BenchCell:
    """The ``bench_cell`` fixture: one grid cell, runnable once."""

    def __init__(self, request: pytest.FixtureRequest, spec: CellSpec) -> None:
        self.spec = spec
        self._request = request
        self.result: CellResult | None = None

    def run(self) -> CellResult:
        """Run the cell (through pytest-benchmark when active) and hand the result to the writer."""
        if self.result is not None:
            raise RuntimeError("bench_cell.run() may be called once per test")
        from bench.execute.runner import run_cell

        bm = self._benchmark()
        if bm is not None:
            result = bm.pedantic(run_cell, args=(self.spec,), rounds=1, iterations=1, warmup_rounds=0)
            bm.extra_info.update({k: float(v) for k, v in result.metrics.items()})
            bm.extra_info["status"] = result.status
        else:
            result = run_cell(self.spec)
        self.result = result
        self._request.node.user_properties.append((RESULT_PROPERTY, result.to_json()))
        if result.status == "skipped":
            pytest.skip(result.error)  # the row is written all the same, with its reason
        return result

    def _benchmark(self) -> Any:
        config = self._request.config
        if (
            not config.pluginmanager.hasplugin("benchmark")
            or config.getoption("benchmark_skip", False)
            or config.getoption("benchmark_disable", False)
            or _is_worker(config)
            or config.getoption("dist", "no") != "no"
        ):
            return None  # pytest-benchmark switches itself off under xdist: do not even request it
        bm = self._request.getfixturevalue("benchmark")
        return None if getattr(bm, "disabled", True) else bm


@pytest.fixture
def bench_cell(request: pytest.FixtureRequest, bench_spec: CellSpec) -> BenchCell:
    return BenchCell(request, bench_spec)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``gpu`` skip cleanly where CUDA is absent."""
    if item.get_closest_marker("gpu") is not None:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)")
