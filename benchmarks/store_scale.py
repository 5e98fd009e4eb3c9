"""The store at scale: 100k result rows written through the Store API, then the time of what
a user does with them (``bench report``, ``bench gate``, the Datasette pages).

Two shapes, both 100,000 rows by default:

- ``runs``: 2,000 runs x 50 cells, the same cells re-run (a long-lived CI database): every
  latest-row view has to pick 50 rows out of 100k;
- ``cells``: 1 run x 100,000 cells (a large sweep): every row is a latest row.

Targets (issue "Nothing lost"): report and gate <= 10 s, every page < 1 s at 100k rows.

    .venv/bin/python benchmarks/store_scale.py [--shape runs|cells|both] [--rows 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.contract.cell import CellResult, CellSpec
from bench.results.store import Store, write_transaction

METHODS = ("full_ft", "last_k", "linear_probe", "scratch", "nasoa:gen-t0")
DATASETS = ("uci-digits", "mnist5k")


def cell_specs(n: int) -> list[CellSpec]:
    """``n`` distinct cells over methods x datasets x models x seeds."""
    out = []
    seed = 0
    while len(out) < n:
        for method in METHODS:
            for dataset in DATASETS:
                for model in ("resnet18", "resnet20"):
                    if len(out) < n:
                        out.append(
                            CellSpec(
                                suite="scale",
                                method=method.split(":")[0],
                                variant=method,
                                dataset=dataset,
                                model=model,
                                seed=seed,
                            )
                        )
        seed += 1
    return out


def result(spec: CellSpec, run: int, k: int) -> CellResult:
    acc = 50.0 + (hash((spec.cell_key, run)) % 4000) / 100.0
    status = "skipped" if (run + k) % 97 == 0 else "ok"
    metrics = (
        {}
        if status == "skipped"
        else {
            "test_top1_pct": acc,
            "val_top1_pct": acc - 1.0,
            "step_ms_median": 10.0 + k % 7,
            "peak_mem_mib": 100.0,
            "fit_s": 2.0,
            "test_loss_nat": 1.0,
            "val_loss_nat": 1.1,
            "trainable_params": 1000.0,
        }
    )
    series = {"train_loss_nat": [(s, 2.0 / (s + 1)) for s in range(0, 50, 10)]} if status == "ok" else {}
    stamp = f"2026-01-01T00:00:{run % 60:02d}.{run:06d}+00:00"
    return CellResult(spec=spec, status=status, metrics=metrics, series=series, started_at=stamp, ended_at=stamp)


def write(path: Path, runs: int, cells: int) -> float:
    specs = cell_specs(cells)
    t0 = time.perf_counter()
    with Store(path) as store:
        for r in range(runs):
            run_id = store.start_run({"tag": "scale", "host": f"h{r}"})
            with write_transaction(store.db):  # one transaction per run: what a suite's writer does in bulk
                for k, spec in enumerate(specs):
                    store.write_result(run_id, result(spec, r, k))
            store.finish_run(run_id)
    return time.perf_counter() - t0


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def cli(*argv: str) -> int:
    from bench.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(list(argv))


def pages(path: Path) -> dict[str, tuple[float, int]]:
    from bench.serve.app import database_name, make_datasette

    ds = make_datasette(path)
    name = database_name(path)
    urls = {
        "latest_results": f"/{name}/latest_results",
        "seed_summary": f"/{name}/seed_summary",
        "leaderboard": f"/{name}/leaderboard?suite=",
        "results (faceted)": f"/{name}/results?_facet=status&_facet=variant&_facet=dataset",
    }

    async def go() -> dict[str, tuple[float, int]]:
        await ds.invoke_startup()
        out = {}
        for label, url in urls.items():
            await ds.client.get(url)  # warm the page cache once, as a browsing user would
            t0 = time.perf_counter()
            response = await ds.client.get(url)
            out[label] = (time.perf_counter() - t0, response.status_code)
        return out

    return asyncio.run(go())


def measure(shape: str, rows: int, folder: Path) -> None:
    runs, cells = (rows // 50, 50) if shape == "runs" else (1, rows)
    path = folder / f"scale-{shape}.db"
    path.unlink(missing_ok=True)
    print(f"\n== {shape}: {runs} runs x {cells} cells = {runs * cells} rows ({path})")
    print(f"  write through Store:  {write(path, runs, cells):8.1f} s")
    seconds, code = timed(lambda: cli("report", "--db", str(path)))
    print(f"  bench report:         {seconds:8.2f} s  (exit {code})")
    seconds, code = timed(lambda: cli("gate", "--baseline", f"{path}:cells", "--candidate", f"{path}:cells"))
    print(f"  bench gate (cells):   {seconds:8.2f} s  (exit {code})")
    seconds, code = timed(lambda: cli("gate", "--baseline", f"{path}:latest", "--candidate", f"{path}:latest"))
    print(f"  bench gate (a run):   {seconds:8.2f} s  (exit {code})")
    for label, (secs, status) in pages(path).items():
        print(f"  page {label + ':':20s} {secs:6.2f} s  (HTTP {status})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=("runs", "cells", "both"), default="both")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--keep", default=None, help="folder to keep the databases in (default: a temp folder)")
    args = parser.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for shape in ("runs", "cells") if args.shape == "both" else (args.shape,):
            measure(shape, args.rows, folder)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
