"""The GPU check's CPU dry run: every step of ``benchmarks/gpu_check.py`` runs and writes its JSON,
so the one command a scarce GPU gets cannot rot between GPU runs. Also what ``make gpu-wheels``
would carry to a node."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("gpu-check")
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return done, out


def test_every_step_of_the_dry_run_runs_and_writes_its_figures(dry_run) -> None:
    done, out = dry_run
    summary = json.loads((out / "summary.json").read_text())
    steps = summary["steps"]
    assert list(steps) == ["gpu_tests", "overhead", "throughput", "cells", "nasoa_steptime", "trnas_memory", "xdist"]
    failed = {name: st for name, st in steps.items() if st["status"] != "ok"}
    assert not failed and done.returncode == 0, (failed, done.stdout[-3000:], done.stderr[-3000:])
    for name in steps:
        record = json.loads((out / f"{name}.json").read_text())
        assert record["status"] == "ok" and record["wall_s"] >= 0 and record["figures"]
    assert summary["dry_run"] is True and summary["device"] == "cpu"
    table = (out / "summary.md").read_text()
    assert "dry run" in table and all(f"| {name} | ok |" in table for name in steps)


def test_the_dry_run_measures_what_the_gpu_run_reports(dry_run) -> None:
    _, out = dry_run
    fig = {name: json.loads((out / f"{name}.json").read_text())["figures"] for name in ("overhead", "throughput")}
    assert fig["overhead"]["resnet18"]["overhead_ratio_median"] > 0
    tp = fig["throughput"]["resnet18"]
    assert tp["engine_images_per_s"] > 0 and tp["plain_images_per_s"] > 0 and tp["train_step_gflop"] > 0
    cells = json.loads((out / "cells.json").read_text())["figures"]
    assert set(cells["statuses"].values()) == {"ok"} and cells["false_alerts_count"] == 0
    assert (out / "speed-reference.json").exists()
    steptime = json.loads((out / "nasoa_steptime.json").read_text())["figures"]
    assert [p["ours"] for p in steptime["pairs"]] == ["etnas_d"] and steptime["pairs"][0]["paper_ratio"] > 2
    memory = json.loads((out / "trnas_memory.json").read_text())["figures"]
    assert memory["original"]["status"] == memory["tr5_5"]["status"] == "ok"
    assert memory["mem_act_mib_original_to_tr_ratio"] > 0
    xdist = json.loads((out / "xdist.json").read_text())["figures"]
    assert xdist["differing_metrics"] == [] and {w for w, _ in xdist["workers_devices"]} == {"gw0", "gw1"}


def test_a_step_that_fails_is_recorded_and_the_rest_still_run(tmp_path: Path) -> None:
    """A failure must not stop the check: a scarce GPU run should bring back every other figure."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)

    def boom(self) -> dict:
        raise RuntimeError("planted failure")

    original = gpu_check.Check.overhead
    gpu_check.Check.overhead = boom  # type: ignore[method-assign]
    try:
        rc = gpu_check.main(["--dry-run", "--out", str(tmp_path), "--steps", "overhead,nasoa_steptime"])
    finally:
        gpu_check.Check.overhead = original  # type: ignore[method-assign]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert rc == 1 and summary["steps"]["overhead"]["status"] == "failed"
    assert "planted failure" in summary["steps"]["overhead"]["error"]
    assert summary["steps"]["nasoa_steptime"]["status"] == "ok"
    assert "traceback" in json.loads((tmp_path / "overhead.json").read_text())


def test_steps_past_the_deadline_are_recorded_as_skipped(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(tmp_path),
         "--budget-s", "0", "--steps", "overhead,xdist"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    steps = json.loads((tmp_path / "summary.json").read_text())["steps"]
    assert done.returncode == 1 and {st["status"] for st in steps.values()} == {"skipped"}
    assert "out of time" in steps["xdist"]["reason"]


def test_gpu_wheels_carries_what_the_node_lacks_and_never_torch() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_wheels
    finally:
        sys.path.pop(0)
    wanted = gpu_wheels.missing()
    assert {"sqlite-utils", "datasette", "submitit"} <= set(wanted)
    assert not {"torch", "torchvision", "numpy", "pandas", "scipy", "pytest"} & set(wanted)
    assert not any(n.startswith("nvidia-") for n in wanted)


def test_cell_comparison_ignores_time_and_memory_not_counts():
    """The a/b and serial/parallel cell comparisons drop what measures the run (by unit token),
    never a count that merely contains ``_s`` (``target_reached_steps``, ``search_updates``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    timing = ("search_s", "train_step_ms_median", "search_action_stop_s", "train_peak_alloc_mib", "wall_s")
    kept = ("target_reached_steps", "search_updates", "test_top1_pct", "search_stopped_steps", "rank_spearman_rho")
    assert all(module._is_timing(m) for m in timing)
    assert not any(module._is_timing(m) for m in kept)
