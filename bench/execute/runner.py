"""``run_cell(spec) -> CellResult``: the unit that pytest, xdist workers and cluster jobs call.

It imports no pytest. In order: resolve the method and its config, pick the device,
apply the mode's determinism flags, seed python/numpy/torch, load the data splits onto
the device, build the ``Task``, then run ``method.fit`` under memory measurement and
``method.evaluate`` on val and test. Everything is timed per stage.

Failure is a result: an exception becomes a ``failed`` row with the error's type,
message and where it was raised; a CUDA out-of-memory becomes ``oom`` with the batch
size and the memory held at failure; a non-finite loss becomes ``diverged``; a device
that does not exist here (``--bench-device cuda`` on a CPU machine) becomes ``skipped``. Bad input
(unknown names, invalid config) is not a result: it raises before anything runs.
"""

from __future__ import annotations

import math
import os
import random
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bench.contract.cell import CellResult, CellSpec
from bench.contract.config import make_config
from bench.contract.interface import EVAL_KEYS, Fitted, Task, TaskSettings
from bench.contract.recorder import Recorder
from bench.env import arithmetic, utc_now
from bench.errors import DeviceUnavailable, Diverged
from bench.measure import MemoryMeter, collect_garbage, count_params, inference_flops_per_sample
from bench.models.pretrain import warm_source
from bench.registry import METHODS

ERROR_CHARS = 2000


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first CUDA device when available, else CPU; otherwise as named."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(
            f"device '{name}' requested but CUDA is not available here; use --bench-device cpu or auto"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceUnavailable(f"device '{name}' requested but only {torch.cuda.device_count()} GPU(s) are visible")
    return device


def apply_mode(mode: str) -> None:
    """Accuracy mode: deterministic algorithms, no cuDNN autotune. Speed mode: autotune on."""
    if mode not in ("accuracy", "speed"):
        raise ValueError(f"mode must be 'accuracy' or 'speed', got {mode!r}")
    accuracy = mode == "accuracy"
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(accuracy, warn_only=True)
    torch.backends.cudnn.deterministic = accuracy
    torch.backends.cudnn.benchmark = not accuracy


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve(spec: CellSpec) -> tuple[type, Any, TaskSettings]:
    """Method class, its config and the task settings of ``spec``; raises on bad input."""
    cls = METHODS.get(spec.method)
    return cls, make_config(cls.Config, spec.config), make_config(TaskSettings, spec.task_settings)


def build_task(spec: CellSpec, settings: TaskSettings, device: torch.device) -> Task:
    from bench.data.registry import load_splits

    train, val, test = load_splits(
        spec.dataset,
        seed=spec.seed,
        input_size=settings.input_size,
        val_frac=settings.val_frac,
        test_frac=settings.test_frac,
        train_limit=settings.train_limit,
        split=settings.split,
        data_root=spec.data_root,
        download=spec.download,
        device=device,
    )
    return Task(
        dataset=spec.dataset,
        model=spec.model,
        num_classes=train.num_classes,
        seed=spec.seed,
        tier=spec.tier,
        device=device,
        settings=settings,
        train=train,
        val=val,
        test=test,
        data_root=spec.data_root,
        download=spec.download,
    )


def run_cell(spec: CellSpec, *, progress: Callable[[str], None] | None = None) -> CellResult:
    """Run one cell and return its result; see the module docstring."""
    cls, config, settings = resolve(spec)
    try:
        device = resolve_device(spec.device)
    except DeviceUnavailable as err:
        now = utc_now()
        return CellResult(
            spec=spec, status="skipped", error_type=type(err).__name__, error=str(err), started_at=now, ended_at=now
        )
    if spec.threads:
        torch.set_num_threads(spec.threads)
    apply_mode(spec.mode)
    seed_everything(spec.seed)
    rec = Recorder(device, progress=progress, label=spec.test_id)
    rec.note("arithmetic", arithmetic(device))
    started, t0 = utc_now(), time.perf_counter()
    status, error_type, error, arch = "ok", "", "", ""
    try:
        arch = _fit_and_evaluate(cls(config), spec, settings, device, rec)
    except Diverged as err:
        status, error_type, error = "diverged", type(err).__name__, str(err)
    except (torch.cuda.OutOfMemoryError, MemoryError) as err:  # a CPU allocation failure is an oom too
        status, error_type = "oom", type(err).__name__
        error = _oom_message(err, rec, device)
    except Exception as err:  # noqa: BLE001 - a failing cell is a result, the grid goes on
        status, error_type, error = "failed", type(err).__name__, _describe(err)
    finally:
        collect_garbage()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    metrics = rec.finalize()
    return CellResult(
        spec=spec,
        status=status,
        error_type=error_type,
        error=error[:ERROR_CHARS],
        metrics=metrics,
        series=dict(rec.series),
        arch=arch,
        info=rec.info,
        device=str(device),
        worker=os.environ.get("PYTEST_XDIST_WORKER", ""),
        started_at=started,
        ended_at=utc_now(),
        wall_s=time.perf_counter() - t0,
    )


def _fit_and_evaluate(method: Any, spec: CellSpec, settings: TaskSettings, device: torch.device, rec: Recorder) -> str:
    with rec.stage("data"):
        task = build_task(spec, settings, device)
    with rec.stage("source"):
        warmed = warm_source(task)
    if warmed is not None and not warmed["cache_hit"]:
        rec.scalar("pretrain_s", warmed["pretrain_s"])
    with MemoryMeter(device) as mem, rec.stage("fit"):
        fitted = method.fit(task, rec)
    rec.scalars(mem.result())
    if not isinstance(fitted, Fitted):
        raise TypeError(f"{spec.method}.fit must return a Fitted, got {type(fitted).__name__}")
    _record_source(task, rec)
    with rec.stage("eval"):
        for split in (task.val, task.test):
            scores = method.evaluate(fitted, split)
            missing = [k for k in EVAL_KEYS if k not in scores]
            if missing:
                raise KeyError(f"{spec.method}.evaluate did not return {missing}")
            for key, value in scores.items():
                rec.scalar(f"{split.name}_{key}", value)
            for key in EVAL_KEYS:  # a blow-up on the last step shows only here, after training
                if not math.isfinite(float(scores[key])):
                    raise Diverged(-1, float(scores[key]), stage=f"evaluation of {split.name} ({key})")
    rec.scalar("total_params", count_params(fitted.model)[1])
    example, _ = task.test.batch(slice(0, 1))
    rec.scalar("infer_mflop_per_sample", inference_flops_per_sample(fitted.model, example) / 1e6)
    return fitted.arch


def _record_source(task: Task, rec: Recorder) -> None:
    meta = task.info.get("source")
    if not meta:
        return
    rec.note("source", {k: v for k, v in meta.items() if k not in ("path", "cache_hit")})
    if "source_test_top1_pct" in meta:
        rec.scalar("source_test_top1_pct", meta["source_test_top1_pct"])


def _describe(err: BaseException) -> str:
    """``message (at file:line in function)`` for the innermost frame of the error."""
    frames = traceback.extract_tb(err.__traceback__)
    where = ""
    if frames:
        last = frames[-1]
        where = f" (at {os.path.relpath(last.filename)}:{last.lineno} in {last.name})"
    return f"{err}{where}"


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _oom_message(err: BaseException, rec: Recorder, device: torch.device) -> str:
    batch = rec.info.get("batch_size", "?")
    if device.type == "cuda":
        alloc = torch.cuda.memory_allocated(device) / 2**20
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        rec.scalar("oom_alloc_mib", alloc)
        rec.scalar("oom_peak_alloc_mib", peak)
        return (
            f"CUDA out of memory at batch size {batch}: {alloc:.0f} MiB allocated, "
            f"{peak:.0f} MiB peak at failure. {str(err).splitlines()[0]}"
        )
    rss = _rss_mib()
    return f"out of memory on {device.type} at batch size {batch} ({rss:.0f} MiB resident): {err or type(err).__name__}"
