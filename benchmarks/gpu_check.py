"""`make gpu-check`: one prepared command that proves the GPU path on a scarce GPU.

GPU time is scarce and GPU nodes are often offline, so everything the harness does on CUDA is
checked by one command that fits in 8 minutes on one H200 with room for a rerun. Each step is
timed, writes its figures as ``<step>.json`` under ``--out`` (``GPU_CHECK_OUT`` in the Makefile),
and a failure is recorded (status, error, traceback) without stopping the steps after it; a
step that would start past the deadline is recorded as skipped. ``summary.json`` and
``summary.md`` hold every step's status, time and headline figures.

Steps, in order:

- ``gpu_tests``: ``pytest tests -m gpu`` (tests/test_gpu.py and the CUDA parts of the others);
- ``overhead``: the engine against a bare loop (``benchmarks/overhead.py``), ResNet-18 and
  ResNet-50 at 224 px, batch 256, bf16 + channels_last; the ratio over ABBA repeats, with its
  spread (min, max);
- ``throughput``: the engine beside the best plain-PyTorch recipe for the same model and batch
  (a bare loop with ``torch.compile``, fused SGD, bf16 autocast, channels_last: airbench's and
  timm's benchmark recipe), images/s and the ratio, and the model FLOP utilisation (FLOPs of
  a training step from the harness's counter / step time / the GPU's dense bf16 peak);
- ``cells``: one smoke cell of each method family on the device in speed mode, written to
  ``cells.db``; then the same cells again, and ``bench gate`` of the second run against the
  first: its regressions on identical code are false alerts (the figure to report). The first
  run is also exported as ``speed-reference.json``, a speed-mode gate reference;
- ``nasoa_steptime``: NASOA's Table 2 training step times (speed mode, batch 64, 224 px) for the
  ET-NAS models and the RegNetY / EfficientNet / MobileNet / MnasNet rows, the paper's V100
  times and the ratios to ET-NAS beside ours;
- ``trnas_memory``: Tr-NAS training memory, Original vs Tr-Net-5-5 NB201 networks, fp32,
  batch 256, 32 px: peak allocated (the allocator), the time-averaged allocated memory
  (sampled every millisecond during training) and saved activations, with the ratios;
- ``xdist``: two smoke cells with ``-n 2`` on one GPU and serially: both workers ran on the
  GPU, and every non-timing metric equals the serial run's.

``--dry-run`` runs every step at tiny shapes on the CPU (``make test`` does, so the script
cannot rot between GPU runs): the same code paths, figures that mean nothing.

    python benchmarks/gpu_check.py --out gpu-check            # on a CUDA machine
    python benchmarks/gpu_check.py --dry-run --out /tmp/gc    # anywhere, in about a minute
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import json
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets, by a
# substring of torch.cuda.get_device_name(); MFU is left out for a GPU not listed.
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.0}

# NASOA Table 2 (001_5ac3307e6bfdd113.txt): training step ms on one V100, batch 64, 224 px.
TABLE2_STEP_MS = {
    "etnas_d": 36.30,
    "tv:regnet_y_400mf": 90.61,
    "tv:mobilenet_v3_large": 71.65,
    "tv:mnasnet1_0": 125.1,
    "etnas_e": 61.95,
    "tv:efficientnet_b0": 120.29,
    "tv:regnet_y_1_6gf": 170.96,
    "etnas_f": 93.04,
    "tv:efficientnet_b2": 277.60,
    "tv:regnet_y_16gf": 677.68,
    "etnas_g": 133.97,
    "etnas_h": 193.40,
    "tv:efficientnet_b3": 455.86,
    "etnas_i": 265.13,
    "etnas_j": 370.28,
    "etnas_l": 542.52,
}
# The paper's comparisons at equal accuracy (ours, baseline): its claims nasoa-step-G/I.
TABLE2_PAIRS = (
    ("etnas_d", "tv:regnet_y_400mf"),
    ("etnas_e", "tv:efficientnet_b0"),
    ("etnas_f", "tv:regnet_y_1_6gf"),
    ("etnas_g", "tv:regnet_y_16gf"),
    ("etnas_g", "tv:efficientnet_b2"),
    ("etnas_i", "tv:efficientnet_b3"),
)

# One smoke cell of each method family (seed 0).
FAMILY_CELLS = {
    "baselines": "suites/test_baselines.py::test_cell[scratch-uci-digits-resnet18-s0]",
    "two_stage": "suites/test_two_stage.py::test_cell[two_stage:small-uci-digits-resnet18-s0]",
    "nasoa": "suites/test_nasoa.py::test_cell[nasoa:gen-t0-lfw-faces-etnas_a-s0]",
    "trnas": "suites/test_trnas.py::test_cell[trnas_memory:net_tr_5_5-uci-digits-resnet32-s0]",
    "proxyless": "suites/test_proxyless.py::test_cell[adapt_cell-uci-digits-resnet20_cells-s0]",
    "simclr": "suites/test_proxyless_ssl.py::test_cell[simclr-uci-digits-darts_v2_8-s0]",
}
XDIST_CELLS = (
    "suites/test_baselines.py::test_cell[scratch-uci-digits-resnet18-s0]",
    "suites/test_baselines.py::test_cell[scratch-uci-digits-resnet18-s1]",
)
# Metrics that measure time, memory or the process, not what was computed: they may differ between
# runs. By unit token (bench.contract.units: ``search_s``, ``train_step_ms_median``, ``*_mib``), so
# ``target_reached_steps`` or ``search_updates`` are compared; plus names that say so whatever the unit.
_PROCESS_UNITS = ("ms", "s", "mib")
_PROCESS_TOKENS = ("peak", "rss", "wall", "throughput", "images")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The shapes each step runs at: the check's on a GPU, tiny ones for the CPU dry run."""

    overhead_models: tuple[str, ...] = ("resnet18", "resnet50")
    width: float = 1.0
    size: int = 224
    batch: int = 256
    steps: tuple[int, int] = (5, 25)
    repeats: int = 3
    throughput_models: tuple[str, ...] = ("resnet50",)
    throughput_steps: int = 30
    compile_backend: str = "inductor"
    families: tuple[str, ...] = tuple(FAMILY_CELLS)
    table2_models: tuple[str, ...] = tuple(TABLE2_STEP_MS)
    table2_size: int = 224
    table2_batch: int = 64
    table2_steps: int = 10
    xdist_cells: tuple[str, ...] = XDIST_CELLS
    memory: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"archs": 8, "input_size": 32, "N": 5, "train.batch_size": 256, "train.steps": 3}
    )


DRY = Sizes(
    overhead_models=("resnet18",),
    width=0.125,
    size=16,
    batch=8,
    steps=(2, 4),
    repeats=1,
    throughput_models=("resnet18",),
    throughput_steps=4,
    compile_backend="eager",
    families=("baselines",),
    xdist_cells=tuple(c.replace("uci-digits", "lfw-faces") for c in XDIST_CELLS),
    table2_models=("etnas_d", "tv:regnet_y_400mf"),
    table2_size=32,
    table2_batch=2,
    table2_steps=2,
    memory={"archs": 1, "input_size": 16, "N": 5, "train.batch_size": 8, "train.steps": 1},
)


# ----------------------------------------------------------------------------------- helpers


def _overhead_module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_overhead", ROOT / "benchmarks" / "overhead.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pytest_cmd(*args: str) -> list[str]:
    """``python -m pytest`` with the harness plugin loaded: from its entry point where archbench
    is installed, else named with ``-p`` (a GPU node that runs the checkout from PYTHONPATH)."""
    installed = any(ep.name == "bench" for ep in importlib.metadata.entry_points(group="pytest11"))
    plugin = () if installed else ("-p", "bench.execute.plugin")
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *plugin, *args]


def _run(cmd: list[str], log: Path, timeout_s: float, env: dict[str, str] | None = None) -> int:
    """Run ``cmd`` in the project root, its output to ``log``; the exit status (124: timed out).

    The child is its own pytest session even when this runs inside one (``make test``'s dry run
    under xdist): the worker variables would make the harness's plugin act as a worker."""
    env = {k: v for k, v in (env or os.environ).items() if not k.startswith(("PYTEST_XDIST_", "PYTEST_CURRENT"))}
    with open(log, "w") as out:
        try:
            return subprocess.run(
                cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s, env=env, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            out.write(f"\n[gpu-check] timed out after {timeout_s:.0f} s\n")
            return 124


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_timing(metric: str) -> bool:
    from bench.contract.units import unit_of

    return unit_of(metric) in _PROCESS_UNITS or any(t in _PROCESS_TOKENS for t in metric.split("_"))


def _rows(db: Path, tag: str) -> dict[str, dict[str, float | None]]:
    """``test_id``-like key -> non-timing metrics of the cells of the newest run tagged ``tag``."""
    con = sqlite3.connect(db)
    try:
        run = con.execute("SELECT run_id FROM runs WHERE tag = ? ORDER BY started_at DESC LIMIT 1", [tag]).fetchone()
        if run is None:
            return {}
        out: dict[str, dict[str, float | None]] = {}
        for rid, key, status in con.execute(
            "SELECT result_id, variant || '-' || dataset || '-' || model || '-s' || seed, status"
            " FROM results WHERE run_id = ?",
            [run[0]],
        ):
            metrics = dict(con.execute("SELECT name, value FROM metrics WHERE result_id = ?", [rid]).fetchall())
            out[key] = {"status": status, **{k: v for k, v in metrics.items() if not _is_timing(k)}}  # type: ignore[dict-item]
        return out
    finally:
        con.close()


# ------------------------------------------------------------------------------------- steps


class Check:
    """The steps, sharing the device, the sizes, the output folder and the deadline."""

    def __init__(self, device: str, sizes: Sizes, out: Path, deadline: float) -> None:
        import torch

        self.device = torch.device(device)
        self.sizes, self.out, self.deadline = sizes, out, deadline
        self.cuda = self.device.type == "cuda"

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def gpu_tests(self) -> dict[str, Any]:
        import xml.etree.ElementTree as ET

        junit = self.out / "gpu-tests.xml"
        rc = _run(
            _pytest_cmd("tests", "-m", "gpu", "-q", "-rfEs", f"--junitxml={junit}"),
            self.out / "gpu-tests.log",
            max(30.0, self.left_s() - 60),
        )
        suite = ET.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite[0]
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        failed = [
            f"{case.get('classname')}::{case.get('name')}"
            for case in suite.iter("testcase")
            if case.find("failure") is not None or case.find("error") is not None
        ]
        return {
            "exit_status": rc,
            **counts,
            "passed": counts["tests"] - sum(counts[k] for k in counts if k != "tests"),
            "failed_tests": failed,
            "ok": rc in (0, 5) and not failed,
        }  # 5: nothing collected

    def overhead(self) -> dict[str, Any]:
        import torch

        from bench import engine
        from bench.models.net import build_model

        ov, s = _overhead_module(), self.sizes
        split = ov.make_split(s.batch * 4, s.size, self.device)
        cfg = engine.TrainConfig(batch_size=s.batch, lr=0.01, log_every=50)  # bf16 + channels_last on CUDA
        figures: dict[str, Any] = {}
        for name in s.overhead_models:
            torch.manual_seed(0)
            init = build_model(name, num_classes=10, width=s.width).state_dict()

            def fresh(name: str = name, init: dict = init) -> torch.nn.Module:
                model = build_model(name, num_classes=10, width=s.width)
                model.load_state_dict(init)
                return model.to(self.device)

            def per_step_ms(loop: Callable[..., float]) -> float:
                n1, n2 = s.steps
                return (loop(fresh(), split, cfg, n2) - loop(fresh(), split, cfg, n1)) / (n2 - n1) * 1e3

            ratios, bare, harness = [], [], []
            with engine.speed_mode():
                for _ in range(s.repeats):  # ABBA: bare, harness, harness, bare
                    loops = (ov.bare_loop, ov.harness_loop, ov.harness_loop, ov.bare_loop)
                    b1, h1, h2, b2 = (per_step_ms(loop) for loop in loops)
                    bare.append((b1 + b2) / 2)
                    harness.append((h1 + h2) / 2)
                    ratios.append(harness[-1] / bare[-1])
            figures[name] = {
                "bare_step_ms_median": statistics.median(bare),
                "harness_step_ms_median": statistics.median(harness),
                "overhead_ratio_median": statistics.median(ratios),
                "overhead_ratio_min": min(ratios),
                "overhead_ratio_max": max(ratios),
                "repeats": s.repeats,
                "target_ratio_max": 1.02,
            }
        return {"width": s.width, "size_px": s.size, "batch": s.batch, "bf16_channels_last": self.cuda, **figures}

    def throughput(self) -> dict[str, Any]:
        import torch

        from bench import engine
        from bench.contract.recorder import Recorder
        from bench.models.cost import model_step_count
        from bench.models.net import build_model

        ov, s = _overhead_module(), self.sizes
        split = ov.make_split(s.batch * 4, s.size, self.device)
        peak = self._bf16_peak_tflops()
        figures: dict[str, Any] = {"bf16_peak_tflops": peak, "compile_backend": s.compile_backend}
        for name in s.throughput_models:
            torch.manual_seed(0)
            model = build_model(name, num_classes=10, width=s.width).to(self.device)
            with engine.speed_mode():
                bare_ms, compile_s = _plain_recipe_ms(
                    split, s.batch, model, s.throughput_steps, s.compile_backend, self.device
                )
            del model
            engine_cfg = engine.TrainConfig(batch_size=s.batch, lr=0.01, steps=s.throughput_steps + 3, log_every=1000)
            if "compile" in engine.TrainConfig.__dataclass_fields__:
                engine_cfg = dataclasses.replace(engine_cfg, compile=True)  # type: ignore[call-arg]
            torch.manual_seed(0)
            net = build_model(name, num_classes=10, width=s.width).to(self.device)
            rec = Recorder(self.device, progress=lambda _m: None)
            with engine.speed_mode(), _compile_backend(s.compile_backend):
                engine.fit(net, split, engine_cfg, rec)
            metrics = rec.finalize()
            engine_ms = metrics.get("train_step_ms_median", math.nan)
            flops = model_step_count(name, s.width, s.size, s.batch, 10).flops
            figures[name] = {
                "plain_compiled_step_ms": bare_ms,
                "plain_compile_s": compile_s,
                "plain_images_per_s": s.batch / bare_ms * 1e3,
                "engine_step_ms": engine_ms,
                "engine_images_per_s": s.batch / engine_ms * 1e3,
                "engine_to_plain_throughput_ratio": bare_ms / engine_ms,
                "engine_compiled": "compile" in engine.TrainConfig.__dataclass_fields__,
                "train_step_gflop": flops / 1e9,
                "engine_mfu_frac": (flops / (engine_ms / 1e3) / (peak * 1e12)) if peak else None,
                "plain_mfu_frac": (flops / (bare_ms / 1e3) / (peak * 1e12)) if peak else None,
                "engine_recompiles_count": metrics.get("train_compile_recompiles_count"),
                "target_ratio_min": 0.95,
            }
        return figures

    def _bf16_peak_tflops(self) -> float | None:
        import torch

        if not self.cuda:
            return None
        name = torch.cuda.get_device_name(self.device)
        return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)

    def cells(self) -> dict[str, Any]:
        db = self.out / "cells.db"
        ids = [FAMILY_CELLS[f] for f in self.sizes.families]
        env = {**os.environ, "BENCH_CACHE_DIR": str(self.out / "cache")}
        runs = {}
        for tag in ("gpu-check-a", "gpu-check-b"):
            t0 = time.monotonic()
            rc = _run(
                _pytest_cmd(
                    *ids,
                    "--bench-budget",
                    "smoke",
                    "--bench-mode",
                    "speed",
                    "--bench-device",
                    str(self.device),
                    "--bench-db",
                    str(db),
                    "--bench-tag",
                    tag,
                    "-q",
                    "-rfE",
                ),
                self.out / f"cells-{tag}.log",
                max(30.0, self.left_s() - 30),
                env,
            )
            runs[tag] = {"exit_status": rc, "wall_s": time.monotonic() - t0, "cells": _rows(db, tag)}
        gate_json = self.out / "gate.json"
        gate_rc = _run(
            [
                sys.executable,
                "-m",
                "bench.cli.dispatch",
                "gate",
                "--baseline",
                f"{db}:tag:gpu-check-a",
                "--candidate",
                f"{db}:tag:gpu-check-b",
                "--json",
                str(gate_json),
                "--no-write",
            ],
            self.out / "gate.log",
            120,
        )
        gate = json.loads(gate_json.read_text()) if gate_json.exists() else {}
        _run(
            [
                sys.executable,
                "-m",
                "bench.cli.dispatch",
                "reference",
                "export",
                "--db",
                str(db),
                "--run",
                "tag:gpu-check-a",
                "-o",
                str(self.out / "speed-reference.json"),
            ],
            self.out / "export.log",
            60,
        )
        counts = gate.get("counts", {}) if isinstance(gate, dict) else {}
        statuses = {k: v["status"] for k, v in runs["gpu-check-a"]["cells"].items()}
        return {
            "families": list(self.sizes.families),
            "statuses": statuses,
            "run_a_s": runs["gpu-check-a"]["wall_s"],
            "run_b_s": runs["gpu-check-b"]["wall_s"],
            "gate_exit_status": gate_rc,
            "gate_counts": counts,
            "false_alerts_count": counts.get("regression"),  # identical code: every regression is false
            "suspect_count": counts.get("suspect"),
            "ok": all(r["exit_status"] == 0 for r in runs.values()) and gate_rc == 0,
        }

    def nasoa_steptime(self) -> dict[str, Any]:
        import torch

        from methods.nasoa.method import build_timed
        from methods.nasoa.steptime import FINETUNE, measure

        s = self.sizes
        timed = dataclasses.replace(FINETUNE, bf16=False)  # Table 2: V100 fp32 era; ours in fp32 too
        ours: dict[str, Any] = {}
        for name in s.table2_models:
            if self.left_s() < 20:
                ours[name] = {"skipped": "out of time"}
                continue
            torch.manual_seed(0)
            net = build_timed(name, 1.0)
            t = measure(
                net,
                batch=s.table2_batch,
                size=s.table2_size,
                device=self.device,
                train=timed,
                steps=s.table2_steps,
                warmup=3,
            )
            ours[name] = {
                "train_step_ms": t.step_ms,
                "infer_ms": t.infer_ms,
                "paper_v100_step_ms": TABLE2_STEP_MS[name],
                "peak_mem_mib": t.peak_mem_mib,
            }
            del net
            if self.cuda:
                torch.cuda.empty_cache()
        pairs = []
        for a, b in TABLE2_PAIRS:
            if "train_step_ms" in ours.get(a, {}) and "train_step_ms" in ours.get(b, {}):
                pairs.append(
                    {
                        "ours": a,
                        "baseline": b,
                        "ratio_baseline_to_ours": ours[b]["train_step_ms"] / ours[a]["train_step_ms"],
                        "paper_ratio": TABLE2_STEP_MS[b] / TABLE2_STEP_MS[a],
                    }
                )
        return {"batch": s.table2_batch, "size_px": s.table2_size, "precision": "fp32", "models": ours, "pairs": pairs}

    def trnas_memory(self) -> dict[str, Any]:

        from bench.execute.runner import run_cell

        figures: dict[str, Any] = {}
        for label, transfer in (
            ("original", {"transfer.enabled": False}),
            ("tr5_5", {"transfer.i": 5, "transfer.j": 5}),
        ):
            spec = _spec("trnas_memory", "resnet32", {**self.sizes.memory, **transfer}, str(self.device))
            sampler = _AllocSampler(self.device) if self.cuda else None
            with sampler if sampler is not None else contextlib.nullcontext():
                result = run_cell(spec)
            figures[label] = {
                "status": result.status,
                "error": result.error,
                "mem_peak_alloc_mib": result.metrics.get("mem_peak_alloc_mib"),
                "mem_act_mib": result.metrics.get("mem_act_mib"),
                "avg_alloc_mib": sampler.mean_mib() if sampler is not None else None,
                "samples_count": len(sampler.samples) if sampler is not None else 0,
            }
        o, t = figures["original"], figures["tr5_5"]
        for key in ("mem_peak_alloc_mib", "mem_act_mib", "avg_alloc_mib"):
            if o.get(key) and t.get(key):
                figures[f"{key}_original_to_tr_ratio"] = o[key] / t[key]
        figures["ok"] = o["status"] == t["status"] == "ok"
        figures["precision"] = "fp32"
        figures["paper"] = "Table 2 of 003_cb5dca99ce803e17.txt: average allocated memory, Original about 2x Tr-Net-5-5"
        return figures

    def xdist(self) -> dict[str, Any]:
        serial, par = self.out / "xdist-serial.db", self.out / "xdist-par.db"
        env = {**os.environ, "BENCH_CACHE_DIR": str(self.out / "cache")}
        # One torch thread in both runs: a CPU's arithmetic depends on its thread count.
        common = ("--bench-budget", "smoke", "--bench-device", str(self.device), "--bench-threads", "1", "-q")
        rc_s = _run(
            _pytest_cmd(*self.sizes.xdist_cells, *common, "--bench-db", str(serial), "--bench-tag", "serial"),
            self.out / "xdist-serial.log",
            max(30.0, self.left_s() - 20),
            env,
        )
        rc_p = _run(
            _pytest_cmd(*self.sizes.xdist_cells, *common, "-n", "2", "--bench-db", str(par), "--bench-tag", "par"),
            self.out / "xdist-par.log",
            max(30.0, self.left_s() - 10),
            env,
        )
        a, b = _rows(serial, "serial"), _rows(par, "par")
        con = sqlite3.connect(par)
        try:
            workers = con.execute("SELECT worker, device FROM results ORDER BY worker").fetchall()
        finally:
            con.close()
        differing = sorted(f"{cell}:{m}" for cell in a for m in a[cell] if cell in b and a[cell][m] != b[cell].get(m))
        return {
            "exit_status_serial": rc_s,
            "exit_status_parallel": rc_p,
            "workers_devices": [list(w) for w in workers],
            "cells_serial": len(a),
            "cells_parallel": len(b),
            "differing_metrics": differing,
            "ok": rc_s == 0
            and rc_p == 0
            and len(a) == len(b) == len(self.sizes.xdist_cells)
            and not differing
            and len({w for w, _ in workers}) == 2,
        }


@contextlib.contextmanager
def _compile_backend(backend: str) -> Any:
    """``torch.compile`` with ``backend`` while open (the engine's own compile takes none): the dry
    run's ``eager`` backend keeps inductor's minutes of C++ compiling off the CPU."""
    import functools

    import torch

    original = torch.compile
    if backend != "inductor":
        torch.compile = functools.partial(original, backend=backend)  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.compile = original  # type: ignore[assignment]


def _plain_recipe_ms(split: Any, batch: int, model: Any, steps: int, backend: str, device: Any) -> tuple[float, float]:
    """Median milliseconds per step of the best plain-PyTorch recipe (``overhead.bare_loop`` with
    ``torch.compile``, fused SGD, bf16 autocast and channels_last on CUDA), timed per step by the
    harness's ``StepTimer`` as the engine's ``train_step_ms_median`` is, and the seconds its three
    compile and warm-up steps took."""
    from bench import engine
    from bench.measure import StepTimer

    cuda = device.type == "cuda"
    warmup = 3
    cfg = engine.TrainConfig(
        batch_size=batch, lr=0.01, steps=steps + warmup, bf16=cuda, channels_last=cuda, optimizer_impl="fused"
    )
    timer = StepTimer(device, warmup=warmup)
    _overhead_module().bare_loop(model, split, cfg, steps + warmup, timer=timer, compile_backend=backend)
    times = timer.all_times_ms()
    return statistics.median(times[warmup:]), sum(times[:warmup]) / 1e3


class _AllocSampler:
    """The CUDA allocator's allocated bytes, sampled every millisecond from a thread while open:
    a time-averaged allocated memory (the paper's "average allocated"), which a peak is not."""

    def __init__(self, device: Any) -> None:
        self.device, self.samples = device, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import torch

        while not self._stop.wait(0.001):
            self.samples.append(torch.cuda.memory_allocated(self.device))

    def __enter__(self) -> _AllocSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def mean_mib(self) -> float | None:
        return statistics.fmean(self.samples) / 2**20 if self.samples else None


def _spec(method: str, model: str, config: dict[str, Any], device: str) -> Any:
    import methods  # noqa: F401 - registers the methods
    from bench.contract.cell import CellSpec
    from bench.contract.config import canonical_json, config_dict, make_config
    from bench.contract.settings import TaskSettings
    from bench.registry import METHODS

    cfg = make_config(METHODS.get(method).Config, config)
    task = make_config(TaskSettings, {"input_size": config.get("input_size", 32)})
    return CellSpec(
        suite="gpu-check",
        method=method,
        variant=method,
        dataset="uci-digits",
        model=model,
        seed=0,
        tier="smoke",
        config_json=canonical_json(config_dict(cfg)),
        task_json=canonical_json(config_dict(task)),
        device=device,
        mode="speed",
    )


STEPS = ("gpu_tests", "overhead", "throughput", "cells", "nasoa_steptime", "trnas_memory", "xdist")


def _headline(name: str, fig: dict[str, Any]) -> str:
    """One line of a step's figures for the summary table."""

    def f(v: Any, fmt: str = ".3g") -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    if name == "gpu_tests":
        bad = fig.get("failures", 0) + fig.get("errors", 0)
        return f"{fig.get('passed')} passed, {bad} failed, {fig.get('skipped')} skipped"
    if name == "overhead":
        return "; ".join(
            f"{m}: {f(v['overhead_ratio_median'], '.4f')}x"
            f" [{f(v['overhead_ratio_min'], '.4f')}, {f(v['overhead_ratio_max'], '.4f')}]"
            for m, v in fig.items()
            if isinstance(v, dict)
        )
    if name == "throughput":
        return "; ".join(
            f"{m}: engine {f(v['engine_images_per_s'], '.0f')} img/s vs plain {f(v['plain_images_per_s'], '.0f')}"
            f" ({f(v['engine_to_plain_throughput_ratio'], '.3f')}x), MFU {f(v['engine_mfu_frac'])}"
            for m, v in fig.items()
            if isinstance(v, dict)
        )
    if name == "cells":
        gate = fig.get("gate_counts")
        return f"statuses {fig.get('statuses')}; gate {gate}; false alerts {fig.get('false_alerts_count')}"
    if name == "nasoa_steptime":
        return (
            "; ".join(
                f"{p['baseline']}/{p['ours']} {f(p['ratio_baseline_to_ours'])} (paper {f(p['paper_ratio'])})"
                for p in fig.get("pairs", [])
            )
            or "no pair measured"
        )
    if name == "trnas_memory":
        return (
            f"peak {f(fig.get('mem_peak_alloc_mib_original_to_tr_ratio'))}x, average "
            f"{f(fig.get('avg_alloc_mib_original_to_tr_ratio'))}x, saved activations "
            f"{f(fig.get('mem_act_mib_original_to_tr_ratio'))}x (Original / Tr-Net-5-5)"
        )
    if name == "xdist":
        return f"workers {fig.get('workers_devices')}; differing {len(fig.get('differing_metrics', []))} metric(s)"
    return ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for the figures (created)")
    ap.add_argument("--device", default=None, help="default: cuda, or cpu with --dry-run")
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU: every step, meaningless figures")
    ap.add_argument("--budget-s", type=float, default=480.0, help="deadline for starting steps (default 480: 8 min)")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    args = ap.parse_args(argv)
    device = args.device or ("cpu" if args.dry_run else "cuda")
    chosen = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(STEPS))
    if unknown:
        ap.error(f"unknown step(s) {unknown}; valid: {', '.join(STEPS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu-check: CUDA is not available here; use --dry-run on a machine without a GPU", file=sys.stderr)
        return 2
    check = Check(device, DRY if args.dry_run else Sizes(), out, start + args.budget_s)
    summary: dict[str, Any] = {
        "device": device,
        "gpu": torch.cuda.get_device_name(check.device) if check.cuda else None,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "dry_run": args.dry_run,
        "steps": {},
    }
    for name in STEPS:
        if name not in chosen:
            continue
        record: dict[str, Any] = {"step": name}
        if check.left_s() <= 0:
            record.update(status="skipped", reason=f"out of time (budget {args.budget_s:.0f} s)")
        else:
            t0 = time.monotonic()
            try:
                figures = getattr(check, name)()
                ok = figures.pop("ok", True) if isinstance(figures, dict) else True
                record.update(status="ok" if ok else "failed", figures=figures)
            except Exception as err:  # noqa: BLE001 - recorded; the next step runs
                record.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
            record["wall_s"] = time.monotonic() - t0
        (out / f"{name}.json").write_text(json.dumps(record, indent=2, default=str))
        summary["steps"][name] = {k: record.get(k) for k in ("status", "wall_s", "reason", "error")}
        summary["steps"][name]["headline"] = _headline(name, record.get("figures", {})) if "figures" in record else ""
        print(
            f"[gpu-check] {name}: {record['status']} ({record.get('wall_s', 0):.1f} s)"
            + (f" {record.get('error')}" if record.get("error") else ""),
            flush=True,
        )
    summary["wall_s"] = time.monotonic() - start
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    lines = [
        f"# gpu-check: {summary['gpu'] or device}{' (dry run: figures mean nothing)' if args.dry_run else ''}",
        "",
        f"torch {summary['torch']}, Python {summary['python']}, {summary['wall_s']:.0f} s in all.",
        "",
        "| step | status | s | figures |",
        "|---|---|---|---|",
    ]
    for name, st in summary["steps"].items():
        detail = st.get("headline") or st.get("error") or st.get("reason") or ""
        lines.append(f"| {name} | {st['status']} | {st.get('wall_s') or 0:.1f} | {str(detail).replace('|', '/')} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(st["status"] == "ok" for st in summary["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
