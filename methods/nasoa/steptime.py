"""Training-step time, inference time and training memory of a network (Table 2 columns).

A training step is the engine's own (``bench.engine.time_steps``): the step ``engine.fit`` runs,
with its optimiser (decay groups, nesterov), bf16 autocast and channels_last on CUDA as the
``TrainConfig`` says, only the parameters that require grad (the model's frozen state), in
speed mode (cuDNN autotune), on synthetic tensors. What the generator plans with is therefore
what the training it plans will run. Inference is a forward under ``no_grad`` in eval mode, in
the same dtype and memory format. ``step_table`` caches per (model, width, size, batch, device
name, precision, memory format) under ``$BENCH_CACHE_DIR/nasoa`` so the schedule generator and
the baselines plan with the same figures the step-time cells store.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bench import engine
from bench.measure import MemoryMeter, StepTimer, percentiles_ms

FINETUNE = engine.TrainConfig(steps=1, momentum=0.9, weight_decay=1e-4, bf16=True)
"""The step NASOA's fine-tuning runs (``metadata.finetune``: SGD with nesterov, momentum 0.9,
weight decay 1e-4, bf16 and channels_last on CUDA); lr, batch and budget do not change a step's time."""


@dataclass(frozen=True)
class StepTimes:
    """Median training-step and inference ms; training memory, counted and (CUDA) measured.

    ``counted_mem_mib`` is the engine's count (parameters, gradients, optimiser state, saved
    activations: exact on any device); ``peak_mem_mib`` the CUDA allocator's peak over the
    starting baseline (NaN on CPU, which has no such figure, and with ``memory=False``).
    """

    step_ms: float
    infer_ms: float
    peak_mem_mib: float
    counted_mem_mib: float


def measure(
    model: nn.Module,
    *,
    batch: int,
    size: int,
    device: torch.device,
    train: engine.TrainConfig = FINETUNE,
    steps: int = 10,
    warmup: int = 3,
    num_classes: int = 1000,
    memory: bool = True,
) -> StepTimes:
    """Time ``steps`` training steps (``engine.time_steps`` with ``train``) and forward passes.

    It trains ``model`` (pass a throwaway network) and leaves the caller's random streams alone.
    ``memory=False`` skips the CUDA peak-memory meter (its ``gc.collect`` costs a good fraction
    of a second in a large process) where only the times are used, e.g. inside a search; on CPU
    there is no meter to skip (``counted_mem_mib`` is the memory figure, and costs nothing).
    """
    model = model.to(device)
    meter = MemoryMeter(device) if memory and device.type == "cuda" else contextlib.nullcontext()
    with meter:
        timing = engine.time_steps(
            model,
            train,
            batch_size=batch,
            image_size=size,
            num_classes=num_classes,
            device=device,
            steps=steps,
            warmup=warmup,
        )
    peak = meter.result().get("peak_mem_mib", float("nan")) if isinstance(meter, MemoryMeter) else float("nan")
    cuda = device.type == "cuda"
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    if cuda and train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and train.bf16 else contextlib.nullcontext()
    inf = StepTimer(device, warmup=warmup)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), engine.speed_mode(), autocast:
            for _ in range(warmup + steps):
                inf.start()
                model(x)
                inf.stop()
    finally:
        model.train(was_training)
    return StepTimes(timing.median_ms, percentiles_ms(inf.times_ms())["median"], peak, timing.counted_mem_mib)


def arithmetic_label(train: engine.TrainConfig, device: torch.device) -> str:
    """The dtype and memory format a step runs in on ``device`` (``bf16|cl``, ``fp32|nchw``)."""
    cuda = device.type == "cuda"
    return f"{'bf16' if cuda and train.bf16 else 'fp32'}|{'cl' if cuda and train.channels_last else 'nchw'}"


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
    train: engine.TrainConfig = FINETUNE,
    frozen: int = -1,
) -> dict[str, float]:
    """Median training-step ms per registered model (``measure`` with ``train``), measured once per
    device and cached; the key names the step's dtype and memory format.

    ``frozen`` >= 0 times the step with NASOA's ``k`` frozen stages (``builder.freeze_stages``:
    stem and stages 1..k under no_grad, no gradient through them), the state a plan with that
    ``frozen`` trains in; -1 (the default) freezes nothing."""
    from bench.cache import atomic_write_text, file_lock, isolated_rng
    from bench.models.net import build_model

    path = _cache_file(device)
    out = {}
    with file_lock(path.with_suffix(".lock")):
        table = json.loads(path.read_text()) if path.exists() else {}
        for m in models:
            key = f"{m}|w{width:g}|{size}px|bs{batch}|{device_name(device)}|{arithmetic_label(train, device)}"
            key += f"|f{frozen}" if frozen >= 0 else ""
            if key not in table:
                with isolated_rng():  # a miss must leave the caller's random stream as a hit does
                    torch.manual_seed(0)
                    net = build_model(m, num_classes, width=width)
                    if frozen >= 0:
                        from methods.nasoa.builder import freeze_stages

                        freeze_stages(net, frozen)
                    table[key] = measure(
                        net,
                        batch=batch,
                        size=size,
                        device=device,
                        train=train,
                        steps=steps,
                        warmup=2,
                        num_classes=num_classes,
                        memory=False,
                    ).step_ms
            out[m] = float(table[key])
        atomic_write_text(json.dumps(table, indent=1, sort_keys=True), path)
    return out
