"""Training-step time, inference time and peak training memory of a network (Table 2 columns).

Uses the harness's measurement module: ``StepTimer`` (CUDA events read after one
synchronise, ``perf_counter_ns`` on CPU, warm-up steps dropped) and ``MemoryMeter``.
A training step is forward + backward + SGD update on synthetic tensors; inference is a
forward under ``no_grad`` in eval mode. ``step_table`` caches per (model, width, size,
batch, device name) under ``$BENCH_CACHE_DIR/nasoa`` so the schedule generator and the
baselines plan with the same figures the step-time cells store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.measure import MemoryMeter, StepTimer, percentiles_ms


@dataclass(frozen=True)
class StepTimes:
    """Median training-step and inference ms and peak training memory (MiB over baseline)."""

    step_ms: float
    infer_ms: float
    peak_mem_mib: float


def measure(
    model: nn.Module,
    *,
    batch: int,
    size: int,
    device: torch.device,
    steps: int = 10,
    warmup: int = 3,
    num_classes: int = 1000,
    bf16: bool = False,
    memory: bool = True,
) -> StepTimes:
    """Time ``steps`` training steps and forward passes of ``model`` on synthetic data.

    ``memory=False`` skips the peak-memory meter (its ``gc.collect`` costs a good fraction of
    a second in a large process) where only the times are used, e.g. inside a search;
    ``peak_mem_mib`` is then NaN.
    """
    model = model.to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    ctx: Callable = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 and device.type == "cuda" else _null
    timer = StepTimer(device, warmup=warmup)
    model.train()
    with MemoryMeter(device) if memory else _null() as mem:
        for _ in range(warmup + steps):
            timer.start()
            with ctx():
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            timer.stop()
    step = percentiles_ms(timer.times_ms())["median"]
    inf = StepTimer(device, warmup=warmup)
    model.eval()
    with torch.no_grad():
        for _ in range(warmup + steps):
            inf.start()
            with ctx():
                model(x)
            inf.stop()
    model.train()
    # mem is the MemoryMeter exactly when memory is set; mypy cannot tie the two together.
    peak = mem.result()["peak_mem_mib"] if memory else float("nan")  # type: ignore[union-attr]
    return StepTimes(step, percentiles_ms(inf.times_ms())["median"], peak)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def device_name(device: torch.device) -> str:
    """A label of the device the figures belong to (GPU model, or 'cpu')."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).replace(" ", "-")
    return f"cpu{torch.get_num_threads()}t"


def _cache_file(device: torch.device) -> Path:
    """One measured table per device and arithmetic (``bench.cache``)."""
    from bench.cache import cache_file

    return cache_file("nasoa", "steptime", {"table": "train_step_ms"}, device, suffix=".json")


def step_table(
    models: Sequence[str],
    *,
    width: float,
    size: int,
    batch: int,
    device: torch.device,
    num_classes: int = 10,
    steps: int = 5,
) -> dict[str, float]:
    """Median training-step ms per registered model, measured once per device and cached."""
    from bench.cache import atomic_write_text, file_lock, isolated_rng
    from bench.models.net import build_model

    path = _cache_file(device)
    out = {}
    with file_lock(path.with_suffix(".lock")):
        table = json.loads(path.read_text()) if path.exists() else {}
        for m in models:
            key = f"{m}|w{width:g}|{size}px|bs{batch}|{device_name(device)}"
            if key not in table:
                with isolated_rng():  # a miss must leave the caller's random stream as a hit does
                    torch.manual_seed(0)
                    net = build_model(m, num_classes, width=width)
                    table[key] = measure(
                        net,
                        batch=batch,
                        size=size,
                        device=device,
                        steps=steps,
                        warmup=2,
                        num_classes=num_classes,
                        memory=False,
                    ).step_ms
            out[m] = float(table[key])
        atomic_write_text(json.dumps(table, indent=1, sort_keys=True), path)
    return out
